"""[luigi] on-commit: plan or run on every commit, cheaply."""

import os


def test_off_by_default(demo):
    demo.write("data/raw/sales-north.csv", "2026-11-09,Widget,1,1.00\n", "a")
    proc = demo("commit", "-m", "north")
    assert "luigi" not in proc.stdout + proc.stderr


def test_plan_prints_the_affected_tasks(demo):
    demo.config("[luigi]\non-commit = plan\n")
    demo("luigi-run")
    demo.write("data/raw/sales-north.csv", "2026-11-09,Widget,1,1.00\n", "a")
    proc = demo("commit", "-m", "north")
    rev = demo("log", "-r", ".", "-T", "{node|short}").stdout
    assert proc.stdout.splitlines() == [
        "luigi: 2 of 5 tasks affected by %s: CleanSales(region=north), SalesReport()" % rev,
        "luigi: build them with hg luigi-run",
    ]
    assert not os.path.exists(os.path.join(demo.state, "outputs", demo(
        "log", "-r", ".", "-T", "{node}").stdout))
    demo("luigi-run")
    demo.write("README", "not watched\n")
    proc = demo("commit", "-A", "-m", "readme")
    assert proc.stdout.splitlines()[-1] == "luigi: no task affected by %s" % demo(
        "log", "-r", ".", "-T", "{node|short}").stdout


def test_plan_on_a_data_commit_does_not_load_the_pipeline(demo):
    demo.config("[luigi]\non-commit = plan\n")
    demo("luigi-affected")  # fills the task graph cache
    demo.write("data/raw/sales-east.csv", "2026-11-09,Widget,1,1.00\n", "a")
    proc = demo("commit", "-m", "east", "--debug")
    assert "luigi: task graph from cache" in proc.stdout
    assert "loading pipeline" not in proc.stdout


# an extension that says, as hg exits, which heavy modules the command loaded
PROBE = """
import atexit, sys

HEAVY = ("luigi", "boto3", "ansible_runner", "jwt", "openlineage")


def _said():
    loaded = sorted(m for m in HEAVY if m in sys.modules)
    sys.stderr.write("heavy modules: %s\\n" % (" ".join(loaded) or "none"))


atexit.register(_said)
"""


def test_a_commit_loads_neither_luigi_nor_boto3(demo, tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    demo.config("[luigi]\non-commit = plan\n[extensions]\nprobe = %s\n" % probe)
    demo("luigi-affected")  # the task graph is cached, as after any earlier plan
    demo.write("data/raw/sales-east.csv", "2026-11-09,Widget,1,1.00\n", "a")
    proc = demo("commit", "-m", "east")
    assert "tasks affected by" in proc.stdout
    assert "heavy modules: none" in proc.stderr
    demo.config("[luigi]\non-commit = off\n")
    demo.write("data/raw/sales-east.csv", "2026-11-10,Widget,1,1.00\n", "a")
    assert "heavy modules: none" in demo("commit", "-m", "east again").stderr


def test_run_builds_on_commit(demo):
    demo.config("[luigi]\non-commit = run\n")
    demo.write("data/raw/sales-south.csv", "2026-11-09,Widget,1,1.00\n", "a")
    proc = demo("commit", "-m", "south")
    rev = demo("log", "-r", ".", "-T", "{node}").stdout
    assert "5 ran, 0 reused, 0 failed" in proc.stdout
    rows = demo.json("luigi-lineage")
    assert {r["trigger"] for r in rows} == {"commit"}
    assert {r["changeset"] for r in rows} == {rev}


def test_a_failing_run_does_not_undo_the_commit(demo):
    demo.config("[luigi]\non-commit = run\n")
    demo.write("pipelines/docs.py", "raise RuntimeError('broken on purpose')\n")
    proc = demo("commit", "-m", "break docs", check=False)
    assert "luigi: pipelines/docs.py, line 1:" in proc.stderr
    assert "broken on purpose" in proc.stderr
    assert demo("log", "-r", ".", "-T", "{desc}").stdout == "break docs"


def test_bad_on_commit_value(demo):
    demo.config("[luigi]\non-commit = sometimes\n")
    demo.write("README", "x\n")
    proc = demo("commit", "-A", "-m", "x", check=False)
    assert "luigi: config error: luigi.on-commit: 'sometimes' is not one of off, plan, " \
        "run" in proc.stderr
    assert "commit.hgext_luigi hook failed" in proc.stderr  # loud, never silent
    assert "Traceback" not in proc.stderr
    assert demo("log", "-r", ".", "-T", "{desc}").stdout == "x"
