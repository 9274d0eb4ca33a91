"""A SQLite file shared by several processes (hg, the runner, its forked Luigi
workers, push hooks, queue workers): WAL journal, a generous busy timeout and
short ``BEGIN IMMEDIATE`` transactions.  Plain Python, used by the lineage store
and the push queue."""

import contextlib
import os
import sqlite3

Error = sqlite3.DatabaseError


def connect(path, schema, synchronous="NORMAL"):
    """Open ``path`` (creating its folder) and apply ``schema`` (statements
    separated by ``;``, idempotent) in one transaction.  Raises :data:`Error`."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    db = sqlite3.connect(path, timeout=60, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA busy_timeout = 60000")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = %s" % synchronous)
    with transaction(db):
        for stmt in schema.split(";"):
            if stmt.strip():
                db.execute(stmt)
    return db


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
