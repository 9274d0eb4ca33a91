"""A SQLite file shared by several processes (hg, the runner, its forked Luigi
workers, push hooks, queue workers): WAL journal, a generous busy timeout and
short ``BEGIN IMMEDIATE`` transactions.  Plain Python, used by the lineage store
and the push queue through :mod:`core.database`, which also offers PostgreSQL
(:mod:`core.pgdb`) behind the same few methods."""

import contextlib
import os
import sqlite3
import time
import urllib.parse

Error = sqlite3.DatabaseError


class SQLite:
    """A connection as the stores use it: ``execute``, ``executemany``,
    ``transaction()`` and ``before_commit`` (:mod:`core.pgdb` has the same).
    The methods are the connection's own, bound once: no cost per statement."""

    dialect = "sqlite"

    def __init__(self, conn):
        self.conn = conn
        self.execute = conn.execute
        self.executemany = conn.executemany
        self.close = conn.close

    @property
    def in_transaction(self):
        return self.conn.in_transaction

    def transaction(self):
        return transaction(self)

    @staticmethod
    def clean(value):
        """A value as this database stores it (SQLite: unchanged)."""
        return value

    @staticmethod
    def now():
        """The time leases and queue ages are measured by: this host's clock
        (a SQLite file is one host's)."""
        return time.time()

    def before_commit(self, fn):
        """Run ``fn`` as the last step of the open transaction: at once, as
        ``BEGIN IMMEDIATE`` already keeps every other writer out; returns what
        ``fn`` returns."""
        return fn()


def connect(path, schema, synchronous="NORMAL"):
    """Open ``path`` (creating its folder) and apply ``schema`` (statements
    separated by ``;``, idempotent) in one transaction.  Raises :data:`Error`."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    conn.row_factory = sqlite3.Row
    db = SQLite(conn)
    db.execute("PRAGMA busy_timeout = 60000")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = %s" % synchronous)
    with transaction(db):
        for stmt in schema.split(";"):
            if stmt.strip():
                db.execute(stmt)
    return db


def read_only(path, timeout=5.0):
    """A plain ``sqlite3`` connection to the file at ``path`` that can neither
    create nor change it (rows by name).  Raises :data:`Error`."""
    conn = sqlite3.connect("file:%s?mode=ro" % urllib.parse.quote(path), uri=True,
                           timeout=timeout)
    conn.row_factory = sqlite3.Row
    return conn


@contextlib.contextmanager
def transaction(db):
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    else:
        db.execute("COMMIT")
