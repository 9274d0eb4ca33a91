"""core.sqlitedb: one SQLite file shared by several processes."""

import os
import sqlite3

import pytest

from hgext_luigi.core import sqlitedb

SCHEMA = """
CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS items_name ON items(name);
"""


def test_connect_creates_the_folder_and_applies_the_schema(tmp_path):
    path = str(tmp_path / "deep" / "er" / "x.db")
    db = sqlitedb.connect(path, SCHEMA)
    try:
        assert os.path.isfile(path)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 60000
        db.execute("INSERT INTO items(name) VALUES ('a')")
        assert db.execute("SELECT name FROM items").fetchone()["name"] == "a"  # Row
    finally:
        db.close()


def test_the_schema_is_idempotent_and_keeps_the_data(tmp_path):
    path = str(tmp_path / "x.db")
    db = sqlitedb.connect(path, SCHEMA)
    db.execute("INSERT INTO items(name) VALUES ('kept')")
    db.close()
    db = sqlitedb.connect(path, SCHEMA)
    try:
        assert [r["name"] for r in db.execute("SELECT name FROM items")] == ["kept"]
    finally:
        db.close()


def test_synchronous_level(tmp_path):
    db = sqlitedb.connect(str(tmp_path / "x.db"), SCHEMA, synchronous="FULL")
    try:
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        db.close()


def test_a_transaction_commits_or_rolls_back_whole(tmp_path):
    db = sqlitedb.connect(str(tmp_path / "x.db"), SCHEMA)
    try:
        with sqlitedb.transaction(db):
            db.execute("INSERT INTO items(name) VALUES ('one')")
        with pytest.raises(KeyError):
            with sqlitedb.transaction(db):
                db.execute("INSERT INTO items(name) VALUES ('two')")
                raise KeyError("the change it describes failed")
        assert [r["name"] for r in db.execute("SELECT name FROM items")] == ["one"]
        assert not db.in_transaction
    finally:
        db.close()


def test_a_writer_holds_the_others_off_until_it_commits(tmp_path):
    path = str(tmp_path / "x.db")
    a = sqlitedb.connect(path, SCHEMA)
    b = sqlitedb.connect(path, SCHEMA)
    try:
        b.execute("PRAGMA busy_timeout = 50")  # do not wait a minute in a test
        with sqlitedb.transaction(a):
            a.execute("INSERT INTO items(name) VALUES ('a')")
            with pytest.raises(sqlitedb.Error, match="locked"):
                with sqlitedb.transaction(b):
                    pass
            # a reader still sees the last committed state (WAL)
            assert b.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 0
        with sqlitedb.transaction(b):
            b.execute("INSERT INTO items(name) VALUES ('b')")
        assert sorted(r[0] for r in a.execute("SELECT name FROM items")) == ["a", "b"]
    finally:
        a.close()
        b.close()


def test_a_broken_schema_leaves_nothing_behind(tmp_path):
    path = str(tmp_path / "x.db")
    with pytest.raises(sqlitedb.Error):
        sqlitedb.connect(path, "CREATE TABLE first(x); CREATE TABLE second(")
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == []
    finally:
        db.close()


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    path = tmp_path / "x.db"
    path.write_bytes(b"not a database, " * 512)
    with pytest.raises(sqlitedb.Error):
        sqlitedb.connect(str(path), SCHEMA)
    assert path.read_bytes() == b"not a database, " * 512  # and left as it was
