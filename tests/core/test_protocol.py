"""core.protocol: the lines the runner writes and the hg side trusts, over real
pipes."""

import json
import os
import threading

import pytest

from hgext_luigi.core import protocol

GOOD = [
    {"event": "start", "key": "A()", "task_id": "A__1"},
    {"event": "success", "key": "A()", "task_id": "A__1", "seconds": 1.5},
    {"event": "failure", "key": "A()", "task_id": "A__1", "error": "boom", "seconds": 2},
    {"event": "status", "key": "A()", "message": "half way"},
    {"event": "error", "message": "cannot import the pipeline"},
    {"event": "done", "luigi": {"A()": "ran"}, "ids": {"A()": "A__1"}, "summary": "x"},
    {"event": "done"},
    {"event": "request", "op": "start-build", "key": "A()"},
]


@pytest.mark.parametrize("ev", GOOD, ids=lambda ev: ev["event"])
def test_events_the_runner_sends_are_read_back(ev):
    line = protocol.encode(ev)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert protocol.parse_event(line) == ev


def test_encode_keeps_a_line_whatever_the_strings_hold():
    ev = {"event": "status", "key": 'K(x="a\nb")', "message": "line\nbreak\r\u2028é"}
    line = protocol.encode(ev)
    assert line.count(b"\n") == 1
    assert protocol.parse_event(line) == ev


BAD = [
    (b"", "empty"),
    (b"hello from a print() in pipeline code\n", "not JSON"),
    (b"\xff\xfe{}\n", "not UTF-8"),
    (b'"start"\n', "a string"),
    (b'[{"event": "start", "key": "A()", "task_id": "A__1"}]\n', "a list"),
    (b'{"key": "A()", "task_id": "A__1"}\n', "no event"),
    (b'{"event": "launch", "key": "A()"}\n', "unknown event"),
    (b'{"event": 1, "key": "A()"}\n', "event a number"),
    (b'{"event": null}\n', "event null"),
    (b'{"event": "start", "key": "A()"}\n', "missing task_id"),
    (b'{"event": "start", "key": 1, "task_id": "A__1"}\n', "key not a string"),
    (b'{"event": "failure", "key": "A()", "task_id": "A__1"}\n', "failure without error"),
    (b'{"event": "failure", "key": "A()", "task_id": "A__1", "error": null}\n',
     "error null"),
    (b'{"event": "status", "key": "A()", "message": {"x": 1}}\n', "message a dict"),
    (b'{"event": "error"}\n', "error without message"),
    (b'{"event": "request"}\n', "request without op"),
    (b'{"event": "request", "op": 7}\n', "op not a string"),
    (b'{"event": "success", "key": "A()", "task_id": "A__1", "seconds": "1"}\n',
     "seconds a string"),
    (b'{"event": "success", "key": "A()", "task_id": "A__1", "seconds": null}\n',
     "seconds null"),
    (b'{"event": "done", "luigi": ["A()"]}\n', "done luigi a list"),
    (b'{"event": "done", "luigi": {"A()": 1}}\n', "done outcome not a string"),
    (b'{"event": "done", "ids": {"A()": null}}\n', "done id null"),
    (b'{"event": "done", "luigi": null}\n', "done luigi null"),
    (b'{"event": "start", "key": "A()", "task_id": "A__1"} {"event": "done"}\n',
     "two objects on a line"),
    (b'{"event": "start", "key": "A()", "task_id": "A__1"\n', "truncated"),
]


@pytest.mark.parametrize("line, why", BAD, ids=[w for _, w in BAD])
def test_malformed_lines_are_refused(line, why):
    assert protocol.parse_event(line) is None


@pytest.mark.parametrize("line", [b'{"event": ["start"], "key": "A()"}\n',
                                  b'{"event": {"x": 1}}\n'], ids=["list", "object"])
def test_an_event_name_that_is_not_hashable_is_refused(line):
    assert protocol.parse_event(line) is None


def test_a_deeply_nested_line_is_refused():
    line = b"[" * 100000 + b"]" * 100000 + b"\n"
    assert protocol.parse_event(line) is None


def test_write_all_writes_more_than_a_pipe_holds():
    r, w = os.pipe()
    data = protocol.encode({"event": "request", "op": "finish-build",
                            "outputs": ["x" * 100] * 20000})  # ~2 MB
    assert len(data) > 1 << 20
    got = []

    def reader():
        with os.fdopen(r, "rb") as f:
            got.append(f.read())

    t = threading.Thread(target=reader)
    t.start()
    try:
        protocol.write_all(w, data)
    finally:
        os.close(w)
    t.join(30)
    assert got == [data]
    assert protocol.parse_event(got[0])["op"] == "finish-build"


def test_a_stream_of_lines_from_a_pipe():
    """As the hg side reads the runner's stdout: one line at a time, at most
    MAX_EVENT; pipeline prints in between are ignored."""
    r, w = os.pipe()
    protocol.write_all(w, b"".join([
        protocol.encode(GOOD[0]), b"print output\n", protocol.encode(GOOD[1]),
        b'{"event": "success"}\n', protocol.encode(GOOD[5])]))
    os.close(w)
    with os.fdopen(r, "rb") as f:
        events = [protocol.parse_event(line)
                  for line in iter(lambda: f.readline(protocol.MAX_EVENT), b"")]
    assert [e["event"] if e else None for e in events] == [
        "start", None, "success", None, "done"]


def test_the_names_both_sides_share():
    assert protocol.ENV_NAMES == (protocol.CONTEXT_ENV, protocol.REPLY_FD_ENV,
                                  protocol.SECRETS_FD_ENV)
    assert all(n.startswith("HGEXT_LUIGI_") for n in protocol.ENV_NAMES)
    assert protocol.RUNNER.startswith("hgext_luigi.pipeline.")
    assert protocol.LOADER.startswith("hgext_luigi.pipeline.")
    assert json.loads(protocol.encode({"ok": True})) == {"ok": True}


@pytest.mark.parametrize("seconds", ["10" + "0" * 400, "true", "-1", "1e300", "NaN",
                                     "Infinity", "\"1\""])
def test_a_duration_that_is_not_one_is_refused(seconds):
    line = ('{"event": "success", "key": "T()", "task_id": "t", "seconds": %s}\n'
            % seconds).encode()
    assert protocol.parse_event(line) is None


def test_a_duration_is_a_number_of_seconds():
    line = b'{"event": "success", "key": "T()", "task_id": "t", "seconds": 2}\n'
    assert protocol.parse_event(line)["seconds"] == 2
