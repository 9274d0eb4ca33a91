"""The store's database for the core tests of lineage, queue and audit: each such
test runs on a SQLite file and again on a real PostgreSQL server."""

import pytest

from hgext_luigi.core import database, lineage, pushqueue


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path, monkeypatch):
    """Where a store lives: a SQLite file under tmp_path, or a fresh PostgreSQL
    database with the store's tables (``hg luigi-store --upgrade``); libpq
    finds the password in PGPASSWORD, as hg would."""
    if request.param == "sqlite":
        return str(tmp_path / "state" / "lineage.db")
    server = request.getfixturevalue("pg_server")
    url = request.getfixturevalue("pg_url")
    monkeypatch.setenv("PGPASSWORD", server.password)
    database.upgrade(url, lineage.SCHEMA + pushqueue.SCHEMA)
    return url
