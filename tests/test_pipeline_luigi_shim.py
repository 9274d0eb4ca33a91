"""hgext_luigi.pipeline.luigi_shim against the Luigi in use: each test holds one
private thing the shim relies on, so a Luigi that changes it fails here, by
name, rather than somewhere in a run.

Each check runs in a Python process of its own: the shim patches Luigi's
classes, and Luigi keeps its task registry, configuration and event handlers
per process."""

import json
import os
import subprocess
import sys
import textwrap

from conftest import ROOT

TASKS = '''
import json, os, luigi
from hgext_luigi.pipeline import luigi_shim

class Written(luigi.Task):
    name = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(self.name + ".txt")

    def run(self):
        with self.output().open("w") as f:
            f.write(self.name)
'''


def check(tmp_path, code):
    """Run ``code`` after :data:`TASKS` in ``tmp_path``; what it printed last, as JSON."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("LUIGI_CONFIG_PATH", None)
    proc = subprocess.run([sys.executable, "-c", TASKS + textwrap.dedent(code)],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_task_classes_are_every_registered_class_in_definition_order(tmp_path):
    # Register._reg: ambiguous families included, in the order of definition
    out = check(tmp_path, '''
    from luigi.task_register import Register

    class Second(luigi.Task):
        pass

    First = type("Second", (luigi.Task,), {"__module__": "elsewhere"})  # same family
    names = [(c.__module__, c.__name__) for c in luigi_shim.task_classes()]
    try:
        Register.get_task_cls("Second")
        ambiguous = False
    except Exception:
        ambiguous = True
    print(json.dumps({"names": names, "ambiguous": ambiguous}))
    ''')
    names = [tuple(n) for n in out["names"]]
    assert names.index(("__main__", "Written")) < names.index(("__main__", "Second")) \
        < names.index(("elsewhere", "Second"))
    assert out["ambiguous"]  # what the public API would have left out


def test_config_paths_are_what_luigi_reads(tmp_path):
    # the _config_paths of each parser class, appended to by add_config_path
    (tmp_path / "extra.cfg").write_text("[Written]\nname = from-extra\n")
    out = check(tmp_path, '''
    from luigi import configuration
    from luigi.configuration import core

    before = {n: luigi_shim.config_paths(p) for n, p in core.PARSERS.items()}
    configuration.add_config_path(os.path.abspath("extra.cfg"))
    after = luigi_shim.config_paths(configuration.LuigiConfigParser)
    value = configuration.get_config().get("Written", "name")
    print(json.dumps({"before": before, "after": after, "value": value}))
    ''')
    assert "luigi.cfg" in out["before"]["cfg"] and "/etc/luigi/luigi.cfg" in out["before"]["cfg"]
    assert "luigi.toml" in out["before"]["toml"]
    assert out["after"][-1] == str(tmp_path / "extra.cfg")
    assert out["value"] == "from-extra"  # the paths listed are the ones read


def test_task_outcomes_name_what_became_of_each_task(tmp_path):
    # execution_summary._partition_tasks(worker): the names hg.runs explains
    (tmp_path / "done.txt").write_text("done")
    out = check(tmp_path, '''
    class Bad(Written):
        def run(self):
            raise RuntimeError("no")

    class AfterBad(Written):
        def requires(self):
            return Bad(name="bad")

    class Missing(luigi.ExternalTask):
        def output(self):
            return luigi.LocalTarget("missing.txt")

    class NeedsMissing(Written):
        def requires(self):
            return Missing()

    result = luigi.build([Written(name="done"), Written(name="ok"), AfterBad(name="after"),
                          NeedsMissing(name="needs")], local_scheduler=True,
                         detailed_summary=True)
    outcome = {}
    parts = luigi_shim.task_outcomes(result)
    for name, tasks in parts.items():
        for task in tasks:  # the later name is the more precise
            outcome["%s(%s)" % (task.task_family, getattr(task, "name", ""))] = name
    print(json.dumps({"names": sorted(parts), "outcome": outcome}))
    ''')
    assert out["outcome"] == {
        "Written(done)": "already_done", "Written(ok)": "completed", "Bad(bad)": "failed",
        "AfterBad(after)": "still_pending_not_ext", "Missing()": "still_pending_ext",
        "NeedsMissing(needs)": "still_pending_not_ext"}
    assert {"completed", "already_done", "failed", "still_pending_ext",
            "still_pending_not_ext", "scheduling_error"} <= set(out["names"])


def test_hidden_config_dependencies_are_not_scheduled(tmp_path):
    # luigi.Task.deps: where the worker reads dependencies
    out = check(tmp_path, '''
    class secrets(luigi.Config):
        password = luigi.Parameter(default="hunter2")

    class UsesSecret(Written):
        def requires(self):
            return secrets()

    luigi_shim.hide_config_dependencies()
    luigi_shim.hide_config_dependencies()  # once per process
    scheduled = []
    luigi.Task.event_handler(luigi.Event.DEPENDENCY_DISCOVERED)(
        lambda task, dep: scheduled.append(dep.task_id))
    ok = luigi.build([UsesSecret(name="s")], local_scheduler=True)
    print(json.dumps({"ok": ok, "scheduled": scheduled,
                      "requires": type(UsesSecret(name="s").requires()).__name__,
                      "written": os.path.exists("s.txt")}))
    ''')
    assert out == {"ok": True, "scheduled": [], "requires": "secrets", "written": True}


def test_replaced_methods_are_the_ones_the_worker_calls(tmp_path):
    # complete() and run() of the class, looked up on each call; the task
    # instance an event handler sees at START is the one run() runs on and
    # SUCCESS reports, in the forked worker too; handlers' exceptions are
    # swallowed (which is why a refused start must fail run() instead)
    out = check(tmp_path, '''
    class Refused(Written):
        def run(self):
            super().run()

    class Kept(Written):
        pass

    def refusing(run):
        def wrapped(self):
            if self.__dict__.pop("refused", None):
                raise RuntimeError("refused")
            return run(self)
        return wrapped

    assert luigi_shim.replace_method(Refused, "run", refusing, "refuses")
    assert not luigi_shim.replace_method(Refused, "run", refusing, "refuses")
    assert not luigi_shim.replace_method(Kept, "run", refusing, "refuses")  # inherited
    assert luigi_shim.replace_method(Kept, "complete", lambda orig: lambda self: True,
                                     "done", inherited=True)
    seen = {}

    def started(task):
        task.refused = isinstance(task, Refused)
        task.mark = os.getpid()
        raise ValueError("a handler's exception is swallowed")

    def succeeded(task):
        with open(task.name + ".pid", "w") as f:
            f.write(str(task.mark))

    luigi.Task.event_handler(luigi.Event.START)(started)
    luigi.Task.event_handler(luigi.Event.SUCCESS)(succeeded)
    result = luigi.build([Refused(name="r"), Kept(name="k"), Written(name="w1"),
                          Written(name="w2")],
                         local_scheduler=True, workers=2, detailed_summary=True)
    print(json.dumps({"files": sorted(os.listdir(".")),
                      "pid": open("w1.pid").read() != str(os.getpid()),
                      "status": result.status.name}))
    ''')
    assert out["files"] == ["w1.pid", "w1.txt", "w2.pid", "w2.txt"]  # Kept: complete
    assert out["pid"]  # the mark came from the forked worker's START
    assert out["status"] == "FAILED"


def test_no_configure_logging_leaves_logging_alone(tmp_path):
    # public ([core] no_configure_logging), but the runner's log depends on it
    out = check(tmp_path, '''
    import logging
    from luigi.configuration import get_config

    get_config().set("core", "no_configure_logging", "true")
    luigi.build([Written(name="x")], local_scheduler=True)
    print(json.dumps([type(h).__name__ for h in logging.getLogger("luigi-interface").handlers]))
    ''')
    assert out == []
