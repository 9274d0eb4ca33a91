"""Where the lineage store, the push queue and the audit log keep their tables:
one SQLite file per repository (the default, ``.hg/luigi/lineage.db``), or one
PostgreSQL database that several build hosts share (``[luigi] store =
postgresql://...``).  Both are used through the same few methods
(:class:`core.sqlitedb.SQLite`, :class:`core.pgdb.Postgres`); the SQL is written
once.

A SQLite file is created and brought up to date whenever it is opened.  A shared
database changes only when asked (``hg luigi-store --upgrade``): hosts running
different versions must not race to alter its tables.
"""

from . import sqlitedb

# the version of the tables a PostgreSQL store holds (``meta``, name 'store');
# raise it with every change to a schema, and :data:`MIGRATIONS` says how
STORE_VERSION = 1


class Error(Exception):
    """A PostgreSQL store cannot be reached, read or written."""


# what a store's database may raise, whichever it is
ERRORS = (sqlitedb.Error, Error)


def is_url(location):
    """Whether ``[luigi] store`` names a server database rather than a file."""
    return location.split(":", 1)[0] in ("postgresql", "postgres") and "://" in location


def shown(location):
    """``location`` as messages show it: a URL without its password."""
    if is_url(location):
        from . import pgdb

        return pgdb.redact(location)
    return location


def open_database(location, schema, synchronous="NORMAL"):
    """The database at ``location``: a SQLite file (``schema`` applied), or a
    PostgreSQL URL, whose tables must be at :data:`STORE_VERSION`."""
    if not is_url(location):
        return sqlitedb.connect(location, schema, synchronous)
    from . import pgdb

    db = pgdb.Postgres(location)
    try:
        found = version(db)
    except Error:
        found = None
    if found != STORE_VERSION:
        db.close()
        raise Error("the store %s %s (this version of hgext_luigi needs %d); run "
                    "'hg luigi-store --upgrade'" % (pgdb.redact(location), "has no tables"
                                                    if found is None else
                                                    "is at version %s" % found,
                                                    STORE_VERSION))
    return db


def version(db):
    """The store version recorded in ``db``, None when it has none."""
    row = db.execute("SELECT value FROM meta WHERE name = 'store'").fetchone()
    return int(row[0]) if row else None


def upgrade(location, ddl):
    """Create or bring up to date the tables of the PostgreSQL store at
    ``location`` from the SQLite ``ddl`` of every table, in one transaction.
    Returns ``(before, after)`` versions."""
    from . import pgdb

    db = pgdb.Postgres(location)
    try:
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(?)", (pgdb.CHAIN_LOCK,))
            db.execute("CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value TEXT)")
            before = version(db)
            if before is not None and before > STORE_VERSION:
                raise Error("the store is at version %d, newer than this hgext_luigi "
                            "(%d): upgrade hgext_luigi" % (before, STORE_VERSION))
            for stmt in pgdb.schema(ddl):
                db.execute(stmt)
            db.execute("INSERT INTO meta(name, value) VALUES ('store', ?) ON CONFLICT"
                       " (name) DO UPDATE SET value = excluded.value", (str(STORE_VERSION),))
        return before, STORE_VERSION
    finally:
        db.close()


# the tables of a store, in the order an import copies them
TABLES = ("runs", "run_tasks", "builds", "outputs", "inputs", "facts", "checks",
          "leases", "entries", "audit")
_SERIALS = ("builds", "entries")  # their ids go on from the last one imported


def import_sqlite(path, location, key=None):
    """Copy every row of the SQLite store at ``path`` (opened read-only, at the
    current schema) into the empty PostgreSQL store at ``location``, in one
    transaction: ids, order and audit records as they were.  The chain is
    verified there (with ``key``) before the transaction commits: an import
    that does not verify leaves nothing behind.  Returns ``({table: rows
    copied}, records, head)``."""
    import sqlite3

    from . import audit, pgdb

    src = sqlitedb.read_only(path)
    db = open_database(location, "")
    try:
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(?)", (pgdb.CHAIN_LOCK,))
            _check_empty(db)
            have = {r[0] for r in src.execute("SELECT name FROM sqlite_master"
                                              " WHERE type = 'table'")}
            counts = {t: _copy_table(src, db, t) for t in TABLES if t in have}
            for table in _SERIALS:
                db.execute("SELECT setval(pg_get_serial_sequence(?, 'id'), COALESCE("
                           "(SELECT MAX(id) FROM %s), 0) + 1, false)" % table, (table,))
            problems, records = audit.verify_chain(db, key)
            if problems:
                raise Error("the audit chain of %s does not verify (record %s: %s); "
                            "nothing was imported" % (path, problems[0]["id"],
                                                      problems[0]["problem"]))
            head = audit.head(db)
        return counts, records, head
    except sqlite3.Error as e:
        raise Error("cannot read %s: %s" % (path, e))
    finally:
        src.close()
        db.close()


def _check_empty(db):
    for table in ("runs", "builds", "entries", "audit"):
        if db.execute("SELECT 1 FROM %s LIMIT 1" % table).fetchone():
            raise Error("the store already holds %s: import into an empty store only "
                        "(a new database, then 'hg luigi-store --upgrade')" % table)


def _copy_table(src, db, table):
    """Copy ``table``'s columns that both stores have, in the source's order."""
    target = {r[0] for r in db.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?"
        " AND table_schema = current_schema()", (table,))}
    cols = [r["name"] for r in src.execute("PRAGMA table_info(%s)" % table)
            if r["name"] in target]
    names = ", ".join('"%s"' % c for c in cols)
    insert = "INSERT INTO %s(%s) VALUES (%s)" % (table, names, ", ".join("?" * len(cols)))
    rows = src.execute("SELECT %s FROM %s ORDER BY rowid" % (names, table))
    copied = 0
    while True:
        batch = rows.fetchmany(1000)
        if not batch:
            return copied
        db.executemany(insert, [tuple(r) for r in batch])
        copied += len(batch)
