"""A server runs code that anyone who may push wrote: what that code may see and
where it may write.  Canary secrets in the server's environment must appear
nowhere: not to the pusher, not in a file, a log or the lineage store."""

import os
import sqlite3
import subprocess

import sys

import pytest

from conftest import ROOT, Repo, make_server_repo

CANARY = "canary-5ecret-7a1f"

# prints the whole environment at import time and when it runs
SNOOP = '''import json
import os

import luigi
from hgext_luigi import HgTask

print("ENV AT IMPORT", json.dumps(dict(os.environ)))


class Snoop(HgTask):
    watches = ["data/**"]

    def output(self):
        return self.stamped_target("env.json")

    def run(self):
        print("ENV AT RUN", json.dumps(dict(os.environ)))
        with self.output().open("w") as f:
            json.dump(dict(os.environ), f)
'''


def grep_tree(root, needle):
    """Files under ``root`` whose bytes contain ``needle``."""
    hits = []
    for top, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(top, name)
            try:
                with open(path, "rb") as f:
                    if needle.encode() in f.read():
                        hits.append(path)
            except OSError:
                pass
    return hits


def snoop_clone(hg, server, path):
    hg("clone", "-q", server.path, path)
    clone = Repo(hg, path)
    clone.write("pipelines/__init__.py", SNOOP)
    clone.write("data/a.csv", "1\n")
    clone.commit("snoop")
    return clone


def test_pushed_pipeline_never_sees_the_servers_secrets(hg, tmp_path):
    server = make_server_repo(hg, str(tmp_path / "server"), "gate = true\non-push = run\n")
    clone = snoop_clone(hg, server, str(tmp_path / "mallory"))
    secrets = {"AWS_SECRET_ACCESS_KEY": CANARY, "DATABASE_URL": "postgres://u:%s@db" % CANARY,
               "PYTHONPATH": "/opt/" + CANARY}
    # the server side (the push to a path runs the server's hooks in this process)
    out = clone("push", server.path, env=secrets)
    shown = out.stdout + out.stderr
    assert "1 ran" in shown
    assert CANARY not in shown
    assert "AWS_SECRET_ACCESS_KEY" not in shown
    assert grep_tree(server.state, CANARY) == []
    [row] = server.json("luigi-lineage")
    with open(row["outputs"][0]["path"]) as f:
        seen = f.read()
    assert "PATH" in seen and "HOME" in seen  # the allow-listed ones pass
    assert CANARY not in seen and "AWS_SECRET_ACCESS_KEY" not in seen


def test_pass_env_lets_a_named_variable_through(hg, tmp_path):
    server = make_server_repo(hg, str(tmp_path / "server"),
                              "on-push = run\npass-env = PATH HOME SHARED_*\n")
    clone = snoop_clone(hg, server, str(tmp_path / "bob"))
    clone("push", server.path, env={"SHARED_BUCKET": "reports", "LANG": "C.UTF-8",
                                    "AWS_SECRET_ACCESS_KEY": CANARY})
    [row] = server.json("luigi-lineage")
    with open(row["outputs"][0]["path"]) as f:
        seen = f.read()
    assert '"SHARED_BUCKET": "reports"' in seen
    assert "LANG" not in seen  # pass-env replaces the default list
    assert CANARY not in seen


def test_the_gate_shows_no_secret_when_it_rejects(hg, tmp_path):
    server = make_server_repo(hg, str(tmp_path / "server"), "gate = true\n")
    hg("clone", "-q", server.path, str(tmp_path / "eve"))
    clone = Repo(hg, str(tmp_path / "eve"))
    clone.write("pipelines/__init__.py",
                "import os\nraise RuntimeError(repr(dict(os.environ)))\n")
    clone.commit("leak through the error")
    out = clone("push", server.path, check=False, env={"AWS_SECRET_ACCESS_KEY": CANARY})
    assert out.returncode != 0
    assert "luigi gate rejected the push" in out.stderr
    assert "RuntimeError" in out.stdout + out.stderr
    assert CANARY not in out.stdout + out.stderr
    assert grep_tree(server.state, CANARY) == []


def test_the_working_directory_is_not_built(demo):
    for cmd in ("luigi-run", "luigi-affected"):
        proc = demo(cmd, "-r", "wdir()", check=False)
        assert proc.returncode == 255
        assert "abort: the working directory is not a changeset" in proc.stderr
        assert "(commit first, then run hg luigi-run -r .)" in proc.stderr
    assert not os.path.exists(os.path.join(demo.state, "lineage.db"))


OUTSIDE = '''import luigi
from hgext_luigi import HgTask


class Escape(HgTask):
    def output(self):
        return self.stamped_target({path!r})

    def run(self):
        with self.output().open("w") as f:
            f.write("escaped\\n")
'''


def test_outputs_stay_under_the_output_root(empty_repo, tmp_path):
    target = str(tmp_path / "escaped.txt")
    for path in ("../../../../../../../../" + target, target):
        empty_repo.write("pipelines/__init__.py", OUTSIDE.format(path=path))
        empty_repo.commit("escape via %s" % path[:8])
        proc = empty_repo("luigi-run", check=False)
        assert proc.returncode == 1
        assert "Escape" in proc.stdout
        assert "must be relative and stay under the output root" in proc.stdout
        assert not os.path.exists(target)


HANDMADE = '''import luigi
from hgext_luigi import HgTask


class Leaf(HgTask):
    def output(self):
        return self.stamped_target("leaf.txt")

    def run(self):
        with self.output().open("w") as f:
            f.write("leaf\\n")


class Root(HgTask):
    def requires(self):
        return Leaf(changeset="../../../../../../../../{outside}")

    def output(self):
        return self.stamped_target("root.txt")

    def run(self):
        pass
'''


def test_a_changeset_parameter_passed_by_hand_must_be_a_changeset(empty_repo, tmp_path):
    outside = str(tmp_path / "outside")
    empty_repo.write("pipelines/__init__.py", HANDMADE.format(outside=outside.lstrip("/")))
    empty_repo.commit("hand-made changeset")
    proc = empty_repo("luigi-run", check=False)
    assert proc.returncode != 0
    assert "is not a full 40-hex changeset id" in proc.stdout + proc.stderr
    assert not os.path.exists(outside)


FORGED_EVENTS = '''from hgext_luigi import HgTask
from hgext_luigi.pipeline import context


class Fine(HgTask):
    def output(self):
        return self.stamped_target("fine.txt")

    def run(self):
        # the runner's event pipe is reachable from pipeline code: junk on it
        # must not stop hg
        context.emit(event="start")
        context.emit(event="success", key=["x"], task_id=1)
        context.emit(event="done", luigi={"X": 1}, ids=[])
        # a number too large for a float, a boolean
        context.emit(event="success", key="Fine()", task_id="x", seconds=10 ** 400)
        context.emit(event="failure", key="Fine()", task_id="x", error="e", seconds=True)
        # a request this side cannot store: an output size beyond SQLite's integers
        try:
            context.request(op="finish-build", build=1, status="success",
                            outputs=[{"path": "p", "size": 10 ** 400, "sha256": "0" * 64}])
        except context.RequestError:
            pass
        with self.output().open("w") as f:
            f.write("ok\\n")
'''


def test_forged_events_do_not_stop_the_worker(hg, tmp_path):
    server = make_server_repo(hg, str(tmp_path / "server"), "on-push = queue\n")
    hg("clone", "-q", server.path, str(tmp_path / "mallory"))
    clone = Repo(hg, str(tmp_path / "mallory"))
    clone.write("pipelines/__init__.py", FORGED_EVENTS)
    clone.commit("junk on the event pipe")
    clone("push", server.path)
    out = server("luigi-worker", "--once")
    assert "1 queue entries processed, 0 failed" in out.stdout
    assert "Traceback" not in out.stderr
    [entry] = server.json("luigi-queue")
    assert entry["state"] == "done" and entry["summary"].startswith("1 ran")
    lineage = sqlite3.connect(os.path.join(server.state, "lineage.db"))
    assert lineage.execute("SELECT status FROM runs").fetchall() == [("success",)]


READ_PARENT = """
import os
try:
    with open("/proc/%d/environ" % os.getppid(), "rb") as f:
        print("read", f.read().count(b"CANARY_VALUE"))
except OSError as e:
    print("denied", e.strerror)
"""

SNOOP_PARENT = """
import ctypes, os, sys
from hgext_luigi.core import sandbox

# a server's account (not root, who may read any /proc)
os.setgid(65534)
os.setuid(65534)
ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # dumpable again, as a process started so is
if sys.argv[1] == "deny":
    sandbox.deny_inspection()
pid = os.fork()
if pid == 0:  # the pipeline, same account (what matters is the target's flag)
    exec(sys.argv[2])
    os._exit(0)
os.waitpid(pid, 0)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another account")
def test_the_hg_process_hides_its_environment_from_the_code_it_starts():
    # root may read any /proc: the child drops to an unprivileged account, as a
    # server's pipeline runs; hg makes itself non-dumpable before starting one
    env = dict(os.environ, SECRET="CANARY_VALUE", PYTHONPATH=ROOT)
    runs = {mode: subprocess.run([sys.executable, "-c", SNOOP_PARENT, mode, READ_PARENT],
                                 env=env,
                                 capture_output=True, text=True).stdout.strip()
            for mode in ("allow", "deny")}
    assert runs["allow"] == "read 1"  # what the code could do before
    assert runs["deny"] == "denied Permission denied"


TAMPER = '''import os

from hgext_luigi import HgTask

import pipelines.helper as helper


class Report(HgTask):
    watches = ["data.txt"]

    def output(self):
        return self.stamped_target("report.txt")

    def run(self):
        with self.output().open("w") as f:
            f.write(helper.MARK + "\\n")
        if os.path.exists("data.txt") and open("data.txt").read() == "1\\n":
            # the first push's code rewrites its tree for whoever builds next
            with open("pipelines/helper.py", "w") as f:
                f.write("MARK = 'TAMPERED'\\n")
            with open("luigi.cfg", "w") as f:
                f.write("[core]\\n")
'''


def test_what_a_run_wrote_into_its_tree_never_reaches_the_next_build(hg, tmp_path):
    server = make_server_repo(hg, str(tmp_path / "server"), "on-push = run\ntree-cache = 1\n")
    hg("clone", "-q", server.path, str(tmp_path / "mallory"))
    clone = Repo(hg, str(tmp_path / "mallory"))
    clone.write("pipelines/__init__.py", TAMPER)
    clone.write("pipelines/helper.py", "MARK = 'clean'\n")
    clone.write("data.txt", "1\n")
    clone.commit("plants a change in its tree")
    clone("push", server.path)
    for n in (2, 3):  # later pushes by others change data only
        clone.write("data.txt", "%d\n" % n)
        clone.commit("data %d" % n)
        clone("push", server.path)
    rows = server.json("luigi-lineage")
    with open(rows[0]["outputs"][0]["path"]) as f:
        assert f.read() == "clean\n"
    trees = os.path.join(server.state, "trees")
    for t in os.listdir(trees):
        assert not os.path.exists(os.path.join(trees, t, "luigi.cfg"))


CONFIG_DEPENDENCY = '''import luigi
from hgext_luigi import HgTask


class dbconf(luigi.Config):
    password = luigi.Parameter()


class Load(HgTask):
    def requires(self):
        return dbconf()

    def output(self):
        return self.stamped_target("load.txt")

    def run(self):
        with self.output().open("w") as f:
            f.write("connected\\n")
'''


def test_a_config_listed_as_a_dependency_shows_no_secret(empty_repo):
    repo = empty_repo
    repo.write("pipelines/__init__.py", CONFIG_DEPENDENCY)
    repo.write("luigi.cfg", "[dbconf]\npassword = %s\n" % CANARY)
    repo.commit("a task requires its configuration")
    out = repo("luigi-run")
    assert "1 ran" in out.stdout
    assert CANARY not in out.stdout + out.stderr
    state = [p for p in grep_tree(empty_repo.state, CANARY) if "/trees/" not in p]
    assert state == []  # not in lineage, logs, outputs, the graph cache


def test_plain_relative_outputs_stay_under_their_root(empty_repo, tmp_path):
    target = tmp_path / "escaped.txt"
    empty_repo.write("pipelines/__init__.py", '''import luigi


class Escape(luigi.Task):
    def output(self):
        return luigi.LocalTarget("../../../../../../../..%s")

    def run(self):
        with self.output().open("w") as f:
            f.write("out\\\\n")
''' % target)
    empty_repo.commit("plain escape")
    proc = empty_repo("luigi-run", check=False)
    assert proc.returncode == 1
    assert "must stay under the plain output root" in proc.stdout
    assert not target.exists()


FLOOD = '''import os
from hgext_luigi import HgTask
from hgext_luigi.pipeline import context


class Flood(HgTask):
    def output(self):
        return self.stamped_target("flood.txt")

    def run(self):
        # an endless line on the channel hg reads the run's events from
        chunk = b"x" * (1 << 20)
        for _ in range(64):
            os.write(context._events_fd, chunk)
'''


def test_a_run_flooding_the_event_channel_is_stopped(empty_repo):
    """hg reads event lines up to a bound: a pipeline writing an endless line
    is stopped with a message, hg's memory stays bounded, the lock is freed."""
    empty_repo.write("pipelines/__init__.py", FLOOD)
    empty_repo.commit("flood")
    proc = empty_repo("luigi-run", check=False, timeout=120)
    assert proc.returncode == 1
    assert "wrote an event line longer than 16777216 bytes" in proc.stderr
    assert empty_repo("luigi-run", "--dry-run").returncode == 0  # not left locked


SHADOW = '''import sys
with open(%r, "a") as f:
    f.write("imported by %%s\\n" %% sys.argv[0])
del sys.modules["json"]
sys.path = [p for p in sys.path if p not in ("", ".")]
import json as real
sys.modules["json"] = real
'''


@pytest.mark.skipif(sys.version_info < (3, 11), reason="PYTHONSAFEPATH is Python 3.11's")
def test_a_pushed_module_does_not_shadow_the_extensions_own_imports(empty_repo, tmp_path):
    """The loader and the runner start in the tree; a module at its top named as
    one they import (json) must not run before they have set anything up."""
    marker = tmp_path / "shadow-marker"
    repo = empty_repo
    repo.write("json.py", SHADOW % str(marker))
    repo.write("pipelines/__init__.py", '''import luigi
from hgext_luigi import HgTask


class T(HgTask):
    def output(self):
        return self.stamped_target("t.txt")

    def run(self):
        with self.output().open("w") as f:
            f.write("t\\n")
''')
    repo.config("[luigi]\nroots = T\n")
    repo.commit("a json.py at the top")
    assert "1 ran" in repo("luigi-run").stdout
    assert not marker.exists()
