"""The affected-set logic alone: plain Python, no Mercurial, no Luigi."""

import fnmatch
import sys

import pytest

from hgext_luigi import plan

REV = "b" * 40
BASE = "a" * 40
OLDER = "c" * 40


def graph():
    return {
        "Clean(n)": plan.Node("Clean(n)", "Clean", [], ["raw/n.csv"], ["p/clean.py"]),
        "Clean(s)": plan.Node("Clean(s)", "Clean", [], ["raw/s.csv"], ["p/clean.py"]),
        "Report()": plan.Node("Report()", "Report", ["Clean(n)", "Clean(s)"], ["report.cfg"],
                              ["p/report.py"]),
        "Docs()": plan.Node("Docs()", "Docs", [], ["docs/**"], ["p/docs.py"]),
    }


ROOTS = ["Report()", "Docs()"]


def matches(nodes):
    def m(key, path, kind=None, base=None):
        return any(fnmatch.fnmatch(path, p.replace("**", "*")) for p in nodes[key].watches)
    return m


def built_at(changeset, inputs=None):
    return lambda key: [{"changeset": changeset, "outputs": [],
                         "inputs": (inputs or {}).get(key, {})}]


def run(nodes, history, changes, **kw):
    return {d.key: d for d in plan.classify(nodes, ROOTS, REV, history, changes,
                                            matches(nodes), **kw)}


def test_never_built_means_everything_affected():
    nodes = graph()
    out = run(nodes, lambda k: [], lambda b: {})
    assert all(d.affected and d.changeset == REV for d in out.values())
    assert out["Clean(n)"].reasons == ["never built"]
    assert out["Report()"].base is None


def test_a_data_change_affects_its_task_and_downstream_only():
    nodes = graph()
    out = run(nodes, built_at(BASE), lambda b: {"raw/n.csv": "modified"})
    assert out["Clean(n)"].affected and out["Clean(n)"].direct
    assert out["Clean(n)"].reasons == ["raw/n.csv modified since %s" % BASE[:12]]
    assert out["Report()"].affected and not out["Report()"].direct
    assert out["Report()"].reasons == ["upstream Clean(n) affected"]
    assert out["Report()"].changeset == REV and out["Report()"].base == BASE
    for key in ("Clean(s)", "Docs()"):
        assert not out[key].affected
        assert out[key].changeset == BASE  # the stamp of the reused build


def test_code_change_affects_tasks_defined_there():
    nodes = graph()
    out = run(nodes, built_at(BASE), lambda b: {"p/clean.py": "modified"})
    assert out["Clean(n)"].reasons == ["pipeline code p/clean.py modified since %s" % BASE[:12]]
    assert out["Clean(s)"].affected and out["Report()"].affected
    assert not out["Docs()"].affected


def test_deleted_and_renamed_files_count_under_both_names():
    nodes = graph()
    out = run(nodes, built_at(BASE), lambda b: {"docs/old.md": "removed", "docs/new.md": "added"})
    assert out["Docs()"].reasons == ["docs/new.md added since %s" % BASE[:12],
                                     "docs/old.md removed since %s" % BASE[:12]]


def test_each_task_is_compared_with_its_own_last_success():
    nodes = graph()
    # Clean(n) last succeeded long ago (a later run failed); the others at BASE
    history = {"Clean(n)": OLDER}

    def hist(key):
        return [{"changeset": history.get(key, BASE), "outputs": [], "inputs": {}}]

    def changes(base):
        return {"raw/n.csv": "modified"} if base == OLDER else {}

    out = run(nodes, hist, changes)
    assert out["Clean(n)"].affected and out["Clean(n)"].base == OLDER
    assert not out["Clean(s)"].affected


def test_an_older_build_with_the_same_content_is_reused():
    nodes = graph()

    def hist(key):
        return [{"changeset": BASE, "outputs": [], "inputs": {}},
                {"changeset": OLDER, "outputs": [], "inputs": {}}]

    def changes(base):  # back on the branch where OLDER was built
        return {"raw/n.csv": "modified"} if base == BASE else {}

    out = run(nodes, hist, changes)
    assert not out["Clean(n)"].affected and out["Clean(n)"].changeset == OLDER


def test_upstream_rebuilt_since_downstream_build_is_detected():
    nodes = graph()
    # Report's last good build consumed Clean(n)@OLDER; Clean(n) has since been
    # rebuilt at BASE (Report failed then).
    def hist(key):
        if key == "Report()":
            return [{"changeset": OLDER, "outputs": [],
                     "inputs": {"Clean(n)": OLDER, "Clean(s)": OLDER}}]
        return [{"changeset": BASE, "outputs": [], "inputs": {}}]

    out = run(nodes, hist, lambda b: {})
    assert out["Report()"].affected
    assert any(r.startswith("upstream Clean(n) rebuilt at") for r in out["Report()"].reasons)


def test_missing_output_forces_a_rebuild():
    nodes = graph()

    def hist(key):
        return [{"changeset": BASE, "outputs": ["/gone/%s" % key], "inputs": {}}]

    out = plan.classify(nodes, ROOTS, REV, hist, lambda b: {}, matches(nodes),
                        outputs_exist=lambda p: "Docs" not in p)
    d = {x.key: x for x in out}["Docs()"]
    assert d.affected and "missing" in d.reasons[0]


def test_unknown_base_is_affected():
    nodes = graph()
    out = run(nodes, built_at(BASE), lambda b: None)
    assert out["Docs()"].reasons == ["base %s is not in this repository" % BASE[:12]]


def test_force_rebuilds_everything():
    nodes = graph()
    out = run(nodes, built_at(BASE), lambda b: {}, force=True)
    assert all(d.affected and d.changeset == REV for d in out.values())


def test_order_is_upstream_first():
    keys = [d.key for d in plan.classify(graph(), ROOTS, REV, lambda k: [], lambda b: {},
                                         lambda *a: False)]
    assert keys.index("Clean(n)") < keys.index("Report()")


def test_cycle_is_named():
    nodes = {"A()": plan.Node("A()", "A", ["B()"]), "B()": plan.Node("B()", "B", ["A()"])}
    with pytest.raises(plan.PlanError) as e:
        plan.toposort(nodes, ["A()"])
    assert "A() -> B() -> A()" in str(e.value)


def test_select_by_family_and_key():
    nodes = graph()
    assert plan.select(nodes, ["Clean"]) == ["Clean(n)", "Clean(s)"]
    assert plan.select(nodes, ["Report()"]) == ["Report()"]
    with pytest.raises(plan.PlanError) as e:
        plan.select(nodes, ["Nope"])
    assert "Clean" in e.value.hint


def test_plan_module_imports_neither_mercurial_nor_luigi():
    import subprocess

    code = ("import sys, hgext_luigi.plan, hgext_luigi.lineage; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('mercurial', 'luigi')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
