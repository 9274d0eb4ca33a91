"""hg luigi-lineage: where each output came from, by whom, from what."""

import os

REGIONS = ("north", "south", "east")


def node(repo, rev="."):
    return repo("log", "-r", rev, "-T", "{node}").stdout


def test_nothing_recorded_yet(demo):
    proc = demo("luigi-lineage", check=False)
    assert proc.returncode == 1
    assert proc.stdout == "no lineage recorded yet (run hg luigi-run first)\n"
    proc = demo("luigi-lineage", "-T", "json", check=False)
    assert proc.returncode == 1 and proc.stdout.strip() == "[\n]" or proc.stdout.strip() == "[]"


def build_two_revisions(demo):
    first = node(demo)
    demo("luigi-run")
    demo.write("data/raw/sales-north.csv", "2026-11-09,Widget,7,7.00\n", "a")
    second = demo.commit("north sales")
    demo("luigi-run", "--config", "ui.username=Carol <carol@example.com>")
    return first, second


def test_lineage_of_a_revision(demo):
    first, second = build_two_revisions(demo)
    rows = {r["key"]: r for r in demo.json("luigi-lineage")}
    assert set(rows) == {"CleanSales(region=%s)" % r for r in REGIONS} | {"SalesReport()",
                                                                          "DocsIndex()"}
    for r in rows.values():
        assert set(r) >= {"task", "family", "changeset", "status", "outputs", "inputs",
                          "user", "trigger", "built", "base", "reasons", "params"}
        assert r["status"] == "success" and r["trigger"] == "manual"
        for o in r["outputs"]:
            assert set(o) == {"path", "size", "sha256"} and len(o["sha256"]) == 64
            assert os.path.getsize(o["path"]) == o["size"]
            assert first in o["path"] or second in o["path"]
    north = rows["CleanSales(region=north)"]
    assert north["changeset"] == second and north["reused"] is False
    assert north["user"] == "Carol <carol@example.com>"
    assert north["base"] == first
    assert north["reasons"] == ["data/raw/sales-north.csv modified since %s" % first[:12]]
    assert north["params"] == {"region": "north"}
    south = rows["CleanSales(region=south)"]
    assert south["changeset"] == first and south["reused"] is True
    assert south["user"] == "Alice <alice@example.com>"
    report = rows["SalesReport()"]
    assert {i["key"]: i["changeset"] for i in report["inputs"]} == {
        "CleanSales(region=north)": second, "CleanSales(region=south)": first,
        "CleanSales(region=east)": first}
    for i in report["inputs"]:
        assert i["task"].startswith("CleanSales_") and len(i["outputs"]) == 1

    text = demo("luigi-lineage").stdout
    assert text.splitlines()[0].startswith("run ")
    assert "by Carol <carol@example.com> (manual)" in text.splitlines()[0]
    assert "CleanSales(region=south)  %s (reused)" % first[:12] in text
    assert "CleanSales(region=north)  %s (this revision)" % second[:12] in text

    # an older revision answers with its own run
    old = {r["key"]: r for r in demo.json("luigi-lineage", first)}
    assert {r["changeset"] for r in old.values()} == {first}

    # a revision never run
    demo.write("docs/x.md", "# x\n")
    demo.commit("docs")
    proc = demo("luigi-lineage", check=False)
    assert proc.returncode == 255
    assert "abort: no luigi run recorded at " in proc.stderr
    assert "(run hg luigi-run -r " in proc.stderr


def test_lineage_of_an_output_goes_back_to_the_sources(demo):
    first, second = build_two_revisions(demo)
    path = os.path.join(demo.state, "outputs", second, "reports", "sales-report.csv")
    chain = demo.json("luigi-lineage", "--output", path)
    assert chain[0]["key"] == "SalesReport()" and chain[0]["depth"] == 0
    assert chain[0]["changeset"] == second
    ups = {c["key"]: c for c in chain[1:]}
    assert set(ups) == {"CleanSales(region=%s)" % r for r in REGIONS}
    assert all(c["depth"] == 1 for c in ups.values())
    assert ups["CleanSales(region=north)"]["changeset"] == second
    assert ups["CleanSales(region=east)"]["changeset"] == first
    text = demo("luigi-lineage", "--output", path).stdout
    assert text.startswith("SalesReport() at %s, built " % second)
    assert "source: repository at %s" % first[:12] in text
    # a path relative to the output root works too
    rel = os.path.join(second, "reports", "sales-report.csv")
    assert demo.json("luigi-lineage", "--output", rel)[0]["key"] == "SalesReport()"
    proc = demo("luigi-lineage", "--output", "no/such/file", check=False)
    assert proc.returncode == 255 and "abort: no recorded build produced no/such/file" in proc.stderr


def test_lineage_of_a_task_across_revisions(demo):
    first, second = build_two_revisions(demo)
    builds = demo.json("luigi-lineage", "--task", "CleanSales(region=north)")
    assert [b["changeset"] for b in builds] == [first, second]
    assert [b["user"] for b in builds] == ["Alice <alice@example.com>",
                                           "Carol <carol@example.com>"]
    family = demo.json("luigi-lineage", "--task", "CleanSales")
    assert len(family) == 4
    assert {b["family"] for b in family} == {"CleanSales"}
    proc = demo("luigi-lineage", "--task", "Nope", check=False)
    assert proc.returncode == 255 and "abort: no builds recorded for task Nope" in proc.stderr


def test_concurrent_writers_keep_the_store_whole(demo, hg, tmp_path):
    """Several workers record builds at once: every build is there, nothing lost."""
    demo.write("pipelines/wide.py", '''
import time
import luigi
from hgext_luigi import HgTask


class Part(HgTask):
    n = luigi.IntParameter()
    watches = ["data/raw/**"]

    def output(self):
        return self.stamped_target("parts/%d.txt" % self.n)

    def run(self):
        time.sleep(0.05)
        with self.output().open("w") as f:
            f.write(str(self.n))


class Wide(HgTask):
    def requires(self):
        return [Part(n=i) for i in range(24)]

    def output(self):
        return self.stamped_target("wide.txt")

    def run(self):
        with self.output().open("w") as f:
            f.write("done")
''')
    demo.write("pipelines/__init__.py", "from pipelines import docs, sales, wide  # noqa\n")
    rev = demo.commit("a wide pipeline")
    out = demo("luigi-run", "--workers", "4").stdout
    assert "30 ran, 0 reused, 0 failed" in out
    rows = demo.json("luigi-lineage")
    assert len(rows) == 30 and {r["status"] for r in rows} == {"success"}
    wide = [r for r in rows if r["key"] == "Wide()"][0]
    assert len(wide["inputs"]) == 24 and {i["changeset"] for i in wide["inputs"]} == {rev}
