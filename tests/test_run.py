"""hg luigi-run on real repositories: exactly the affected subgraph, stamped outputs."""

import glob
import json
import os
import re

from conftest import Repo

REGIONS = ("north", "south", "east")


def node(repo, rev="."):
    return repo("log", "-r", rev, "-T", "{node}").stdout


def outcomes(out):
    """{key: outcome} from the summary lines of hg luigi-run."""
    found = {}
    for line in out.splitlines():
        m = re.match(r"(ran|reused|failed|not run|external)\s+(\S.*?\))\s", line + " ")
        if m:
            found[m.group(2)] = m.group(1)
    return found


def test_first_run_builds_everything_second_run_nothing(demo):
    rev = node(demo)
    out = demo("luigi-run").stdout
    assert "building 5 of 5 tasks at %s (local scheduler)" % rev[:12] in out
    assert set(outcomes(out).values()) == {"ran"}
    assert "5 ran, 0 reused, 0 failed, 0 not run" in out
    report = os.path.join(demo.state, "outputs", rev, "reports", "sales-report.csv")
    with open(report) as f:
        text = f.read()
    assert text.startswith("region,product,quantity,revenue,currency\n")
    assert "north,widget," in text

    again = demo("luigi-run").stdout
    assert "building 0 of 5 tasks" in again
    assert set(outcomes(again).values()) == {"reused"}
    assert "0 ran, 5 reused" in again


def test_one_changed_file_runs_only_its_task_and_downstream(demo):
    base = node(demo)
    demo("luigi-run")
    demo.write("data/raw/sales-north.csv", "2026-11-09,Widget,100,1.00\n", "a")
    rev = demo.commit("more north sales")
    out = demo("luigi-run").stdout
    got = outcomes(out)
    assert got == {"CleanSales(region=north)": "ran", "SalesReport()": "ran",
                   "CleanSales(region=south)": "reused", "CleanSales(region=east)": "reused",
                   "DocsIndex()": "reused"}
    # the new report is stamped with the new changeset and read the reused outputs
    new = os.path.join(demo.state, "outputs", rev, "reports", "sales-report.csv")
    with open(new) as f:
        assert "north,widget," in f.read()
    assert not os.path.exists(os.path.join(demo.state, "outputs", rev, "clean",
                                           "sales-south.csv"))
    lineage = {t["key"]: t for t in demo.json("luigi-lineage")}
    assert lineage["SalesReport()"]["changeset"] == rev
    inputs = {i["key"]: i["changeset"] for i in lineage["SalesReport()"]["inputs"]}
    assert inputs == {"CleanSales(region=north)": rev, "CleanSales(region=south)": base,
                      "CleanSales(region=east)": base}


def test_all_rebuilds_everything_and_task_limits_the_run(demo):
    demo("luigi-run")
    out = demo("luigi-run", "--all").stdout
    assert set(outcomes(out).values()) == {"ran"} and len(outcomes(out)) == 5

    demo.write("docs/new.md", "# New\n")
    demo.write("data/raw/sales-east.csv", "2026-11-10,Gadget,1,5.00\n", "a")
    demo.commit("docs and east")
    out = demo("luigi-run", "--task", "CleanSales(region=east)").stdout
    assert outcomes(out) == {"CleanSales(region=east)": "ran"}
    # what was left out is still affected
    left = demo.affected()
    assert left["DocsIndex()"]["affected"] and left["SalesReport()"]["affected"]
    assert not left["CleanSales(region=east)"]["affected"]

    out = demo("luigi-run", "--task", "SalesReport").stdout
    got = outcomes(out)
    assert got["SalesReport()"] == "ran" and "DocsIndex()" not in got
    assert got["CleanSales(region=east)"] == "reused"

    bad = demo("luigi-run", "--task", "NoSuchTask", check=False)
    assert bad.returncode != 0
    assert "abort: unknown task: NoSuchTask" in bad.stderr


def test_dry_run_prints_the_plan_and_runs_nothing(demo):
    out = demo("luigi-run", "--dry-run").stdout
    assert "5 of 5 tasks affected" in out
    assert not os.path.exists(os.path.join(demo.state, "outputs"))
    assert "no lineage recorded yet" in demo("luigi-lineage", check=False).stdout


def test_dirty_working_directory_is_not_built(demo):
    rev = node(demo)
    demo.write("data/raw/sales-north.csv", "2026-11-09,Uncommitted,1,1.00\n", "a")
    proc = demo("luigi-run")
    assert ("warning: the working directory has uncommitted changes; they are not built "
            "(building %s)" % rev[:12]) in proc.stderr
    clean = os.path.join(demo.state, "outputs", rev, "clean", "sales-north.csv")
    with open(clean) as f:
        assert "Uncommitted" not in f.read()


def test_several_workers_and_an_older_revision(demo):
    first = node(demo)
    demo.write("data/raw/sales-south.csv", "2026-11-09,Widget,3,3.00\n", "a")
    second = demo.commit("south")
    out = demo("luigi-run", "--workers", "2").stdout
    assert "5 ran" in out
    # building an older revision uses the pipeline and data as of that revision
    out = demo("luigi-run", "-r", first).stdout
    got = outcomes(out)
    assert got["CleanSales(region=south)"] == "ran" and got["SalesReport()"] == "ran"
    assert got["CleanSales(region=north)"] == "reused"
    old = os.path.join(demo.state, "outputs", first, "clean", "sales-south.csv")
    new = os.path.join(demo.state, "outputs", second, "clean", "sales-south.csv")
    with open(old) as f1, open(new) as f2:
        assert len(f2.read().splitlines()) == len(f1.read().splitlines()) + 1


def test_pipeline_code_runs_as_of_the_revision(demo):
    """Editing pipeline code in the working directory changes nothing until it is
    committed; committing it affects the tasks of that module only."""
    demo("luigi-run")
    path = os.path.join(demo.path, "pipelines", "docs.py")
    with open(path) as f:
        code = f.read()
    demo.write("pipelines/docs.py", code.replace('"%s\\t%s\\t%d words"', '"%s|%s|%d"'))
    assert not any(t["affected"] for t in demo.affected().values())
    rev = demo.commit("docs index format")
    tasks = demo.affected()
    assert tasks["DocsIndex()"]["reasons"] == ["pipeline code pipelines/docs.py modified since %s"
                                               % tasks["DocsIndex()"]["base"][:12]]
    assert [k for k, t in tasks.items() if t["affected"]] == ["DocsIndex()"]
    demo("luigi-run")
    with open(os.path.join(demo.state, "outputs", rev, "docs", "index.txt")) as f:
        assert "|" in f.read()


def test_server_repository_without_working_directory(hg, demo, tmp_path):
    server = str(tmp_path / "server")
    hg("clone", "-U", demo.path, server)
    srv = Repo(hg, server)
    tip = node(demo)
    out = srv("luigi-run").stdout
    assert "building 5 of 5 tasks at %s" % tip[:12] in out
    assert os.path.exists(os.path.join(server, ".hg", "luigi", "outputs", tip, "reports",
                                       "sales-report.csv"))
    assert not os.path.exists(os.path.join(server, "pipelines"))
    assert [t["changeset"] for t in srv.json("luigi-lineage")] == [tip] * 5


def test_output_root_setting(demo, tmp_path):
    root = str(tmp_path / "outputs root")
    demo.config("[luigi]\noutput-root = %s\n" % root)
    rev = node(demo)
    demo("luigi-run")
    assert os.path.isfile(os.path.join(root, rev, "reports", "sales-report.csv"))
    # a deleted output makes its task affected again, and downstream with it
    os.unlink(os.path.join(root, rev, "clean", "sales-east.csv"))
    tasks = demo.affected()
    assert tasks["CleanSales(region=east)"]["affected"]
    assert any("output" in r and "missing" in r for r in tasks["CleanSales(region=east)"]["reasons"])
    assert tasks["SalesReport()"]["affected"]
    demo("luigi-run")
    assert os.path.isfile(os.path.join(root, rev, "clean", "sales-east.csv"))


DEPLOY = '''
import luigi
from hgext_luigi import HgTask


class Build(HgTask):
    watches = ["src/**"]

    def output(self):
        return self.stamped_target("build.txt")

    def run(self):
        with open(self.source_path("src/app.txt")) as src, self.output().open("w") as out:
            out.write(src.read().upper())


class Deploy(HgTask):
    """Produces no file: complete by its lineage record."""

    watches = ["deploy.cfg"]

    def requires(self):
        return Build()

    def run(self):
        with open(self.input().path) as f, open("{log}", "a") as log:
            log.write(self.changeset + " " + f.read().strip() + "\\n")
'''

PLAIN = '''
import luigi


class Legacy(luigi.Task):
    """A plain Luigi task adopted through .hgluigi, unedited."""

    def output(self):
        return luigi.LocalTarget("{out}")

    def run(self):
        with open("legacy/input.txt") as f, self.output().open("w") as out:
            out.write(f.read())
'''


def test_task_without_outputs_is_complete_by_lineage(empty_repo, tmp_path):
    repo = empty_repo
    log = str(tmp_path / "deployed.log")
    repo.write("pipelines/__init__.py", DEPLOY.replace("{log}", log))
    repo.write("src/app.txt", "hello\n")
    repo.write("deploy.cfg", "target=prod\n")
    first = repo.commit("app and deploy")
    out = repo("luigi-run").stdout
    assert outcomes(out) == {"Build()": "ran", "Deploy()": "ran"}
    assert set(outcomes(repo("luigi-run").stdout).values()) == {"reused"}
    repo.write("deploy.cfg", "target=staging\n")
    second = repo.commit("deploy elsewhere")
    assert outcomes(repo("luigi-run").stdout) == {"Build()": "reused", "Deploy()": "ran"}
    with open(log) as f:
        assert f.read().splitlines() == ["%s HELLO" % first, "%s HELLO" % second]


def test_plain_luigi_task_adopted_through_watches_file(empty_repo, tmp_path):
    repo = empty_repo
    out_file = str(tmp_path / "legacy.txt")
    repo.write("pipelines/__init__.py", PLAIN.replace("{out}", out_file))
    repo.write("legacy/input.txt", "v1\n")
    repo.write(".hgluigi", "[watches]\nLegacy = legacy/**\n")
    repo.commit("legacy task")
    tasks = repo.affected()
    assert list(tasks) == ["Legacy()"] and tasks["Legacy()"]["affected"]
    assert outcomes(repo("luigi-run").stdout) == {"Legacy()": "ran"}
    assert outcomes(repo("luigi-run").stdout) == {"Legacy()": "reused"}
    repo.write("unrelated.txt", "x\n")
    repo.commit("unrelated")
    assert not repo.affected()["Legacy()"]["affected"]
    repo.write("legacy/input.txt", "v2\n")
    rev = repo.commit("legacy input")
    tasks = repo.affected()
    assert tasks["Legacy()"]["reasons"][0].startswith("legacy/input.txt modified since")
    assert outcomes(repo("luigi-run").stdout) == {"Legacy()": "ran"}
    with open(out_file) as f:
        assert f.read() == "v2\n"
    assert repo.json("luigi-lineage")[0]["changeset"] == rev


def test_tree_materialization_is_incremental(demo):
    demo("luigi-run")
    trees = os.path.join(demo.state, "trees")
    first = node(demo)
    marker = os.path.join(trees, first, "docs", "start.md")
    ino = os.stat(marker).st_ino
    demo.write("data/raw/sales-east.csv", "2026-11-10,Gadget,1,5.00\n", "a")
    second = demo.commit("east")
    demo("luigi-run", "--config", "luigi.tree-cache=1")
    # the one cached tree was moved to the new revision, untouched files kept
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(trees, "*" * 1))
                  if os.path.isdir(p)) == [second]
    assert os.stat(os.path.join(trees, second, "docs", "start.md")).st_ino == ino
    with open(os.path.join(trees, second, "data", "raw", "sales-east.csv")) as f:
        assert "Gadget,1,5.00" in f.read()


def test_central_scheduler_shows_changeset_parameter(demo, luigid):
    import json
    import urllib.parse
    import urllib.request

    rev = node(demo)
    out = demo("luigi-run", "--scheduler", luigid).stdout
    assert "(%s scheduler)" % luigid in out and "5 ran" in out
    query = urllib.parse.quote(json.dumps({"status": "DONE"}))
    with urllib.request.urlopen(luigid + "/api/task_list?data=" + query, timeout=10) as r:
        tasks = json.load(r)["response"]
    assert len(tasks) == 5
    assert {t["params"]["changeset"] for t in tasks.values()} == {rev}
    assert {t["name"] for t in tasks.values()} == {"CleanSales", "SalesReport", "DocsIndex"}
    # the configured scheduler is used too
    demo.config("[luigi]\nscheduler = %s\n" % luigid)
    demo.write("docs/more.md", "# More\n")
    rev = demo.commit("more docs")
    out = demo("luigi-run").stdout
    assert "(%s scheduler)" % luigid in out and outcomes(out)["DocsIndex()"] == "ran"


def test_unreachable_scheduler_fails_fast(demo):
    from conftest import free_port

    url = "http://127.0.0.1:%d" % free_port()
    proc = demo("luigi-run", "--scheduler", url, check=False)
    assert proc.returncode == 255
    assert "abort: cannot reach the Luigi scheduler at %s" % url in proc.stderr
    assert "no lineage recorded yet" in demo("luigi-lineage", check=False).stdout


def test_json_summary(demo):
    rows = demo.json("luigi-run")
    assert {r["outcome"] for r in rows} == {"ran"}
    for r in rows:
        assert set(r) >= {"key", "task", "family", "changeset", "outcome", "seconds"}


BLOCKS = '''import luigi
from hgext_luigi import HgTask


class Leaf(HgTask):
    n = luigi.IntParameter()
    watches = ["data/{n}.txt"]

    def output(self):
        return self.stamped_target("leaf-%d.txt" % self.n)

    def run(self):
        if self.n == 1:
            raise ValueError("leaf 1 is broken")
        with self.output().open("w") as f:
            f.write("%d\\n" % self.n)


class Mid(HgTask):
    n = luigi.IntParameter()

    def requires(self):
        return Leaf(n=self.n)

    def output(self):
        return self.stamped_target("mid-%d.txt" % self.n)

    def run(self):
        with self.output().open("w") as f:
            f.write("mid\\n")


class Top(HgTask):
    def requires(self):
        return [Mid(n=n) for n in range(3)]

    def output(self):
        return self.stamped_target("top.txt")

    def run(self):
        with self.output().open("w") as f:
            f.write("top\\n")
'''


def test_a_run_in_blocks_builds_the_same_and_stops_what_needs_a_failure(empty_repo):
    """[luigi] block-size 1: one luigi.build per task, upstream first.  What a
    failed task's dependents see in later blocks is the failure, not a second
    attempt at the failed task."""
    repo = empty_repo
    repo.config("[luigi]\nroots = Top\nblock-size = 1\n")
    repo.write("pipelines/__init__.py", BLOCKS)
    for n in range(3):
        repo.write("data/%d.txt" % n, "%d\n" % n)
    repo.commit("three leaves, one broken")
    proc = repo("luigi-run", "-T", "json", check=False)
    assert proc.returncode == 1
    rows = {r["key"]: r for r in json.loads(proc.stdout)}
    assert {k: r["outcome"] for k, r in rows.items()} == {
        "Leaf(n=0)": "ran", "Leaf(n=1)": "failed", "Leaf(n=2)": "ran",
        "Mid(n=0)": "ran", "Mid(n=1)": "not run", "Mid(n=2)": "ran", "Top()": "not run"}
    assert rows["Mid(n=1)"]["error"] == "an upstream task failed"
    assert rows["Top()"]["error"] == "an upstream task failed"
    builds = [b for b in repo.json("luigi-lineage", "--task", "Leaf")
              if b["key"] == "Leaf(n=1)"]
    assert [b["status"] for b in builds] == ["failed"]  # tried once
    # fixed: the next run in blocks builds what is left
    repo.write("pipelines/__init__.py", BLOCKS.replace("self.n == 1", "self.n == 99"))
    repo.commit("fixed")
    out = {r["key"]: r["outcome"] for r in repo.json("luigi-run")}
    assert out["Top()"] == "ran" and out["Leaf(n=1)"] == "ran"
