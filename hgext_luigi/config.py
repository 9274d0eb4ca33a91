"""Configuration items of the ``[luigi]`` section, and their values as ``str``.

Every option the extension reads is registered here with its default, so
``hg config luigi`` and ``hg help hgext_luigi`` stay complete.
"""

import os
import sys

from mercurial import encoding, pycompat, registrar


def local(s):
    """A ``str`` (task keys, paths, messages: UTF-8 data) as bytes in the local
    encoding, the way Mercurial writes to the terminal and formatters."""
    if s is None:
        return b''
    if isinstance(s, bytes):
        return s
    return encoding.tolocal(str(s).encode('utf-8', 'surrogateescape'))


configtable = {}
configitem = registrar.configitem(configtable)

configitem(b'luigi', b'module', default=b'pipelines')
configitem(b'luigi', b'roots', default=list)
configitem(b'luigi', b'output-root', default=None)
configitem(b'luigi', b'scheduler', default=None)
configitem(b'luigi', b'workers', default=1)
configitem(b'luigi', b'on-commit', default=b'off')
configitem(b'luigi', b'watches-file', default=b'.hgluigi')
configitem(b'luigi', b'python', default=None)
configitem(b'luigi', b'tree-cache', default=3)
configitem(b'luigi', b'lock-timeout', default=0)
configitem(b'luigi', b'gate', default=False)
configitem(b'luigi', b'on-push', default=b'off')
configitem(b'luigi', b'branches', default=list)
configitem(b'luigi', b'lease', default=60)
configitem(b'luigi', b'max-attempts', default=3)
configitem(b'luigi', b'poll-interval', default=2.0)
configitem(b'luigi', b'coalesce', default=True)
configitem(b'luigi', b'auto-hooks', default=True)
configitem(b'luigi', b'callback-queue', default=None)
configitem(b'luigi', b'callback-heartbeat', default=60)
configitem(b'luigi', b'callback-visibility', default=300)
configitem(b'luigi', b'aws-region', default=None)
configitem(b'luigi', b'aws-endpoint-url', default=None)
configitem(b'luigi', b'aws-profile', default=None)

ON_COMMIT = (b'off', b'plan', b'run')
ON_PUSH = (b'off', b'run', b'queue')


def state_dir(repo):
    """``.hg/luigi``: lineage store, tree cache, index cache, logs."""
    return repo.vfs.join(b'luigi')


def queue_path(repo):
    return pycompat.fsdecode(os.path.join(state_dir(repo), b'queue.db'))


def store_path(repo):
    return pycompat.fsdecode(os.path.join(state_dir(repo), b'lineage.db'))


class Settings:
    """The ``[luigi]`` options of one repository, as ``str`` for the Luigi side."""

    def __init__(self, ui, repo):
        s = pycompat.sysstr
        self.module = s(ui.config(b'luigi', b'module'))
        self.roots = [s(r) for r in ui.configlist(b'luigi', b'roots')]
        root = ui.config(b'luigi', b'output-root')
        if root:
            root = os.path.join(repo.root, os.path.expanduser(root))
        else:
            root = os.path.join(state_dir(repo), b'outputs')
        self.output_root = os.path.normpath(pycompat.fsdecode(root))
        sched = ui.config(b'luigi', b'scheduler')
        self.scheduler = s(sched) if sched else None
        self.workers = ui.configint(b'luigi', b'workers')
        self.on_commit = ui.config(b'luigi', b'on-commit')
        self.watches_file = s(ui.config(b'luigi', b'watches-file') or b'')
        python = ui.config(b'luigi', b'python')
        self.python = pycompat.fsdecode(python) if python else sys.executable
        self.tree_cache = max(1, ui.configint(b'luigi', b'tree-cache'))
        self.lock_timeout = ui.configint(b'luigi', b'lock-timeout')
        self.store = store_path(repo)
        self.queue = queue_path(repo)
        self.lease = max(1, ui.configint(b'luigi', b'lease'))
        self.max_attempts = max(1, ui.configint(b'luigi', b'max-attempts'))
        self.poll_interval = max(0.05, ui.configwith(float, b'luigi', b'poll-interval'))
        self.coalesce = ui.configbool(b'luigi', b'coalesce')
        self.state = pycompat.fsdecode(state_dir(repo))

    def index_settings(self):
        """What the task graph depends on besides the repository's files."""
        return {"module": self.module, "roots": self.roots,
                "watches_file": self.watches_file, "python": self.python}
