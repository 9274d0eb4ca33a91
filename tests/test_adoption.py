"""Existing Luigi pipelines adopted as they are: Luigi's own examples (vendored
unchanged in tests/luigi_examples), tasks that need parameters (``--task KEY``),
``luigi.Config`` classes, the Luigi configuration files, the watches file."""

import glob
import os
import random
import shutil
import stat
import subprocess

from test_run import outcomes

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "luigi_examples")
PARAMS_HINT = "(set [luigi] roots or pass --task 'Family(param=value)')"
INTERVAL = "1999-12-21-1999-12-23"  # Luigi's intervals exclude their end: two days
WORDCOUNT = "WordCount(date_interval=%s)" % INTERVAL


def adopt(repo, *names, module=None, watches=""):
    """Commit Luigi examples, unchanged, as the package ``examples``."""
    repo.write("examples/__init__.py", "")
    for name in names:
        shutil.copy(os.path.join(EXAMPLES, name + ".py"), os.path.join(repo.path, "examples"))
    if watches:
        repo.write(".hgluigi", "[watches]\n" + watches)
    repo.config("[luigi]\nmodule = %s\n" % (module or "examples." + names[0]))
    return repo.commit("adopt %s" % ", ".join(names))


def remove(*patterns):
    for pattern in patterns:
        for path in glob.glob(pattern):
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


# -- Luigi's examples, unchanged ---------------------------------------------------

def test_examples_are_vendored_unchanged():
    for name in ("wordcount", "top_artists", "foo", "dynamic_requirements"):
        assert "Licensed under the Apache License, Version 2.0" in read(
            os.path.join(EXAMPLES, name + ".py"))
    assert "715f65c4" in read(os.path.join(EXAMPLES, "README"))


def test_wordcount_planned_with_a_task_key(empty_repo):
    repo = empty_repo
    adopt(repo, "wordcount", watches="InputText = text/{date}.txt\n")
    proc = repo("luigi-affected", "--task", WORDCOUNT)
    assert "warning" not in proc.stderr  # an ExternalTask is a known family
    assert "1 of 3 tasks affected" in proc.stdout
    tasks = repo.affected("--task", WORDCOUNT)
    assert {k: t["status"] for k, t in tasks.items()} == {
        "InputText(date=1999-12-21)": "external",
        "InputText(date=1999-12-22)": "external",
        WORDCOUNT: "affected",
    }
    assert tasks[WORDCOUNT]["family"] == "WordCount"
    assert tasks[WORDCOUNT]["task"].startswith("WordCount_")


def test_task_key_with_defaults_left_out_and_other_spacing(empty_repo):
    repo = empty_repo
    adopt(repo, "top_artists")
    full = "Top10Artists(date_interval=%s, use_spark=False)" % INTERVAL
    tasks = repo.affected("--task", full)
    assert sorted(tasks) == [
        "AggregateArtists(date_interval=%s)" % INTERVAL,
        "Streams(date=1999-12-21)", "Streams(date=1999-12-22)", full]
    assert all(t["status"] == "affected" for t in tasks.values())
    # the default of use_spark and other spacing: the same task
    short = repo.affected("--task", "Top10Artists(date_interval=%s)" % INTERVAL)
    assert sorted(short) == sorted(tasks)
    packed = repo.affected("--task", "Top10Artists(date_interval=%s,use_spark=False)" % INTERVAL)
    assert sorted(packed) == sorted(tasks)


def test_every_task_needs_parameters_says_what_to_do(empty_repo):
    repo = empty_repo
    adopt(repo, "wordcount")
    proc = repo("luigi-affected", check=False)
    assert proc.returncode == 255
    assert ("abort: every task of 'examples.wordcount' needs parameters: "
            "InputText needs date; WordCount needs date_interval") in proc.stderr
    assert PARAMS_HINT in proc.stderr
    # a plain family name of a task that needs parameters
    proc = repo("luigi-affected", "--task", "WordCount", check=False)
    assert proc.returncode == 255
    assert "abort: task WordCount needs the parameter date_interval" in proc.stderr
    assert PARAMS_HINT in proc.stderr
    # a root that needs a parameter (MissingParameterException)
    proc = repo("luigi-run", "--config", "luigi.roots=WordCount", check=False)
    assert proc.returncode == 255
    assert "abort: task WordCount needs the parameter date_interval" in proc.stderr
    assert PARAMS_HINT in proc.stderr


def test_task_argument_errors_name_the_task(empty_repo):
    repo = empty_repo
    adopt(repo, "wordcount")
    proc = repo("luigi-affected", "--task", "Nope(x=1)", check=False)
    assert proc.returncode == 255
    assert "abort: unknown task: Nope" in proc.stderr
    assert "(tasks in this pipeline: InputText, WordCount)" in proc.stderr
    proc = repo("luigi-run", "--task", "WordCount(date=1999-12-21)", check=False)
    assert proc.returncode == 255
    assert "WordCount has no parameter 'date'" in proc.stderr
    assert "(parameters of WordCount: date_interval)" in proc.stderr
    proc = repo("luigi-affected", "--task", "WordCount(date_interval=someday)", check=False)
    assert proc.returncode == 255
    assert "WordCount cannot be instantiated: ValueError" in proc.stderr
    assert "no lineage recorded yet" in repo("luigi-lineage", check=False).stdout


def test_foo_wrapper_task_runs(empty_repo):
    repo = empty_repo
    remove("/tmp/bar")
    try:
        # Bar.output() sleeps a second: let Luigi check the ten Bars side by side
        repo.write("luigi.cfg", "[core]\nparallel_scheduling = true\n"
                   "parallel_scheduling_processes = 10\n")
        adopt(repo, "foo", watches="examples.Foo = foo.cfg\n")
        tasks = repo.affected()
        assert sorted(tasks) == ["examples.Bar(num=%d)" % i for i in range(10)] + ["examples.Foo()"]
        out = repo("luigi-run", "--workers", "10").stdout
        assert set(outcomes(out).values()) == {"ran"} and len(outcomes(out)) == 11
        # what `luigi --module examples.foo examples.Foo` leaves: ten empty files
        assert sorted(os.listdir("/tmp/bar")) == [str(i) for i in range(10)]
        assert all(os.path.getsize("/tmp/bar/%d" % i) == 0 for i in range(10))
        repo.write("foo.cfg", "x\n")
        repo.commit("foo input")
        tasks = repo.affected()
        assert [k for k, t in tasks.items() if t["affected"]] == ["examples.Foo()"]
    finally:
        remove("/tmp/bar")


def test_dynamic_requirements_run(empty_repo):
    repo = empty_repo
    files = ("/tmp/Config_1.txt", "/tmp/Data_*.txt", "/tmp/Dynamic_1.txt")
    remove(*files)
    try:
        adopt(repo, "dynamic_requirements")
        assert list(repo.affected()) == ["Dynamic(seed=1)"]
        out = repo("luigi-run", "--workers", "4").stdout
        assert outcomes(out)["Dynamic(seed=1)"] == "ran"
        # what the example's own run() computes from its seed
        random.seed(1)
        data = random.sample(list(range(300)), random.randint(7, 25))
        assert read("/tmp/Config_1.txt") == ",".join(str(x) for x in data)
        assert sorted(glob.glob("/tmp/Data_*.txt")) == sorted(
            "/tmp/Data_%d.txt" % x for x in data)
        assert read("/tmp/Dynamic_1.txt") == "Tada!"
        assert outcomes(repo("luigi-run").stdout) == {"Dynamic(seed=1)": "reused"}
    finally:
        remove(*files)


WORDS = {"1999-12-21": "a rose is a rose\n", "1999-12-22": "is a rose\n"}
COUNT_OUT = "/var/tmp/text-count/%s" % INTERVAL


def _write_inputs():
    os.makedirs("/var/tmp/text", exist_ok=True)
    for day, text in WORDS.items():
        with open("/var/tmp/text/%s.txt" % day, "w") as f:
            f.write(text)


def _remove_inputs():
    remove(COUNT_OUT, *("/var/tmp/text/%s.txt" % day for day in WORDS))


def test_wordcount_runs_like_luigi(empty_repo, hg):
    repo = empty_repo
    _remove_inputs()
    try:
        _write_inputs()
        adopt(repo, "wordcount")
        # Luigi itself, on the same files
        env = dict(hg.env, PYTHONPATH=repo.path)
        subprocess.run([os.path.join(os.path.dirname(hg.exe), "luigi"), "--module",
                        "examples.wordcount", "WordCount", "--date-interval", INTERVAL,
                        "--local-scheduler"], cwd=repo.path, env=env, check=True,
                       capture_output=True)
        expected = sorted(read(COUNT_OUT).splitlines())
        assert expected == ["a\t3", "is\t2", "rose\t3"]
        remove(COUNT_OUT)
        out = repo("luigi-run", "--task", WORDCOUNT).stdout
        assert outcomes(out)[WORDCOUNT] == "ran"
        assert sorted(read(COUNT_OUT).splitlines()) == expected
        assert WORDCOUNT in {b["key"] for b in repo.json("luigi-lineage")}
    finally:
        _remove_inputs()


def test_external_task_watches_affect_downstream(empty_repo):
    repo = empty_repo
    _remove_inputs()
    try:
        _write_inputs()
        adopt(repo, "wordcount", watches="InputText = text/{date}.txt\n")
        repo.write("text/1999-12-21.txt", "v1\n")
        repo.commit("input snapshot")
        repo("luigi-run", "--task", WORDCOUNT)
        assert not repo.affected("--task", WORDCOUNT)[WORDCOUNT]["affected"]
        repo.write("text/1999-12-25.txt", "v1\n")  # a day outside the interval
        repo.commit("other day")
        assert not repo.affected("--task", WORDCOUNT)[WORDCOUNT]["affected"]
        repo.write("text/1999-12-21.txt", "v2\n")
        repo.commit("input changed")
        tasks = repo.affected("--task", WORDCOUNT)
        assert tasks[WORDCOUNT]["affected"]
        assert not tasks["InputText(date=1999-12-22)"]["affected"]
    finally:
        _remove_inputs()


def test_top_artists_runs_with_relative_outputs(empty_repo, tmp_path):
    repo = empty_repo
    adopt(repo, "top_artists")
    plain = tmp_path / "plain"
    repo.config("plain-output-root = %s\n" % plain)
    key = "Top10Artists(date_interval=%s, use_spark=False)" % INTERVAL
    out = repo("luigi-run", "--task", key).stdout
    assert set(outcomes(out).values()) == {"ran"} and len(outcomes(out)) == 4
    top = plain / "data" / ("top_artists_%s.tsv" % INTERVAL)
    assert len(read(str(top)).splitlines()) == 10
    # nothing written into the materialized tree
    assert not glob.glob(os.path.join(repo.state, "trees", "*", "data"))
    assert set(outcomes(repo("luigi-run", "--task", key).stdout).values()) == {"reused"}


# -- luigi.Config: configuration, never a task ---------------------------------------

CANARY = "CANARY-s3cr3t-5f9e1c"

CONFIGURED = '''
import luigi


class db(luigi.Config):
    password = luigi.Parameter()


class Export(luigi.Task):
    def output(self):
        return luigi.LocalTarget({out!r})

    def run(self):
        with self.output().open("w") as f:
            f.write("connected: %s\\n" % (len(db().password) > 0))
'''


def test_config_classes_are_never_tasks_nor_shown(empty_repo, tmp_path):
    repo = empty_repo
    out_file = str(tmp_path / "export.txt")
    repo.write("pipelines/__init__.py", CONFIGURED.format(out=out_file))
    repo.write("luigi.cfg", "[db]\npassword = %s\n" % CANARY)
    repo.commit("export with a database password")
    seen = []
    for args in (["luigi-affected"], ["luigi-affected", "-T", "json"], ["luigi-run", "-v"],
                 ["luigi-affected", "-v"], ["luigi-lineage", "-T", "json"],
                 ["luigi-lineage", "--task", "Export"]):
        proc = repo(*args)
        seen.append(proc.stdout + proc.stderr)
    assert list(repo.affected()) == ["Export()"]
    assert "db(" not in "".join(seen)
    assert CANARY not in "".join(seen)
    assert read(out_file) == "connected: True\n"
    proc = repo("luigi-run", "--task", "db", check=False)
    assert proc.returncode == 255 and "unknown task: db" in proc.stderr
    assert CANARY not in proc.stdout + proc.stderr
    # nothing hg keeps (index cache, logs, lineage) holds it; the materialized
    # trees are copies of the repository's own files, luigi.cfg included
    trees = os.path.join(repo.state, "trees")
    for folder, dirs, names in os.walk(repo.state):
        if folder == trees:
            dirs[:] = []
            continue
        for name in names:
            path = os.path.join(folder, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                with open(path, "rb") as f:
                    assert CANARY.encode() not in f.read(), path


# -- the pipeline comes from the repository only --------------------------------------

OWN = '''
import luigi


class OwnTask(luigi.Task):
    def complete(self):
        return True
'''


def shadowing_python(tmp_path):
    """An interpreter that has this project (and its example ``pipelines``
    package) first on PYTHONPATH, as an editable install or a careless
    PYTHONPATH would."""
    root = os.path.dirname(HERE)
    wrapper = tmp_path / "python-shadow"
    wrapper.write_text('#!/bin/sh\nPYTHONPATH="%s${PYTHONPATH:+:$PYTHONPATH}" exec "%s" "$@"\n'
                       % (root, os.path.join(root, ".venv", "bin", "python")))
    wrapper.chmod(0o755)
    return str(wrapper)


def test_pipeline_module_of_the_repository_wins(empty_repo, tmp_path):
    repo = empty_repo
    repo.config("[luigi]\npython = %s\n" % shadowing_python(tmp_path))
    repo.write("README", "nothing yet\n")
    rev = repo.commit("no pipeline")
    proc = repo("luigi-affected", check=False)
    assert proc.returncode == 255
    assert "abort: no pipeline module 'pipelines' at this revision (%s)" % rev[:12] in proc.stderr
    assert "outside" not in proc.stderr
    repo.write("pipelines/__init__.py", OWN)
    repo.commit("own pipeline named like the example")
    assert list(repo.affected()) == ["OwnTask()"]
    assert outcomes(repo("luigi-run").stdout) == {"OwnTask()": "ran"}


# -- watches file ------------------------------------------------------------------------

COPY = '''
import os

import luigi


class Copy(luigi.Task):
    name = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(os.path.join({out!r}, self.name))

    def run(self):
        with open(os.path.join("data", self.name), encoding="utf-8") as f, \\
                self.output().open("w") as out:
            out.write(f.read())
'''


def copy_repo(repo, tmp_path, watches):
    out = tmp_path / "out"
    repo.write("pipelines/__init__.py", COPY.format(out=str(out)))
    repo.write(".hgluigi", watches)
    repo.write("data/a.csv", "a1\n")
    repo.write("data/b.csv", "b1\n")
    repo.write("data/zürich.csv", "z1\n")
    repo.commit("copy task")
    return out


def test_watches_file_placeholders(empty_repo, tmp_path):
    repo = empty_repo
    out = copy_repo(repo, tmp_path, "[watches]\nCopy = data/{name}\n")
    key = "Copy(name=a.csv)"
    assert outcomes(repo("luigi-run", "--task", key).stdout) == {key: "ran"}
    assert read(str(out / "a.csv")) == "a1\n"
    repo.write("data/b.csv", "b2\n")
    repo.commit("b changed")
    assert not repo.affected("--task", key)[key]["affected"]
    repo.write("data/a.csv", "a2\n")
    repo.commit("a changed")
    task = repo.affected("--task", key)[key]
    assert task["affected"] and task["reasons"][0].startswith("data/a.csv modified since")


def test_non_ascii_task_key_round_trips(empty_repo, tmp_path):
    repo = empty_repo
    out = copy_repo(repo, tmp_path, "[watches]\nCopy = data/{name}\n")
    key = "Copy(name=zürich.csv)"
    assert list(repo.affected("--task", key)) == [key]
    assert key in repo("luigi-affected", "--task", key).stdout
    assert outcomes(repo("luigi-run", "--task", key).stdout) == {key: "ran"}
    assert read(str(out / "zürich.csv")) == "z1\n"
    assert repo.json("luigi-lineage")[0]["key"] == key


def test_watches_file_entry_naming_no_family_warns(empty_repo, tmp_path):
    repo = empty_repo
    copy_repo(repo, tmp_path, "[watches]\nCopy = data/{name}\n# typo below\nCopyy = data/**\n"
              "Red\x1b[31m = x\n")
    warning = "warning: .hgluigi, line 4: no task family 'Copyy' in the pipeline\n"
    escaped = "warning: .hgluigi, line 5: no task family 'Red\\x1b[31m' in the pipeline\n"
    for _ in range(2):  # loaded, then from the cache
        proc = repo("luigi-affected", "--task", "Copy(name=a.csv)")
        assert warning in proc.stderr and "Copy(name=a.csv)" in proc.stdout
        assert escaped in proc.stderr and "\x1b" not in proc.stderr


# -- Luigi's configuration files ------------------------------------------------------

DEFAULTED = '''
import luigi


class Report(luigi.Task):
    region = luigi.Parameter(default="all")

    def complete(self):
        return False
'''


def test_luigi_cfg_added_or_changed_reloads_the_graph(empty_repo):
    repo = empty_repo
    repo.write("pipelines/__init__.py", DEFAULTED)
    repo.commit("report")
    assert list(repo.affected()) == ["Report(region=all)"]
    repo.write("luigi.cfg", "[Report]\nregion = north\n")
    repo.commit("configure the region")
    assert list(repo.affected()) == ["Report(region=north)"]
    repo.write("luigi.cfg", "[Report]\nregion = south\n")
    repo.commit("another region")
    assert list(repo.affected()) == ["Report(region=south)"]
    repo("rm", "luigi.cfg")
    repo.commit("no configuration")
    assert list(repo.affected()) == ["Report(region=all)"]


def test_requires_failure_names_the_task(empty_repo):
    repo = empty_repo
    repo.write("pipelines/__init__.py", '''import luigi


class Broken(luigi.Task):
    def requires(self):
        raise KeyError("missing-input")
''')
    repo.commit("broken requires")
    proc = repo("luigi-affected", check=False)
    assert proc.returncode == 255
    assert ("abort: pipelines/__init__.py, line 6: Broken().requires() failed: "
            "KeyError: 'missing-input'") in proc.stderr
