"""The lineage store and the push queue as the hg side opens them: with the
audit chain, keyed by ``[luigi] audit-key-env`` when set.  Both live in one
SQLite file (``.hg/luigi/lineage.db``), so a record of the audit log is written
in the same transaction as the state it describes.
"""

import os

from mercurial import error
from mercurial.i18n import _

from ..core import audit
from . import config

_b = config.local


def chain(settings):
    """The :class:`audit.Chain` of this repository; aborts when the key variable
    is configured but unset (nothing is written then)."""
    if settings.audit_key_env:
        from ..core import sandbox

        sandbox.deny_inspection()  # the key is in this process's environment
    try:
        key = audit.load_key(settings.audit_key_env, os.environ)
    except audit.AuditError as e:
        raise error.Abort(_b(str(e)), hint=_(b'set it in the environment of hg (the '
                                             b'web server, the worker service)'))
    return audit.Chain(key)


def open_store(settings, write=True):
    """The lineage store; ``write=False`` for reading alone (no key needed)."""
    from ..core import lineage  # not for the push hooks, which only queue

    try:
        return lineage.open_store(settings.store, settings.output_root,
                                  chain(settings) if write else None)
    except lineage.StoreError as e:
        raise error.Abort(_b(str(e)))


def open_queue(settings, write=True):
    from ..core import pushqueue  # plain sqlite3: cheap enough for every push

    try:
        return pushqueue.open_queue(settings.queue, chain(settings) if write else None)
    except pushqueue.QueueError as e:
        raise error.Abort(_b(str(e)))
