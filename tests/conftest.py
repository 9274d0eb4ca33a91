"""Fixtures: the real ``hg`` executable on temporary repositories, a real ``luigid``."""

import http.server
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "helpers"))
sys.path.insert(0, os.path.join(ROOT, "demo"))
from example import copy_example  # noqa: E402 (demo/: the example repository's files)
from motoserver import MotoServer  # noqa: E402
import pgserver  # noqa: E402 (a throwaway PostgreSQL server)
BIN = os.path.dirname(sys.executable)


def tool(name):
    path = os.path.join(BIN, name)
    if os.path.exists(path):
        return path
    found = shutil.which(name)
    if not found:
        pytest.fail("%s not found next to %s nor on PATH" % (name, sys.executable))
    return found


class Hg:
    """Runs the real ``hg`` with an isolated configuration."""

    def __init__(self, home):
        self.exe = tool("hg")
        self.home = home
        self.hgrc = os.path.join(home, "hgrc")
        with open(self.hgrc, "w") as f:
            f.write("[extensions]\nhgext_luigi =\n[ui]\nusername = Alice <alice@example.com>\n")
        self.env = dict(os.environ)
        for k in list(self.env):
            if k.startswith("HG") or k == "HGEXT_LUIGI_CONTEXT":
                del self.env[k]
        self.env.update({
            "HGRCPATH": self.hgrc, "HGPLAIN": "1", "HOME": home,
            "HGENCODING": "utf-8", "PATH": BIN + os.pathsep + os.environ.get("PATH", ""),
            "LANG": "C.UTF-8",
        })

    def __call__(self, *args, cwd=None, check=True, input=None, env=None, timeout=300):
        e = dict(self.env)
        if env:
            e.update(env)
        proc = subprocess.run([self.exe] + [str(a) for a in args], cwd=cwd, env=e,
                              input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError("hg %s failed (%d)\nstdout:\n%s\nstderr:\n%s"
                                 % (" ".join(map(str, args)), proc.returncode,
                                    proc.stdout, proc.stderr))
        return proc

    def popen(self, *args, cwd=None, env=None, **kw):
        e = dict(self.env, **(env or {}))
        return subprocess.Popen([self.exe] + [str(a) for a in args], cwd=cwd, env=e,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, **kw)

    def json(self, *args, cwd=None):
        out = self(*args, "-T", "json", cwd=cwd).stdout
        return json.loads(out)


@pytest.fixture
def hg(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    return Hg(str(home))


def write(path, text, mode="w"):
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode, encoding="utf-8") as f:
        f.write(text)


class Repo:
    def __init__(self, hg, path):
        self.hg = hg
        self.path = str(path)

    def __call__(self, *args, **kw):
        return self.hg(*args, cwd=self.path, **kw)

    def json(self, *args):
        return self.hg.json(*args, cwd=self.path)

    def write(self, rel, text, mode="w"):
        write(os.path.join(self.path, rel), text, mode)

    def commit(self, message, *args):
        self("commit", "-A", "-m", message, *args)
        return self("log", "-r", ".", "-T", "{node}").stdout

    def config(self, text):
        write(os.path.join(self.path, ".hg", "hgrc"), text, "a")

    @property
    def state(self):
        return os.path.join(self.path, ".hg", "luigi")

    def affected(self, *args):
        return {t["key"]: t for t in self.json("luigi-affected", *args)}


def make_demo_repo(hg, path):
    """A repository holding the example pipeline and its data, committed."""
    os.makedirs(path)
    hg("init", path)
    copy_example(path)
    repo = Repo(hg, path)
    repo.commit("example pipeline and data")
    return repo


@pytest.fixture
def demo(hg, tmp_path):
    return make_demo_repo(hg, str(tmp_path / "repo"))


@pytest.fixture
def empty_repo(hg, tmp_path):
    path = str(tmp_path / "repo")
    hg("init", path)
    return Repo(hg, path)


def seeded_clone(hg, server, path, url=None, *commit_args):
    """A clone of ``server`` holding the example pipeline, committed (with
    ``commit_args``, e.g. ``--user``), not pushed."""
    hg("clone", "-q", url or server.path, path)
    clone = Repo(hg, path)
    copy_example(path)
    clone.commit("example pipeline", *commit_args)
    return clone


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto():
    """A real moto_server on a free loopback port, executing state machines."""
    try:
        server = MotoServer()
    except RuntimeError as e:
        pytest.fail(str(e))
    yield server
    server.stop()


def pytest_configure(config):
    # registered: @pytest.mark.slow warns of no unknown mark, -m 'not slow' skips them
    config.addinivalue_line("markers", "slow: a long test; deselect with -m 'not slow'")


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server (one per xdist worker), password required over
    TCP: ``url`` (no password), ``password``, ``env()`` for subprocesses.  Skips
    only when the server binaries are missing (``.ci/ensure-postgres``)."""
    if not pgserver.find_binaries():
        pytest.skip("PostgreSQL server binaries not found: " + pgserver.why_unavailable())
    try:
        server = pgserver.PgServer()
    except RuntimeError as e:
        pytest.fail(str(e))
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server, request):
    """The URL of a fresh, empty database for this test, dropped after it.  Sets
    nothing in os.environ: pass ``pg_server.env()`` to subprocesses."""
    # unique per server, naming the test in the server log (identifiers: 63 bytes)
    name = "t_%s_%s" % (secrets.token_hex(4), re.sub(r"\W+", "_", request.node.name)[:40])
    name = name.lower()
    yield pg_server.create_database(name)
    pg_server.drop_database(name)


@pytest.fixture
def luigid(tmp_path):
    """A real central scheduler on a free loopback port."""
    port = free_port()
    logdir = tmp_path / "luigid"
    logdir.mkdir()
    # a worker that stops pinging (its host killed) gives its tasks back after
    # 10 s rather than Luigi's default minute
    (logdir / "luigi.cfg").write_text("[scheduler]\nworker_disconnect_delay = 10\n")
    proc = subprocess.Popen(
        [tool("luigid"), "--address", "127.0.0.1", "--port", str(port),
         "--logdir", str(logdir), "--state-path", str(logdir / "state.pickle")],
        env=dict(os.environ, LUIGI_CONFIG_PATH=str(logdir / "luigi.cfg")),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = "http://127.0.0.1:%d" % port
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/api/task_list?data=%7B%7D", timeout=1).read()
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("luigid did not start")
            time.sleep(0.1)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_http(url, proc, what, timeout=30):
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("%s did not start" % what)
            time.sleep(0.1)


def make_server_repo(hg, path, luigi_config=""):
    """A repository to push to: no working directory, push over HTTP allowed."""
    hg("init", path)
    write(os.path.join(path, ".hg", "hgrc"),
          "[web]\nallow-push = *\npush_ssl = false\n[luigi]\n" + luigi_config)
    return Repo(hg, path)


class Served:
    """``hg serve`` of a repository on a free loopback port."""

    def __init__(self, hg, repo):
        self.port = free_port()
        self.url = "http://127.0.0.1:%d/" % self.port
        self.log = os.path.join(os.path.dirname(repo.path), "serve-%d.log" % self.port)
        self.proc = subprocess.Popen(
            [hg.exe, "serve", "-R", repo.path, "-a", "127.0.0.1", "-p", str(self.port),
             "--errorlog", self.log, "--accesslog", os.devnull],
            env=hg.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(self.url, self.proc, "hg serve")

    def stop(self):
        stop_process(self.proc)


def stop_process(proc):
    """Terminate a server the test started, killing it if it lingers."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def serve(hg):
    servers = []

    def start(repo):
        s = Served(hg, repo)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def wait_for(path, proc, timeout=60):
    """Wait until ``path`` exists (a task signals it started), failing the test if
    the process ``proc`` exits first or it takes too long."""
    deadline = time.time() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail("hg exited early (%s):\n%s\n%s" % (proc.returncode, out, err))
        if time.time() > deadline:
            pytest.fail("%s never appeared" % path)
        time.sleep(0.05)


@pytest.fixture
def no_openlineage_config(monkeypatch, tmp_path):
    """No OpenLineage configuration anywhere: env, cwd, ``~/.openlineage``."""
    for k in list(os.environ):
        if k.startswith("OPENLINEAGE"):
            monkeypatch.delenv(k)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield cwd
    # the client aliases OPENLINEAGE_URL into os.environ behind monkeypatch's back
    for k in list(os.environ):
        if k.startswith("OPENLINEAGE"):
            del os.environ[k]


@pytest.fixture
def server_credentials(monkeypatch, tmp_path):
    """The hg process's own (dummy) AWS credentials, nothing else of the host's."""
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIASERVERKEY0000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "server-secret-canary")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


class DenyingSTS(http.server.BaseHTTPRequestHandler):
    """STS as it answers a server identity the role's trust policy refuses,
    counting the requests it got."""

    calls = []
    BODY = (b'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
            b'<Type>Sender</Type><Code>AccessDenied</Code><Message>User: arn:aws:iam::'
            b'123456789012:user/server is not authorized to perform: sts:AssumeRole on '
            b'resource: arn:aws:iam::123456789012:role/who-role</Message></Error>'
            b'<RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>')

    def do_POST(self):
        self.calls.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.send_response(403)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(self.BODY)))
        self.end_headers()
        self.wfile.write(self.BODY)

    def log_message(self, *args):
        pass


@pytest.fixture
def denying_sts():
    """The URL of an STS endpoint that refuses every AssumeRole."""
    DenyingSTS.calls = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), DenyingSTS)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield "http://127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()
