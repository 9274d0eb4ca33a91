"""The affected-set logic alone: plain Python, no Mercurial, no Luigi."""

import fnmatch
import sys

import pytest

from hgext_luigi.core import affected

REV = "b" * 40
BASE = "a" * 40
OLDER = "c" * 40


def graph():
    return {
        "Clean(n)": affected.Node("Clean(n)", "Clean", [], ["raw/n.csv"], ["p/clean.py"]),
        "Clean(s)": affected.Node("Clean(s)", "Clean", [], ["raw/s.csv"], ["p/clean.py"]),
        "Report()": affected.Node("Report()", "Report", ["Clean(n)", "Clean(s)"], ["report.cfg"],
                              ["p/report.py"]),
        "Docs()": affected.Node("Docs()", "Docs", [], ["docs/**"], ["p/docs.py"]),
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
    return {d.key: d for d in affected.classify(nodes, ROOTS, REV, history, changes,
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

    out = affected.classify(nodes, ROOTS, REV, hist, lambda b: {}, matches(nodes),
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
    keys = [d.key for d in affected.classify(graph(), ROOTS, REV, lambda k: [], lambda b: {},
                                         lambda *a: False)]
    assert keys.index("Clean(n)") < keys.index("Report()")


def test_cycle_is_named():
    nodes = {"A()": affected.Node("A()", "A", ["B()"]), "B()": affected.Node("B()", "B", ["A()"])}
    with pytest.raises(affected.PlanError) as e:
        affected.toposort(nodes, ["A()"])
    assert "A() -> B() -> A()" in str(e.value)


def test_select_by_family_and_key():
    nodes = graph()
    assert affected.select(nodes, ["Clean"]) == ["Clean(n)", "Clean(s)"]
    assert affected.select(nodes, ["Report()"]) == ["Report()"]
    with pytest.raises(affected.PlanError) as e:
        affected.select(nodes, ["Nope"])
    assert "Clean" in e.value.hint


def test_plan_module_imports_neither_mercurial_nor_luigi():
    import subprocess

    code = ("import sys, hgext_luigi.core.affected, hgext_luigi.core.lineage; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('mercurial', 'luigi')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- scale: which tasks a path can concern, and how far back to compare ----------

@pytest.mark.parametrize("pattern, prefix", [
    ("data/g03/t00003/**", "data/g03/t00003"),
    ("data/*.csv", "data"),
    ("raw/n.csv", "raw/n.csv"),
    ("glob:docs/**/*.md", "docs"),
    ("path:data/x/", "data/x"),
    ("rootfilesin:conf", "conf"),
    ("**/*.csv", ""),          # any directory
    ("*.cfg", ""),             # files at the top
    ("re:^data/.*", ""),       # kinds that match anywhere
    ("relglob:*.csv", ""),
    ("set:added()", ""),
    ("data/{a,b}/x", "data"),
    ("./data/../conf/x", "conf/x"),
    ("../outside/**", ""),     # never narrower than Mercurial's own reading
    ("/abs/path", ""),
    ("unknownkind:x/y", "unknownkind:x/y"),  # not a kind: a glob of that name
])
def test_watch_prefix(pattern, prefix):
    assert affected.watch_prefix(pattern) == prefix


def test_watch_index_asks_only_tasks_rooted_above_a_path():
    nodes = graph()
    nodes["Any()"] = affected.Node("Any()", "Any", [], ["re:.*\\.csv$"], ["p/any.py"])
    index = affected.WatchIndex(nodes)
    assert set(index.watchers("raw/n.csv")) == {"Clean(n)", "Any()"}
    assert set(index.watchers("docs/a/b.md")) == {"Docs()", "Any()"}
    assert set(index.watchers("vendor/x.txt")) == {"Any()"}
    assert list(index.code_users("p/clean.py")) == ["Clean(n)", "Clean(s)"]


def test_a_large_unwatched_change_asks_no_matcher():
    nodes = graph()
    asked = []

    def counting(key, path, kind=None, base=None):
        asked.append(path)
        return matches(nodes)(key, path, kind, base)

    changed = {"vendor/%04d.txt" % i: "added" for i in range(5000)}
    changed["raw/n.csv"] = "modified"
    out = {d.key: d for d in affected.classify(nodes, ROOTS, REV, built_at(BASE),
                                           lambda b: changed, counting)}
    assert asked == []  # plain paths and dir/** decide alone, as Mercurial would
    assert out["Clean(n)"].affected and not out["Docs()"].affected


@pytest.mark.parametrize("pattern, form", [
    ("data/x/**", "under"), ("raw/n.csv", "exact"), ("path:data/x", "under"),
    ("data/*.csv", None), ("data/x/**/*.csv", None), ("rootfilesin:data", None),
    ("re:data/.*", None), ("data//x/**", None), ("./data/x", None), ("data/x/", None),
])
def test_watch_rule_decides_alone_only_what_mercurial_would(pattern, form):
    assert affected.watch_rule(pattern)[1] == form


def test_watchers_follow_mercurials_reading_of_simple_patterns():
    nodes = {
        "T()": affected.Node("T()", "T", [], ["data/x/**"]),
        "P()": affected.Node("P()", "P", [], ["data/x"]),
        "G()": affected.Node("G()", "G", [], ["data/*.csv"]),
    }
    index = affected.WatchIndex(nodes)
    assert index.watchers("data/x") == {"T()": True, "P()": True, "G()": None}
    assert index.watchers("data/x/a/b.csv") == {"T()": True, "G()": None}
    assert index.watchers("data/xy") == {"G()": None}
    assert index.watchers("other") == {}


def test_a_check_moves_the_comparison_forward():
    """A run at CHECKED found Docs() unaffected since its build at OLDER: the
    next plan compares from CHECKED, so what changed between OLDER and CHECKED
    (already found irrelevant) is not looked at again; the stamp stays OLDER."""
    nodes = graph()
    checked = "d" * 40
    asked = []

    def hist(key):
        build = {"changeset": OLDER, "outputs": [], "inputs": {}}
        return [dict(build, since=checked)] if key == "Docs()" else [build]

    def changes(base):
        asked.append(base)
        return {"docs/new.md": "added"} if base == checked else {}

    out = run(nodes, hist, changes)
    assert out["Docs()"].affected and out["Docs()"].base == OLDER
    assert out["Docs()"].reasons == ["docs/new.md added since %s" % checked[:12]]
    assert sorted(asked) == sorted([OLDER, checked])
    assert not out["Clean(n)"].affected and out["Clean(n)"].changeset == OLDER


def test_a_check_at_an_unknown_revision_falls_back_to_the_build():
    nodes = graph()

    def hist(key):
        return [{"changeset": BASE, "outputs": [], "inputs": {}, "since": "e" * 40}]

    out = run(nodes, hist, lambda b: None if b == "e" * 40 else {"raw/s.csv": "modified"})
    assert out["Clean(s)"].reasons == ["raw/s.csv modified since %s" % BASE[:12]]
    assert not out["Clean(n)"].affected


def test_history_is_read_only_as_far_as_needed():
    nodes = graph()
    read = []

    def hist(key):
        for cs in (BASE, OLDER, "f" * 40):
            read.append((key, cs))
            yield {"changeset": cs, "outputs": [], "inputs": {}}

    run(nodes, hist, lambda b: {})
    assert all(cs == BASE for _, cs in read)  # the first build was reusable


def test_node_digest_follows_watches_and_code():
    a = affected.Node("A()", "A", [], ["x/**"], ["p/a.py"])
    assert affected.node_digest(a) == affected.node_digest(affected.Node("A()", "A", ["B()"], ["x/**"],
                                                             ["p/a.py"]))
    assert affected.node_digest(a) != affected.node_digest(affected.Node("A()", "A", [], ["x/**", "y"],
                                                             ["p/a.py"]))
