"""Sources of another changeset: the runner never opens the repository; it asks
the hg side for the tree of a changeset the plan stamps a task with, and only
such a changeset."""

import json
import os

PIPELINE = '''
import json
import sys

from hgext_luigi import HgTask
from hgext_luigi.pipeline import context


class Raw(HgTask):
    watches = ["data/raw.txt"]

    def output(self):
        return self.stamped_target("raw.txt")

    def run(self):
        with open(self.source_path("data/raw.txt")) as src, self.output().open("w") as f:
            f.write(src.read())


class Report(HgTask):
    watches = ["data/report.txt"]

    def requires(self):
        return Raw()

    def output(self):
        return self.stamped_target("report.json")

    def run(self):
        raw = self.requires()
        notes = raw.source_path("data/notes.txt")  # at Raw's stamp, not the run's
        with open(notes) as f:
            text = f.read()
        try:
            context.request(op="tree", changeset="%s")
            refused = None
        except context.RequestError as e:
            refused = str(e)
        with self.output().open("w") as out:
            json.dump({"notes": text, "path": notes, "raw_changeset": raw.changeset,
                       "refused": refused, "mercurial": "mercurial" in sys.modules}, out)
'''


def test_a_task_reads_a_reused_upstreams_sources_at_its_stamp(empty_repo):
    repo = empty_repo
    repo.write("data/raw.txt", "raw\n")
    repo.write("data/notes.txt", "old notes\n")
    repo.write("data/report.txt", "r1\n")
    repo.write("pipelines/__init__.py", "")
    zero = repo.commit("data")
    repo.write("pipelines/__init__.py", PIPELINE % zero)
    first = repo.commit("pipeline")
    repo("luigi-run")
    # notes change but Raw does not watch them: Raw is reused at `first`
    repo.write("data/notes.txt", "new notes\n")
    repo.write("data/report.txt", "r2\n")
    second = repo.commit("notes and report")
    plan = repo.affected()
    assert plan["Raw()"]["changeset"] == first and not plan["Raw()"]["affected"]
    assert plan["Report()"]["affected"]
    repo("luigi-run")

    out = os.path.join(repo.state, "outputs", second, "report.json")
    with open(out) as f:
        seen = json.load(f)
    assert seen["raw_changeset"] == first
    assert seen["notes"] == "old notes\n"
    assert os.path.join("trees", first) in seen["path"]
    # a changeset no task of the run is stamped with: refused, nothing written
    assert "not one this run builds or reuses" in seen["refused"]
    assert not os.path.exists(os.path.join(repo.state, "trees", zero))
    # the pipeline process never imported Mercurial
    assert seen["mercurial"] is False
