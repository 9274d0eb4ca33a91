"""core.olevents: the OpenLineage events of task builds, written by the real
client through its file transport, and checked against the vendored spec."""

import glob
import json
import logging
import os
import uuid
from datetime import datetime

import pytest

from hgext_luigi.core import olevents

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = os.path.join(ROOT, "tests", "helpers", "openlineage_spec")
CS1, CS2 = "a" * 40, "b" * 40
SHA_IN, SHA_OUT = "1" * 64, "2" * 64
RUN = {"run_id": uuid.uuid4().hex, "rev": CS1, "user": "Alice <alice@example.com>",
       "trigger": "push"}


@pytest.fixture
def nowhere(no_openlineage_config):
    return no_openlineage_config


def file_env(path):
    return {"OPENLINEAGE__TRANSPORT__TYPE": "file",
            "OPENLINEAGE__TRANSPORT__LOG_FILE_PATH": str(path),
            "OPENLINEAGE__TRANSPORT__APPEND": "true"}


@pytest.fixture
def emitter(nowhere, tmp_path):
    pytest.importorskip("openlineage.client")
    path = tmp_path / "events.jsonl"
    em = olevents.Emitter.create("https://bob:hunter2@hg.example.com/sales", "/srv/hg/sales",
                                 file_env(path))
    assert em is not None
    em.path = path
    yield em
    em.close(1)


def sent(em):
    assert em.close(10)
    with open(em.path) as f:
        return [json.loads(line) for line in f if line.strip()]


def make_build(build_id=7):
    return {"build": build_id, "key": "CleanSales(region=north)", "family": "CleanSales",
            "task_id": "CleanSales_north_0123456789", "changeset": CS1, "branch": "default",
            "params": {"region": "north"}, "code": ["pipelines/sales.py"],
            "watches": ["data/raw/sales-north.csv"], "started": 1000.0, "ended": 1002.5}


def test_a_build_gives_start_then_complete_sharing_one_run_id(emitter, tmp_path):
    b = make_build()
    upstream = [{"path": "/o/%s/raw.csv" % CS2, "sha256": SHA_IN, "size": 10,
                 "changeset": CS2, "key": "Fetch()"}]
    produced = [{"path": "/o/%s/clean.csv" % CS1, "sha256": SHA_OUT, "size": 42}]
    emitter.start(b, RUN)
    emitter.complete(b, RUN, upstream, produced)
    start, complete = sent(emitter)
    assert (start["eventType"], complete["eventType"]) == ("START", "COMPLETE")
    run_id = olevents.build_run_id(RUN["run_id"], 7)
    assert start["run"]["runId"] == complete["run"]["runId"] == run_id
    # the job: the task family, in the repository's namespace without its password
    assert complete["job"]["namespace"] == "https://bob@hg.example.com/sales"
    assert complete["job"]["name"] == "CleanSales"
    facets = complete["run"]["facets"]
    assert facets["parent"]["job"]["name"] == "luigi-run"
    assert facets["parent"]["run"]["runId"] == str(uuid.UUID(RUN["run_id"]))
    assert facets["hgext_luigi"]["build"] == 7 and facets["hgext_luigi"]["rev"] == CS1
    assert facets["executionParameters"]["parameters"] == [{"key": "region", "value": "north"}]
    code = complete["job"]["facets"]["sourceCodeLocation"]
    assert (code["type"], code["version"], code["url"]) == ("hg", CS1, "file:///srv/hg/sales")
    assert [(i["namespace"], i["name"]) for i in complete["inputs"]] == [
        ("https://bob@hg.example.com/sales", "data/raw/sales-north.csv"),
        ("file", "/o/%s/raw.csv" % CS2)]
    assert complete["inputs"][1]["facets"]["version"]["datasetVersion"] == SHA_IN
    assert complete["inputs"][1]["inputFacets"]["hgext_luigi_input"]["key"] == "Fetch()"
    [output] = complete["outputs"]
    assert output["name"] == "/o/%s/clean.csv" % CS1
    assert output["outputFacets"]["outputStatistics"]["size"] == 42
    assert output["outputFacets"]["hgext_luigi_output"]["changeset"] == CS1
    assert datetime.fromisoformat(complete["eventTime"]).timestamp() == 1002.5


def test_fail_and_abort(emitter):
    b = make_build()
    emitter.fail(b, RUN, "boom: no such file")
    try:
        raise KeyError("region")
    except KeyError as e:
        emitter.fail(make_build(8), RUN, e)
    emitter.abort(make_build(9), RUN)
    fail, fail_exc, abort = sent(emitter)
    assert fail["eventType"] == "FAIL"
    assert fail["run"]["facets"]["errorMessage"]["message"] == "boom: no such file"
    exc = fail_exc["run"]["facets"]["errorMessage"]
    assert exc["message"] == "KeyError: 'region'" and "Traceback" in exc["stackTrace"]
    assert abort["eventType"] == "ABORT" and "errorMessage" not in abort["run"]["facets"]


def test_no_password_leaves_in_an_event(emitter):
    emitter.start(make_build(), RUN)
    [event] = sent(emitter)
    assert "hunter2" not in json.dumps(event)


def test_a_broken_build_report_is_logged_never_raised(emitter, caplog):
    """Never in the way of a build: a report missing its fields, or with
    garbage in them, loses its event, not the run."""
    caplog.set_level(logging.WARNING, logger="hgext_luigi.openlineage")
    emitter.start({"key": "X()"}, RUN)  # no build id
    emitter.complete(make_build(), {"run_id": "r"}, [{"no": "path"}], None)
    emitter.fail(dict(make_build(), build="not a number"), RUN, object())
    emitter.start(make_build(), RUN)  # and the next good one still goes out
    events = sent(emitter)
    assert [e["eventType"] for e in events] == ["START"]
    assert caplog.text.count("cannot build") == 3


def test_events_follow_the_spec(emitter):
    jsonschema = pytest.importorskip("jsonschema")
    from referencing import Registry, Resource

    resources = []
    for path in glob.glob(os.path.join(SPEC, "*.json")):
        with open(path) as f:
            schema = json.load(f)
        resources.append((schema["$id"], Resource.from_contents(schema)))
    resources.append((olevents.FACETS_SCHEMA_ID,
                      Resource.from_contents(olevents.FACETS_SCHEMA)))
    registry = Registry().with_resources(resources)

    def check(instance, url):
        assert url.partition("#")[0] in registry, "no schema for %s" % url
        jsonschema.Draft202012Validator({"$ref": url}, registry=registry).validate(instance)

    b = make_build()
    emitter.complete(b, RUN, [{"path": "/o/in.csv", "sha256": SHA_IN, "size": 1,
                               "changeset": CS2, "key": "U()"}],
                     [{"path": "/o/out.csv", "sha256": SHA_OUT, "size": 2}])
    emitter.fail(b, RUN, "boom")
    for event in sent(emitter):
        check(event, event["schemaURL"])
        facets = list(event["run"]["facets"].items()) + list(event["job"]["facets"].items())
        for ds in event["inputs"] + event["outputs"]:
            facets += list(ds.get("facets", {}).items())
            facets += list(ds.get("inputFacets", {}).items())
            facets += list(ds.get("outputFacets", {}).items())
        for name, facet in facets:
            check(facet, facet["_schemaURL"])


def test_run_ids_are_stable_and_distinct():
    a = olevents.build_run_id("run1", 1)
    assert a == olevents.build_run_id("run1", 1)
    assert len({a, olevents.build_run_id("run1", 2), olevents.build_run_id("run2", 1)}) == 3
    assert uuid.UUID(a).version == 5


def test_configured(nowhere, tmp_path):
    assert not olevents.configured({})
    assert olevents.configured({"OPENLINEAGE_URL": "http://x"})
    assert olevents.configured({b"OPENLINEAGE_URL": b"http://x"})  # Mercurial's environ
    assert olevents.configured({"OPENLINEAGE__TRANSPORT__TYPE": "console"})
    assert not olevents.configured({"OPENLINEAGE_URL": "http://x",
                                    "OPENLINEAGE_DISABLED": " TRUE "})
    config = tmp_path / "ol.yml"
    config.write_text("transport:\n  type: console\n")
    assert olevents.configured({"OPENLINEAGE_CONFIG": str(config)})
    assert not olevents.configured({"OPENLINEAGE_CONFIG": str(tmp_path / "absent.yml")})
    (nowhere / "openlineage.yml").write_text("transport:\n  type: console\n")
    assert olevents.configured({})  # found in the current directory, as the client does


def test_no_emitter_without_a_real_transport(nowhere, tmp_path):
    pytest.importorskip("openlineage.client")
    assert olevents.Emitter.create("ns", "/r", {}) is None
    assert olevents.Emitter.create("ns", "/r", {"OPENLINEAGE_URL": "http://x",
                                                "OPENLINEAGE_DISABLED": "true"}) is None
    # a configuration that does not parse: no emitter, no exception
    bad = tmp_path / "bad.yml"
    bad.write_text("transport: [unclosed\n")
    assert olevents.Emitter.create("ns", "/r", {"OPENLINEAGE_CONFIG": str(bad)}) is None
    # the client's console fallback is not a configured transport; an asked-for one is
    assert olevents.Emitter.create("ns", "/r", {"OPENLINEAGE__TRANSPORT__TYPE": "noop"}) \
        is None
    assert olevents.Emitter.create("ns", "/r",
                                   {"OPENLINEAGE__TRANSPORT__TYPE": "console"}) is not None
    assert not [k for k in os.environ if k.startswith("OPENLINEAGE")]  # no trace left


def test_a_closed_emitter_sends_nothing_more(emitter, caplog):
    emitter.start(make_build(), RUN)
    assert emitter.close(10)
    caplog.set_level(logging.WARNING, logger="hgext_luigi.openlineage")
    emitter.start(make_build(8), RUN)
    with open(emitter.path) as f:
        assert len(f.readlines()) == 1
    assert "emitter closed" in caplog.text
