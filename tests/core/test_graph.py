"""core.graph: DOT text of a run and of the builds behind an output, read from a
real lineage store; SVG by Graphviz's ``dot`` when it is installed."""

import os
import re
import shutil

import dotparse
import pytest
from dotparse import NODE, unquote

from hgext_luigi.core import graph, lineage

OLD, REV = "a" * 40, "b" * 40
DOT = shutil.which("dot")
needs_dot = pytest.mark.skipif(DOT is None, reason="graphviz's dot is not installed")
# quotes, backslashes (\N is Graphviz's node name escape), a newline, markup,
# a brace, non-ASCII, control characters
HOSTILE = 'Evil(name="a\\"b", p=C:\\N\\x)\n<b>}</b>{ é\x07\x1b[31m'

EDGE = re.compile(r'^  (\w+) -> (\w+) \[label="([0-9a-f]{0,12})"\];$', re.M)


def parse(dot):
    """{key: (changeset or status, colour)}, sorted [(key, upstream key, changeset)]."""
    assert dot.startswith("digraph lineage {\n") and dot.endswith("}\n")
    names = {}
    for name, label, color in NODE.findall(dot):
        key, _, second = unquote(label).rpartition("\n")
        names[name] = (key, second, color)
    nodes = {k: (s, c) for k, s, c in names.values()}
    edges = sorted((names[a][0], names[b][0], cs) for a, b, cs in EDGE.findall(dot))
    return nodes, edges


def well_formed(dot):
    """Well formed, and no raw control character inside a string either."""
    dotparse.well_formed(dot)
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f]", dot)


@pytest.fixture
def store(tmp_path):
    """One run at REV: Source() reused from OLD, HOSTILE ran, Broken() failed
    reading it (and Gone(), never built), After() not run, Ext() external."""
    s = lineage.open_store(str(tmp_path / "lineage.db"), str(tmp_path / "outputs"))
    old = s.start_build("r0", "Source__1", "Source()", "Source", {}, OLD, None, [], "alice",
                        "manual")
    s.finish_build(old, "success", outputs=[{"path": str(tmp_path / "outputs" / OLD / "s"),
                                             "size": 1, "sha256": "1" * 64}])
    s.begin_run("run1", REV, "alice", "manual", "local", [
        dict(key="Source()", family="Source", changeset=OLD, affected=False,
             status="unaffected"),
        dict(key=HOSTILE, family="Evil", changeset=REV, affected=True, status="affected"),
        dict(key="Broken()", family="Broken", changeset=REV, affected=True,
             status="affected"),
        dict(key="After()", family="After", changeset=REV, affected=True, status="affected"),
        dict(key="Ext()", family="Ext", changeset=None, affected=False, status="external"),
    ])
    evil = s.start_build("run1", "Evil__1", HOSTILE, "Evil", {}, REV, OLD, [], "alice",
                         "manual")
    s.finish_build(evil, "success", outputs=[
        {"path": str(tmp_path / "outputs" / REV / "evil"), "size": 1, "sha256": "2" * 64}],
        inputs=[{"task_id": "Source__1", "key": "Source()", "changeset": OLD,
                 "outputs": []},
                {"task_id": "Ext__1", "key": "Ext()", "changeset": None, "outputs": []}])
    broken = s.start_build("run1", "Broken__1", "Broken()", "Broken", {}, REV, OLD, [],
                           "alice", "manual")
    s.finish_build(broken, "failed", error="boom", inputs=[
        {"task_id": "Evil__1", "key": HOSTILE, "changeset": REV, "outputs": []},
        {"task_id": "Gone__1", "key": "Gone()", "changeset": OLD, "outputs": []}])
    s.end_run("run1", "failed", {
        "Source()": ("reused", "Source__1", 0), HOSTILE: ("ran", "Evil__1", 1),
        "Broken()": ("failed", "Broken__1", 1), "After()": ("not run", None, 0),
        "Ext()": ("reused", "Ext__1", 0)})
    s.tmp = tmp_path
    yield s
    s.close()


SHOWN = HOSTILE.replace("\x07", "\\x07").replace("\x1b", "\\x1b")


def test_the_run_graph(store):
    g = graph.run_graph(store, REV)
    assert g["run"]["id"] == "run1"
    status = {t["key"]: t["status"] for t in g["tasks"] + g["extra"]}
    assert status == {"Source()": "success", HOSTILE: "success", "Broken()": "failed",
                      "After()": "missing", "Ext()": "external", "Gone()": "not planned"}
    assert [t["node"] for t in g["tasks"]] == ["t0", "t1", "t2", "t3", "t4"]
    assert graph.run_graph(store, REV.encode()) == g  # Mercurial's bytes


def test_the_run_dot_colours_labels_and_edges(store):
    dot = graph.lineage_dot(store, REV)
    well_formed(dot)
    nodes, edges = parse(dot)
    assert nodes == {
        "Source()": (OLD[:12], "lightgrey"), SHOWN: (REV[:12], "palegreen"),
        "Broken()": (REV[:12], "lightcoral"), "After()": (REV[:12], "orange"),
        "Ext()": ("external", "white"), "Gone()": (OLD[:12], "white")}
    assert edges == sorted([(SHOWN, "Source()", OLD[:12]), (SHOWN, "Ext()", ""),
                            ("Broken()", SHOWN, REV[:12]), ("Broken()", "Gone()", OLD[:12])])
    assert 'label="run run1 at bbbbbbbbbbbb: failed"' in dot


def test_node_names_never_come_from_keys(store):
    dot = graph.lineage_dot(store, REV)
    names = re.findall(r"^  (\S+) \[", dot, re.M)
    assert names[:3] == ["graph", "node", "edge"]
    assert len(names) > 3 and all(re.fullmatch(r"t\d+", n) for n in names[3:])


def test_no_run_at_a_revision(store):
    with pytest.raises(graph.NoLineage, match="no luigi run recorded at cccccccccccc"):
        graph.lineage_dot(store, "c" * 40)


def test_the_builds_behind_an_output(store):
    path = str(store.tmp / "outputs" / REV / "evil")
    g = graph.output_graph(store, path)
    assert g["path"] == path and store.build(g["root"])["key"] == HOSTILE
    dot = graph.output_dot(store, path)
    well_formed(dot)
    nodes, edges = parse(dot)
    # Ext() was read without a changeset and has no build: a dashed box
    assert nodes == {SHOWN: (REV[:12], "palegreen"), "Source()": (OLD[:12], "lightgrey"),
                     "Ext()": ("", "white")}
    assert edges == sorted([(SHOWN, "Source()", OLD[:12]), (SHOWN, "Ext()", "")])
    assert "penwidth=2" in dot and "dashed" in dot
    # candidates: the first one recorded wins
    assert graph.output_dot(store, ["/nowhere/x", path]) == dot
    with pytest.raises(graph.NoLineage, match="no recorded build produced /nowhere/x"):
        graph.output_dot(store, "/nowhere/x")
    with pytest.raises(graph.NoLineage):
        graph.output_dot(store, [])


def test_a_lineage_cycle_ends(tmp_path):
    """Lineage that claims A read B and B read A (a store written by hostile
    code): each build is drawn once and the walk ends."""
    s = lineage.open_store(str(tmp_path / "lineage.db"), str(tmp_path / "outputs"))
    try:
        for key, up in (("A()", "B()"), ("B()", "A()")):
            b = s.start_build("r", key[0] + "_1", key, key[0], {}, REV, None, [], "x", "m")
            s.finish_build(b, "success",
                           outputs=[{"path": "/o/" + key, "size": 1, "sha256": "1" * 64}],
                           inputs=[{"task_id": up[0] + "_1", "key": up, "changeset": REV,
                                    "outputs": []}])
        g = graph.output_graph(s, "/o/A()")
        assert sorted(b["key"] for b in g["builds"].values()) == ["A()", "B()"]
        assert len(g["edges"]) == 2
    finally:
        s.close()


def test_a_long_chain_needs_no_deep_recursion(tmp_path):
    s = lineage.open_store(str(tmp_path / "lineage.db"), str(tmp_path / "outputs"))
    try:
        n = 1100  # beyond Python's recursion limit
        for i in range(n):
            b = s.start_build("r", "T_%d" % i, "T(i=%d)" % i, "T", {}, REV, None, [], "x", "m")
            s.finish_build(b, "success",
                           outputs=[{"path": "/o/%d" % i, "size": 1, "sha256": "1" * 64}],
                           inputs=[{"task_id": "T_%d" % (i - 1), "key": "T(i=%d)" % (i - 1),
                                    "changeset": REV, "outputs": []}] if i else [])
        g = graph.output_graph(s, "/o/%d" % (n - 1))
        assert len(g["builds"]) == n
    finally:
        s.close()


def test_printable():  # graph.quote: tests/test_graph.py
    assert graph.printable("\x00\x7f\x9f ok\n\t") == "\\x00\\x7f\\x9f ok\n\t"


# -- rendering -----------------------------------------------------------------------------

def test_no_dot_says_what_to_do(tmp_path):
    with pytest.raises(graph.GraphError) as e:
        graph.render_svg("digraph { a }", path=str(tmp_path))  # no dot there
    assert str(e.value) == graph.NOT_INSTALLED
    with pytest.raises(graph.GraphError, match="not installed"):
        graph.render_svg("digraph { a }", dot=str(tmp_path / "nonexistent" / "dot"))
    assert graph.find_dot(path=str(tmp_path)) is None


@needs_dot
def test_the_hostile_labels_render_as_text(store):
    svg = graph.render_svg(graph.lineage_dot(store, REV)).decode("utf-8")
    assert svg.lstrip().startswith(("<?xml", "<!DOCTYPE", "<svg"))
    texts = [re.sub(r"&#(\d+);", lambda m: chr(int(m.group(1))), t)
             for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg)]
    assert 'Evil(name=&quot;a\\&quot;b&quot;, p=C:\\N\\x)' in texts
    assert "<b>" not in svg and "&lt;b&gt;}&lt;/b&gt;{ é\\x07\\x1b[31m" in texts


@needs_dot
def test_dot_failing_or_hanging_is_a_graph_error(tmp_path):
    with pytest.raises(graph.GraphError, match="graphviz's dot failed"):
        graph.render_svg("digraph { a -> }")
    slow = tmp_path / "dot"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    with pytest.raises(graph.GraphError, match="took more than 0.3s"):
        graph.render_svg("digraph { a }", dot=str(slow), timeout=0.3)
    quiet = tmp_path / "quiet"
    quiet.write_text("#!/bin/sh\ncat >/dev/null\necho not svg\n")
    quiet.chmod(0o755)
    with pytest.raises(graph.GraphError, match="failed"):
        graph.render_svg("digraph { a }", dot=str(quiet))
    assert os.path.exists(str(slow))
