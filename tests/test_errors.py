"""Bad input: a clear error, a non-zero exit, nothing recorded as built."""

import os
import signal
import time

from conftest import wait_for

HEADER = "import luigi\nfrom hgext_luigi import HgTask\n"


def lineage_json(repo):
    return repo.json("luigi-lineage")


def test_unknown_revision(demo):
    proc = demo("luigi-run", "-r", "nosuchrev", check=False)
    assert proc.returncode == 255
    assert proc.stderr.startswith("abort: unknown revision 'nosuchrev'")
    proc = demo("luigi-affected", "-r", "12345", check=False)
    assert proc.returncode == 255 and "abort: unknown revision '12345'" in proc.stderr


def test_no_pipeline_module(empty_repo):
    empty_repo.write("README", "nothing here\n")
    rev = empty_repo.commit("no pipeline")
    proc = empty_repo("luigi-run", check=False)
    assert proc.returncode == 255
    assert "abort: no pipeline module 'pipelines' at this revision" in proc.stderr
    assert rev[:12] in proc.stderr
    assert "(add the module to the repository or set [luigi] module)" in proc.stderr
    proc = empty_repo("luigi-affected", "--config", "luigi.module=etl", check=False)
    assert "abort: no pipeline module 'etl'" in proc.stderr
    assert "no lineage recorded yet" in empty_repo("luigi-lineage", check=False).stdout


def test_import_error_names_file_and_line(empty_repo):
    empty_repo.write("pipelines/__init__.py", "from pipelines import broken\n")
    empty_repo.write("pipelines/broken.py", HEADER + "\n\nVALUE = undefined_name\n")
    empty_repo.commit("broken pipeline")
    proc = empty_repo("luigi-run", check=False)
    assert proc.returncode == 255
    assert ("abort: pipelines/broken.py, line 5: pipeline module 'pipelines' failed to "
            "import: NameError: name 'undefined_name' is not defined") in proc.stderr
    assert "(fix the error in the pipeline code and commit again)" in proc.stderr
    empty_repo.write("pipelines/broken.py", "def f(:\n")
    empty_repo.commit("syntax error")
    proc = empty_repo("luigi-affected", check=False)
    assert proc.returncode == 255
    assert "abort: pipelines/broken.py, line 1:" in proc.stderr and "SyntaxError" in proc.stderr


def test_invalid_watch_pattern_names_the_task(empty_repo):
    empty_repo.write("pipelines/__init__.py", HEADER + '''
class Good(HgTask):
    watches = ["data/**"]
    def output(self):
        return self.stamped_target("good")

class Bad(HgTask):
    watches = ["re:data/(unclosed"]
    def output(self):
        return self.stamped_target("bad")
''')
    empty_repo.commit("bad pattern")
    proc = empty_repo("luigi-run", check=False)
    assert proc.returncode == 255
    assert "abort: invalid pattern in watches of Bad()" in proc.stderr
    assert "no lineage recorded yet" in empty_repo("luigi-lineage", check=False).stdout


def test_watch_patterns_that_read_server_files_are_refused(empty_repo, tmp_path):
    secret = tmp_path / "server-only.txt"
    secret.write_text("data/**\n")
    empty_repo.write("pipelines/__init__.py", HEADER + '''
class Peek(HgTask):
    watches = ["listfile:%s"]
    def output(self):
        return self.stamped_target("peek")
''' % secret)
    empty_repo.commit("a pattern naming a server file")
    proc = empty_repo("luigi-affected", check=False)
    assert proc.returncode == 255
    assert ("abort: invalid pattern in watches of Peek(): listfile patterns read files "
            "outside the revision") in proc.stderr
    assert "hg help patterns" in proc.stderr


def test_dependency_cycle(empty_repo):
    empty_repo.write("pipelines/__init__.py", HEADER + '''
class A(HgTask):
    def requires(self):
        return B()

class B(HgTask):
    def requires(self):
        return A()

class Root(HgTask):
    def requires(self):
        return A()
''')
    empty_repo.commit("cycle")
    proc = empty_repo("luigi-affected", check=False)
    assert proc.returncode == 255
    assert "dependency cycle: A() -> B() -> A()" in proc.stderr
    assert "(a task must not require itself, directly or through others)" in proc.stderr


FLAKY = HEADER + '''
import os


class Extract(HgTask):
    watches = ["data/**"]

    def output(self):
        return self.stamped_target("extract.txt")

    def run(self):
        if os.path.exists({switch!r}):
            raise ValueError("upstream API returned 503")
        with self.output().open("w") as f:
            f.write("ok\\n")


class Load(HgTask):
    def requires(self):
        return Extract()

    def output(self):
        return self.stamped_target("load.txt")

    def run(self):
        with self.input().open() as i, self.output().open("w") as o:
            o.write(i.read())
'''


def test_task_that_raises_is_recorded_and_retried(empty_repo, tmp_path):
    switch = str(tmp_path / "fail-now")
    open(switch, "w").close()
    repo = empty_repo
    repo.write("pipelines/__init__.py", FLAKY.format(switch=switch))
    repo.write("data/x.csv", "1\n")
    rev = repo.commit("flaky pipeline")
    proc = repo("luigi-run", check=False)
    assert proc.returncode == 1
    assert "failed   Extract()" in proc.stdout and "ValueError: upstream API returned 503" in proc.stdout
    assert "not run  Load()" in proc.stdout
    assert "0 ran, 0 reused, 1 failed, 1 not run" in proc.stdout
    assert "luigi run failed; log: " in proc.stderr
    rows = {r["key"]: r for r in lineage_json(repo)}
    assert rows["Extract()"]["status"] == "failed"
    assert rows["Extract()"]["error"] == "ValueError: upstream API returned 503"
    assert rows["Load()"]["status"] == "missing"
    assert not os.path.exists(os.path.join(repo.state, "outputs", rev, "extract.txt"))
    history = repo.json("luigi-lineage", "--task", "Extract")
    assert [h["status"] for h in history] == ["failed"]
    assert "Traceback" not in history[0]["error"]

    # still affected: the next run retries it
    assert repo.affected()["Extract()"]["reasons"] == ["never built"]
    os.unlink(switch)
    out = repo("luigi-run").stdout
    assert "2 ran, 0 reused, 0 failed" in out
    assert [h["status"] for h in repo.json("luigi-lineage", "--task", "Extract")] == \
        ["failed", "success"]


SLOW = HEADER + '''
import os
import time


class Slow(HgTask):
    watches = ["data/**"]

    def output(self):
        return self.stamped_target("slow.txt")

    def run(self):
        with self.output().open("w") as f:
            f.write("half of it\\n")
            f.flush()
            if os.path.exists({hold!r}):
                open({started!r}, "w").close()
                time.sleep(120)
            f.write("the rest\\n")
'''


def test_sigkill_midway_counts_nothing_and_next_run_completes(empty_repo, hg, tmp_path):
    hold = str(tmp_path / "hold")
    started = str(tmp_path / "started")
    open(hold, "w").close()
    repo = empty_repo
    repo.write("pipelines/__init__.py", SLOW.format(hold=hold, started=started))
    repo.write("data/x", "x\n")
    rev = repo.commit("slow")
    proc = hg.popen("luigi-run", cwd=repo.path)
    wait_for(started, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    out_dir = os.path.join(repo.state, "outputs", rev)
    assert not os.path.exists(os.path.join(out_dir, "slow.txt"))
    assert repo.affected()["Slow()"]["affected"]

    os.unlink(hold)
    run = repo("luigi-run")
    assert ("1 task builds of an earlier run that was killed are recorded as failed"
            in run.stderr)
    assert "1 ran" in run.stdout
    with open(os.path.join(out_dir, "slow.txt")) as f:
        assert f.read() == "half of it\nthe rest\n"
    history = repo.json("luigi-lineage", "--task", "Slow")
    assert [h["status"] for h in history] == ["failed", "success"]
    assert history[0]["error"].startswith("interrupted")


def test_two_runs_at_once(empty_repo, hg, tmp_path):
    hold = str(tmp_path / "hold")
    started = str(tmp_path / "started")
    open(hold, "w").close()
    repo = empty_repo
    repo.write("pipelines/__init__.py", SLOW.format(hold=hold, started=started)
               .replace("time.sleep(120)",
                        "while os.path.exists(%r):\n                    time.sleep(0.05)"
                        % hold))
    repo.write("data/x", "x\n")
    repo.commit("slow")
    first = hg.popen("luigi-run", cwd=repo.path)
    wait_for(started, first)
    second = repo("luigi-run", check=False)
    assert second.returncode == 255
    assert "abort: another luigi run is in progress in this repository (pid " in second.stderr
    assert "set [luigi] lock-timeout" in second.stderr
    # with a lock timeout the second run waits, then finds nothing left to do
    waiting = hg.popen("luigi-run", "--config", "luigi.lock-timeout=120", cwd=repo.path)
    time.sleep(1)
    assert waiting.poll() is None
    os.unlink(hold)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0 and "1 ran" in out, err
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0 and "0 ran, 1 reused" in out, err


ODD = HEADER + '''
from hgext_luigi.pipeline.task import HgTask as _Base


class Copy(HgTask):
    name = luigi.Parameter()
    watches = ["data/{name}"]

    def output(self):
        return self.stamped_target("copies/" + self.name)

    def run(self):
        with open(self.source_path("data/" + self.name), encoding="utf-8") as src:
            text = src.read()
        with self.output().open("w") as out:
            out.write(text)


class All(HgTask):
    def requires(self):
        return [Copy(name=n) for n in NAMES]

    def output(self):
        return self.stamped_target("all.txt")

    def run(self):
        with self.output().open("w") as out:
            out.write("\\n".join(sorted(NAMES)) + "\\n")
'''

NAMES = ["with space.csv", "ünïcödé.csv", "glob[1]*?.csv", "{{ lookup('pipe','id') }}.csv"]


def test_odd_file_names_are_plain_data(empty_repo):
    repo = empty_repo
    repo.write("pipelines/__init__.py", ODD + "\nNAMES = %r\n" % NAMES)
    for n in NAMES:
        repo.write("data/" + n, "content of %s\n" % n)
    # decoys the names would match if they were patterns
    repo.write("data/glob1xx.csv", "decoy\n")
    repo.write("data/with space.csvX", "decoy\n")
    rev = repo.commit("odd names")
    out = repo("luigi-run").stdout
    assert "5 ran" in out
    for n in NAMES:
        with open(os.path.join(repo.state, "outputs", rev, "copies", n), encoding="utf-8") as f:
            assert f.read() == "content of %s\n" % n
    repo.write("data/glob1xx.csv", "decoy changed\n")
    repo.commit("decoy")
    assert not any(t["affected"] for t in repo.affected().values())
    repo.write("data/" + NAMES[3], "changed\n", "a")
    repo.commit("template-looking file")
    tasks = repo.affected()
    key = "Copy(name=%s)" % NAMES[3]
    assert tasks[key]["affected"]
    assert tasks[key]["reasons"][0].startswith("data/%s modified since" % NAMES[3])
    assert [k for k, t in tasks.items() if t["affected"]] == [key, "All()"] or \
        sorted(k for k, t in tasks.items() if t["affected"]) == sorted([key, "All()"])
    assert "2 ran" in repo("luigi-run").stdout
