"""core.pgdb and core.database: the PostgreSQL store on a real server (loopback,
password required), against what the SQLite store does."""

import threading

import pytest

from hgext_luigi.core import audit, database, lineage, pgdb, pushqueue
from storehistory import sqlite_store_with_history as _sqlite_store_with_history

A = "a" * 40


def test_sqlite_placeholders_become_psycopg_ones_outside_quoted_text():
    assert pgdb.translate("SELECT 1 WHERE a = ? AND b LIKE '50%?'") == \
        "SELECT 1 WHERE a = %s AND b LIKE '50%%?'"


def test_the_ddl_gets_postgresql_types_and_a_rowid_where_sqlite_has_one_implicitly():
    ddl = pgdb.schema("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY AUTOINCREMENT,"
                      " at REAL, n INTEGER);"
                      "CREATE TABLE IF NOT EXISTS u(k TEXT, n INTEGER)")
    assert ddl == ["CREATE TABLE IF NOT EXISTS t(id BIGSERIAL PRIMARY KEY,"
                   " at DOUBLE PRECISION, n BIGINT)",
                   "CREATE TABLE IF NOT EXISTS u(rowid BIGSERIAL, k TEXT, n BIGINT)"]


@pytest.mark.parametrize("url", ["postgresql://u:s3cret@db.example/x",
                                 "postgresql://u@db.example/x?password=s3cret"])
def test_a_url_with_a_password_is_refused_and_never_shown(url):
    with pytest.raises(database.Error) as e:
        pgdb.check_url(url)
    assert "s3cret" not in str(e.value) and "PGPASSWORD" in str(e.value)


def test_a_store_without_tables_asks_for_the_upgrade(pg_server, pg_url, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", pg_server.password)
    with pytest.raises(lineage.StoreError, match="hg luigi-store --upgrade"):
        lineage.open_store(pg_url)
    assert database.upgrade(pg_url, lineage.SCHEMA + pushqueue.SCHEMA) == (None, 1)
    assert database.upgrade(pg_url, lineage.SCHEMA + pushqueue.SCHEMA) == (1, 1)
    lineage.open_store(pg_url).close()


def test_a_wrong_password_is_a_clear_error(pg_server, pg_url, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "not-" + pg_server.password)
    with pytest.raises(database.Error, match="password authentication failed"):
        database.upgrade(pg_url, lineage.SCHEMA)


def _append_concurrently(location, writers=4, each=15):
    def work(n):
        q = pushqueue.open_queue(location, audit.Chain(b"k"))
        try:
            for i in range(each):
                q.record([{"head": "%040x" % (n * 1000 + i), "branch": "b%d" % n}],
                         "txn-%d-%d" % (n, i))
                q.confirm("txn-%d-%d" % (n, i))
        finally:
            q.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)


def test_concurrent_writers_keep_one_unforked_chain(location):
    _append_concurrently(location)
    q = pushqueue.open_queue(location)
    try:
        problems, count = audit.verify_chain(q._db, b"k")
        assert problems == [] and count == 1 + 4 * 15  # audit-started + one per push
        assert len(q.entries(["pending"])) == 60
    finally:
        q.close()


def test_the_task_filter_matches_as_sqlite_glob_does(location):
    q = pushqueue.open_queue(location, audit.Chain())
    for task in ("Clean(region=n)", "Clean", "Cleaner", "Report", "x.y"):
        q.record_decision("gate", {}, task=task)
    try:
        def tasks(pattern):
            return [r["task"] for r in audit.records(q._db, task=pattern)]
        assert tasks("Clean") == ["Clean(region=n)", "Clean"]
        assert tasks("Clean*") == ["Clean(region=n)", "Clean", "Cleaner"]
        assert tasks("[CR]*t") == ["Report"]
        assert tasks("x.y") == ["x.y"] and tasks("x?y") == ["x.y"]
    finally:
        q.close()


def test_an_import_keeps_ids_and_the_chain_and_refuses_a_second(tmp_path, pg_server,
                                                               pg_url, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", pg_server.password)
    path = str(tmp_path / "lineage.db")
    head = _sqlite_store_with_history(path)
    database.upgrade(pg_url, lineage.SCHEMA + pushqueue.SCHEMA)
    counts, records, imported_head = database.import_sqlite(path, pg_url, b"k")
    assert imported_head == head and records == counts["audit"]
    assert counts["runs"] == 1 and counts["builds"] == 1 and counts["entries"] == 1
    s = lineage.open_store(pg_url, None, audit.Chain(b"k"))
    try:
        assert audit.verify_chain(s._db, b"k") == ([], counts["audit"])
        assert audit.head(s._db) == head
        assert s.latest_run(A)["status"] == "success"
        assert s.outputs(1)[0]["path"] == "/x/out.csv"
        # new builds go on after the imported ids, and extend the same chain
        assert s.start_build("r2", "T__2", "T()", "T", {}, A, None, [], "bob", "push") == 2
        assert audit.verify_chain(s._db, b"k")[0] == []
    finally:
        s.close()
    with pytest.raises(database.Error, match="empty store"):
        database.import_sqlite(path, pg_url, b"k")


def test_an_import_whose_chain_does_not_verify_leaves_nothing(tmp_path, pg_server,
                                                             pg_url, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", pg_server.password)
    path = str(tmp_path / "lineage.db")
    _sqlite_store_with_history(path)
    database.upgrade(pg_url, lineage.SCHEMA + pushqueue.SCHEMA)
    with pytest.raises(database.Error, match="does not verify.*nothing was imported"):
        database.import_sqlite(path, pg_url, b"another key")
    s = lineage.open_store(pg_url)
    try:
        assert not s.has_records() and s._db.execute("SELECT COUNT(*) FROM audit"
                                                     ).fetchone()[0] == 0
    finally:
        s.close()
    assert database.import_sqlite(path, pg_url, b"k")[0]["builds"] == 1  # then the right one


def test_a_claimed_row_is_skipped_not_waited_for(pg_server, pg_url, monkeypatch):
    """SKIP LOCKED: a second worker takes the next entry while the first is
    still inside its claim."""
    monkeypatch.setenv("PGPASSWORD", pg_server.password)
    database.upgrade(pg_url, lineage.SCHEMA + pushqueue.SCHEMA)
    a, b = pushqueue.open_queue(pg_url), pushqueue.open_queue(pg_url)
    try:
        a.record([{"head": "1" * 40}, {"head": "2" * 40}], "t")
        a.confirm("t")
        with a._db.transaction() as db:
            db.execute("SELECT id FROM entries WHERE id = 1 FOR UPDATE")
            assert b.claim("w2", 60, 3)["id"] == 2
    finally:
        a.close()
        b.close()
