"""Plain ``luigi.Task`` pipelines adopted through ``.hgluigi``: where their relative
outputs go, external inputs, ``luigi.cfg``, and errors that name the task."""

import os

PLAIN = '''import luigi


class Raw(luigi.ExternalTask):
    def output(self):
        return luigi.LocalTarget("data/raw.txt")


class Upper(luigi.Task):
    def requires(self):
        return Raw()

    def output(self):
        return luigi.LocalTarget("out/upper.txt")

    def run(self):
        with self.input().open() as i, self.output().open("w") as o:
            o.write(i.read().upper())


class Count(luigi.Task):
    def requires(self):
        return Upper()

    def output(self):
        return luigi.LocalTarget("out/count.txt")

    def run(self):
        with self.input().open() as i, self.output().open("w") as o:
            o.write("%d\\n" % len(i.read().split()))
'''

WATCHES = "[watches]\nRaw = data/raw.txt\n"


def plain_repo(repo):
    repo.write("pipelines/__init__.py", PLAIN)
    repo.write(".hgluigi", WATCHES)
    repo.write("data/raw.txt", "alpha beta\n")
    repo.write("README", "about\n")
    return repo.commit("plain pipeline")


def outcomes(repo, *args):
    return {t["key"]: t["outcome"] for t in repo.json("luigi-run", *args)}


def test_relative_outputs_go_under_the_plain_output_root(empty_repo):
    repo = empty_repo
    plain_repo(repo)
    assert outcomes(repo) == {"Raw()": "reused", "Upper()": "ran", "Count()": "ran"}
    plain = os.path.join(repo.state, "outputs", "plain")
    with open(os.path.join(plain, "out", "upper.txt")) as f:
        assert f.read() == "ALPHA BETA\n"
    # a second run of the same revision runs nothing
    assert set(outcomes(repo).values()) == {"reused"}
    # an unrelated commit reuses them at the next revision
    repo.write("README", "more\n", "a")
    repo.commit("docs only")
    assert set(outcomes(repo).values()) == {"reused"}
    # nothing was written into the materialized trees
    trees = os.path.join(repo.state, "trees")
    assert not any(os.path.exists(os.path.join(trees, t, "out")) for t in os.listdir(trees))


def test_plain_output_root_setting(empty_repo, tmp_path):
    repo = empty_repo
    root = tmp_path / "plain-outputs"
    repo.config("[luigi]\nplain-output-root = %s\n" % root)
    plain_repo(repo)
    repo("luigi-run")
    assert (root / "out" / "count.txt").read_text() == "2\n"


def test_a_watched_external_input_affects_its_dependents(empty_repo):
    repo = empty_repo
    plain_repo(repo)
    repo("luigi-run")
    repo.write("data/raw.txt", "alpha beta gamma\n")
    rev = repo.commit("more raw data")
    plan = repo.affected()
    assert plan["Raw()"]["status"] == "affected"
    assert plan["Raw()"]["reasons"] == ["data/raw.txt modified since %s" % "%s"
                                        % plan["Upper()"]["base"][:12]]
    assert plan["Upper()"]["affected"] and plan["Count()"]["status"] == "upstream"
    assert "input of external Raw(): data/raw.txt modified" in plan["Upper()"]["reasons"][0]
    assert outcomes(repo) == {"Raw()": "reused", "Upper()": "ran", "Count()": "ran"}
    [count] = [r for r in repo.json("luigi-lineage") if r["key"] == "Count()"]
    assert count["changeset"] == rev
    with open(count["outputs"][0]["path"]) as f:
        assert f.read() == "3\n"


def test_luigi_cfg_shapes_the_graph(empty_repo):
    repo = empty_repo
    repo.write("pipelines/__init__.py", '''import luigi


class Greet(luigi.Task):
    name = luigi.Parameter(default="world")

    def output(self):
        return luigi.LocalTarget("greet-%s.txt" % self.name)

    def run(self):
        with self.output().open("w") as f:
            f.write("hello %s\\n" % self.name)
''')
    repo.commit("greet")
    assert list(repo.affected()) == ["Greet(name=world)"]
    repo("luigi-run")
    repo.write("luigi.cfg", "[Greet]\nname = zürich\n")
    repo.commit("configure the name")
    plan = repo.affected()
    assert list(plan) == ["Greet(name=zürich)"]
    assert plan["Greet(name=zürich)"]["reasons"] == ["never built"]
    assert outcomes(repo, "--all") == {"Greet(name=zürich)": "ran"}
    assert os.path.exists(os.path.join(repo.state, "outputs", "plain", "greet-zürich.txt"))


BROKEN = '''import luigi
from hgext_luigi import HgTask


class Fine(HgTask):
    def output(self):
        return self.stamped_target("fine.txt")

    def run(self):
        with self.output().open("w") as f:
            f.write("ok\\n")


class Fragile(HgTask):
    def requires(self):
        return Fine()

    def output(self):
        return self.stamped_target("fragile.txt")

    def complete(self):
        raise ConnectionError("metadata service unreachable")

    def run(self):
        pass


class Top(HgTask):
    def requires(self):
        return Fragile()

    def output(self):
        return self.stamped_target("top.txt")

    def run(self):
        pass
'''


def test_an_exception_in_complete_names_the_task(empty_repo):
    repo = empty_repo
    repo.write("pipelines/__init__.py", BROKEN)
    repo.commit("fragile complete()")
    proc = repo("luigi-run", check=False)
    assert proc.returncode == 1
    line = [ln for ln in proc.stdout.splitlines() if "Fragile()" in ln][0]
    assert line.startswith("failed")
    assert "complete() raised ConnectionError: metadata service unreachable" in line
    assert "failed scheduling" not in proc.stdout
    top = [ln for ln in proc.stdout.splitlines() if "Top()" in ln][0]
    assert top.startswith("not run")
    [row] = [r for r in repo.json("luigi-lineage") if r["key"] == "Fragile()"]
    assert row["status"] == "failed" and "ConnectionError" in row["error"]


def test_an_output_overwritten_by_a_later_build_is_not_reused(empty_repo):
    repo = empty_repo
    first = plain_repo(repo)
    repo("luigi-run")
    repo.write("data/raw.txt", "alpha beta gamma\n")
    repo.commit("more raw data")
    repo("luigi-run")
    # out/count.txt is one path for every revision: it now holds the second count
    plan = repo.affected("-r", first)
    assert plan["Count()"]["affected"]
    assert "was overwritten by a later build" in " ".join(
        plan["Upper()"]["reasons"] + plan["Count()"]["reasons"])
    assert outcomes(repo, "-r", first)["Count()"] == "ran"
    with open(os.path.join(repo.state, "outputs", "plain", "out", "count.txt")) as f:
        assert f.read() == "2\n"


def test_a_missing_external_input_is_reported_not_reused(empty_repo):
    repo = empty_repo
    plain_repo(repo)
    repo("rm", "data/raw.txt")
    repo.commit("the raw data is gone")
    proc = repo("luigi-run", check=False)
    assert proc.returncode == 1
    rows = {ln[9:].split()[0]: ln for ln in proc.stdout.splitlines() if ln[:1] in "nrf"}
    assert rows["Raw()"].startswith("not run") and "its output is missing" in rows["Raw()"]
    assert rows["Upper()"].startswith("not run")
    assert "an input it needs is missing" in rows["Upper()"]


def test_a_task_watching_more_is_compared_from_its_build_again(empty_repo):
    """A run found Count() unaffected after notes/ changed; then .hgluigi makes it
    watch notes/ too: it must see that change, not just what changed since the
    run (whose check was made under the old watches)."""
    repo = empty_repo
    plain_repo(repo)
    repo("luigi-run")
    repo.write("notes/n.txt", "a note\n")
    repo.commit("a note no task watches")
    assert set(outcomes(repo).values()) == {"reused"}
    repo.write(".hgluigi", WATCHES + "Count = notes/**\n")
    repo.commit("Count reads the notes")
    count = {t["key"]: t for t in repo.json("luigi-affected")}["Count()"]
    assert count["affected"]
    assert any(r.startswith("notes/n.txt added since") for r in count["reasons"])
