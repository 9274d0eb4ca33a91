"""The lineage store across moves and migrations, reuse at the planned changeset,
and how hg luigi-lineage shows tasks it never builds."""

import json
import os
import shutil
import sqlite3
import subprocess

from conftest import Repo, make_server_repo

from hgext_luigi.core import lineage

REGIONS = ("north", "south", "east")
TASKS = {"CleanSales(region=%s)" % r for r in REGIONS} | {"SalesReport()", "DocsIndex()"}


def node(repo, rev="."):
    return repo("log", "-r", rev, "-T", "{node}").stdout


def outcomes(repo, *args):
    """{key: outcome} of hg luigi-run -T json."""
    return {t["key"]: t["outcome"] for t in repo.json("luigi-run", *args)}


def moved(repo, path, copy=False):
    """The repository moved (or copied, as a restore from backup) to ``path``."""
    if copy:
        subprocess.run(["cp", "-a", repo.path, path], check=True)
    else:
        shutil.move(repo.path, path)
    return Repo(repo.hg, path)


def assert_all_reused(repo, rev):
    tasks = repo.affected()
    assert set(tasks) == TASKS
    for t in tasks.values():
        assert t["status"] == "unaffected" and t["changeset"] == rev, t
    out = repo("luigi-run").stdout
    assert "building 0 of 5 tasks" in out and "0 ran, 5 reused" in out


def test_a_moved_repository_keeps_its_lineage(demo, tmp_path):
    rev = node(demo)
    demo("luigi-run")
    repo = moved(demo, str(tmp_path / "elsewhere" / "repo"))
    assert not os.path.exists(demo.path)
    assert_all_reused(repo, rev)

    # outputs are shown where they are now, and found by either form of their path
    rows = repo.json("luigi-lineage")
    assert {r["key"] for r in rows} == TASKS
    for r in rows:
        for o in r["outputs"]:
            assert o["path"].startswith(os.path.join(repo.state, "outputs", rev) + os.sep)
            assert os.path.getsize(o["path"]) == o["size"]
        for i in r["inputs"]:
            assert all(os.path.exists(p) for p in i["outputs"])
    report = os.path.join(repo.state, "outputs", rev, "reports", "sales-report.csv")
    for given in (report, os.path.join(rev, "reports", "sales-report.csv"),
                  os.path.join(".hg", "luigi", "outputs", rev, "reports", "sales-report.csv")):
        chain = repo.json("luigi-lineage", "--output", given)
        assert chain[0]["key"] == "SalesReport()" and chain[0]["outputs"][0]["path"] == report
        assert {c["key"] for c in chain[1:]} == {"CleanSales(region=%s)" % r for r in REGIONS}

    # new builds after the move are recorded and reused like the old ones
    repo.write("data/raw/sales-north.csv", "2026-11-09,Widget,7,7.00\n", "a")
    second = repo.commit("north sales")
    assert outcomes(repo) == {"CleanSales(region=north)": "ran", "SalesReport()": "ran",
                              "CleanSales(region=south)": "reused",
                              "CleanSales(region=east)": "reused", "DocsIndex()": "reused"}
    again = moved(repo, str(tmp_path / "third"))
    assert set(outcomes(again).values()) == {"reused"}
    north = {r["key"]: r for r in again.json("luigi-lineage")}["CleanSales(region=north)"]
    assert north["changeset"] == second
    assert north["outputs"][0]["path"].startswith(again.path + os.sep)


def test_a_server_repository_restored_from_backup_builds_nothing_again(hg, demo, tmp_path):
    server = make_server_repo(hg, str(tmp_path / "server"))
    demo("push", server.path)
    tip = node(demo)
    assert "5 ran" in server("luigi-run").stdout
    restored = moved(server, str(tmp_path / "restored"), copy=True)
    shutil.rmtree(server.path)
    assert_all_reused(restored, tip)


def downgrade(repo):
    """Rewrite the store as schema 1 wrote it: every output path absolute."""
    root = os.path.join(repo.state, "outputs")
    db = sqlite3.connect(os.path.join(repo.state, "lineage.db"))
    with db:
        db.execute("UPDATE outputs SET path = ? || '/' || path", (root,))
        for rowid, outputs in db.execute("SELECT rowid, outputs FROM inputs").fetchall():
            paths = [os.path.join(root, p) for p in json.loads(outputs)]
            db.execute("UPDATE inputs SET outputs = ? WHERE rowid = ?",
                       (json.dumps(paths), rowid))
        db.execute("UPDATE meta SET value = '1' WHERE name = 'schema'")
        db.execute("ALTER TABLE run_tasks DROP COLUMN status")
    paths = [p for (p,) in db.execute("SELECT path FROM outputs")]
    db.close()
    assert paths and all(p.startswith(root + os.sep) for p in paths)


def store_rows(repo):
    db = sqlite3.connect(os.path.join(repo.state, "lineage.db"))
    try:
        schema = db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()[0]
        paths = [p for (p,) in db.execute("SELECT path FROM outputs ORDER BY rowid")]
        inputs = [json.loads(o) for (o,) in db.execute("SELECT outputs FROM inputs")]
        return schema, paths, inputs
    finally:
        db.close()


def test_an_old_store_is_migrated_in_place_even_after_a_move(demo, tmp_path):
    rev = node(demo)
    demo("luigi-run")
    downgrade(demo)
    repo = moved(demo, str(tmp_path / "moved"))
    assert_all_reused(repo, rev)
    schema, paths, inputs = store_rows(repo)
    assert schema == "2"
    assert all(p.startswith(rev + "/") for p in paths)
    assert all(p.startswith(rev + "/") for i in inputs for p in i)
    # opening it again changes nothing
    assert_all_reused(repo, rev)
    assert store_rows(repo) == (schema, paths, inputs)
    report = os.path.join(repo.state, "outputs", rev, "reports", "sales-report.csv")
    assert repo.json("luigi-lineage", "--output", report)[0]["key"] == "SalesReport()"


SCHEMA_1 = """
CREATE TABLE meta(name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE runs(
    id TEXT PRIMARY KEY, rev TEXT NOT NULL, started REAL, ended REAL,
    user TEXT, trigger TEXT, status TEXT, scheduler TEXT, summary TEXT);
CREATE TABLE run_tasks(
    run_id TEXT NOT NULL, key TEXT NOT NULL, family TEXT, task_id TEXT,
    changeset TEXT, base TEXT, affected INTEGER, reasons TEXT, outcome TEXT,
    seconds REAL, PRIMARY KEY(run_id, key));
CREATE TABLE builds(
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, task_id TEXT NOT NULL,
    key TEXT NOT NULL, family TEXT, params TEXT, changeset TEXT NOT NULL, base TEXT,
    reasons TEXT, status TEXT NOT NULL, error TEXT, traceback TEXT,
    started REAL, ended REAL, user TEXT, trigger TEXT, extra TEXT);
CREATE TABLE outputs(build_id INTEGER NOT NULL, path TEXT NOT NULL, size INTEGER, sha256 TEXT);
CREATE TABLE inputs(
    build_id INTEGER NOT NULL, task_id TEXT, key TEXT, changeset TEXT, outputs TEXT);
INSERT INTO meta(name, value) VALUES ('schema', '1');
"""


def test_an_old_store_keeps_working_and_keeps_paths_it_cannot_place(tmp_path):
    """A schema 1 store: a stamped output recorded under where the repository used
    to be, one under the output root, one outside any output root (a plain Luigi
    task writing where it likes)."""
    cs = "ab" * 20
    state = tmp_path / "repo" / ".hg" / "luigi"
    state.mkdir(parents=True)
    root = str(state / "outputs")
    path = str(state / "lineage.db")
    old = "/srv/old/place/.hg/luigi/outputs/%s/out/a.txt" % cs
    outside = "/var/data/legacy.txt"
    inside = os.path.join(root, "plain", "x")
    db = sqlite3.connect(path)
    with db:
        db.executescript(SCHEMA_1)
        db.execute("INSERT INTO builds(id, run_id, task_id, key, family, params, changeset,"
                   " status, ended) VALUES (1, 'r1', 'T_1', 'T()', 'T', '{}', ?, 'success', 1)",
                   (cs,))
        db.executemany("INSERT INTO outputs(build_id, path) VALUES (1, ?)",
                       [(old,), (outside,), (inside,)])
        db.execute("INSERT INTO inputs(build_id, key, changeset, outputs) VALUES (1, 'U()', ?, ?)",
                   (cs, json.dumps([old, outside])))
    db.close()

    moved_old = os.path.join(root, cs, "out", "a.txt")
    store = lineage.open_store(path, root)
    try:
        got = sorted(o["path"] for o in store.outputs(1))
        assert got == sorted([moved_old, outside, inside])
        assert store.inputs(1)[0]["outputs"] == [moved_old, outside]
        assert [b["id"] for b in store.builds_producing(outside)] == [1]
        assert [b["id"] for b in store.builds_producing(moved_old)] == [1]
        assert sorted(next(lineage.Reuse(store, None)("T()"))["outputs"]) == got
        # and it takes new runs, with their plan's status
        store.begin_run("r2", cs, "alice", "manual", "local", [
            {"key": "T()", "family": "T", "changeset": cs, "affected": False,
             "status": "unaffected"}])
        assert store.run_tasks("r2")[0]["status"] == "unaffected"
    finally:
        store.close()
    schema, paths, _inputs = store_rows(Repo(None, str(tmp_path / "repo")))
    assert schema == "2"
    assert sorted(paths) == sorted(["%s/out/a.txt" % cs, outside, "plain/x"])


def test_what_is_built_stays_built(demo):
    """Builds at newer revisions do not push out the build at the planned one."""
    first = node(demo)
    demo("luigi-run")
    for n in range(5):  # A falls out of the 5 newest builds and of the 3 tried
        for region in REGIONS:
            demo.write("data/raw/sales-%s.csv" % region, "2026-11-1%d,Widget,%d,1.00\n"
                       % (n, n + 1), "a")
        demo.write("docs/start.md", "\nmore %d\n" % n, "a")
        demo.commit("change %d" % n)
        assert outcomes(demo)["DocsIndex()"] == "ran"
    tasks = demo.affected("-r", first)
    assert set(tasks) == TASKS
    for t in tasks.values():
        assert t["status"] == "unaffected" and t["changeset"] == first, t
    out = demo("luigi-run", "-r", first).stdout
    assert "building 0 of 5 tasks" in out and "0 ran, 5 reused" in out

    # unless its output is gone: then it is rebuilt, at that changeset
    os.unlink(os.path.join(demo.state, "outputs", first, "clean", "sales-east.csv"))
    tasks = demo.affected("-r", first)
    assert tasks["CleanSales(region=east)"]["affected"]
    assert tasks["SalesReport()"]["status"] == "upstream"
    assert tasks["CleanSales(region=north)"]["status"] == "unaffected"
    assert outcomes(demo, "-r", first) == {
        "CleanSales(region=east)": "ran", "SalesReport()": "ran",
        "CleanSales(region=north)": "reused", "CleanSales(region=south)": "reused",
        "DocsIndex()": "reused"}


EXTERNAL = '''
import luigi
from hgext_luigi import HgTask


class Landing(luigi.ExternalTask):
    """Dropped here by another system: never built by hg luigi-run."""

    def output(self):
        return luigi.LocalTarget("{landing}")


class Ingest(HgTask):
    watches = ["ingest.cfg"]

    def requires(self):
        return Landing()

    def output(self):
        return self.stamped_target("ingested.txt")

    def run(self):
        with self.input().open() as src, self.output().open("w") as out:
            out.write(src.read())
'''


def test_lineage_shows_external_tasks_as_external(empty_repo, tmp_path):
    repo = empty_repo
    landing = tmp_path / "landing.txt"
    landing.write_text("dropped\n")
    repo.write("pipelines/__init__.py", EXTERNAL.replace("{landing}", str(landing)))
    repo.write("ingest.cfg", "x\n")
    rev = repo.commit("ingest")
    assert outcomes(repo)["Ingest()"] == "ran"

    text = repo("luigi-lineage").stdout
    assert "missing" not in text
    line = [ln for ln in text.splitlines() if ln.startswith("Landing()")][0]
    assert line.split() == ["Landing()", "-", "(external)", "external"]
    rows = {r["key"]: r for r in repo.json("luigi-lineage")}
    assert rows["Landing()"]["status"] == "external"
    assert rows["Landing()"]["reused"] is False and rows["Landing()"]["changeset"] is None
    assert rows["Ingest()"]["status"] == "success" and rows["Ingest()"]["changeset"] == rev
    assert rows["Ingest()"]["task"].startswith("Ingest_")
    assert all("task" in r for r in rows.values())

    # a second run reuses Ingest: its row still names its Luigi task
    assert outcomes(repo)["Ingest()"] == "reused"
    rows = {r["key"]: r for r in repo.json("luigi-lineage")}
    assert rows["Ingest()"]["task"].startswith("Ingest_") and rows["Ingest()"]["reused"] is False
    assert rows["Landing()"]["status"] == "external"
