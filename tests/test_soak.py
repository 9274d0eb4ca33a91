"""Soak: two build hosts on one shared store and one luigid, five people pushing
100 changesets on three branches over HTTP, one host killed (SIGKILL) in the
middle of a build.  Every head is built exactly once, nothing is lost, lineage
reads the same from both hosts and the audit chain verifies.

Slow (a few minutes): ``make bench`` runs it, ``make test`` leaves it out.
``SOAK_PUSHES`` changes the number of pushes."""

import os
import random
import signal
import subprocess
import threading
import time

import psycopg
import pytest

from conftest import Repo, make_server_repo, stop_process, write

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

PUSHES = int(os.environ.get("SOAK_PUSHES", "100"))
PUSHERS = 5
BRANCHES = ("default", "stable", "feature")

PIPELINE = '''
import time

import luigi
from hgext_luigi import HgTask

PARTS = ["p%d" % i for i in range(5)]


class Part(HgTask):
    """Counts the lines of one pusher's file (data/<name>.txt)."""
    name = luigi.Parameter()
    watches = ["data/{name}.txt"]

    def output(self):
        return self.stamped_target("parts/%s.txt" % self.name)

    def run(self):
        time.sleep(0.3)  # long enough to be killed in the middle
        try:
            with open(self.source_path("data/%s.txt" % self.name)) as f:
                count = sum(1 for _ in f)
        except FileNotFoundError:
            count = 0
        with self.output().open("w") as out:
            out.write("%d\\n" % count)


class Total(HgTask):
    def requires(self):
        return [Part(name=n) for n in PARTS]

    def output(self):
        return self.stamped_target("total.txt")

    def run(self):
        total = sum(int(t.open().read()) for t in self.input())
        with self.output().open("w") as out:
            out.write("%d\\n" % total)
'''


def _seed(hg, server, url, path):
    """The pipeline and one changeset on each branch, pushed over HTTP (which
    also has hg serve import what serving pushes needs before five pushers do
    at once: its lazy imports race in threads)."""
    hg("clone", "-q", url, path)
    seed = Repo(hg, path)
    seed.write("pipelines/__init__.py", PIPELINE)
    seed.commit("pipeline")
    for branch in BRANCHES[1:]:
        seed("branch", "-q", branch)
        seed.write("data/%s.txt" % branch, "start\n")
        seed.commit("start %s" % branch)
        seed("update", "-q", "default")
    seed("push", "--new-branch", url)


def _pusher(hg, url, path, n, count, errors):
    """Commit and push ``count`` changesets from the clone at ``path``, each on
    one of the branches, rebasing on what the others pushed meanwhile."""
    rebase = ["--config", "extensions.rebase="]
    try:
        repo = Repo(hg, path)
        rng = random.Random(n)
        for i in range(count):
            branch = rng.choice(BRANCHES)
            repo("pull", "-q", url)
            repo("update", "-q", "-C", branch)
            repo.write("data/p%d.txt" % n, "push %d on %s\n" % (i, branch), "a")
            repo.commit("p%d change %d" % (n, i), "--user", "p%d" % n)
            for _ in range(50):  # another pusher was first: rebase and try again
                if repo("push", url, "-b", branch, check=False).returncode in (0, 1):
                    break
                repo("pull", "-q", url)
                repo("rebase", "-q", "-d", "heads(branch(%s)) - ." % branch, *rebase,
                     check=False)
    except Exception as e:  # reported by the test
        errors.append("pusher %d: %s" % (n, e))


def _worker(hg, host, log):
    with open(log, "w") as out:
        return subprocess.Popen([hg.exe, "luigi-worker"], cwd=host.path, env=hg.env,
                                stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _kill_mid_build(pg_url, password, proc, after, timeout=600):
    """SIGKILL the host (its worker, runner and Luigi processes) once ``after``
    entries are done (both hosts have been building) and it is inside a task
    build.  Returns the queue entry it was building."""
    deadline = time.time() + timeout
    with psycopg.connect(pg_url, password=password, autocommit=True) as db:
        while time.time() < deadline:
            done = db.execute("SELECT COUNT(*) FROM entries WHERE state = 'done'"
                              ).fetchone()[0]
            row = done >= after and db.execute(
                "SELECT e.id FROM entries e JOIN leases l ON l.task_id = 'run'"
                " JOIN builds b ON b.run_id = l.owner AND b.status = 'running'"
                " WHERE e.state = 'running' AND e.owner LIKE %s LIMIT 1",
                ("%%:%d:%%" % proc.pid,)).fetchone()
            if row:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return row[0]
            time.sleep(0.05)
    pytest.fail("host 1 never started a build")


def test_two_hosts_a_hundred_pushes_one_host_killed(hg, pg_server, pg_url, luigid,
                                                    tmp_path, serve):
    hg.env.update(pg_server.env())
    config = ("store = %s\noutput-root = %s\nscheduler = %s\nlease = 4\n"
              "poll-interval = 0.2\nroots = Total\n" % (pg_url, tmp_path / "outputs", luigid))
    server = make_server_repo(hg, str(tmp_path / "server"), config + "on-push = queue\n")
    server("luigi-store", "--upgrade")
    served = serve(server)
    _seed(hg, server, served.url, str(tmp_path / "seed"))
    hosts = []
    for name in ("host1", "host2"):
        hg("clone", "-q", "-U", server.path, str(tmp_path / name))
        host = Repo(hg, str(tmp_path / name))
        host.config("[luigi]\n" + config)
        hosts.append(host)
    workers = [_worker(hg, h, str(tmp_path / ("%s.log" % h.path.rsplit("/", 1)[1])))
               for h in hosts]
    for n in range(PUSHERS):
        hg("clone", "-q", served.url, str(tmp_path / ("p%d" % n)))
    errors = []
    each = PUSHES // PUSHERS
    pushers = [threading.Thread(target=_pusher, args=(hg, served.url,
                                                      str(tmp_path / ("p%d" % n)), n,
                                                      each, errors))
               for n in range(PUSHERS)]
    for t in pushers:
        t.start()
    killed_entry = _kill_mid_build(pg_url, pg_server.password, workers[0], PUSHES // 5)
    for t in pushers:
        t.join(1200)
    assert errors == []
    _drain(server, workers[1])
    runs = _check(hg, server, hosts, killed_entry, pg_url, pg_server.password)
    with open(str(tmp_path / "host2.log")) as f:
        by_host2 = f.read().count("luigi: building")
    assert 0 < by_host2 < runs  # both hosts built entries


def _drain(server, worker, timeout=900):
    """Wait until host 2 has built everything, then stop it as systemd would."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        states = {e["state"] for e in server.json("luigi-queue")}
        if states <= {"done", "failed", "skipped"}:
            break
        assert worker.poll() is None, "host 2's worker died"
        time.sleep(1)
    worker.send_signal(signal.SIGTERM)
    worker.wait(60)


def _check(hg, server, hosts, killed_entry, pg_url, password):
    entries = server.json("luigi-queue")
    assert len(entries) >= PUSHES  # one per pushed head (a push may carry several)
    assert {e["state"] for e in entries} == {"done"}, [
        (e["id"], e["state"], e["attempts"], e["error"], e["summary"]) for e in entries
        if e["state"] != "done"]
    killed = next(e for e in entries if e["id"] == killed_entry)
    assert killed["attempts"] >= 2  # taken again after its host died
    with psycopg.connect(pg_url, password=password, autocommit=True) as db:
        twice = db.execute("SELECT task_id, changeset, COUNT(*) FROM builds WHERE"
                           " status = 'success' GROUP BY task_id, changeset"
                           " HAVING COUNT(*) > 1").fetchall()
        assert twice == []  # no task built twice at one changeset
        runs = {r[0]: r[1] for r in db.execute("SELECT id, status FROM runs")}
        assert "running" not in runs.values()
    built = {}
    for e in entries:  # each head: its own successful run, or covered by one
        main = e if e["covered_by"] is None else next(
            x for x in entries if x["id"] == e["covered_by"])
        assert runs[main["run"]] == "success", main
        built.setdefault(main["head"], set()).add(main["run"])
    assert all(len(r) == 1 for r in built.values())
    for head in list(built)[-5:]:
        views = [h.json("luigi-lineage", head) for h in hosts]
        assert views[0] == views[1] and {r["status"] for r in views[0]} == {"success"}
    for h in hosts:
        assert "no problem" in h("luigi-audit", "--verify").stdout
    return sum(len(r) for r in built.values())
