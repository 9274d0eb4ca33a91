"""core.sandbox: what a pipeline subprocess sees of the server, checked with
real child processes, pipes and file descriptors."""

import json
import os
import subprocess
import sys

import pytest

from hgext_luigi.core import protocol, sandbox

SERVER_ENV = {
    "PATH": "/usr/bin:/bin", "HOME": "/home/srv", "LANG": "C.UTF-8", "LC_ALL": "C",
    "lc_all": "lower", "TZ": "UTC", "TERM": "xterm",
    "AWS_SECRET_ACCESS_KEY": "server-secret", "AWS_ACCESS_KEY_ID": "AKIASERVER",
    "DATABASE_URL": "postgres://u:p@db/x", "HGRCPATH": "/etc/hg",
    "LD_PRELOAD": "/tmp/evil.so",
    # names the extension sets itself: never taken from the server
    "PYTHONPATH": "/srv/evil", "PYTHONDONTWRITEBYTECODE": "",
    "PYTHONNOUSERSITE": "", "PYTHONSAFEPATH": "",
    protocol.CONTEXT_ENV: "/tmp/forged.json", protocol.REPLY_FD_ENV: "0",
    protocol.SECRETS_FD_ENV: "0",
}


def test_the_default_lets_through_the_basics_only():
    env = sandbox.filter_env(SERVER_ENV, sandbox.DEFAULT_PASS_ENV)
    assert env == {"PATH": "/usr/bin:/bin", "HOME": "/home/srv", "LANG": "C.UTF-8",
                   "LC_ALL": "C", "TZ": "UTC", "TERM": "xterm"}


def test_globs_are_case_sensitive_and_whole_names():
    env = sandbox.filter_env(SERVER_ENV, ["AWS_ACCESS*", "lc_*", "DATABASE"])
    assert env == {"AWS_ACCESS_KEY_ID": "AKIASERVER", "lc_all": "lower"}


def test_pass_env_star_still_keeps_the_extensions_own_names():
    env = sandbox.filter_env(SERVER_ENV, ["*"])
    for name in sandbox.OWN:
        assert name not in env
    assert env["AWS_SECRET_ACCESS_KEY"] == "server-secret"  # what "*" asked for


def test_pipeline_env_sets_its_own_values_over_the_servers(tmp_path):
    state = str(tmp_path / "state")
    env = sandbox.pipeline_env(SERVER_ENV, ["*"], state,
                               extra={protocol.CONTEXT_ENV: "/run/ctx.json"})
    assert env["PYTHONPATH"] == os.path.join(state, "lib") != "/srv/evil"
    assert env["PYTHONDONTWRITEBYTECODE"] == env["PYTHONNOUSERSITE"] == \
        env["PYTHONSAFEPATH"] == "1"
    assert env[protocol.CONTEXT_ENV] == "/run/ctx.json"
    assert protocol.REPLY_FD_ENV not in env and protocol.SECRETS_FD_ENV not in env


def test_lib_dir_holds_this_package_alone(tmp_path):
    lib = sandbox.lib_dir(str(tmp_path))
    assert os.listdir(lib) == ["hgext_luigi"]
    assert os.path.realpath(os.path.join(lib, "hgext_luigi")) == \
        os.path.realpath(sandbox.PACKAGE_DIR)
    assert sandbox.lib_dir(str(tmp_path)) == lib  # again: nothing changes


def test_lib_dir_replaces_a_link_pointing_elsewhere(tmp_path):
    """A link planted in the state folder (or left by another checkout) is
    replaced: the pipeline never imports someone else's hgext_luigi."""
    evil = tmp_path / "evil" / "hgext_luigi"
    evil.mkdir(parents=True)
    (evil / "__init__.py").write_text("raise SystemExit('evil')\n")
    (tmp_path / "lib").mkdir()
    os.symlink(str(evil), str(tmp_path / "lib" / "hgext_luigi"))
    lib = sandbox.lib_dir(str(tmp_path))
    assert os.path.realpath(os.path.join(lib, "hgext_luigi")) == \
        os.path.realpath(sandbox.PACKAGE_DIR)
    assert os.listdir(lib) == ["hgext_luigi"]  # no temporary link left


def child(code, env, cwd, **kw):
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=str(cwd),
                          capture_output=True, text=True, timeout=60, **kw)


def test_a_child_with_the_pipeline_env_sees_what_was_allowed(tmp_path):
    """A real interpreter started as the hg side starts the runner: it finds
    hgext_luigi through the lib folder, not the project's own pipelines/, and
    sees none of the server's secrets."""
    server = dict(os.environ, AWS_SECRET_ACCESS_KEY="server-secret",
                  PYTHONPATH=os.path.dirname(sandbox.PACKAGE_DIR))
    env = sandbox.pipeline_env(server, sandbox.DEFAULT_PASS_ENV, str(tmp_path / "state"))
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "json.py").write_text("raise SystemExit('a pushed json.py was imported')\n")
    code = ("import json, os, sys, importlib.util, hgext_luigi\n"
            "print(json.dumps({'env': sorted(os.environ), 'pkg': hgext_luigi.__file__,\n"
            "  'pipelines': importlib.util.find_spec('pipelines') is not None,\n"
            "  'cwd_on_path': '' in sys.path or os.getcwd() in sys.path}))\n")
    proc = child(code, env, tree)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert "AWS_SECRET_ACCESS_KEY" not in seen["env"]
    assert os.path.realpath(seen["pkg"]).startswith(os.path.realpath(sandbox.PACKAGE_DIR))
    assert not seen["pipelines"]  # the project's examples do not shadow the repository's
    assert not seen["cwd_on_path"]  # PYTHONSAFEPATH: the tree's json.py is not ours


def test_secrets_reach_a_child_through_a_pipe_only(tmp_path):
    server = {"VAULT_PASSWORD": "hunter2", "TOKEN": "t0k", "PATH": os.environ["PATH"]}
    fd, env = sandbox.secrets_pipe(server, ["VAULT_PASSWORD", "TOKEN", "UNSET"])
    assert set(env) == {protocol.SECRETS_FD_ENV} and env[protocol.SECRETS_FD_ENV] == str(fd)
    assert "hunter2" not in json.dumps(env)
    full = sandbox.pipeline_env(os.environ, sandbox.DEFAULT_PASS_ENV, str(tmp_path), env)
    code = ("import os, sys\n"
            "fd = int(os.environ['%s'])\n"
            "sys.stdout.write(os.read(fd, 65536).decode())\n"
            "sys.stdout.write('|' + repr(os.read(fd, 10)))\n" % protocol.SECRETS_FD_ENV)
    try:
        proc = child(code, full, tmp_path, pass_fds=[fd])
    finally:
        os.close(fd)
    assert proc.returncode == 0, proc.stderr
    handed, rest = proc.stdout.split("|")
    assert json.loads(handed) == {"VAULT_PASSWORD": "hunter2", "TOKEN": "t0k"}
    assert rest == "b''"  # read once: nothing more behind it
    assert "hunter2" not in json.dumps(full)


def test_no_secret_no_pipe():
    assert sandbox.secrets_pipe({"PATH": "/bin"}, ["VAULT_PASSWORD"]) == (None, {})
    assert sandbox.secrets_pipe({"PATH": "/bin"}, []) == (None, {})


def test_secrets_too_large_for_a_pipe_are_refused():
    before = set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    with pytest.raises(ValueError, match="too large"):
        sandbox.secrets_pipe({"BIG": "x" * 70000}, ["BIG"])
    if before is not None:
        assert set(os.listdir("/proc/self/fd")) == before  # no descriptor leaked


def test_env_digest_follows_what_the_pipeline_sees():
    a = {"PATH": "/bin", "REGION": "eu"}
    assert sandbox.env_digest(a) == sandbox.env_digest(dict(reversed(list(a.items()))))
    assert sandbox.env_digest(a) != sandbox.env_digest(dict(a, REGION="us"))
    assert sandbox.env_digest(a) != sandbox.env_digest(dict(a, NEW="1"))
    # the extension's own per-run values do not change the graph cache key
    assert sandbox.env_digest(a) == sandbox.env_digest(
        dict(a, PYTHONPATH="/x", **{protocol.CONTEXT_ENV: "/run/1.json"}))
    # one variable cannot pass for two (names hold no "=", values no NUL)
    assert sandbox.env_digest({"A": "1", "B": "2"}) != sandbox.env_digest({"A": "1B=2"})
    assert sandbox.env_digest({"X": "\udcff"})  # undecodable bytes of a server env


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_deny_inspection_makes_the_process_non_dumpable(tmp_path):
    code = ("import ctypes\n"
            "from hgext_luigi.core import sandbox\n"
            "libc = ctypes.CDLL(None)\n"
            "before = libc.prctl(3, 0, 0, 0, 0)\n"  # PR_GET_DUMPABLE
            "sandbox.deny_inspection()\n"
            "print(before, libc.prctl(3, 0, 0, 0, 0))\n")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(sandbox.PACKAGE_DIR))
    proc = child(code, env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "0"]
