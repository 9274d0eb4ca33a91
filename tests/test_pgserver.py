"""The throwaway PostgreSQL server of the tests (tests/helpers/pgserver.py) is what
the store needs: a password is really checked, each test gets an empty database,
and row locks with SKIP LOCKED (the push queue's claim) work across sessions."""

import os
import subprocess

import psycopg
import pytest


def test_password_is_required(pg_server, pg_url, monkeypatch, tmp_path):
    """No password, no connection; a wrong one is refused; the one of env()
    connects, in this process and in a subprocess (psql) given env()."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))  # no ~/.pgpass either
    assert pg_server.password not in pg_url
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(pg_url, connect_timeout=10)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg_url, password="wrong", connect_timeout=10)
    with psycopg.connect(pg_url, password=pg_server.env()["PGPASSWORD"]) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("hgluigi",)

    psql = [os.path.join(pg_server.bindir, "psql"), "-w", "-XAtc", "SELECT 1", pg_url]
    denied = subprocess.run(psql, env=dict(os.environ), capture_output=True, text=True)
    assert denied.returncode != 0 and "no password supplied" in denied.stderr
    ok = subprocess.run(psql, env=dict(os.environ, **pg_server.env()),
                        capture_output=True, text=True)
    assert (ok.returncode, ok.stdout) == (0, "1\n"), ok.stderr


@pytest.mark.parametrize("run", [1, 2])
def test_fresh_empty_database_per_test(pg_server, pg_url, run):
    """Both runs see no tables: what the first creates is not in the second's."""
    with psycopg.connect(pg_url, password=pg_server.password) as conn:
        tables = conn.execute("SELECT table_name FROM information_schema.tables"
                              " WHERE table_schema = 'public'").fetchall()
        assert tables == []
        conn.execute("CREATE TABLE left_behind (run int)")


def test_skip_locked_across_connections(pg_server, pg_url):
    """One session holds a row FOR UPDATE; another's SKIP LOCKED claim gets the next."""
    pw = pg_server.password
    with psycopg.connect(pg_url, password=pw, autocommit=True) as setup:
        setup.execute("CREATE TABLE queue (id int PRIMARY KEY)")
        setup.execute("INSERT INTO queue VALUES (1), (2)")
    claim = "SELECT id FROM queue ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
    with psycopg.connect(pg_url, password=pw) as a, psycopg.connect(pg_url, password=pw) as b:
        assert a.execute(claim).fetchone() == (1,)  # a's transaction stays open
        assert b.execute(claim).fetchone() == (2,)  # not blocked: row 1 skipped
        b.rollback()
        a.rollback()  # row 1 free again
        assert b.execute(claim).fetchone() == (1,)
