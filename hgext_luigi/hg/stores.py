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


def recorded(settings):
    """Whether there can be anything to read: a shared store, or the SQLite
    file exists (reading must not create it)."""
    return is_shared(settings) or os.path.exists(settings.store)


def is_shared(settings):
    """Whether the store is a server database (``[luigi] store``)."""
    from ..core import database

    return database.is_url(settings.store)


def _store_error(e, hint=None):
    return error.Abort(_b(str(e)), hint=hint or _(b'see hg help luigi-store'))


def upgrade(settings):
    """Create or bring up to date the tables of the shared store:
    ``(before, after)`` versions."""
    from ..core import database, lineage, pushqueue

    try:
        return database.upgrade(settings.store, lineage.SCHEMA + pushqueue.SCHEMA)
    except database.ERRORS as e:
        raise _store_error(e, _(b'check [luigi] store, PGPASSWORD or PGPASSFILE, and '
                                b'that the server is up'))


def import_sqlite(settings, path):
    """Move the SQLite store at ``path`` into the (empty) shared store, its
    audit chain verified there (with ``[luigi] audit-key-env``) before the
    import commits.  The file is left as it was: a copy of it is brought to
    the current schema and imported.  Returns ``({table: rows}, records,
    head)``."""
    import tempfile

    from ..core import database

    key = chain(settings).key
    with tempfile.TemporaryDirectory(prefix="hgluigi-import-") as tmp:
        copy = _migrated_copy(settings, path, os.path.join(tmp, "lineage.db"))
        try:
            return database.import_sqlite(copy, settings.store, key)
        except database.ERRORS as e:
            raise _store_error(e, _(b'nothing was imported; %s is as it was') % _b(path))


def _migrated_copy(settings, path, copy):
    """A consistent copy of the SQLite store at ``path`` (SQLite's backup),
    brought to the current schema as opening it in this version would."""
    import sqlite3

    from ..core import lineage, pushqueue, sqlitedb

    if not os.path.isfile(path):
        raise error.Abort(_(b'no SQLite store at %s') % _b(path),
                          hint=_(b'give the path of a lineage.db'))
    try:
        src = sqlitedb.read_only(path)
        dst = sqlite3.connect(copy)
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()
        lineage.open_store(copy, settings.output_root).close()
        pushqueue.open_queue(copy).close()
    except (sqlite3.Error, lineage.StoreError, pushqueue.QueueError) as e:
        raise _store_error(e, _(b'is %s a lineage.db?') % _b(path))
    return copy


def counts(settings):
    """``{table: rows}`` of the store, for ``hg luigi-store``."""
    from ..core import database

    open_queue(settings, write=False).close()  # a SQLite file gets its queue table
    store = open_store(settings, write=False)
    try:
        return {t: store._db.execute("SELECT COUNT(*) FROM %s" % t).fetchone()[0]
                for t in ("runs", "builds", "entries", "audit")}
    except database.ERRORS as e:
        raise _store_error(e)
    finally:
        store.close()


def warn_readable_password(ui, settings):
    """Say so when a shared store's password sits in a file libpq reads
    (``PGPASSFILE``, else ``~/.pgpass``) that this account can read: pipeline
    code runs as this account and could read it too, whereas ``PGPASSWORD``
    in hg's own environment is out of its reach."""
    if not is_shared(settings) or os.environ.get('PGPASSWORD'):
        return
    path = os.environ.get('PGPASSFILE') or os.path.expanduser('~/.pgpass')
    if os.path.isfile(path) and os.access(path, os.R_OK):
        ui.warn(_(b'luigi: the store\'s password is read from %s, which pipeline code '
                  b'running as this account can read too\n') % _b(path),
                _(b'(set PGPASSWORD in the service\'s environment instead, from a file '
                  b'only root reads: see "Scaling out" in the README)\n'))
