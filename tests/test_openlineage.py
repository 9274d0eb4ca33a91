"""OpenLineage events of task builds (``hgext_luigi.core.olevents``) against a real HTTP
endpoint on loopback, validated with the spec's JSON schemas.

openlineage-python does not ship the schemas: ``tests/helpers/openlineage_spec``
holds copies from the OpenLineage repository (see its README).
"""

import glob
import http.server
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime

import pytest

pytest.importorskip("openlineage.client")
jsonschema = pytest.importorskip("jsonschema")
from referencing import Registry, Resource  # noqa: E402 (comes with jsonschema)

from hgext_luigi.core import olevents  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(ROOT, "tests", "helpers", "openlineage_spec")
ENDPOINT = "/api/v1/lineage"
MARGIN = 1.5

RUN_ID = uuid.uuid4().hex
CS1 = "a" * 40
CS2 = "b" * 40
SHA_RAW = "1" * 64
SHA_OUT = "2" * 64


# -- an OpenLineage endpoint ------------------------------------------------


class Collector:
    """``http.server`` on 127.0.0.1 in a thread, keeping every POSTed event."""

    def __init__(self, delay=0.0):
        self.events = []
        self.paths = []
        self.delay = delay
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if collector.delay:
                    time.sleep(collector.delay)
                collector.paths.append(self.path)
                collector.events.append(json.loads(body))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.close()


@pytest.fixture
def slow_collector():
    c = Collector(delay=3.0)
    yield c
    c.close()


@pytest.fixture
def clean(no_openlineage_config):
    return no_openlineage_config


def dead_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -- the spec -----------------------------------------------------------------


def registry():
    resources = []
    for path in glob.glob(os.path.join(SPEC, "*.json")):
        with open(path) as f:
            schema = json.load(f)
        resources.append((schema["$id"], Resource.from_contents(schema)))
    resources.append((olevents.FACETS_SCHEMA_ID, Resource.from_contents(olevents.FACETS_SCHEMA)))
    return Registry().with_resources(resources)


REGISTRY = registry()
FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER


def check_schema(instance, url):
    base = url.partition("#")[0]
    assert base in REGISTRY, "no schema for %s" % url
    jsonschema.Draft202012Validator(
        {"$ref": url}, registry=REGISTRY, format_checker=FORMATS).validate(instance)


def facets_of(event):
    yield from event["run"].get("facets", {}).items()
    yield from event["job"].get("facets", {}).items()
    for ds in event.get("inputs", []):
        yield from ds.get("facets", {}).items()
        yield from ds.get("inputFacets", {}).items()
    for ds in event.get("outputs", []):
        yield from ds.get("facets", {}).items()
        yield from ds.get("outputFacets", {}).items()


def validate(event):
    """The event against the core schema it names, each facet against its own."""
    check_schema(event, event["schemaURL"])
    datetime.fromisoformat(event["eventTime"])
    for name, facet in facets_of(event):
        check_schema({name: facet}, facet["_schemaURL"].partition("#")[0])
        check_schema(facet, facet["_schemaURL"])
        assert facet["_producer"].startswith(("https://", "http://")), name


def test_client_names_vendored_schemas():
    """The installed client's generated classes name the vendored spec versions."""
    from openlineage.client.event_v2 import RunEvent
    from openlineage.client.facet_v2 import (
        dataset_version_dataset,
        error_message_run,
        execution_parameters_run,
        job_type_job,
        output_statistics_output_dataset,
        parent_run,
        processing_engine_run,
        source_code_location_job,
        tags_run,
    )

    for cls in (RunEvent, parent_run.ParentRunFacet, source_code_location_job.SourceCodeLocationJobFacet,
                job_type_job.JobTypeJobFacet, error_message_run.ErrorMessageRunFacet,
                tags_run.TagsRunFacet, processing_engine_run.ProcessingEngineRunFacet,
                execution_parameters_run.ExecutionParametersRunFacet,
                dataset_version_dataset.DatasetVersionDatasetFacet,
                output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet):
        assert cls._get_schema().partition("#")[0] in REGISTRY, cls


# -- builds -------------------------------------------------------------------


def make_build(build_id, region, changeset, started):
    return {
        "build": build_id,
        "key": "CleanSales(region=%s)" % region,
        "family": "CleanSales",
        "task_id": "CleanSales_%s_0123456789" % region,
        "changeset": changeset,
        "branch": "default",
        "params": {"region": region},
        "code": ["pipelines/sales.py", "pipelines/common.py"],
        "watches": ["data/raw/sales-%s.csv" % region, "pipelines/*.py"],
        "started": started,
        "ended": started + 2.5,
    }


RUN = {"run_id": RUN_ID, "rev": CS1, "user": "Alice <alice@example.com>", "trigger": "manual"}


def upstream(tmp):
    return [{"path": os.path.join(tmp, "raw", "sales-north.csv"), "sha256": SHA_RAW, "size": 10,
             "changeset": CS2, "key": "FetchSales(region=north)"}]


def produced(tmp):
    return [{"path": os.path.join(tmp, "out", "clean-north.csv"), "sha256": SHA_OUT, "size": 42}]


# -- tests --------------------------------------------------------------------


@pytest.mark.parametrize("how", ["os.environ", "environ", "bytes-environ"])
def test_events_reach_endpoint_and_follow_spec(clean, collector, monkeypatch, how):
    if how == "os.environ":
        monkeypatch.setenv("OPENLINEAGE_URL", collector.url)
        environ = os.environ
    elif how == "environ":
        # only in the environ given: the emitter makes the client see it
        environ = {"OPENLINEAGE_URL": collector.url, "PATH": os.environ["PATH"]}
    else:  # Mercurial's encoding.environ holds bytes
        environ = {b"OPENLINEAGE_URL": collector.url.encode()}
    ns = "ssh://hg@example.com/sales"
    emitter = olevents.Emitter.create(ns, "https://alice:secret@hg.example.com/sales", environ=environ)
    assert emitter is not None
    assert emitter.client.transport.kind == "http"
    assert emitter.timeout == 5.0  # HttpConfig's default
    if how != "os.environ":
        assert not [k for k in os.environ if k.startswith("OPENLINEAGE")]

    tmp = str(clean)
    ok = make_build(7, "north", CS1, 1_700_000_000.0)
    bad = make_build(8, "south", CS1, 1_700_000_010.0)
    gone = make_build(9, "east", CS1, 1_700_000_020.0)
    emitter.start(ok, RUN)
    emitter.complete(ok, RUN, upstream(tmp), produced(tmp))
    emitter.start(bad, RUN)
    try:
        raise ValueError("region south has no rows")
    except ValueError as e:
        emitter.fail(bad, RUN, e)
    emitter.start(gone, RUN)
    emitter.abort(gone, RUN)
    assert emitter.close(5)

    events = collector.events
    assert collector.paths == [ENDPOINT] * 6
    assert [(e["eventType"], e["run"]["facets"]["hgext_luigi"]["build"]) for e in events] == [
        ("START", 7), ("COMPLETE", 7), ("START", 8), ("FAIL", 8), ("START", 9), ("ABORT", 9)]
    for e in events:
        validate(e)
        assert e["producer"].startswith(olevents.PROJECT_URL)
        assert e["job"] == {**e["job"], "namespace": ns, "name": "CleanSales"}
        parent = e["run"]["facets"]["parent"]
        assert parent["run"]["runId"] == str(uuid.UUID(RUN_ID))
        assert (parent["job"]["namespace"], parent["job"]["name"]) == (ns, "luigi-run")
        scl = e["job"]["facets"]["sourceCodeLocation"]
        assert scl["type"] == "hg"
        assert scl["version"] == CS1
        assert scl["url"] == scl["repoUrl"] == "https://alice@hg.example.com/sales"
        assert scl["path"] == "pipelines/sales.py"
        assert scl["branch"] == "default"
        assert e["job"]["facets"]["jobType"]["integration"] == "hgext_luigi"
        assert e["job"]["facets"]["jobType"]["processingType"] == "BATCH"

    start, complete, start2, fail = events[:4]
    assert start["run"]["runId"] == complete["run"]["runId"] == olevents.build_run_id(RUN_ID, 7)
    assert start2["run"]["runId"] == fail["run"]["runId"] != start["run"]["runId"]
    assert events[4]["run"]["runId"] == events[5]["run"]["runId"]
    assert start["eventTime"] < complete["eventTime"]
    assert start["run"]["facets"]["executionParameters"]["parameters"] == [
        {"key": "region", "value": "north"}]

    error = fail["run"]["facets"]["errorMessage"]
    assert error["programmingLanguage"] == "python"
    assert "region south has no rows" in error["message"]
    assert "ValueError" in error["stackTrace"]

    inputs = {(d["namespace"], d["name"]): d for d in complete["inputs"]}
    assert (ns, "data/raw/sales-north.csv") in inputs
    assert (ns, "pipelines/*.py") in inputs
    up = inputs[("file", upstream(tmp)[0]["path"])]
    assert up["facets"]["version"]["datasetVersion"] == SHA_RAW
    assert up["inputFacets"]["hgext_luigi_input"]["changeset"] == CS2
    assert up["inputFacets"]["hgext_luigi_input"]["key"] == "FetchSales(region=north)"

    [out] = complete["outputs"]
    assert (out["namespace"], out["name"]) == ("file", produced(tmp)[0]["path"])
    facet = out["outputFacets"]["hgext_luigi_output"]
    assert {k: facet[k] for k in ("sha256", "size", "changeset")} == {
        "sha256": SHA_OUT, "size": 42, "changeset": CS1}
    assert facet["_producer"] == complete["producer"]
    assert facet["_schemaURL"] == olevents.FACETS_SCHEMA_ID + "#/$defs/HgextLuigiOutputDatasetFacet"
    assert out["outputFacets"]["outputStatistics"]["size"] == 42
    assert out["facets"]["version"]["datasetVersion"] == SHA_OUT


@pytest.mark.parametrize("retries", ["client default", "none"])
def test_broken_endpoint_never_raises(clean, monkeypatch, caplog, retries):
    url = "http://127.0.0.1:%d" % dead_port()
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "http")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__URL", url)
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TIMEOUT", "1")
    if retries == "none":
        monkeypatch.setenv("OPENLINEAGE__TRANSPORT__RETRY", '{"total": 0}')
    emitter = olevents.Emitter.create("ns", "https://hg.example.com/r")
    assert emitter is not None and emitter.timeout == 1.0
    build = make_build(1, "north", CS1, time.time())
    caplog.set_level(logging.WARNING, logger="hgext_luigi.openlineage")
    for call in (lambda: emitter.start(build, RUN),
                 lambda: emitter.complete(build, RUN, upstream(str(clean)), produced(str(clean))),
                 lambda: emitter.fail(build, RUN, "boom"),
                 lambda: emitter.start({}, {})):  # garbage is logged, not raised
        t = time.monotonic()
        call()
        assert time.monotonic() - t < emitter.timeout + MARGIN
    emitter.close(0)
    if retries == "none":
        assert "could not send START of CleanSales(region=north)" in caplog.text
    else:  # urllib3 is still retrying in the background
        assert "not sent within 1.0s" in caplog.text
    assert "cannot build START" in caplog.text


def test_slow_endpoint_bounded_by_configured_timeout(clean, slow_collector, caplog):
    (clean / "openlineage.yml").write_text(
        "transport:\n  type: http\n  url: %s\n  timeout: 0.5\n" % slow_collector.url)
    emitter = olevents.Emitter.create("ns", "https://hg.example.com/r")
    assert emitter is not None and emitter.timeout == 0.5
    build = make_build(1, "north", CS1, time.time())
    caplog.set_level(logging.WARNING, logger="hgext_luigi.openlineage")
    for call in (lambda: emitter.start(build, RUN),
                 lambda: emitter.complete(build, RUN, upstream(str(clean)), produced(str(clean)))):
        t = time.monotonic()
        call()
        assert time.monotonic() - t < emitter.timeout + MARGIN
    emitter.close(0)
    assert "START of CleanSales(region=north) not sent within 0.5s" in caplog.text


def test_not_configured(clean, monkeypatch, collector):
    assert olevents.Emitter.create("ns", "https://hg.example.com/r") is None
    assert olevents.Emitter.create("ns", "https://hg.example.com/r", environ={}) is None
    # disabled
    monkeypatch.setenv("OPENLINEAGE_URL", collector.url)
    monkeypatch.setenv("OPENLINEAGE_DISABLED", "true")
    assert olevents.Emitter.create("ns", "https://hg.example.com/r") is None
    monkeypatch.delenv("OPENLINEAGE_DISABLED")
    monkeypatch.delenv("OPENLINEAGE_URL")
    # a config file without transport: the client would print to the console
    (clean / "openlineage.yml").write_text("tags:\n  job:\n    team: sales\n")
    assert olevents.Emitter.create("ns", "https://hg.example.com/r") is None
    # ... unless the console transport is asked for
    (clean / "openlineage.yml").write_text("transport:\n  type: console\n")
    emitter = olevents.Emitter.create("ns", "https://hg.example.com/r")
    assert emitter is not None and emitter.client.transport.kind == "console"
    # a config the client rejects
    (clean / "openlineage.yml").unlink()
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "no.such.Transport")
    assert olevents.Emitter.create("ns", "https://hg.example.com/r") is None
    monkeypatch.delenv("OPENLINEAGE__TRANSPORT__TYPE")
    # OPENLINEAGE_CONFIG names the file
    conf = clean.parent / "ol.yml"
    conf.write_text("transport:\n  type: http\n  url: %s\n" % collector.url)
    monkeypatch.setenv("OPENLINEAGE_CONFIG", str(conf))
    emitter = olevents.Emitter.create("ns", "https://hg.example.com/r")
    assert emitter is not None and emitter.client.transport.url == collector.url
    # openlineage-python not installed
    monkeypatch.setitem(sys.modules, "openlineage", None)
    monkeypatch.setitem(sys.modules, "openlineage.client", None)
    assert olevents.Emitter.create("ns", "https://hg.example.com/r") is None


def test_unconfigured_does_not_import_openlineage(clean):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENLINEAGE")}
    env["PYTHONPATH"] = ROOT
    code = ("import sys\nfrom hgext_luigi.core import olevents\n"
            "assert olevents.Emitter.create('ns', 'https://hg.example.com/r') is None\n"
            "assert not [m for m in sys.modules if m.startswith('openlineage')], sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=str(clean))


def test_run_ids():
    a = olevents.build_run_id(RUN_ID, 1)
    assert a == olevents.build_run_id(RUN_ID, 1) != olevents.build_run_id(RUN_ID, 2)
    assert a != olevents.build_run_id(uuid.uuid4().hex, 1)
    uuid.UUID(a)


# -- hg luigi-run end to end ----------------------------------------------------

E2E_PIPELINE = '''
from hgext_luigi import HgTask


class Source(HgTask):
    watches = ["data/in.txt"]

    def output(self):
        return self.stamped_target("source.txt")

    def run(self):
        with open(self.source_path("data/in.txt")) as src, self.output().open("w") as f:
            f.write(src.read())


class Broken(HgTask):
    def requires(self):
        return Source()

    def output(self):
        return self.stamped_target("broken.txt")

    def run(self):
        raise RuntimeError("no luck today")
'''


def test_a_run_reports_every_build(empty_repo, collector):
    repo = empty_repo
    repo.write("pipelines/__init__.py", E2E_PIPELINE)
    repo.write("data/in.txt", "hello\n")
    rev = repo.commit("pipeline")
    out = repo("luigi-run", check=False, env={"OPENLINEAGE_URL": collector.url})
    assert out.returncode == 1  # Broken fails; the events say so
    deadline = time.time() + 10
    while len(collector.events) < 4 and time.time() < deadline:
        time.sleep(0.05)
    events = collector.events
    for event in events:
        validate(event)
    by_job = {}
    for e in events:
        by_job.setdefault(e["job"]["name"], []).append(e)
    assert [e["eventType"] for e in by_job["Source"]] == ["START", "COMPLETE"]
    assert [e["eventType"] for e in by_job["Broken"]] == ["START", "FAIL"]
    fail = by_job["Broken"][-1]
    assert "no luck today" in fail["run"]["facets"]["errorMessage"]["message"]
    run_id = repo.json("luigi-lineage", rev)[0]["run"]
    for e in events:
        parent = e["run"]["facets"]["parent"]
        assert parent["run"]["runId"] == str(uuid.UUID(run_id))
        code = e["job"]["facets"]["sourceCodeLocation"]
        assert code["type"] == "hg" and code["version"] == rev
    done = by_job["Source"][-1]
    assert done["outputs"][0]["name"].endswith("/%s/source.txt" % rev)
    assert done["outputs"][0]["outputFacets"]["hgext_luigi_output"]["changeset"] == rev
    assert "data/in.txt" in [d["name"] for d in done["inputs"]]  # what it watches
