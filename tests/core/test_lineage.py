"""core.lineage: the store of runs, builds, outputs and inputs, in SQLite under
tmp_path, through its main public methods."""

import json
import os
import shutil
import sqlite3

import pytest

from hgext_luigi.core import affected, audit, database, lineage

A, B, C = "a" * 40, "b" * 40, "c" * 40
SHA1, SHA2 = "1" * 64, "2" * 64


@pytest.fixture
def store(tmp_path, location):
    s = lineage.open_store(location,
                           str(tmp_path / "state" / "outputs"), audit.Chain())
    yield s
    s.close()


def out(store, rel):
    return os.path.join(store.output_root, rel)


def build(store, key="Clean(region=n)", changeset=A, status="success", run_id="r1",
          outputs=(), inputs=(), family=None, **kw):
    family = family or key.split("(")[0]
    b = store.start_build(run_id, "%s__%s" % (family, changeset[:4]), key, family,
                          {"region": "n"}, changeset, None, ["never built"], "alice",
                          "manual", **kw)
    store.finish_build(b, status, outputs=list(outputs), inputs=list(inputs),
                       error=None if status == "success" else "boom")
    return b


PLAN = [
    {"key": "Clean(region=n)", "family": "Clean", "task_id": "Clean__n", "changeset": B,
     "base": A, "affected": True, "reasons": ["raw/n.csv modified since aaaaaaaaaaaa"],
     "status": "affected"},
    {"key": "Report()", "family": "Report", "changeset": A, "base": A, "affected": False,
     "reasons": [], "status": "unaffected"},
]


# -- runs ---------------------------------------------------------------------------

def test_a_run_and_its_plan(store):
    store.begin_run("r1", B, "alice", "push", "local", PLAN)
    run = store.latest_run(B)
    assert run["id"] == "r1" and run["status"] == "running" and run["user"] == "alice"
    tasks = store.run_tasks("r1")
    assert [(t["key"], t["affected"], t["status"], t["outcome"]) for t in tasks] == [
        ("Clean(region=n)", True, "affected", "pending"),
        ("Report()", False, "unaffected", "pending")]
    assert tasks[0]["reasons"] == ["raw/n.csv modified since aaaaaaaaaaaa"]
    store.end_run("r1", "success", {"Clean(region=n)": ("ran", "Clean__n2", 1.5),
                                    "Report()": ("reused", None, 0.0)}, "1 ran, 1 reused")
    run = store.latest_run(B)
    assert (run["status"], run["summary"]) == ("success", "1 ran, 1 reused")
    assert run["ended"] >= run["started"]
    tasks = store.run_tasks("r1")
    assert [(t["outcome"], t["task_id"], t["seconds"]) for t in tasks] == [
        ("ran", "Clean__n2", 1.5), ("reused", None, 0.0)]
    assert store.latest_run(C) is None


def test_the_latest_run_of_a_revision_wins(store):
    store.begin_run("r1", B, "alice", "push", "local", [])
    store.begin_run("r2", B, "bob", "manual", "local", [])
    assert store.latest_run(B)["id"] == "r2"


def test_a_run_id_cannot_be_recorded_twice(store):
    store.begin_run("r1", B, "alice", "push", "local", PLAN)
    with pytest.raises(database.ERRORS):
        store.begin_run("r1", C, "mallory", "push", "local", [])
    assert store.latest_run(B)["user"] == "alice" and store.latest_run(C) is None


# -- builds ---------------------------------------------------------------------------

def test_a_build_from_start_to_finish(store):
    b = store.start_build("r1", "Clean__n", "Clean(region=n)", "Clean", {"region": "n"},
                          A, None, ["never built"], "alice", "manual",
                          facts={"watched": {"raw/n.csv": "f" * 40},
                                 "runtime": {"python": "3.11"}})
    row = store.build(b)
    assert (row["status"], row["params"], row["reasons"]) == (
        "running", {"region": "n"}, ["never built"])
    assert store.success_for("Clean__n", A) is None
    path = out(store, A + "/clean/n.csv")
    store.finish_build(b, "success", outputs=[{"path": path, "size": 3, "sha256": SHA1}],
                       extra={"note": "x"})
    row = store.build(b)
    assert row["status"] == "success" and row["extra"] == {"note": "x"}
    assert row["ended"] >= row["started"]
    assert store.success_for("Clean__n", A)["id"] == b
    assert store.outputs(b) == [{"path": path, "size": 3, "sha256": SHA1}]
    assert store.facts(b) == {"watched": {"raw/n.csv": "f" * 40},
                              "runtime": {"python": "3.11"}}
    assert store.build(b + 1) is None


def test_success_for_is_the_latest_success_only(store):
    first = build(store)
    build(store, status="failed")
    assert store.success_for("Clean__aaaa", A)["id"] == first
    again = build(store)
    assert store.success_for("Clean__aaaa", A)["id"] == again
    assert store.success_for("Clean__aaaa", B) is None


def test_inputs_with_and_without_digests(store):
    up = out(store, A + "/clean/n.csv")
    b = build(store, "Report()", B, inputs=[
        {"task_id": "Clean__n", "key": "Clean(region=n)", "changeset": A,
         "outputs": [up], "digests": [SHA1]},
        {"task_id": "Ext__1", "key": "Ext()", "changeset": None, "outputs": ["/data/x"]}])
    assert store.inputs(b) == [
        {"task_id": "Clean__n", "key": "Clean(region=n)", "changeset": A,
         "outputs": [up], "digests": [SHA1]},
        {"task_id": "Ext__1", "key": "Ext()", "changeset": None, "outputs": ["/data/x"],
         "digests": None}]


def test_history_and_the_builds_behind_an_output(store):
    path = out(store, A + "/r.csv")
    one = build(store, "Report()", A, outputs=[{"path": path, "size": 1, "sha256": SHA1}])
    two = build(store, "Report()", A, status="failed",
                outputs=[{"path": path, "size": 1, "sha256": SHA2}])
    build(store, "Other()", A)
    assert [b["id"] for b in store.history("Report")] == [one, two]  # a family
    assert [b["id"] for b in store.history("Report()")] == [one, two]  # a key
    assert [b["id"] for b in store.builds_producing(path)] == [one]  # successes only


def test_output_paths_survive_a_moved_repository(store, tmp_path, location):
    """Paths under the output root are kept relative to it: the store opened
    from its new place gives the new absolute paths (a shared store: opened
    by a host whose outputs live elsewhere)."""
    inside = out(store, A + "/clean/n.csv")
    b = build(store, outputs=[{"path": inside, "size": 1, "sha256": SHA1},
                              {"path": "/srv/shared/plain.csv", "size": 2, "sha256": SHA2}],
              inputs=[{"task_id": "U__1", "key": "U()", "changeset": A,
                       "outputs": [inside]}])
    store.close()
    if database.is_url(location):
        moved = lineage.open_store(location, str(tmp_path / "moved" / "outputs"))
    else:
        shutil.move(str(tmp_path / "state"), str(tmp_path / "moved"))
        moved = lineage.open_store(str(tmp_path / "moved" / "lineage.db"),
                                   str(tmp_path / "moved" / "outputs"))
    try:
        new = os.path.join(str(tmp_path / "moved" / "outputs"), A, "clean", "n.csv")
        assert [o["path"] for o in moved.outputs(b)] == ["/srv/shared/plain.csv", new]
        assert moved.inputs(b)[0]["outputs"] == [new]
        assert [x["id"] for x in moved.builds_producing(new)] == [b]
    finally:
        moved.close()


def test_paths_that_only_look_inside_the_output_root_stay_absolute(store):
    """A path escaping the root with ``..``, or a sibling folder sharing its
    name as a prefix, is not recorded as a path under the root."""
    root = store.output_root
    escaping = root + "/" + A + "/../../escaped.csv"
    sibling = root + "-other/x.csv"
    b = build(store, outputs=[{"path": escaping, "size": 1, "sha256": SHA1},
                              {"path": sibling, "size": 1, "sha256": SHA2}])
    paths = sorted(o["path"] for o in store.outputs(b))
    assert paths == sorted([os.path.normpath(escaping), sibling])
    assert all(not p.startswith(root + os.sep) for p in paths)


def test_credentials_the_runner_sends_do_not_replace_the_issued_record(store):
    issued = {"role": "arn:aws:iam::123456789012:role/r", "session": "Clean-aaaaaaaaaaaa",
              "access_key_id": "ASIA1", "expires": "2030-01-01T00:00:00+00:00"}
    b = store.start_build("r1", "Clean__n", "Clean(region=n)", "Clean", {}, A, None, [],
                          "alice", "manual", credentials=issued)
    store.finish_build(b, "success", extra={"credentials": {"role": "forged"}, "rows": 3})
    assert store.build(b)["extra"] == {"rows": 3, "credentials": issued}
    kinds = [r["kind"] for r in audit.records(store._db, kinds=["credentials"])]
    assert kinds == ["credentials"]


def test_a_dynamic_dependency_resumes_the_same_build(store):
    b = store.start_build("r1", "T__1", "T()", "T", {}, A, None, [], "alice", "manual",
                          credentials={"role": "r", "access_key_id": "ASIA1"})
    store.resume_build(b, {"role": "r", "access_key_id": "ASIA2"})
    assert store.build(b)["status"] == "running"
    assert store.build(b)["extra"]["credentials"]["access_key_id"] == "ASIA2"
    store.finish_build(b, "success")
    assert [x["id"] for x in store.history("T()")] == [b]


def test_a_killed_run_is_marked_interrupted(store):
    store.begin_run("r1", B, "alice", "push", "local", PLAN)
    b = store.start_build("r1", "T__1", "T()", "T", {}, B, None, [], "alice", "manual")
    done = build(store, "U()", B)
    assert store.interrupt_stale() == 1
    assert store.build(b)["status"] == "failed"
    assert "interrupted" in store.build(b)["error"]
    assert store.build(done)["status"] == "success"
    assert store.latest_run(B)["status"] == "interrupted"
    assert store.interrupt_stale() == 0


# -- planning reads ---------------------------------------------------------------------

def test_checks_are_one_row_per_task_replaced_by_the_next_run(store):
    assert store.checks() == {}
    store.record_checks(B, [("Report()", A, "d1"), ("Docs()", A, "d2")])
    store.record_checks(C, [("Report()", A, "d3")])
    assert store.checks() == {"Report()": (C, A, "d3"), "Docs()": (B, A, "d2")}


def test_reuse_candidates_put_the_build_at_the_revision_first(store):
    old = build(store, "T()", A)
    mid = build(store, "T()", B)
    build(store, "T()", C, status="failed")
    again_a = build(store, "T()", A)  # the latest success per changeset counts
    assert store.reuse_candidates() == {"T()": [(A, again_a), (B, mid)]}
    assert store.reuse_candidates(at=B) == {"T()": [(B, mid), (A, again_a)]}
    assert store.reuse_candidates(at=A, limit=0) == {"T()": [(A, again_a)]}
    assert old != again_a


def test_builds_at_ancestors_come_before_newer_ones_of_other_branches(store):
    """A queue of several branches builds heads of other branches after the
    base of a revision: those must not push the base's build out of reach."""
    base = build(store, "T()", A)
    other_branches = [build(store, "T()", c) for c in (B, C, "d" * 40)]
    assert store.reuse_candidates(at="e" * 40, limit=2)["T()"][0][1] == other_branches[-1]
    first = store.reuse_candidates(at="e" * 40, limit=2, ancestor=lambda c: c == A)
    assert first["T()"][0] == (A, base)


def test_reuse_feeds_the_planner(store):
    """The store read as ``affected.classify`` reads it: the build of each task,
    with its outputs and the inputs it consumed, and the check of a task
    still defined the same way."""
    up = out(store, A + "/n.csv")
    clean = build(store, "Clean()", A, outputs=[{"path": up, "size": 1, "sha256": SHA1}])
    report = build(store, "Report()", A, inputs=[
        {"task_id": "Clean__aaaa", "key": "Clean()", "changeset": A, "outputs": [up]}])
    node = affected.Node("Report()", "Report", ["Clean()"], ["report.cfg"], ["p/r.py"])
    store.record_checks(B, [("Report()", A, affected.node_digest(node))])
    reuse = lineage.Reuse(store, B, digest=lambda key: affected.node_digest(node))
    got = list(reuse("Report()"))
    assert got == [{"outputs": [], "overwritten": [], "inputs": {"Clean()": A},
                    "changeset": A, "build": report, "since": B}]
    assert [b["outputs"] for b in reuse("Clean()")] == [[up]]
    assert [b["build"] for b in reuse("Clean()")] == [clean]
    assert list(reuse("Never()")) == []
    # the task's definition changed since the check: the check does not count
    changed = lineage.Reuse(store, B, digest=lambda key: "another definition")
    assert "since" not in next(changed("Report()"))


# -- files, paths, the store itself ----------------------------------------------------------

def test_file_digest_of_a_file_and_of_a_folder(tmp_path):
    f = tmp_path / "f.txt"
    f.write_bytes(b"abc")
    assert lineage.file_digest(str(f)) == (
        3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    for d, order in ((d1, ("b", "a/x")), (d2, ("a/x", "b"))):
        for name in order:  # created in another order: same digest
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_text(name)
    assert lineage.file_digest(str(d1)) == lineage.file_digest(str(d2))
    assert lineage.file_digest(str(d1))[0] == 4
    (d2 / "a" / "x").rename(d2 / "a" / "y")  # same bytes, another name
    assert lineage.file_digest(str(d1)) != lineage.file_digest(str(d2))


def test_relative_to_and_migrated_path():
    root = "/srv/repo/.hg/luigi/outputs"
    assert lineage.relative_to(root + "/" + A + "/x", root) == A + "/x"
    assert lineage.relative_to(root, root) is None
    assert lineage.relative_to(root + "/../x", root) is None
    assert lineage.relative_to("/srv/repo/.hg/luigi/outputs2/x", root) is None
    assert lineage.relative_to("relative/x", root) is None
    # schema 1 paths: under the root, under the repository's old place, elsewhere
    assert lineage.migrated_path(root + "/" + A + "/x", A, root) == A + "/x"
    assert lineage.migrated_path("/old/place/.hg/luigi/outputs/%s/x" % A, A, root) == \
        A + "/x"
    assert lineage.migrated_path("/var/data/%s/x" % B, A, root) == "/var/data/%s/x" % B
    assert lineage.migrated_path("/var/%s" % A, A, root) == "/var/%s" % A  # a file name
    assert lineage.migrated_path("already/relative", A, root) == "already/relative"
    assert lineage.migrated_path("/x/ABCD/y", "ABCD", root) == "/x/ABCD/y"  # not a changeset


def test_a_file_that_is_not_a_store_is_refused(tmp_path):
    path = tmp_path / "lineage.db"
    path.write_bytes(b"garbage" * 1000)
    with pytest.raises(lineage.StoreError, match="cannot open lineage store"):
        lineage.open_store(str(path))


def test_a_store_without_a_chain_writes_no_audit_records(tmp_path):
    s = lineage.open_store(str(tmp_path / "lineage.db"))
    try:
        build(s)
        s.record("decision", {"x": 1})
        assert list(audit.records(s._db)) == []
    finally:
        s.close()


def test_every_write_is_on_the_record(store):
    store.begin_run("r1", B, "alice", "push", "local", PLAN)
    build(store, "Clean(region=n)", B)
    store.end_run("r1", "success", {})
    store.record("push-refused", {"why": "acl"}, actor="mallory")
    kinds = [r["kind"] for r in audit.records(store._db)]
    assert kinds == ["audit-started", "run-started", "build", "build", "run-ended",
                     "push-refused"]
    assert audit.verify_chain(store._db) == ([], 6)


def test_hostile_text_is_stored_as_data(store):
    key = "T(x='); DROP TABLE builds; --\n\x00é)"
    b = build(store, key, A)
    if store._db.dialect == "postgresql":  # its text holds no NUL: U+FFFD instead
        key = key.replace("\x00", "\ufffd")
    assert store.build(b)["key"] == key
    assert [x["id"] for x in store.history(key)] == [b]
    store.begin_run("r'1", A, "a'); --", "push", "local", [
        {"key": key, "family": "T", "changeset": A, "affected": True}])
    assert store.run_tasks("r'1")[0]["key"] == key


def test_reasons_and_params_round_trip_as_json(store):
    b = store.start_build("r1", "T__1", "T()", "T", {"when": "2026-01-01", "n": "3"}, A, B,
                          ["x modified since bbbbbbbbbbbb", "upstream U() affected"],
                          "alice", "manual")
    row = store.build(b)
    assert row["params"] == {"when": "2026-01-01", "n": "3"} and row["base"] == B
    assert row["reasons"] == ["x modified since bbbbbbbbbbbb", "upstream U() affected"]
    raw = store._db.execute("SELECT params FROM builds WHERE id = ?", (b,)).fetchone()[0]
    assert json.loads(raw) == row["params"]


# -- leases: runs of several build hosts on one store ------------------------------

def test_a_lease_is_held_until_it_runs_out_or_its_owner_gives_it_up(store):
    assert store.take_lease("T__1", A, "run1", 60)
    assert store.take_lease("T__1", A, "run1", 60)  # renewing it
    assert not store.take_lease("T__1", A, "run2", 60)
    assert store.lease_holder("T__1", A)[0] == "run1"
    assert store.take_lease("T__1", B, "run2", 60)  # another changeset
    store.drop_leases("run1", "T__1", A)
    assert store.take_lease("T__1", A, "run2", 60)
    assert store.take_lease("T__2", A, "run3", -1)  # already run out
    assert store.take_lease("T__2", A, "run4", 60)
    assert store.renew_leases("run2", 60) == 2


def test_on_a_shared_store_only_runs_whose_lease_ran_out_are_interrupted(store):
    store.begin_run("live", A, "alice", "push", "local", PLAN)
    store.begin_run("dead", B, "bob", "push", "local", PLAN)
    store.take_lease("run", "live", "live", 60)
    store.take_lease("run", "dead", "dead", -1)
    store.start_build("live", "T__1", "T()", "T", {}, A, None, [], "alice", "push")
    dead = store.start_build("dead", "T__1", "T()", "T", {}, B, None, [], "bob", "push")
    assert store.interrupt_stale(shared=True) == 1
    assert store.latest_run(A)["status"] == "running"
    assert store.latest_run(B)["status"] == "interrupted"
    assert store.build(dead)["status"] == "failed"
    assert store.lease_holder("run", "dead") is None
    assert audit.verify_chain(store._db)[0] == []
    # on a repository's own store, under its run lock, every running run is dead
    assert store.interrupt_stale() == 1
    assert store.latest_run(A)["status"] == "interrupted"
