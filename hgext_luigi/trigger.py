"""What a push asks for: its new heads, their branches, directives and pusher.

Hg side, cheap: no Luigi, no subprocess.  Used by the push hooks.
"""

import getpass
import os
import re

from mercurial import encoding, pycompat
from mercurial.utils import urlutil

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


def branch_allowed(ui, branch):
    wanted = ui.configlist(b'luigi', b'branches')
    return not wanted or branch in wanted


def pusher(ui, url):
    """Who pushed: the authenticated HTTP user (``REMOTE_USER`` of ``hg serve``
    behind auth, carried in the hook's url ``remote:http:HOST:USER``), the ssh
    user (``REMOTE_USER`` set by the ssh gateway, else the account hg runs as,
    with the client address), or the local user name."""
    url = url or b''
    if url.startswith(b'remote:'):
        parts = url.split(b':', 3)
        scheme = parts[1] if len(parts) > 1 else b''
        host = urlutil.urlreq.unquote(parts[2]) if len(parts) > 2 else b''
        user = urlutil.urlreq.unquote(parts[3]) if len(parts) > 3 else b''
        if user:
            return pycompat.sysstr(user)
        if scheme == b'ssh':
            name = encoding.environ.get(b'REMOTE_USER') or pycompat.sysbytes(getpass.getuser())
            return pycompat.sysstr(name + (b'@' + host if host else b''))
        return 'anonymous' + ('@' + pycompat.sysstr(host) if host else '')
    name = ui.username(acceptempty=True) or pycompat.sysbytes(
        os.environ.get('USER') or getpass.getuser())
    return encoding.fromlocal(name).decode('utf-8', 'replace')


def describe_source(url):
    url = pycompat.sysstr(url or b'')
    return url or 'local'
