"""core.verify: the audit chain, lineage and the outputs on disk checked against
each other, and every kind of tampering named by what it touched."""

import hashlib
import json
import os

import pytest

from hgext_luigi.core import audit, lineage, verify

KEY = b"k3y"
A, B = "a" * 40, "b" * 40


def sha(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path):
    """A run at B: Clean() built with an output file on disk, Report() read it."""
    s = lineage.open_store(str(tmp_path / "lineage.db"), str(tmp_path / "outputs"),
                           audit.Chain(KEY))
    s.begin_run("r1", B, "alice", "push", "local", [
        {"key": "Clean()", "family": "Clean", "changeset": B, "base": A, "affected": True,
         "reasons": ["x modified"], "status": "affected"},
        {"key": "Report()", "family": "Report", "changeset": B, "base": A, "affected": True,
         "reasons": ["upstream Clean() affected"], "status": "upstream"}])
    path = os.path.join(s.output_root, B, "clean.csv")
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(b"n,1\n")
    s.clean_path = path
    clean = s.start_build("r1", "Clean__1", "Clean()", "Clean", {}, B, A, ["x modified"],
                          "alice", "push", facts={"watched": {"x": "f" * 40}})
    s.finish_build(clean, "success", outputs=[{"path": path, "size": 4,
                                               "sha256": sha(b"n,1\n")}])
    report = s.start_build("r1", "Report__1", "Report()", "Report", {}, B, A, [], "alice",
                           "push")
    s.finish_build(report, "success", inputs=[
        {"task_id": "Clean__1", "key": "Clean()", "changeset": B, "outputs": [path],
         "digests": [sha(b"n,1\n")]}])
    s.end_run("r1", "success", {"Clean()": ("ran", "Clean__1", 1.0),
                                "Report()": ("ran", "Report__1", 1.0)})
    yield s
    s.close()


def problems(store, **kw):
    return [(p["kind"], p["problem"]) for p in verify.verify(store, KEY, **kw)["problems"]]


def test_an_untouched_store_verifies(store):
    result = verify.verify(store, KEY)
    assert result["problems"] == []
    assert (result["builds"], result["outputs"], result["before_audit"]) == (2, 1, 0)
    assert result["records"] == len(list(audit.records(store._db)))


def test_an_edited_build_row_is_found(store):
    store._db.execute("UPDATE builds SET status = 'failed', user = 'mallory' WHERE id = 1")
    assert problems(store) == [("lineage", "lineage build 1 differs from audit record %d "
                                "(status, user edited)" % last_build_record(store, 1))]


def last_build_record(store, build_id):
    return max(r["id"] for r in audit.records(store._db, kinds=["build"])
               if r["data"]["build"] == build_id)


def test_edited_outputs_inputs_and_facts_are_found(store):
    db = store._db
    db.execute("UPDATE outputs SET sha256 = ? WHERE build_id = 1", ("0" * 64,))
    db.execute("UPDATE inputs SET changeset = ? WHERE build_id = 2", (A,))
    db.execute("UPDATE facts SET value = 'forged' WHERE build_id = 1")
    found = problems(store, check_outputs=False)
    assert found == [
        ("lineage", "lineage build 1 differs from audit record %d (facts, outputs edited)"
         % last_build_record(store, 1)),
        ("lineage", "lineage build 2 differs from audit record %d (inputs edited)"
         % last_build_record(store, 2))]


def test_a_deleted_build_is_found(store):
    store._db.execute("DELETE FROM builds WHERE id = 2")
    assert problems(store) == [("lineage", "lineage build 2 described by audit record %d "
                                "is gone (deleted)" % last_build_record(store, 2))]


def test_an_inserted_build_is_found(store):
    store._db.execute("INSERT INTO builds(id, run_id, task_id, key, changeset, status)"
                      " VALUES (3, 'r1', 'Evil__1', 'Evil()', ?, 'success')", (B,))
    assert problems(store) == [("lineage", "lineage build 3 has no audit record (inserted)")]


def test_edited_deleted_and_inserted_runs_are_found(store):
    db = store._db
    db.execute("UPDATE runs SET user = 'mallory', status = 'failed' WHERE id = 'r1'")
    db.execute("UPDATE run_tasks SET affected = 0 WHERE key = 'Clean()'")
    found = problems(store)
    assert len(found) == 1
    assert found[0][1].startswith("run r1 differs from audit record")
    assert found[0][1].endswith("(plan, status, user edited)")
    db.execute("INSERT INTO runs(id, rev, started, user, status) VALUES "
               "('r2', ?, strftime('%s','now') + 10, 'mallory', 'success')", (B,))
    assert ("lineage", "run r2 has no audit record (inserted)") in problems(store)
    db.execute("DELETE FROM runs WHERE id = 'r1'")
    assert any(p[1].startswith("run r1 described by audit record")
               and p[1].endswith("is gone (deleted)") for p in problems(store))


def test_changed_and_missing_outputs_are_found(store):
    with open(store.clean_path, "ab") as f:
        f.write(b"s,2\n")
    assert problems(store) == [("output", "output %s of build 1 changed since it was built"
                                % store.clean_path)]
    assert problems(store, check_outputs=False) == []
    os.unlink(store.clean_path)
    assert problems(store) == [("output", "output %s of build 1 is missing"
                                % store.clean_path)]


def test_only_the_latest_build_of_a_path_is_checked(store):
    """A later build wrote the same path again: the file holds its content."""
    store.finish_build(store.start_build("r2", "Clean__2", "Clean()", "Clean", {}, B, A,
                                         [], "bob", "manual"),
                       "success", outputs=[{"path": store.clean_path, "size": 4,
                                            "sha256": sha(b"n,9\n")}])
    with open(store.clean_path, "wb") as f:
        f.write(b"n,9\n")
    result = verify.verify(store, KEY)
    assert result["problems"] == [] and result["outputs"] == 1


def test_tampering_with_the_chain_is_reported_as_audit(store):
    store._db.execute("UPDATE audit SET actor = 'mallory' WHERE id = 2")
    found = problems(store)
    assert found == [("audit", "record 2 was edited: its hash does not match its content")]


def test_a_build_edited_and_its_record_edited_to_match_is_still_found(store):
    """Editing lineage and the record that describes it alike: the chain
    breaks instead."""
    rec_id = last_build_record(store, 1)
    row = store._db.execute("SELECT data FROM audit WHERE id = ?", (rec_id,)).fetchone()
    data = json.loads(row[0])
    data["status"] = "failed"
    store._db.execute("UPDATE audit SET data = ? WHERE id = ?", (json.dumps(data), rec_id))
    store._db.execute("UPDATE builds SET status = 'failed' WHERE id = 1")
    assert problems(store) == [("audit", "record %d was edited: its hash does not match its "
                                "content" % rec_id)]


def test_a_truncated_log_is_found_against_the_head(store):
    head = audit.head(store._db)
    store._db.execute("DELETE FROM audit WHERE id = (SELECT MAX(id) FROM audit)")
    kinds = [k for k, _ in problems(store, expected_head=head)]
    assert "audit" in kinds  # the head kept elsewhere is not reached


def test_a_wiped_log_leaves_every_build_unaccounted_for(store):
    store._db.execute("DELETE FROM audit")
    found = problems(store)
    assert ("lineage", "lineage build 1 has no audit record (inserted)") in found
    assert ("lineage", "lineage build 2 has no audit record (inserted)") in found


def test_builds_before_the_audit_log_are_counted_not_checked(tmp_path):
    path, root = str(tmp_path / "lineage.db"), str(tmp_path / "outputs")
    old = lineage.open_store(path, root)
    old.finish_build(old.start_build("r0", "T__0", "T()", "T", {}, A, None, [], "alice",
                                     "manual"), "success")
    old.close()
    s = lineage.open_store(path, root, audit.Chain(KEY))
    try:
        s.finish_build(s.start_build("r1", "T__1", "T()", "T", {}, B, None, [], "bob",
                                     "manual"), "success")
        result = verify.verify(s, KEY)
        assert result["problems"] == []
        assert (result["before_audit"], result["builds"]) == (1, 1)
    finally:
        s.close()


# -- garbage where JSON was: reported, not a crash ----------------------------------------

@pytest.mark.parametrize("kind", ["build", "run-started", "run-ended"])
@pytest.mark.parametrize("data", ["[1]", "null"], ids=["list", "null"])
def test_an_audit_record_holding_no_object_is_reported(store, kind, data):
    store._db.execute("UPDATE audit SET data = ? WHERE id = (SELECT MAX(id) FROM audit"
                      " WHERE kind = ?)", (data, kind))
    assert ("audit" in [k for k, _ in problems(store)])


@pytest.mark.parametrize("sql", [
    "UPDATE builds SET params = 'not json' WHERE id = 1",
    "UPDATE builds SET reasons = '[' WHERE id = 1",
    "UPDATE builds SET extra = '{' WHERE id = 1",
    "UPDATE inputs SET outputs = '{' WHERE build_id = 2",
], ids=["params", "reasons", "extra", "inputs"])
def test_a_lineage_row_holding_garbage_is_reported(store, sql):
    store._db.execute(sql)
    assert [k for k, _ in problems(store)] == ["lineage"]


def test_an_audit_record_holding_garbage_text_is_reported(store):
    """What verify already handles: data that is not JSON at all."""
    store._db.execute("UPDATE audit SET data = 'garbage' WHERE id = (SELECT MAX(id)"
                      " FROM audit WHERE kind = 'build')")
    found = problems(store)
    assert found and found[0][0] == "audit" and "was edited" in found[0][1]
