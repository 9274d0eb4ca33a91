"""Who the current HTTP request is, as the web front end authenticated it.

Plain Python.  ``hgext_luigi.wsgi`` sets it for the duration of one request
(hgweb runs a push's hooks in the thread that serves the request); the push
hooks read the groups of the user hgweb reports as ``REMOTE_USER``.  Nothing a
client sends reaches here but through a verified token.
"""

import threading

_local = threading.local()


def set_request(user, groups):
    """The identity of the request this thread serves now."""
    _local.identity = (user, tuple(groups or ()))


def clear():
    _local.identity = None


def token_groups(user):
    """The groups the token of the current request gave ``user``: () when this
    thread serves no authenticated request, or one of another user."""
    identity = getattr(_local, "identity", None)
    if identity is None or identity[0] != user:
        return ()
    return identity[1]
