"""``hg luigi-why``: what changed between two builds, and the verdict."""

import json
import os
import sqlite3

import pytest

PIPELINE = '''
import json
import time

import luigi

from hgext_luigi import HgTask


class Raw(HgTask):
    watches = ["data/raw.txt"]

    def output(self):
        return self.stamped_target("raw.txt")

    def run(self):
        with open(self.source_path("data/raw.txt")) as src, self.output().open("w") as f:
            f.write(src.read().upper())


class Mid(HgTask):
    factor = luigi.IntParameter(default=2)

    def requires(self):
        return Raw()

    def output(self):
        return self.stamped_target("mid.txt")

    def run(self):
        with self.input().open() as src, self.output().open("w") as f:
            f.write(src.read() * self.factor)


class Top(HgTask):
    def requires(self):
        return Mid()

    def output(self):
        return self.stamped_target("top.txt")

    def run(self):
        with self.input().open() as src, self.output().open("w") as f:
            f.write("top: " + src.read())


class Clock(HgTask):
    watches = ["data/clock.txt"]

    def output(self):
        return self.stamped_target("clock.txt")

    def run(self):
        with self.output().open("w") as f:
            f.write(repr(time.time()))
'''


@pytest.fixture
def chain(empty_repo):
    repo = empty_repo
    repo.write("pipelines/__init__.py", PIPELINE)
    repo.write("data/raw.txt", "a\nb\n")
    repo.write("data/clock.txt", "tick\n")
    repo.commit("pipeline")
    repo("luigi-run")
    return repo


def why(repo, *args):
    return repo("luigi-why", *args)


def verdicts(repo, *args):
    return [r["verdict"] for r in repo.json("luigi-why", *args)]


def test_data_drift_found_three_levels_up(chain):
    chain.write("data/raw.txt", "a\nb\nc\n")
    chain.commit("one more line")
    chain("luigi-run")
    out = why(chain, "Top", "--upstream").stdout
    lines = [line.strip() for line in out.splitlines()]
    assert "upstream Mid(factor=2): output changed" in out
    assert "upstream Raw(): output changed" in out
    assert "modified data/raw.txt (+1 -0)" in lines
    assert verdicts(chain, "Top", "--upstream") == ["data drift"] * 3
    # the chain of explanations: Top, then Mid, then Raw, indented
    tasks = [r["task"] for r in chain.json("luigi-why", "Top", "--upstream")]
    assert tasks == ["Top()", "Mid(factor=2)", "Raw()"]


def test_logic_change_names_the_file_and_its_changeset(chain):
    code = open(os.path.join(chain.path, "pipelines", "__init__.py")).read()
    chain.write("pipelines/__init__.py", code.replace('"top: "', '"TOP: "'))
    chain.commit("shout the top line")
    chain("luigi-run")
    out = why(chain, "Top").stdout
    assert "logic" in out and "modified pipelines/__init__.py" in out
    assert "shout the top line" in out
    assert verdicts(chain, "Top") == ["logic change"]


def test_data_and_logic(chain):
    code = open(os.path.join(chain.path, "pipelines", "__init__.py")).read()
    chain.write("pipelines/__init__.py", code.replace("src.read().upper()",
                                                      "src.read().upper() + '!'"))
    chain.write("data/raw.txt", "z\n")
    chain.commit("both")
    chain("luigi-run")
    assert verdicts(chain, "Raw") == ["data drift and logic change"]


def test_configuration_is_logic(chain):
    """A section of the Luigi configuration the task reads (its family's)."""
    first = chain("log", "-r", ".", "-T", "{node}").stdout
    chain.write("luigi.cfg", "[Top]\nnote = louder\n")
    chain.commit("configure Top")
    chain("luigi-run", "--all")
    result = chain.json("luigi-why", "Top", "--against", first)[0]
    assert result["logic"]["config"] == [{"section": "Top", "change": "added"}]
    assert result["logic"]["files"] == [] and result["data"]["files"] == []
    assert result["verdict"] == "logic change"


def test_a_non_deterministic_task(chain):
    chain("luigi-run", "--all")
    out = why(chain, "Clock").stdout
    assert "verdict: nothing recorded changed: output differs anyway " \
           "(non-deterministic task?)" in out


def test_runtime_change(chain):
    """A build recorded under another Luigi version: the only difference."""
    first = chain("log", "-r", ".", "-T", "{node}").stdout
    db = sqlite3.connect(os.path.join(chain.state, "lineage.db"))
    with db:
        db.execute("UPDATE facts SET value = '3.0.0' WHERE kind = 'runtime' AND name = "
                   "'luigi' AND build_id IN (SELECT id FROM builds WHERE key = 'Clock()')")
    db.close()
    chain.write("README", "unwatched\n")
    chain.commit("readme")
    chain("luigi-run", "--all")
    result = chain.json("luigi-why", "Clock", "--against", first)[0]
    assert result["runtime"] == [{"name": "luigi", "from": "3.0.0",
                                  "to": result["runtime"][0]["to"]}]
    # Clock's output always differs; nothing else did: the runtime is the verdict
    assert result["verdict"] == "runtime change"


def test_nothing_to_compare_and_unknown_target(chain):
    out = chain("luigi-why", "Raw", check=False)
    assert out.returncode == 255
    assert "abort: nothing to compare: no earlier build of Raw()" in out.stderr
    assert "(name one with --against REV)" in out.stderr
    out = chain("luigi-why", "NoSuchTask", check=False)
    assert out.returncode == 255 and "no successful build of NoSuchTask" in out.stderr
    out = chain("luigi-why", "out/none.txt", check=False)
    assert out.returncode == 255 and "no recorded build produced out/none.txt" in out.stderr


def test_an_output_path_names_its_task(chain):
    chain.write("data/raw.txt", "q\n")
    chain.commit("q")
    chain("luigi-run")
    rev = chain("log", "-r", ".", "-T", "{node}").stdout
    path = os.path.join(chain.state, "outputs", rev, "top.txt")
    assert verdicts(chain, path) == ["data drift"]


def test_a_store_of_an_older_version_shows_unknown(chain):
    """Builds recorded before facts existed: the store is migrated in place,
    and what they did not record is shown as unknown."""
    db = sqlite3.connect(os.path.join(chain.state, "lineage.db"))
    with db:
        db.execute("DROP TABLE facts")
        db.execute("ALTER TABLE inputs DROP COLUMN digests")
    db.close()
    chain.write("data/raw.txt", "new\n")
    chain.commit("new")
    chain("luigi-run")
    result = chain.json("luigi-why", "Raw")[0]
    assert result["unknown"] == ["runtime", "source", "watched"]
    assert result["verdict"].startswith("unknown: the older build recorded no")
    top = chain.json("luigi-why", "Top")[0]
    assert top["data"]["upstream"][0]["change"] == "unknown content"
    assert json.dumps(top)  # shown whole, no crash
