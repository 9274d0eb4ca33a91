"""hg luigi-affected on real repositories: what a user sees and the JSON fields."""

import re

REGIONS = ("north", "south", "east")
CLEAN = ["CleanSales(region=%s)" % r for r in REGIONS]


def test_fresh_repository_json_fields(demo):
    node = demo("log", "-r", ".", "-T", "{node}").stdout
    tasks = demo.json("luigi-affected")
    assert {t["key"] for t in tasks} == set(CLEAN) | {"SalesReport()", "DocsIndex()"}
    for t in tasks:
        assert set(t) >= {"task", "family", "affected", "changeset", "base", "reasons"}
        assert t["affected"] is True
        assert t["changeset"] == node
        assert t["base"] is None
        assert t["reasons"][0] == "never built"
        assert t["task"].startswith(t["family"] + "_")  # a Luigi task id
    report = {t["key"]: t for t in tasks}["SalesReport()"]
    assert report["family"] == "SalesReport"
    assert set(report["reasons"][1:]) == {"upstream %s affected" % c for c in CLEAN}


def test_text_table_says_why(demo):
    out = demo("luigi-affected").stdout
    assert out.splitlines()[0].split() == ["TASK", "STATUS", "STAMP", "WHY"]
    assert re.search(r"CleanSales\(region=north\)\s+affected\s+[0-9a-f]{12}\s+never built", out)
    assert "5 of 5 tasks affected" in out


def test_after_a_run_nothing_is_affected_and_stamps_are_the_build(demo):
    base = demo("log", "-r", ".", "-T", "{node}").stdout
    demo("luigi-run")
    tasks = demo.affected()
    assert not any(t["affected"] for t in tasks.values())
    assert all(t["changeset"] == base and t["base"] == base for t in tasks.values())


def test_one_file_changed_affects_its_task_and_downstream(demo):
    base = demo("log", "-r", ".", "-T", "{node}").stdout
    demo("luigi-run")
    demo.write("data/raw/sales-north.csv", "2026-11-09,Widget,1,9.99\n", "a")
    rev = demo.commit("north sales")
    tasks = demo.affected()
    north = tasks["CleanSales(region=north)"]
    assert north["affected"] and north["changeset"] == rev and north["base"] == base
    assert north["reasons"] == ["data/raw/sales-north.csv modified since %s" % base[:12]]
    assert tasks["SalesReport()"]["reasons"] == ["upstream CleanSales(region=north) affected"]
    for key in ("CleanSales(region=south)", "CleanSales(region=east)", "DocsIndex()"):
        assert not tasks[key]["affected"] and tasks[key]["changeset"] == base


def test_several_changesets_since_the_build(demo):
    base = demo("log", "-r", ".", "-T", "{node}").stdout
    demo("luigi-run")
    demo.write("data/raw/sales-north.csv", "2026-11-09,Widget,1,9.99\n", "a")
    demo.commit("north")
    demo.write("data/raw/sales-south.csv", "2026-11-09,Widget,1,9.99\n", "a")
    demo.commit("south")
    tasks = demo.affected()
    assert tasks["CleanSales(region=north)"]["affected"]
    assert tasks["CleanSales(region=south)"]["affected"]
    assert tasks["CleanSales(region=south)"]["base"] == base
    assert not tasks["CleanSales(region=east)"]["affected"]


def test_merge_of_two_branches(demo):
    demo("luigi-run")
    demo.write("data/raw/sales-north.csv", "2026-11-09,Widget,1,9.99\n", "a")
    north = demo.commit("north on one head")
    demo("update", "-r", "%s^" % north)
    demo.write("docs/extra.md", "# Extra\n")
    demo.commit("docs on another head")
    demo("merge", "-r", north)
    demo.commit("merge")
    tasks = demo.affected()
    assert tasks["CleanSales(region=north)"]["affected"]
    assert tasks["DocsIndex()"]["affected"]
    assert tasks["DocsIndex()"]["reasons"][0].startswith("docs/extra.md added since")
    assert not tasks["CleanSales(region=south)"]["affected"]


def test_rename_counts_both_names_and_deletion_counts(demo):
    demo("luigi-run")
    demo("mv", "docs/start.md", "docs/getting-started.md")
    demo.commit("rename a page")
    reasons = demo.affected()["DocsIndex()"]["reasons"]
    assert any(r.startswith("docs/getting-started.md added") for r in reasons)
    assert any(r.startswith("docs/start.md removed") for r in reasons)
    demo("rm", "docs/sources.md")
    demo.commit("delete a page")
    reasons = demo.affected()["DocsIndex()"]["reasons"]
    assert any(r.startswith("docs/sources.md removed") for r in reasons)


def test_branch_switch_reuses_the_build_that_matches(demo):
    first = demo("log", "-r", ".", "-T", "{node}").stdout
    demo("luigi-run")
    demo("branch", "feature")
    demo.write("data/raw/sales-north.csv", "2026-11-09,Widget,1,9.99\n", "a")
    feature = demo.commit("feature work")
    demo("luigi-run")
    # back on default: the content is that of the first build again
    tasks = demo.affected("-r", "default")
    north = tasks["CleanSales(region=north)"]
    assert not north["affected"] and north["changeset"] == first
    assert demo.affected("-r", feature)["CleanSales(region=north)"]["changeset"] == feature


def test_pipeline_code_change_affects_tasks_using_it(demo):
    demo("luigi-run")
    demo.write("pipelines/common.py", "\n# a comment\n", "a")
    demo.commit("touch shared helpers")
    tasks = demo.affected()
    assert tasks["CleanSales(region=north)"]["reasons"][0].startswith(
        "pipeline code pipelines/common.py modified")
    assert tasks["SalesReport()"]["affected"]
    assert not tasks["DocsIndex()"]["affected"]
    demo("luigi-run")
    demo.write("pipelines/docs.py", "\n# a comment\n", "a")
    demo.commit("touch docs task")
    tasks = demo.affected()
    assert tasks["DocsIndex()"]["affected"]
    assert not tasks["CleanSales(region=north)"]["affected"]


def test_task_option_limits_the_plan(demo):
    tasks = demo.json("luigi-affected", "--task", "CleanSales")
    assert sorted(t["key"] for t in tasks) == sorted(CLEAN)
    r = demo("luigi-affected", "--task", "Nope", check=False)
    assert r.returncode != 0
    assert "abort: unknown task: Nope" in r.stderr
    assert "CleanSales" in r.stderr  # the hint lists the families


def test_server_repository_without_working_directory_plans_tip(demo, hg, tmp_path):
    server = str(tmp_path / "server")
    hg("clone", "-U", demo.path, server)
    tip = hg("log", "-r", "tip", "-T", "{node}", cwd=server).stdout
    tasks = hg.json("luigi-affected", cwd=server)
    assert {t["changeset"] for t in tasks} == {tip}


def test_after_a_large_unrelated_commit_a_run_moves_the_comparison_forward(demo):
    """A run that finds a task unaffected records where it looked: the next plan
    compares from there, the stamp stays the build's."""
    base = demo("log", "-r", ".", "-T", "{node}").stdout
    demo("luigi-run")
    for i in range(50):
        demo.write("vendor/lib%02d.txt" % i, "v%d\n" % i)
    checked = demo.commit("vendored files no task watches")
    assert "0 ran, 5 reused" in demo("luigi-run").stdout
    demo.write("data/raw/sales-north.csv", "2026-11-09,Widget,1,9.99\n", "a")
    demo.commit("north sales")
    tasks = demo.affected()
    north = tasks["CleanSales(region=north)"]
    assert north["base"] == base  # the build it is compared with stays the same
    assert north["reasons"] == ["data/raw/sales-north.csv modified since %s" % checked[:12]]
    for key in ("CleanSales(region=south)", "DocsIndex()"):
        assert not tasks[key]["affected"] and tasks[key]["changeset"] == base
        assert tasks[key]["reasons"] == ["nothing it depends on changed since %s" % base[:12]]


PATTERNS = ["data/x/**", "data/x", "path:data/x", "data/*.csv", "data/x/**/*.csv",
            "rootfilesin:data", "re:^data/x.*", "relglob:*.csv", "glob:data/x/**",
            "data/{x,y}/a", "data/x/", "./data/x", "data/ü/**", "*.csv", "**/*.csv"]
PATHS = ["data/x", "data/x/a", "data/x/a/b.csv", "data/xy", "data/a.csv", "data",
         "data/y/a", "data/ü/f", "top.csv", "other/x.csv"]


def test_the_watch_index_agrees_with_mercurials_matcher():
    """Planning decides plain paths and DIR/** without a matcher, and skips tasks
    whose patterns are rooted elsewhere: both must read patterns as Mercurial does."""
    from mercurial import match as matchmod, pathutil

    from hgext_luigi.core import affected

    auditor = pathutil.pathauditor(b"/repo", realfs=False, cached=True)
    for pattern in PATTERNS:
        m = matchmod.match(b"/repo", b"", [pattern.encode("utf-8")], default=b"glob",
                           auditor=auditor)
        index = affected.WatchIndex({"T()": affected.Node("T()", "T", [], [pattern])})
        for path in PATHS:
            hg_says = bool(m(path.encode("utf-8")))
            ours = index.watchers(path).get("T()", False)
            if ours is None:  # the matcher decides
                continue
            assert ours == hg_says, (pattern, path, hg_says)
