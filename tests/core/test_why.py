"""core.why: what differs between two builds of a task, from what a real
lineage store recorded of them.  What only the repository knows (line counts,
the changesets that touched a file) comes from a small stand-in for it."""

import pytest

from hgext_luigi.core import lineage, why

OLD, NEW, UP_OLD, UP_NEW = "a" * 40, "b" * 40, "c" * 40, "d" * 40
N1, N2 = "1" * 40, "2" * 40
SHA1, SHA2, SHA3 = "1" * 64, "2" * 64, "3" * 64


class Repo:
    """Answers what ``compare`` asks the repository, and remembers the asking."""

    def __init__(self):
        self.asked = []

    def stat(self, path, old, new):
        self.asked.append(("stat", path, old, new))
        return "+1 -0"

    def changesets(self, path, old, new):
        self.asked.append(("changesets", path, old, new))
        return [{"node": NEW, "summary": "change %s" % path}]


FACTS = {"watched": {"raw/n.csv": N1}, "source": {"p/clean.py": N1},
         "config": {"core": "d1"}, "runtime": {"python": "3.11.4", "luigi": "3.6"}}


@pytest.fixture
def store(tmp_path):
    s = lineage.open_store(str(tmp_path / "lineage.db"), str(tmp_path / "outputs"))
    yield s
    s.close()


def record(store, changeset, facts=FACTS, params=None, inputs=(), out_sha=SHA1):
    b = store.start_build("r", "Clean__1", "Clean()", "Clean", params or {"region": "n"},
                          changeset, None, [], "alice", "manual", facts=facts)
    store.finish_build(b, "success", outputs=[
        {"path": "/o/%s/clean.csv" % changeset, "size": 1, "sha256": out_sha}],
        inputs=list(inputs))
    row = store.build(b)
    return {"build": row, "facts": store.facts(b), "inputs": store.inputs(b),
            "outputs": store.outputs(b)}


def upstream(changeset, digests=(SHA2,), key="Fetch()"):
    return {"task_id": "Fetch__1", "key": key, "changeset": changeset,
            "outputs": ["/o/%s/raw.csv" % changeset],
            "digests": list(digests) if digests is not None else None}


def with_(facts, kind, **values):
    return dict(facts, **{kind: dict(facts[kind], **values)})


def test_nothing_changed(store):
    old = record(store, OLD, inputs=[upstream(UP_OLD)])
    new = record(store, NEW, inputs=[upstream(UP_NEW)])  # rebuilt, same content
    result = why.compare(new, old, Repo())
    assert result["verdict"] == "nothing changed: same inputs, same output"
    assert result["data"] == {"files": [], "upstream": []}
    assert result["build"]["build"] == new["build"]["id"]
    assert result["against"]["changeset"] == OLD
    assert why.changed_upstream(result) == []


def test_a_watched_file_is_data_drift(store):
    repo = Repo()
    old = record(store, OLD)
    new = record(store, NEW, facts=with_(FACTS, "watched", **{"raw/n.csv": N2,
                                                              "raw/new.csv": N1}),
                 out_sha=SHA3)
    result = why.compare(new, old, repo)
    assert result["verdict"] == "data drift"
    assert result["data"]["files"] == [
        {"path": "raw/n.csv", "change": "modified", "stat": "+1 -0"},
        {"path": "raw/new.csv", "change": "added", "stat": "+1 -0"}]
    assert ("stat", "raw/n.csv", N1, N2) in repo.asked
    assert result["outputs_differ"]


def test_an_upstream_output_is_data_drift_to_follow(store):
    old = record(store, OLD, inputs=[upstream(UP_OLD), upstream(OLD, key="Gone()")])
    new = record(store, NEW, inputs=[upstream(UP_NEW, [SHA3]), upstream(NEW, key="New()")])
    result = why.compare(new, old, Repo())
    assert result["verdict"] == "data drift"
    assert result["data"]["upstream"] == [
        {"task": "Fetch()", "from": UP_OLD, "to": UP_NEW, "change": "output changed"},
        {"task": "New()", "from": None, "to": NEW, "change": "added"},
        {"task": "Gone()", "from": OLD, "to": None, "change": "removed"}]
    assert why.changed_upstream(result) == [("Fetch()", UP_OLD, UP_NEW)]


def test_code_parameters_and_configuration_are_logic(store):
    repo = Repo()
    old = record(store, OLD)
    facts = with_(with_(FACTS, "source", **{"p/clean.py": N2}), "config", core="d2",
                  extra="d3")
    new = record(store, NEW, facts=facts, params={"region": "s"})
    result = why.compare(new, old, repo)
    assert result["verdict"] == "logic change"
    assert result["logic"]["files"] == [
        {"path": "p/clean.py", "change": "modified",
         "changesets": [{"node": NEW, "summary": "change p/clean.py"}]}]
    assert ("changesets", "p/clean.py", OLD, NEW) in repo.asked
    assert result["logic"]["params"] == [{"name": "region", "from": "n", "to": "s"}]
    assert result["logic"]["config"] == [{"section": "core", "change": "modified"},
                                         {"section": "extra", "change": "added"}]


def test_data_and_logic_together(store):
    old = record(store, OLD)
    new = record(store, NEW, facts=with_(with_(FACTS, "source", **{"p/clean.py": N2}),
                                         "watched", **{"raw/n.csv": N2}))
    assert why.compare(new, old, Repo())["verdict"] == "data drift and logic change"


def test_the_runtime(store):
    old = record(store, OLD)
    new = record(store, NEW, facts=with_(FACTS, "runtime", python="3.12.1"))
    result = why.compare(new, old, Repo())
    assert result["verdict"] == "runtime change"
    assert result["runtime"] == [{"name": "python", "from": "3.11.4", "to": "3.12.1"}]


def test_a_non_deterministic_task(store):
    old = record(store, OLD)
    new = record(store, NEW, out_sha=SHA3)
    assert why.compare(new, old, Repo())["verdict"] == \
        "nothing recorded changed: output differs anyway (non-deterministic task?)"


def test_an_older_build_that_recorded_nothing_is_unknown_not_unchanged(store):
    """A build of an older version recorded no facts: comparing with it must
    not claim that nothing changed, nor list every file as added."""
    repo = Repo()
    old = record(store, OLD, facts={}, inputs=[upstream(UP_OLD, digests=None)])
    new = record(store, NEW, inputs=[upstream(UP_OLD)])
    result = why.compare(new, old, repo)
    assert result["unknown"] == ["runtime", "source", "watched"]
    assert result["verdict"] == "unknown: the older build recorded no runtime, source, watched"
    assert result["data"]["files"] == [] and result["logic"]["files"] == []
    assert result["logic"]["config"] == []
    assert repo.asked == []


def test_inputs_without_digests_are_compared_by_changeset(store):
    old = record(store, OLD, inputs=[upstream(UP_OLD, digests=None)])
    same = record(store, NEW, inputs=[upstream(UP_OLD, digests=None)])
    moved = record(store, NEW, inputs=[upstream(UP_NEW, digests=None)])
    assert why.compare(same, old, Repo())["data"]["upstream"] == []
    assert why.compare(moved, old, Repo())["data"]["upstream"] == [
        {"task": "Fetch()", "from": UP_OLD, "to": UP_NEW, "change": "unknown content"}]
    # and it is followed upstream in turn, as a known change is
    assert why.changed_upstream(why.compare(moved, old, Repo())) == [
        ("Fetch()", UP_OLD, UP_NEW)]
