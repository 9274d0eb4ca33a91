"""Every option is checked where it is read: a bad value is an abort naming the
option and what it accepts, never a traceback or a silently broken hook."""

import pytest

BAD = [
    ("poll-interval", "inf", "a number >= 0.05"),
    ("poll-interval", "nan", "a number >= 0.05"),
    ("auto-hooks", "maybe", "a boolean"),
    ("workers", "-1", "an integer >= 1"),
    ("lease", "abc", "an integer >= 1"),
    ("max-attempts", "0", "an integer >= 1"),
    ("tree-cache", "1.5", "an integer >= 1"),
    ("lock-timeout", "-3", "a number >= 0"),
    ("on-commit", "always", "one of off, plan, run"),
    ("on-push", "sometimes", "one of off, queue, run"),
    ("gate", "perhaps", "a boolean"),
    ("coalesce", "2", "a boolean"),
    ("module", "my-pipeline", "a Python module name"),
    ("scheduler", "localhost:8082", "a URL like http://host:8082"),
    ("watches-file", "../outside.ini", "a path inside the repository"),
    ("pass-env", "PATH BAD=NAME", "an environment variable name"),
    ("callback-heartbeat", "soon", "an integer >= 1"),
    ("aws-endpoint-url", "not a url", "a URL"),
]


@pytest.mark.parametrize("name,value,allowed", BAD, ids=[b[0] + "=" + b[1] for b in BAD])
def test_bad_value_is_a_config_error(demo, name, value, allowed):
    proc = demo("luigi-affected", "--config", "luigi.%s=%s" % (name, value), check=False)
    assert proc.returncode != 0
    first = proc.stderr.splitlines()[0]
    assert first.startswith("abort: config error: luigi.%s: " % name), proc.stderr
    assert allowed in first
    assert "Traceback" not in proc.stderr


def test_bad_push_setting_rejects_the_push(hg, tmp_path):
    from conftest import make_server_repo
    from conftest import seeded_clone

    server = make_server_repo(hg, str(tmp_path / "server"), "on-push = later\n")
    clone = seeded_clone(hg, server, str(tmp_path / "alice"))
    proc = clone("push", server.path, check=False)
    assert proc.returncode != 0
    assert "config error: luigi.on-push: " in proc.stderr
    assert server("log", "-T", "x").stdout == ""


SFN = '''from hgext_luigi.stepfunctions import StepFunctionsTask


class Score(StepFunctionsTask):
    state_machine_arn = "arn:aws:states:eu-west-1:123456789012:stateMachine:score"
'''


@pytest.mark.parametrize("option,value,allowed", [
    ("timeout", "abc", "an integer >= 0"),
    ("poll_interval", "inf", "a number >= 0.1"),
    ("rerun_failed", "maybe", "a boolean"),
])
def test_bad_task_type_setting_fails_the_task_naming_it(empty_repo, option, value, allowed):
    repo = empty_repo
    repo.write("pipelines/__init__.py", SFN)
    repo.write("luigi.cfg", "[stepfunctions]\n%s = %s\n" % (option, value))
    repo.commit("bad step functions setting")
    proc = repo("luigi-run", check=False)
    assert proc.returncode == 1
    line = [ln for ln in proc.stdout.splitlines() if "Score()" in ln][0]
    assert line.startswith("failed")
    assert "config error: stepfunctions.%s: %r is not %s" % (option, value, allowed) in line
