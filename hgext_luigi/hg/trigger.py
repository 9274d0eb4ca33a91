"""What a push asks for: its new heads, their branches, directives and pusher.

Hg side, cheap: no Luigi, no subprocess.  Used by the push hooks.
"""

import getpass
import os
import re

from mercurial import encoding
from mercurial.utils import urlutil

from . import config

SKIP = re.compile(br'\[luigi skip\]', re.IGNORECASE)
ALL = re.compile(br'\[luigi all\]', re.IGNORECASE)

PUSH_SOURCES = (b'push', b'serve')


def push_heads(repo, node, node_last):
    """The changesets of the push ``node``..``node_last`` that no other changeset
    of the push descends from: one build per new head."""
    unfi = repo.unfiltered()
    first, last = unfi[node].rev(), unfi[node_last or node].rev()
    return [unfi[r] for r in unfi.revs(b'heads(%d:%d)', first, last)]


def directives(repo, head, node):
    """(skip, force) for ``head``: ``[luigi skip]`` in the head's own message skips
    it; ``[luigi all]`` in any changeset of the push that the head contains
    rebuilds everything (so a later commit cannot lose the request)."""
    unfi = repo.unfiltered()
    skip = bool(SKIP.search(head.description()))
    first = unfi[node].rev()
    force = any(ALL.search(unfi[r].description())
                for r in unfi.revs(b'%d:%d and ::%d', first, head.rev(), head.rev()))
    return skip, force


def branch_allowed(settings, branch):
    """Whether pushes to ``branch`` (bytes) are built (``[luigi] branches``)."""
    return not settings.branches or config.text(branch) in settings.branches


def os_account():
    """The operating-system account this process runs as, looked up by its uid:
    ``LOGNAME``/``USER`` (which :func:`getpass.getuser` reads first) and
    ``HGUSER``/``ui.username`` are the caller's to set."""
    try:
        import pwd
    except ImportError:  # Windows: no uid to look up
        return getpass.getuser()
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry (containers)
        return "uid-%d" % os.getuid()


def pusher(ui, url):
    """Who pushed, never the committer name (``HGUSER``/``ui.username``: the
    pusher sets it; it is recorded as the :func:`author`):

    - HTTP: the user the web server authenticated (``REMOTE_USER`` of hgweb,
      carried in the hook's url ``remote:http:HOST:USER``), else
      ``anonymous@HOST``;
    - ssh: ``REMOTE_USER`` set by the ssh gateway (a forced command), else the
      account hg runs as, ``@`` the client address;
    - a push to a local path: the account the pushing process runs as."""
    url = url or b''
    if not url.startswith(b'remote:'):
        return os_account()
    scheme, _sep, rest = url[len(b'remote:'):].partition(b':')
    if scheme == b'ssh':
        # remote:ssh:ADDRESS, the address unquoted (an IPv6 one holds colons)
        name = encoding.environ.get(b'REMOTE_USER') or config.local(os_account())
        return _text(name + (b'@' + rest if rest else b''))
    host, _sep, user = rest.partition(b':')
    host, user = urlutil.urlreq.unquote(host), urlutil.urlreq.unquote(user)
    if user:
        return _text(user)
    return 'anonymous' + ('@' + _text(host) if host else '')


def acl_user(url):
    """The pusher as access control names them: the authenticated HTTP user,
    the ssh gateway's ``REMOTE_USER`` (else the account), the account of a push
    to a path; without the client address.  None for anonymous HTTP, which
    only ``*`` owns."""
    url = url or b''
    if not url.startswith(b'remote:'):
        return os_account()
    scheme, _sep, rest = url[len(b'remote:'):].partition(b':')
    if scheme == b'ssh':
        return _text(encoding.environ.get(b'REMOTE_USER')
                     or config.local(os_account()))
    user = urlutil.urlreq.unquote(rest.partition(b':')[2])
    return _text(user) if user else None


def author(ctx):
    """The committer of ``ctx``: what the pusher wrote, recorded apart from the
    pusher."""
    return _text(ctx.user())


def _text(name):
    # names go into SQLite: no lone surrogates for bytes that are not UTF-8
    return config.text(name, errors='replace')


def describe_source(url):
    return config.text(url, errors='replace') or 'local'
