"""What users read: each task once, -q, -v, -T json, headers, long errors over HTTP,
and non-ASCII names through every command."""

import json

from conftest import Repo, make_server_repo, seeded_clone
from test_errors import FLAKY, ODD

OUTCOMES = {"ran", "reused", "failed", "not run"}


def test_quiet_prints_the_summary_alone(demo):
    out = demo("luigi-run", "-q").stdout
    assert out.splitlines() == [out.strip()]
    assert out.startswith("5 ran, 0 reused, 0 failed, 0 not run in ")


def test_each_task_line_once(demo):
    out = demo("luigi-run", "-v").stdout
    for key in ("SalesReport()", "CleanSales(region=east)", "DocsIndex()"):
        rows = [ln for ln in out.splitlines() if key in ln and not ln.startswith("  ")]
        assert len(rows) == 1, out


def test_verbose_shows_every_reason(demo):
    demo("luigi-run")
    demo.write("data/raw/sales-north.csv", "2026-11-22,Gadget,2,9.00\n", "a")
    demo.write("pipelines/common.py", "# touched\n", "a")
    demo.commit("data and code")
    short = demo("luigi-affected").stdout
    assert "(+" in short and "more)" in short
    full = demo("luigi-affected", "-v").stdout
    assert "more)" not in full
    line = [ln for ln in full.splitlines() if ln.startswith("CleanSales(region=north)")][0]
    assert "pipeline code pipelines/common.py modified" in line
    assert "data/raw/sales-north.csv modified" in line


def test_json_holds_only_json_and_every_outcome_is_known(demo):
    proc = demo("luigi-run", "-v", "-T", "json")
    rows = json.loads(proc.stdout)
    assert {r["outcome"] for r in rows} <= OUTCOMES
    assert all(r["task"] for r in rows)
    assert "building 5 of 5 tasks" in proc.stderr
    again = json.loads(demo("luigi-run", "-v", "-T", "json").stdout)
    assert {r["outcome"] for r in again} == {"reused"}
    # a reused task carries the id of the build it reuses
    assert sorted(r["task"] for r in again) == sorted(r["task"] for r in rows)
    plan = json.loads(demo("luigi-affected", "-v", "-T", "json").stdout)
    assert len(plan) == 5


def test_queue_has_a_header(hg, tmp_path):
    server = make_server_repo(hg, str(tmp_path / "server"), "on-push = queue\n")
    clone = seeded_clone(hg, server, str(tmp_path / "alice"))
    clone("push", server.path)
    lines = server("luigi-queue").stdout.splitlines()
    assert lines[0].split() == ["ID", "STATE", "HEAD", "BRANCH", "PUSHER", "TIME", "TRIES"]
    assert lines[1].split()[:2] == ["1", "pending"]
    out = server("luigi-worker", "--once").stdout
    assert out.count("SalesReport()") == 1


def test_a_long_gate_error_reaches_an_http_pusher_whole(hg, tmp_path, serve):
    server = make_server_repo(hg, str(tmp_path / "server"), "gate = true\n")
    served = serve(server)
    hg("clone", "-q", served.url, str(tmp_path / "carol"))
    clone = Repo(hg, str(tmp_path / "carol"))
    words = " ".join("word%05d" % i for i in range(6000))  # ~60 kB
    clone.write("pipelines/__init__.py", "raise ValueError(%r + ' THE-END')\n" % words)
    clone.commit("a very long error")
    proc = clone("push", served.url, check=False)
    shown = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "stream ended unexpectedly" not in shown
    assert "abort: push failed on remote" in shown or "luigi gate rejected" in shown
    assert "word05999 THE-END" in shown
    assert shown.count("word00001") == 1  # once, not twice
    assert server("log", "-T", "x").stdout == ""


# the Copy/All pipeline of the odd-names test, with a non-ASCII name
UNICODE = ODD + "\nNAMES = ['zürich.csv', 'plain.csv']\n"


def test_non_ascii_names_round_trip(empty_repo):
    repo = empty_repo
    repo.write("pipelines/__init__.py", UNICODE)
    repo.write("data/zürich.csv", "Grüezi\n")
    repo.write("data/plain.csv", "hello\n")
    rev = repo.commit("ünïcode")
    key = "Copy(name=zürich.csv)"
    assert key in repo.affected()
    assert key in repo("luigi-affected").stdout
    rows = {r["key"]: r for r in repo.json("luigi-run", "--task", key)}
    assert rows[key]["outcome"] == "ran" and "All()" not in rows
    assert key in repo("luigi-run", "--task", key).stdout
    lineage = {r["key"]: r for r in repo.json("luigi-lineage")}
    with open(lineage[key]["outputs"][0]["path"], encoding="utf-8") as f:
        assert f.read() == "Grüezi\n"
    assert "All()" not in lineage
    assert [b["key"] for b in repo.json("luigi-lineage", "--task", key)] == [key]
    assert key in repo("luigi-lineage", "--output", lineage[key]["outputs"][0]["path"]).stdout
    repo("luigi-run")
    repo.write("data/zürich.csv", "Salü\n")
    repo.commit("new greeting")
    plan = repo.affected()
    assert plan[key]["reasons"] == ["data/zürich.csv modified since %s" % rev[:12]]
    assert not plan["Copy(name=plain.csv)"]["affected"]




def test_queue_entry_error_separates_failed_from_not_run(hg, tmp_path):
    server = make_server_repo(hg, str(tmp_path / "server"), "on-push = queue\n")
    hg("clone", "-q", server.path, str(tmp_path / "dave"))
    clone = Repo(hg, str(tmp_path / "dave"))
    switch = tmp_path / "fail-now"
    switch.write_text("")
    clone.write("pipelines/__init__.py", FLAKY.format(switch=str(switch)))
    clone.commit("failing extract")
    clone("push", server.path)
    server("luigi-worker", "--once", check=False)
    [entry] = server.json("luigi-queue")
    assert entry["state"] == "failed"
    assert entry["error"] == "failed: Extract(); not run because of them: Load()"


def test_pushed_data_cannot_drive_the_terminal(empty_repo):
    repo = empty_repo
    repo.write("pipelines/__init__.py", '''import luigi
from hgext_luigi import HgTask


class Title(HgTask):
    name = luigi.Parameter(default="a\\x1b]0;OWNED\\x07\\x1b[2J\\rfake")

    def output(self):
        return self.stamped_target("t.txt")

    def run(self):
        raise ValueError("\\x1b[31mred\\r")
''')
    repo.commit("escape sequences")
    for args in (("luigi-affected",), ("luigi-run",), ("luigi-lineage",)):
        proc = repo(*args, check=False)
        shown = proc.stdout + proc.stderr
        assert "\x1b" not in shown and "\r" not in shown and "\x07" not in shown
    assert "\\x1b]0;OWNED" in repo("luigi-affected").stdout
