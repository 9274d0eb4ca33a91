"""core.builds: what the hg side answers the runner's requests, and what it
refuses, over a real lineage store (with its audit chain) in tmp_path.

The runner runs pushed code: every request here is one that code could send."""

import json
import os
import types

import pytest
from conftest import DenyingSTS

from hgext_luigi.core import audit, builds, lineage, protocol

REV, OLD, OTHER = "b" * 40, "a" * 40, "c" * 40
ROLE = "arn:aws:iam::123456789012:role/clean-role"
SHA = "5e" * 32

PLAN = [
    {"key": "Clean(region=n)", "family": "Clean", "changeset": REV, "base": OLD,
     "affected": True, "reasons": ["raw/n.csv modified since aaaaaaaaaaaa"]},
    {"key": "Clean(region=s)", "family": "Clean", "changeset": OLD, "base": OLD,
     "affected": False, "reasons": []},
    {"key": "Report()", "family": "Report", "changeset": REV, "base": OLD,
     "affected": True, "reasons": ["upstream Clean(region=n) affected"]},
]


def settings(roles=(), endpoint=None):
    return types.SimpleNamespace(roles=tuple(roles), aws_region="us-east-1",
                                 aws_endpoint_url=endpoint, aws_profile=None,
                                 credential_duration=900, lease=60)


def run_data(force=False):
    return {"run_id": "run1", "rev": REV, "user": "alice", "trigger": "push",
            "identity": "alice", "branch": "default", "plan": PLAN,
            "stamps": {r["key"]: r["changeset"] for r in PLAN},
            "force": ["Clean(region=s)"] if force else []}


@pytest.fixture
def store(tmp_path):
    s = lineage.open_store(str(tmp_path / "lineage.db"), str(tmp_path / "outputs"),
                           audit.Chain(b"key"))
    s.begin_run("run1", REV, "alice", "push", "local", PLAN)
    yield s
    s.close()


def files_of(key, changeset):
    return {"watched": {"raw/n.csv": "f" * 40}, "source": {"p/clean.py": "e" * 40}}


def trees(tmp_path):
    def tree_of(changeset):
        return str(tmp_path / "trees" / changeset)
    return tree_of


@pytest.fixture
def recorder(store, tmp_path):
    return builds.Builds(store, settings(), run_data(), files_of, None, trees(tmp_path))


def start(key="Clean(region=n)", family="Clean", changeset=REV, **kw):
    return dict({"event": "request", "op": "start-build", "key": key, "family": family,
                 "task_id": "%s_1" % family, "params": {}, "changeset": changeset}, **kw)


def finish(build, status="success", **kw):
    return dict({"event": "request", "op": "finish-build", "build": build,
                 "status": status}, **kw)


def refused(answer):
    assert set(answer) == {"error"}, answer
    assert answer["error"].startswith("refused: ")
    return answer["error"][len("refused: "):]


# -- what it does -------------------------------------------------------------------

def test_a_build_started_and_finished(recorder, store, tmp_path):
    answer = recorder.handle(start(params={"region": "n"},
                                   facts={"config": {"core": "d1"},
                                          "runtime": {"python": "3.11"}}))
    assert answer == {"build": 1, "credentials": None}
    row = store.build(1)
    assert (row["status"], row["changeset"], row["base"], row["run_id"], row["user"]) == (
        "running", REV, OLD, "run1", "alice")
    assert row["reasons"] == ["raw/n.csv modified since aaaaaaaaaaaa"]
    assert store.facts(1) == {"config": {"core": "d1"}, "runtime": {"python": "3.11"},
                              "watched": {"raw/n.csv": "f" * 40},
                              "source": {"p/clean.py": "e" * 40}}
    out = str(tmp_path / "outputs" / REV / "clean-n.csv")
    assert recorder.handle(finish(1, outputs=[{"path": out, "size": 3, "sha256": SHA}],
                                  extra={"rows": 3})) == {"ok": True}
    row = store.build(1)
    assert row["status"] == "success" and row["extra"] == {"rows": 3}
    assert store.outputs(1) == [{"path": out, "size": 3, "sha256": SHA}]
    assert recorder.open == {}


def test_a_failed_build_keeps_its_error(recorder, store):
    b = recorder.handle(start())["build"]
    recorder.handle(finish(b, "failed", error="ValueError: x", traceback="Traceback..."))
    row = store.build(b)
    assert (row["status"], row["error"], row["traceback"]) == (
        "failed", "ValueError: x", "Traceback...")


def test_run_again_after_its_dynamic_dependencies_is_the_same_build(recorder, store):
    first = recorder.handle(start())["build"]
    again = recorder.handle(start())["build"]
    assert first == again and [b["id"] for b in store.history("Clean(region=n)")] == [first]
    assert recorder.handle(finish(first)) == {"ok": True}


def test_builds_left_open_when_the_runner_ends_are_failed(recorder, store):
    a = recorder.handle(start())["build"]
    b = recorder.handle(start("Report()", "Report"))["build"]
    recorder.handle(finish(a))
    recorder.close_open()
    assert store.build(a)["status"] == "success"
    assert store.build(b)["status"] == "failed"
    assert store.build(b)["error"] == "the run ended before this build finished"
    assert recorder.open == {}


def test_the_tree_of_a_planned_changeset(recorder, tmp_path):
    assert recorder.handle({"op": "tree", "changeset": OLD}) == {
        "path": str(tmp_path / "trees" / OLD)}
    assert recorder.handle({"op": "tree", "changeset": REV}) == {
        "path": str(tmp_path / "trees" / REV)}


def test_every_build_is_on_the_audit_record(recorder, store):
    b = recorder.handle(start())["build"]
    recorder.handle(finish(b))
    records = list(audit.records(store._db, kinds=["build"]))
    assert [r["data"]["status"] for r in records] == ["running", "success"]
    assert audit.verify_chain(store._db, b"key")[0] == []


# -- what it refuses ---------------------------------------------------------------------

def test_an_unknown_request(recorder):
    assert refused(recorder.handle({"op": "delete-lineage"})) == \
        "unknown request 'delete-lineage'"
    assert refused(recorder.handle({}))


def test_a_build_id_it_did_not_start(recorder, store):
    other = store.start_build("run0", "X_1", "X()", "X", {}, OLD, None, [], "bob", "manual")
    for build in (other, 999, "1", None, 1.0, [1]):
        assert "is not one this run has open" in refused(recorder.handle(finish(build)))
    assert store.build(other)["status"] == "running"  # untouched


def test_a_build_finished_twice(recorder, store):
    b = recorder.handle(start())["build"]
    recorder.handle(finish(b, "failed", error="boom"))
    assert "is not one this run has open" in refused(recorder.handle(finish(b)))
    assert store.build(b)["status"] == "failed"


def test_a_changeset_it_did_not_plan(recorder, store):
    for changeset in (OTHER, OLD, REV.upper(), REV[:12], "../" * 13 + "x", 40):
        answer = recorder.handle(start(changeset=changeset))
        assert "error" in answer
    # an unaffected task is stamped with its old build: only that one
    assert "is not the one planned" in refused(
        recorder.handle(start("Clean(region=s)", changeset=REV)))
    # a task outside the plan: the revision of the run only
    assert "is not the one planned" in refused(
        recorder.handle(start("Dynamic()", "Dynamic", changeset=OLD)))
    assert store.history("Clean") == [] and store.history("Dynamic") == []


def test_a_family_that_does_not_match(recorder, store):
    assert refused(recorder.handle(start("Clean(region=n)", "Report"))) == \
        "Clean(region=n) is a task of family Clean, not Report"
    assert store.history("Clean(region=n)") == []


@pytest.mark.parametrize("field, value", [
    ("key", None), ("key", 1), ("family", ["Clean"]), ("task_id", {}),
    ("params", None), ("params", ["region"]), ("params", {"region": 1}),
])
def test_malformed_start_requests(recorder, store, field, value):
    assert refused(recorder.handle(start(**{field: value})))
    assert store.history("Clean") == []


@pytest.mark.parametrize("fields", [
    {"status": "succeeded"}, {"status": None},
    {"extra": ["x"]}, {"error": 1}, {"traceback": {"x": 1}},
    {"outputs": "x.csv"}, {"outputs": [{"path": "x.csv"}]},
    {"outputs": [{"path": "x.csv", "size": "3", "sha256": SHA}]},
    {"outputs": [{"path": "x.csv", "size": 3, "sha256": "not-a-digest"}]},
    {"outputs": [{"path": "x.csv", "size": 3, "sha256": SHA.upper()}]},
    {"outputs": [{"path": 1, "size": 3, "sha256": SHA}]},
    {"inputs": {"key": "U()"}}, {"inputs": ["U()"]},
    {"inputs": [{"task_id": 1, "key": "U()", "changeset": OLD}]},
    {"inputs": [{"task_id": "U_1", "key": "U()", "changeset": OLD, "outputs": "x"}]},
    {"inputs": [{"task_id": "U_1", "key": "U()", "changeset": OLD, "outputs": [1]}]},
])
def test_malformed_finish_requests_leave_the_build_open(recorder, store, fields):
    b = recorder.handle(start())["build"]
    assert refused(recorder.handle(finish(b, **fields)))
    assert store.build(b)["status"] == "running" and store.outputs(b) == []
    assert recorder.handle(finish(b)) == {"ok": True}  # the real finish still works


def test_a_tree_request_for_an_unplanned_changeset(recorder, store, tmp_path):
    for changeset in (OTHER, "tip", "..", REV[:12]):
        assert "is not one this run builds or reuses" in refused(
            recorder.handle({"op": "tree", "changeset": changeset}))
    assert refused(recorder.handle({"op": "tree", "changeset": None})) == \
        "changeset is not a string"
    no_trees = builds.Builds(store, settings(), run_data(), files_of)
    assert "is not one this run builds or reuses" in refused(
        no_trees.handle({"op": "tree", "changeset": REV}))


def test_forged_facts_are_not_recorded(recorder, store):
    """The files a build depends on come from the repository, never from the
    runner; configuration and runtime values only as short strings."""
    b = recorder.handle(start(facts={
        "watched": {"raw/n.csv": "0" * 40, "forged.csv": "0" * 40},
        "source": {"evil.py": "0" * 40},
        "config": {"core": "x" * 5000}, "runtime": {"python": 3}}))["build"]
    assert store.facts(b) == files_of(None, None)


@pytest.mark.parametrize("request_", [
    start("Dynamic(\udcff)", "Dynamic"),
    start(params={"region": "\udcff"}),
    "finish-error",
], ids=["start-key", "start-params", "finish-error"])
def test_a_lone_surrogate_is_refused_not_a_crash(recorder, request_):
    if request_ == "finish-error":
        b = recorder.handle(start())["build"]
        request_ = finish(b, "failed", error="\udcff")
    line = protocol.encode(request_)  # what the runner writes...
    ev = protocol.parse_event(line)  # ...and what the hg side reads back
    assert "error" in recorder.handle(ev)


# -- credentials --------------------------------------------------------------------------

def test_credentials_for_a_planned_build(store, moto, server_credentials, tmp_path):
    recorder = builds.Builds(store, settings([("Clean*", ROLE)], moto.url), run_data(),
                             files_of)
    answer = recorder.handle(start())
    secret = answer["credentials"]
    assert secret["AWS_ACCESS_KEY_ID"].startswith("ASIA")
    assert secret["AWS_SECRET_ACCESS_KEY"] and secret["AWS_SESSION_TOKEN"]
    issued = store.build(answer["build"])["extra"]["credentials"]
    assert issued["role"] == ROLE and issued["session"] == "Clean-bbbbbbbbbbbb"
    assert issued["access_key_id"] == secret["AWS_ACCESS_KEY_ID"]
    assert issued["source_identity"] == "alice"
    # what lineage and the audit log keep holds no secret part
    store.close()
    data = b""
    for name in ("lineage.db", "lineage.db-wal"):
        if os.path.exists(str(tmp_path / name)):
            with open(str(tmp_path / name), "rb") as f:
                data += f.read()
    assert issued["access_key_id"].encode() in data  # what is kept is there
    assert secret["AWS_SECRET_ACCESS_KEY"].encode() not in data
    assert secret["AWS_SESSION_TOKEN"].encode() not in data
    assert b"server-secret-canary" not in data


def test_no_credentials_for_a_task_the_plan_does_not_build(store, server_credentials,
                                                           denying_sts):
    """Any code of the run can ask: a reused task, or one outside the plan,
    of a family with a role gets nothing, and STS is not even asked."""
    recorder = builds.Builds(store, settings([("*", ROLE)], denying_sts), run_data(),
                             files_of)
    reused = recorder.handle(start("Clean(region=s)", changeset=OLD))
    outside = recorder.handle(start("Clean(region=x)"))
    assert reused["credentials"] is None and outside["credentials"] is None
    assert "refused" not in reused and "refused" not in outside
    assert DenyingSTS.calls == []
    assert store.build(reused["build"])["extra"] is None


def test_forced_runs_build_every_planned_task(store, server_credentials, denying_sts):
    recorder = builds.Builds(store, settings([("*", ROLE)], denying_sts),
                             run_data(force=True), files_of)
    recorder.handle(start("Clean(region=s)", changeset=OLD))
    assert len(DenyingSTS.calls) == 1


def test_a_role_that_cannot_be_assumed_is_a_refusal_on_record(store, server_credentials,
                                                              denying_sts):
    recorder = builds.Builds(store, settings([("Clean", ROLE)], denying_sts), run_data(),
                             files_of)
    answer = recorder.handle(start())
    assert set(answer) == {"build", "refused"}
    assert "AccessDenied" in answer["refused"]
    assert "cannot assume role %s for Clean" % ROLE in answer["refused"]
    extra = store.build(answer["build"])["extra"]["credentials"]
    assert extra["role"] == ROLE and "AccessDenied" in extra["error"]
    denied = list(audit.records(store._db, kinds=["credentials"]))
    assert len(denied) == 1 and "AccessDenied" in denied[0]["data"]["error"]
    # a family without a role still builds without
    assert recorder.handle(start("Report()", "Report"))["credentials"] is None


# -- OpenLineage ------------------------------------------------------------------------------

def test_each_build_is_told_to_openlineage(store, tmp_path, monkeypatch):
    pytest.importorskip("openlineage.client")
    from hgext_luigi.core import olevents

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    path = tmp_path / "events.jsonl"
    emitter = olevents.Emitter.create("ns", "/srv/repo", {
        "OPENLINEAGE__TRANSPORT__TYPE": "file",
        "OPENLINEAGE__TRANSPORT__LOG_FILE_PATH": str(path),
        "OPENLINEAGE__TRANSPORT__APPEND": "true"})
    recorder = builds.Builds(store, settings(), run_data(), files_of, emitter)
    up = str(tmp_path / "outputs" / OLD / "s.csv")
    clean = recorder.handle(start())["build"]
    report = recorder.handle(start("Report()", "Report"))["build"]
    recorder.handle(finish(clean, outputs=[{"path": up, "size": 1, "sha256": SHA}]))
    recorder.handle(finish(report, "failed", error="boom", inputs=[
        {"task_id": "Clean_1", "key": "Clean(region=n)", "changeset": REV, "outputs": [up],
         "digests": [SHA]}]))
    open_one = recorder.handle(start("Clean(region=x)"))["build"]
    recorder.close_open()  # closes the emitter too
    with open(path) as f:
        events = [json.loads(line) for line in f]
    kinds = [(e["eventType"], e["run"]["facets"]["hgext_luigi"]["build"]) for e in events]
    assert kinds == [("START", clean), ("START", report), ("COMPLETE", clean),
                     ("FAIL", report), ("START", open_one), ("ABORT", open_one)]
    fail = events[3]
    assert fail["run"]["facets"]["errorMessage"]["message"] == "boom"
    assert [(i["name"], i["facets"]["version"]["datasetVersion"]) for i in fail["inputs"]
            if i["namespace"] == "file"] == [(up, SHA)]
    watched = [i["name"] for i in events[0]["inputs"] if i["namespace"] == "ns"]
    assert watched == ["raw/n.csv"]


@pytest.mark.parametrize("size", [10 ** 400, -1, True, 1.5], ids=["huge", "negative",
                                                                 "bool", "float"])
def test_an_output_size_sqlite_cannot_hold_is_refused(recorder, store, size):
    b = recorder.handle(start())["build"]
    out = {"path": "p", "size": size, "sha256": "0" * 64}
    assert refused(recorder.handle(finish(b, outputs=[out])))
    assert store.build(b)["status"] == "running"  # left open, nothing half-written


def test_a_request_this_side_cannot_carry_out_is_an_error_not_a_crash(store, tmp_path):
    def broken_tree(changeset):
        raise OSError(28, "No space left on device")

    recorder = builds.Builds(store, settings(), run_data(), files_of, None, broken_tree)
    answer = recorder.handle({"event": "request", "op": "tree", "changeset": REV})
    assert answer == {"error": "failed: OSError: [Errno 28] No space left on device"}


# -- leases: two runs (two build hosts) never build one task at one changeset --

def start_event(key="Clean(region=n)", task_id="Clean__n"):
    return {"op": "start-build", "key": key, "family": "Clean", "task_id": task_id,
            "params": {"region": "n"}, "changeset": REV}


def two_runs(store):
    """The hg sides of two runs of one revision (two build hosts), on a store
    taken for a shared one (a SQLite file: the same statements)."""
    store.shared = True
    store.begin_run("run2", REV, "bob", "push", "local", PLAN)
    return (builds.Builds(store, settings(), run_data(), files_of),
            builds.Builds(store, settings(), dict(run_data(), run_id="run2"), files_of))


def test_a_task_another_run_is_building_is_waited_for_then_not_built_again(store):
    first, second = two_runs(store)
    build = first.handle(start_event())["build"]
    assert second.handle(start_event()) == {"wait": builds._LEASE_POLL}
    # meanwhile the waiting run goes on answering its other requests
    assert second.handle({"op": "built", "task_id": "Clean__n", "changeset": REV,
                          "run_id": "run2"}) == {"built": False}
    first.handle({"op": "finish-build", "build": build, "status": "success"})
    assert second.handle(start_event()) == {"done": build}
    assert [b["run_id"] for b in store.history("Clean(region=n)")] == ["run1"]
    # what needs it in the waiting run finds it built, as if this run had built it
    assert second.handle({"op": "built", "task_id": "Clean__n", "changeset": REV,
                          "run_id": "run2"}) == {"built": True}


def test_a_failed_build_of_the_other_run_is_built_again(store):
    first, second = two_runs(store)
    build = first.handle(start_event())["build"]
    assert "wait" in second.handle(start_event())
    first.handle({"op": "finish-build", "build": build, "status": "failed"})
    assert second.handle(start_event())["build"] == build + 1


def test_another_runs_build_under_a_forged_task_id_is_not_taken(store):
    """A run that sends the victim's task id with a key of its own does not
    hold the victim's lease: leases are by the planned key."""
    mallory, victim = two_runs(store)
    forged = mallory.handle(dict(start_event(), key="Report()", family="Report"))["build"]
    mallory.handle({"op": "finish-build", "build": forged, "status": "success"})
    answer = victim.handle(start_event())
    assert "build" in answer and answer["build"] != forged


def test_the_lease_of_a_dead_run_runs_out_and_the_task_is_built(store):
    store.shared = True
    store.take_lease("Clean(region=n)", REV, "dead-run", -1)  # never renewed
    recorder = builds.Builds(store, settings(), run_data(), files_of)
    assert recorder.handle(start_event())["build"] == 1


def test_runs_ask_the_hg_side_what_lineage_holds(store):
    recorder = builds.Builds(store, settings(), run_data(), files_of)
    build = recorder.handle(start_event())["build"]
    recorder.handle({"op": "finish-build", "build": build, "status": "success",
                     "outputs": [{"path": "/o/n.csv", "size": 1, "sha256": "1" * 64}]})
    ask = recorder.handle
    assert ask({"op": "built", "task_id": "Clean__n", "changeset": REV}) == {"built": True}
    assert ask({"op": "built", "task_id": "Clean__n", "changeset": REV,
                "run_id": "other"}) == {"built": False}
    up = ask({"op": "upstream", "task_id": "Clean__n", "changeset": REV})
    assert up["build"] == build and [o["path"] for o in up["outputs"]] == ["/o/n.csv"]
    assert ask({"op": "upstream", "task_id": "Nope", "changeset": REV}) == \
        {"build": None, "outputs": []}
    assert "error" in ask({"op": "built", "task_id": 3, "changeset": REV})
