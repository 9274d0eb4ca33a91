"""Lineage as a graph: DOT of a run and of an output, SVG by Graphviz's dot, and
hgweb's /luigi/REV page over a real hg serve."""

import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request

import pytest

from conftest import BIN
from dotparse import NODE, unquote, well_formed
from hgext_luigi.core import graph, lineage

DOT = shutil.which("dot")
needs_dot = pytest.mark.skipif(DOT is None, reason="graphviz's dot is not installed")

REGIONS = ("north", "south", "east")
CLEAN = ["CleanSales(region=%s)" % r for r in REGIONS]
# quotes, backslashes (\N is Graphviz's node name escape), a newline, markup,
# non-ASCII, a control character
HOSTILE = 'Evil(name="a\\"b", path=C:\\N\\x)\n<script>alert(1)</script> é🐍\x07'

EDGE = re.compile(r'^  (\w+) -> (\w+) \[label="([0-9a-f]{12})"\];$', re.M)


def node(repo, rev="."):
    return repo("log", "-r", rev, "-T", "{node}").stdout


def open_store(repo):
    return lineage.open_store(os.path.join(repo.state, "lineage.db"))


def parse(dot):
    """{key: (node, changeset, color)}, [(key, upstream key, changeset)]"""
    assert dot.startswith("digraph lineage {\n") and dot.endswith("}\n")
    nodes = {}
    for name, label, color in NODE.findall(dot):
        key, _, changeset = unquote(label).rpartition("\n")
        nodes[name] = (key, changeset, color)
    edges = [(nodes[a][0], nodes[b][0], cs) for a, b, cs in EDGE.findall(dot)]
    return {k: (n, cs, c) for n, (k, cs, c) in nodes.items()}, edges


@pytest.fixture
def built(demo):
    """The demo repository built at two revisions: the second changes north's data,
    so it rebuilds north and the report and reuses the rest."""
    first = node(demo)
    demo("luigi-run")
    demo.write("data/raw/sales-north.csv", "2026-11-09,Widget,7,7.00\n", "a")
    second = demo.commit("north sales")
    demo("luigi-run")
    return demo, first, second


# -- DOT of a run ------------------------------------------------------------------

def test_lineage_dot_of_the_demo_runs(built):
    demo, first, second = built
    store = open_store(demo)
    try:
        nodes, edges = parse(graph.lineage_dot(store, first))
        assert set(nodes) == set(CLEAN) | {"SalesReport()", "DocsIndex()"}
        assert {cs for _, cs, _ in nodes.values()} == {first[:12]}
        assert {c for _, _, c in nodes.values()} == {"palegreen"}  # all ran
        assert sorted(edges) == sorted(("SalesReport()", k, first[:12]) for k in CLEAN)

        dot = graph.lineage_dot(store, second.encode())  # bytes too
        well_formed(dot)
        nodes, edges = parse(dot)
        assert nodes["CleanSales(region=north)"][1:] == (second[:12], "palegreen")
        assert nodes["SalesReport()"][1:] == (second[:12], "palegreen")
        for key in ("CleanSales(region=south)", "CleanSales(region=east)", "DocsIndex()"):
            assert nodes[key][1:] == (first[:12], "lightgrey")  # reused
        assert sorted(edges) == sorted([
            ("SalesReport()", "CleanSales(region=north)", second[:12]),
            ("SalesReport()", "CleanSales(region=south)", first[:12]),
            ("SalesReport()", "CleanSales(region=east)", first[:12])])
        assert 'label="run ' in dot and "at %s" % second[:12] in dot

        with pytest.raises(graph.NoLineage, match="no luigi run recorded at 000000000000"):
            graph.lineage_dot(store, "0" * 40)
    finally:
        store.close()


class PublicOnly:
    """A store with the public methods alone (another implementation)."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._store, name)


def test_the_sql_and_the_store_methods_agree(built):
    demo, first, second = built
    store = open_store(demo)
    try:
        for rev in (first, second):
            assert graph.run_graph(store, rev) == graph.run_graph(PublicOnly(store), rev)
    finally:
        store.close()


# -- a run with every outcome and a hostile key ------------------------------------

OLD, REV = "a" * 40, "b" * 40


def fake_run(path, rev=REV):
    """A store holding one run at ``rev``: Source() reused from OLD, HOSTILE ran
    from it, Broken() failed reading HOSTILE, After() not run, Ext() external."""
    store = lineage.open_store(path)
    plan = [
        dict(key="Source()", family="Source", changeset=OLD, affected=False,
             status="unaffected"),
        dict(key=HOSTILE, family="Evil", changeset=rev, affected=True, status="affected"),
        dict(key="Broken()", family="Broken", changeset=rev, affected=True,
             status="affected"),
        dict(key="After()", family="After", changeset=rev, affected=True,
             status="affected"),
        dict(key="Ext()", family="Ext", changeset=None, affected=False, status="external"),
    ]
    old = store.start_build("old", "Source__1", "Source()", "Source", {}, OLD, None, [],
                            "alice", "manual")
    store.finish_build(old, "success")
    store.begin_run("run1", rev, "alice <a@example.com>", "manual", "local", plan)
    evil = store.start_build("run1", "Evil__1", HOSTILE, "Evil", {}, rev, OLD, [],
                             "alice", "manual")
    store.finish_build(evil, "success", inputs=[
        {"task_id": "Source__1", "key": "Source()", "changeset": OLD, "outputs": []},
        {"task_id": "Ext__1", "key": "Ext()", "changeset": None, "outputs": []}])
    broken = store.start_build("run1", "Broken__1", "Broken()", "Broken", {}, rev, OLD,
                               [], "alice", "manual")
    store.finish_build(broken, "failed", error="boom", inputs=[
        {"task_id": "Evil__1", "key": HOSTILE, "changeset": rev, "outputs": []},
        {"task_id": "Gone__1", "key": "Gone()", "changeset": OLD, "outputs": []}])
    store.end_run("run1", "failed", {
        "Source()": ("reused", "Source__1", 0), HOSTILE: ("ran", "Evil__1", 1),
        "Broken()": ("failed", "Broken__1", 1), "After()": ("not run", None, 0),
        "Ext()": ("reused", "Ext__1", 0)})
    return store


def test_colors_edges_and_a_hostile_key(tmp_path):
    store = fake_run(str(tmp_path / "lineage.db"))
    try:
        dot = graph.lineage_dot(store, REV)
    finally:
        store.close()
    well_formed(dot)
    assert "\x07" not in dot and "\\\\x07" in dot  # shown, not sent raw
    nodes, edges = parse(dot)
    assert {k: c for k, (_, _, c) in nodes.items()} == {
        "Source()": "lightgrey", HOSTILE.replace("\x07", "\\x07"): "palegreen",
        "Broken()": "lightcoral", "After()": "orange", "Ext()": "white",
        "Gone()": "white"}
    evil = HOSTILE.replace("\x07", "\\x07")
    assert nodes["Source()"][1] == OLD[:12] and nodes[evil][1] == REV[:12]
    assert nodes["Ext()"][1] == "external"
    assert sorted(edges) == sorted([
        (evil, "Source()", OLD[:12]), ("Broken()", evil, REV[:12]),
        ("Broken()", "Gone()", OLD[:12])])  # Ext() was read without a changeset
    assert len(re.findall(r"^  \w+ -> \w+", dot, re.M)) == 4  # ... and still drawn


@needs_dot
def test_dot_reads_the_hostile_labels_back(tmp_path):
    store = fake_run(str(tmp_path / "lineage.db"))
    try:
        dot = graph.lineage_dot(store, REV)
    finally:
        store.close()
    canon = subprocess.run([DOT, "-Tcanon"], input=dot.encode(), capture_output=True)
    assert canon.returncode == 0 and not canon.stderr, canon.stderr
    svg = graph.render_svg(dot).decode("utf-8")
    texts = [re.sub(r"&#(\d+);", lambda m: chr(int(m.group(1))), t)
             for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg)]
    # the key's two lines, whole: quotes and backslashes kept, \N not expanded,
    # markup escaped by dot
    assert 'Evil(name=&quot;a\\&quot;b&quot;, path=C:\\N\\x)' in texts
    assert "&lt;script&gt;alert(1)&lt;/script&gt; é🐍\\x07" in texts
    assert "<script" not in svg


# -- the builds behind an output -----------------------------------------------------

def test_output_dot(built):
    demo, first, second = built
    store = open_store(demo)
    try:
        report = [o["path"] for o in store.outputs(
            store.success_for_key("SalesReport()", second)["id"])]
        dot = graph.output_dot(store, report[0])
        well_formed(dot)
        nodes, edges = parse(dot)
        assert set(nodes) == {"SalesReport()"} | set(CLEAN)
        assert nodes["SalesReport()"][1:] == (second[:12], "palegreen")
        assert nodes["CleanSales(region=north)"][1:] == (second[:12], "palegreen")
        assert nodes["CleanSales(region=south)"][1:] == (first[:12], "lightgrey")
        assert "penwidth=2" in dot.split(nodes["SalesReport()"][0] + " [", 1)[1].split("\n")[0]
        assert len(edges) == 3 and all(e[0] == "SalesReport()" for e in edges)
        # candidates: the first recorded one wins
        assert graph.output_dot(store, ["/nonexistent/x.csv", report[0]]) == dot
        with pytest.raises(graph.NoLineage, match="no recorded build produced"):
            graph.output_dot(store, "/nonexistent/x.csv")
    finally:
        store.close()


# -- rendering ------------------------------------------------------------------------

def test_quote():
    assert graph.quote('a"b\\c\nd\te\x1b') == '"a\\"b\\\\c\\nd e\\\\x1b"'
    assert graph.quote("\udcff é") == '"\ufffd é"'  # an undecodable byte
    assert graph.quote(None) == '""'


def test_render_svg_without_dot():
    with pytest.raises(graph.GraphError) as e:
        graph.render_svg("digraph { a }", path=str(BIN))  # no dot there
    assert str(e.value) == ("graphviz's dot is not installed: apt-get install graphviz,"
                            " or use -T dot and render it elsewhere")
    with pytest.raises(graph.GraphError, match="not installed"):
        graph.render_svg("digraph { a }", dot="/nonexistent/dot")


@needs_dot
def test_render_svg(tmp_path):
    svg = graph.render_svg('digraph { a -> "b\\"c" }')
    assert b"<svg" in svg and svg.rstrip().endswith(b"</svg>")
    with pytest.raises(graph.GraphError, match="graphviz's dot failed"):
        graph.render_svg("digraph { a -> }")
    slow = tmp_path / "dot"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    with pytest.raises(graph.GraphError, match="took more than"):
        graph.render_svg("digraph { a }", dot=str(slow), timeout=0.5)


# -- hgweb ------------------------------------------------------------------------------

def get(url):
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, r.headers, r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode("utf-8", "replace")


def test_the_luigi_page(built, serve):
    demo, first, second = built
    served = serve(demo)
    for rev in (second, "tip", second[:12]):
        status, headers, page = get(served.url + "luigi/" + rev)
        assert status == 200, page
        assert headers["Content-Type"].startswith("text/html")
        assert "ETag" not in headers
        for key in CLEAN + ["SalesReport()", "DocsIndex()"]:
            assert '<td class="luigi-key">%s</td>' % key in page
        assert '<td class="luigi-outcome" style="background-color:lightgrey">reused</td>' \
            in page
        assert '<a href="/rev/%s">%s</a>' % (first, first[:12]) in page
        if DOT:
            assert "<svg" in page and "<?xml" not in page
        else:
            assert '<pre class="luigi-dot">digraph lineage {' in page
            assert "graphviz&#x27;s dot is not installed" in page
    status, headers, dot = get(served.url + "luigi/%s?format=dot" % first)
    assert status == 200 and headers["Content-Type"] == "text/plain; charset=utf-8"
    assert parse(dot)[0]["SalesReport()"][1] == first[:12]
    status, headers, svg = get(served.url + "luigi/tip?format=svg")
    if DOT:
        assert status == 200 and headers["Content-Type"] == "image/svg+xml"
        assert "<svg" in svg
    else:
        assert status == 500 and "not installed" in svg
    assert get(served.url + "luigi/tip?format=png")[0] == 400

    # the changeset page links to it when a run is recorded
    status, _, page = get(served.url + "rev/" + second[:12])
    assert status == 200 and '<a href="/luigi/%s">luigi</a>' % second[:12] in page


def test_no_lineage_pages(built, serve):
    demo, first, second = built
    demo.write("data/other.txt", "x\n")
    third = demo.commit("not built")
    served = serve(demo)
    status, _, page = get(served.url + "luigi/deadbeefdead")
    assert status == 404 and re.search("unknown revision (&#39;|')deadbeefdead", page)
    status, _, page = get(served.url + "luigi/" + third)
    assert status == 404
    assert "no luigi run recorded at %s (hg luigi-run -r %s)" % (third[:12], third[:12]) \
        in page
    assert "Traceback" not in page
    status, _, page = get(served.url + "rev/" + third)
    assert status == 200 and "/luigi/" not in page


def test_a_repository_without_lineage(empty_repo, serve):
    empty_repo.write("a", "a\n")
    empty_repo.commit("a")
    served = serve(empty_repo)
    status, _, page = get(served.url + "luigi/tip")
    assert status == 404 and "no luigi lineage recorded in this repository" in page
    assert not os.path.exists(os.path.join(empty_repo.state, "lineage.db"))
    assert get(served.url + "rev/tip")[0] == 200


def test_the_page_escapes_everything(empty_repo, hg, serve):
    empty_repo.write("a", "a\n")
    rev = empty_repo.commit("a")
    fake_run(os.path.join(empty_repo.state, "lineage.db"), rev).close()
    served = serve(empty_repo)
    status, _, page = get(served.url + "luigi/tip")
    assert status == 200
    assert "<script>" not in page
    assert ('<td class="luigi-key">Evil(name=&quot;a\\&quot;b&quot;, path=C:\\N\\x)\n'
            '&lt;script&gt;alert(1)&lt;/script&gt; &#233;&#128013;\\x07</td>') in page
    assert "alice &lt;a@example.com&gt;" in page
    assert '<td class="luigi-outcome" style="background-color:orange">not run</td>' in page

    # without dot on the server's PATH: the DOT text, escaped, in a <pre>
    env = hg.env
    hg.env = dict(env, PATH=BIN)
    try:
        served = serve(empty_repo)
    finally:
        hg.env = env
    status, _, page = get(served.url + "luigi/" + rev)
    assert status == 200 and "<svg" not in page and "<script>" not in page
    pre = re.search(r'<pre class="luigi-dot">(.*?)</pre>', page, re.S).group(1)
    assert pre.startswith("digraph lineage {")
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &#233;&#128013;" in pre
    assert "Evil(name=\\&quot;a\\\\\\&quot;b\\&quot;" in pre
    assert "graphviz&#x27;s dot is not installed" in page


# -- hg luigi-lineage -T dot / --svg --------------------------------------------

def test_lineage_command_prints_dot(built):
    repo, _first, rev = built
    out = repo("luigi-lineage", "-T", "dot").stdout
    nodes, edges = parse(out)
    assert set(nodes) >= set(CLEAN)
    assert ("SalesReport()", "CleanSales(region=north)", rev[:12]) in edges
    report = os.path.join(repo.state, "outputs", rev, "reports", "sales-report.csv")
    out = repo("luigi-lineage", "--output", report, "-T", "dot").stdout
    assert "SalesReport()" in out and "CleanSales(region=north)" in out
    bad = repo("luigi-lineage", "--task", "SalesReport", "-T", "dot", check=False)
    assert bad.returncode == 255 and "-T dot and --svg show REV or --output PATH" in bad.stderr


@needs_dot
def test_lineage_command_writes_svg(built, tmp_path):
    repo = built[0]
    svg = str(tmp_path / "lineage.svg")
    repo("luigi-lineage", "--svg", svg)
    with open(svg, "rb") as f:
        assert b"<svg" in f.read()


def test_svg_without_graphviz_says_what_to_do(built, tmp_path):
    repo = built[0]
    bindir = os.path.dirname(repo.hg.exe)
    out = repo("luigi-lineage", "--svg", str(tmp_path / "x.svg"), check=False,
                env={"PATH": bindir})  # hg's own folder alone: no dot there
    assert out.returncode == 255
    assert "graphviz's dot is not installed" in out.stderr
    assert not os.path.exists(str(tmp_path / "x.svg"))
