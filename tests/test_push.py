"""Push-triggered pipelines with real pushes: hg serve over HTTP, local paths, ssh."""

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import Repo, free_port, make_server_repo, seeded_clone, wait_for, wait_http

HELPERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers")


def node(repo, rev="."):
    return repo("log", "-r", rev, "-T", "{node}").stdout


def queue(repo, *args):
    return repo.json("luigi-queue", *args)


@pytest.fixture
def server(hg, tmp_path):
    return make_server_repo(hg, str(tmp_path / "server"), "on-push = queue\n")


def test_queue_mode_push_over_http_then_worker(hg, server, serve, tmp_path):
    served = serve(server)
    clone = seeded_clone(hg, server, str(tmp_path / "alice"), served.url)
    head = node(clone)
    out = clone("push", served.url)
    assert "remote: luigi: queued a build for %s (queue entry 1)" % head[:12] in out.stdout
    [entry] = queue(server)
    assert entry["state"] == "pending" and entry["head"] == head
    assert entry["branch"] == "default" and entry["attempts"] == 0
    assert entry["pusher"] == "anonymous@127.0.0.1"
    assert entry["source"] == "remote:http:127.0.0.1:"
    assert "no lineage recorded yet" in server("luigi-lineage", check=False).stdout

    work = server("luigi-worker", "--once")
    assert "1 queue entries processed, 0 failed" in work.stdout
    [entry] = queue(server)
    assert entry["state"] == "done" and entry["attempts"] == 1 and entry["run"]
    assert entry["summary"] == "5 ran, 0 reused, 0 failed, 0 not run"
    rows = server.json("luigi-lineage")
    assert {r["trigger"] for r in rows} == {"push"}
    assert {r["user"] for r in rows} == {"anonymous@127.0.0.1"}
    assert {r["changeset"] for r in rows} == {head}
    assert rows[0]["run"] == entry["run"]

    # the next push builds only what it affects
    clone.write("data/raw/sales-east.csv", "2026-11-21,Gadget,1,15.50\n", "a")
    second = clone.commit("east")
    clone("push", served.url)
    server("luigi-worker", "--once")
    by_key = {r["key"]: r for r in server.json("luigi-lineage", second)}
    assert by_key["CleanSales(region=east)"]["changeset"] == second
    assert by_key["CleanSales(region=north)"]["changeset"] == head
    assert queue(server)[-1]["summary"] == "2 ran, 3 reused, 0 failed, 0 not run"


def test_local_path_push_records_the_local_user(hg, server, tmp_path):
    """The pusher is the account the pushing process runs as; the committer name
    (ui.username, HGUSER) is the pusher's to choose: it is the entry's author."""
    me = subprocess.run(["id", "-un"], capture_output=True, text=True,
                        check=True).stdout.strip()
    clone = seeded_clone(hg, server, str(tmp_path / "bob"))
    clone("push", server.path, "--config", "ui.username=Bob <bob@example.com>")
    [entry] = queue(server)
    assert entry["pusher"] == me and entry["author"] == "Alice <alice@example.com>"
    server("luigi-worker", "--once")
    text = server("luigi-lineage").stdout
    assert "by %s (push)" % me in text.splitlines()[0]


def test_authenticated_http_user_is_the_pusher(hg, server, tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, os.path.join(HELPERS, "authserve.py"),
                             server.path, str(port), "alice:s3cret"],
                            env=hg.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = "http://127.0.0.1:%d/" % port
        wait_http(url, proc, "authenticating server")
        clone = seeded_clone(hg, server, str(tmp_path / "alice"))
        denied = clone("push", "http://alice:wrong@127.0.0.1:%d/" % port, check=False)
        assert denied.returncode != 0 and queue(server) == []
        clone("push", "http://alice:s3cret@127.0.0.1:%d/" % port)
    finally:
        proc.kill()
        proc.wait()
    [entry] = queue(server)
    assert entry["pusher"] == "alice"
    assert entry["source"].startswith("remote:http:") and entry["source"].endswith(":alice")
    server("luigi-worker", "--once")
    assert {r["user"] for r in server.json("luigi-lineage")} == {"alice"}


def test_ssh_user_is_the_pusher(hg, server, tmp_path):
    clone = seeded_clone(hg, server, str(tmp_path / "carol"))
    ssh = os.path.join(HELPERS, "dummyssh")
    clone("push", "--config", "ui.ssh=%s" % ssh, "ssh://hg@localhost/%s" % server.path,
          env={"REMOTE_USER": "carol"})
    [entry] = queue(server)
    assert entry["pusher"] == "carol@127.0.0.1" and entry["source"] == "remote:ssh:127.0.0.1"


def test_run_mode_streams_to_the_pusher_and_failure_keeps_the_push(hg, tmp_path, serve):
    server = make_server_repo(hg, str(tmp_path / "server"), "on-push = run\n")
    served = serve(server)
    clone = seeded_clone(hg, server, str(tmp_path / "dev"), served.url)
    head = node(clone)
    out = clone("push", served.url).stdout
    assert "remote: luigi: building %s on default, pushed by anonymous@127.0.0.1" % head[:12] in out
    assert "remote: ran      CleanSales(region=north)" in out
    assert out.count("CleanSales(region=north)") == 1  # each task once
    assert "remote: 5 ran, 0 reused, 0 failed, 0 not run" in out
    assert queue(server)[0]["state"] == "done"
    assert {r["changeset"] for r in server.json("luigi-lineage")} == {head}

    clone.write("pipelines/docs.py", "raise RuntimeError('docs are broken')\n")
    broken = clone.commit("break the docs module")
    proc = clone("push", served.url, check=False)
    assert "remote: luigi: pipelines/docs.py, line 1:" in proc.stdout + proc.stderr
    assert "docs are broken" in proc.stdout + proc.stderr
    assert "the push itself is kept" in proc.stdout + proc.stderr
    assert node(server, "tip") == broken
    last = queue(server)[-1]
    assert last["state"] == "failed" and "docs are broken" in last["error"]


BROKEN = "from pipelines import docs, sales  # noqa\n\nVALUE = 1 +\n"


def test_gate_rejects_a_broken_pipeline_and_leaves_the_repository_unchanged(
        hg, tmp_path, serve):
    server = make_server_repo(hg, str(tmp_path / "server"), "on-push = queue\ngate = true\n")
    served = serve(server)
    clone = seeded_clone(hg, server, str(tmp_path / "dev"), served.url)
    clone("push", served.url)
    before = node(server, "tip")
    clone.write("pipelines/__init__.py", BROKEN)
    clone.commit("broken pipeline")
    proc = clone("push", served.url, check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "luigi gate: the pipeline at" in text
    assert "pipelines/__init__.py, line 3" in text and "SyntaxError" in text
    assert node(server, "tip") == before
    assert [e["head"] for e in queue(server)] == [before]  # nothing queued for it
    # on the record: the first push and its gate verdict, the refusal
    kinds = [(r["kind"], r["data"].get("verdict") or r["data"].get("reason"))
             for r in server.json("luigi-audit")]
    assert kinds == [("audit-started", None), ("gate", "ok"), ("push-accepted", None),
                     ("push-rejected", "gate")]

    # a pipeline with an invalid pattern is rejected too, naming the task
    clone("rollback", "-q")
    clone("revert", "-q", "--all", "--no-backup")
    sales = os.path.join(clone.path, "pipelines", "sales.py")
    with open(sales) as f:
        code = f.read()
    clone.write("pipelines/sales.py", code.replace('watches = ["data/report.cfg"]',
                                                   'watches = ["re:data/(report"]'))
    clone.commit("bad pattern")
    proc = clone("push", served.url, check=False)
    assert proc.returncode != 0
    assert "invalid pattern in watches of SalesReport()" in proc.stdout + proc.stderr
    assert node(server, "tip") == before


def test_gate_off_accepts_a_broken_pipeline_and_records_the_failure(hg, server, tmp_path):
    clone = seeded_clone(hg, server, str(tmp_path / "dev"))
    clone.write("pipelines/__init__.py", BROKEN)
    head = clone.commit("broken pipeline")
    clone("push", server.path)
    assert node(server, "tip") == head
    work = server("luigi-worker", "--once", check=False)
    assert work.returncode == 1
    assert "luigi: pipelines/__init__.py, line 3:" in work.stderr
    [entry] = queue(server)
    assert entry["state"] == "failed" and "pipelines/__init__.py, line 3" in entry["error"]
    listing = server("luigi-queue").stdout
    assert "failed" in listing and "error: pipelines/__init__.py, line 3" in listing

    # fixed by a later push; the failed entry can also be retried by hand
    retried = server("luigi-queue", "--retry", str(entry["id"])).stdout
    assert retried == "queue entry 1 (%s on default) is pending again\n" % head[:12]
    assert queue(server)[0]["state"] == "pending"
    bad = server("luigi-queue", "--retry", "1", check=False)
    assert bad.returncode == 255 and "abort: queue entry 1 is pending, not failed" in bad.stderr
    bad = server("luigi-queue", "--retry", "99", check=False)
    assert "abort: no queue entry 99" in bad.stderr


def test_several_heads_in_one_push_and_branch_filter(hg, server, tmp_path):
    clone = seeded_clone(hg, server, str(tmp_path / "dev"))
    base = node(clone)
    clone("push", server.path)
    server("luigi-worker", "--once")
    heads = {}
    for branch, region in (("north-fix", "north"), ("south-fix", "south")):
        clone("update", "-q", base)
        clone("branch", "-q", branch)
        clone.write("data/raw/sales-%s.csv" % region, "2026-11-21,Widget,1,9.99\n", "a")
        heads[branch] = clone.commit("fix %s" % region)
    out = clone("push", "--new-branch", server.path, "--config",
                "ui.username=Dana <dana@example.com>").stdout
    assert "queued 2 builds" in out
    entries = {e["branch"]: e for e in queue(server)[1:]}
    assert set(entries) == {"north-fix", "south-fix"}
    assert entries["north-fix"]["head"] == heads["north-fix"]

    server("luigi-worker", "--once")
    assert {e["state"] for e in queue(server)} == {"done"}
    north = {r["key"]: r for r in server.json("luigi-lineage", heads["north-fix"])}
    assert north["CleanSales(region=north)"]["changeset"] == heads["north-fix"]
    assert north["CleanSales(region=south)"]["changeset"] == base

    # only the listed branches trigger
    server.config("branches = default\n")
    clone("update", "-q", "north-fix")
    clone.write("data/raw/sales-north.csv", "2026-11-22,Widget,1,9.99\n", "a")
    filtered = clone.commit("north again")
    out = clone("push", server.path).stdout
    assert ("luigi: nothing built for %s: branch north-fix is not built ([luigi] branches)"
            % filtered[:12]) in out
    assert queue(server)[-1]["state"] == "skipped"
    assert "0 queue entries processed" in server("luigi-worker", "--once").stdout


def test_directives_skip_and_all(hg, server, tmp_path):
    clone = seeded_clone(hg, server, str(tmp_path / "dev"))
    clone("push", server.path)
    server("luigi-worker", "--once")
    clone.write("data/raw/sales-north.csv", "2026-11-21,Widget,1,9.99\n", "a")
    skipped = clone.commit("typo in the data [luigi skip]")
    out = clone("push", server.path).stdout
    assert "luigi: nothing built for %s: [luigi skip] in the commit message" % skipped[:12] in out
    assert queue(server)[-1]["state"] == "skipped"

    clone.write("docs/more.md", "# More\n")
    clone.commit("rebuild everything please [luigi all]")
    clone.write("docs/more.md", "# More and more\n")
    head = clone.commit("a later commit in the same push")
    clone("push", server.path)
    entry = queue(server)[-1]
    assert entry["force"] is True and entry["head"] == head
    server("luigi-worker", "--once")
    assert queue(server)[-1]["summary"] == "5 ran, 0 reused, 0 failed, 0 not run"


def test_pending_entries_of_a_branch_are_coalesced(hg, server, tmp_path):
    clone = seeded_clone(hg, server, str(tmp_path / "dev"))
    heads = [node(clone)]
    clone("push", server.path)
    for i in range(2):
        clone.write("data/raw/sales-east.csv", "2026-11-2%d,Gadget,1,15.50\n" % i, "a")
        heads.append(clone.commit("east %d" % i))
        clone("push", server.path)
    out = server("luigi-worker", "--once").stdout
    assert "covering 1, 2" in out and "1 queue entries processed" in out
    entries = queue(server)
    assert [e["state"] for e in entries] == ["done"] * 3
    assert entries[2]["head"] == heads[2] and entries[2]["summary"].startswith("5 ran")
    assert [e["covered_by"] for e in entries] == [3, 3, None]
    assert entries[0]["summary"] == "covered by entry 3"
    assert len({e["run"] for e in entries}) == 1
    # switched off: one build per entry
    for i in range(2):
        clone.write("docs/page%d.md" % i, "# p\n")
        clone.commit("page %d" % i)
        clone("push", server.path)
    out = server("luigi-worker", "--once", "--config", "luigi.coalesce=false").stdout
    assert "2 queue entries processed" in out


SLOW = '''
import os
import time

from hgext_luigi import HgTask


class Slow(HgTask):
    watches = ["data/**"]

    def output(self):
        return self.stamped_target("slow.txt")

    def run(self):
        if os.path.exists({hold!r}):
            open({started!r}, "w").close()
            while os.path.exists({hold!r}):
                time.sleep(0.05)
        with self.output().open("w") as f:
            f.write("built\\n")
'''


def test_worker_killed_midway_entry_taken_again_and_completed_once(hg, server, tmp_path):
    hold, started = str(tmp_path / "hold"), str(tmp_path / "started")
    open(hold, "w").close()
    path = str(tmp_path / "dev")
    hg("clone", "-q", server.path, path)
    clone = Repo(hg, path)
    clone.write("pipelines/__init__.py", SLOW.format(hold=hold, started=started))
    clone.write("data/x", "x\n")
    head = clone.commit("slow pipeline")
    clone("push", server.path)
    first = hg.popen("luigi-worker", "--config", "luigi.lease=2", cwd=server.path)
    wait_for(started, first)
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate()
    [entry] = queue(server)
    assert entry["state"] == "running" and entry["attempts"] == 1
    os.unlink(hold)
    time.sleep(2.2)  # the dead worker's lease runs out
    out = server("luigi-worker", "--once", "--config", "luigi.lease=2").stdout
    assert "queue entry 1 again (attempt 2; its worker died)" in out
    [entry] = queue(server)
    assert entry["state"] == "done" and entry["attempts"] == 2
    builds = server.json("luigi-lineage", "--task", "Slow")
    assert [(b["status"], b["changeset"]) for b in builds] == [("failed", head),
                                                                ("success", head)]
    assert builds[0]["error"].startswith("interrupted")
    assert "0 queue entries processed" in server("luigi-worker", "--once").stdout


def test_trigger_survives_a_crash_between_transaction_and_dispatch(hg, server, tmp_path):
    """The server dies after the push's transaction closed, before the trigger
    was confirmed: the worker still finds and builds it."""
    clone = seeded_clone(hg, server, str(tmp_path / "dev"))
    head = node(clone)
    server.config("[hooks]\nchangegroup.crash = kill -9 $PPID\n"
                  "priority.changegroup.crash = 100\n")
    proc = clone("push", server.path, check=False)
    assert proc.returncode != 0  # the pushing hg was killed
    assert node(server, "tip") == head
    [entry] = queue(server)
    assert entry["state"] == "incoming"
    out = server("luigi-worker", "--once", "--config", "luigi.lease=60").stdout
    assert "0 queue entries processed" in out  # too recent to tell from a live push
    time.sleep(1.1)
    out = server("luigi-worker", "--once", "--config", "luigi.lease=1").stdout
    assert "1 queue entries processed, 0 failed" in out
    assert queue(server)[0]["state"] == "done"


def test_a_rejected_push_leaves_no_trigger(hg, server, tmp_path):
    server.config("[hooks]\npretxnchangegroup.reject = false\n")
    clone = seeded_clone(hg, server, str(tmp_path / "dev"))
    proc = clone("push", server.path, check=False)
    assert proc.returncode != 0
    assert queue(server) == []


def test_ten_concurrent_pushes_every_head_once(hg, server, serve, tmp_path):
    served = serve(server)
    seed = seeded_clone(hg, server, str(tmp_path / "seed"), served.url)
    seed("push", served.url)
    base = node(seed)
    clones = []
    for i in range(10):
        path = str(tmp_path / ("c%d" % i))
        hg("clone", "-q", served.url, path)
        c = Repo(hg, path)
        c("branch", "-q", "b%d" % i)
        c.write("data/raw/sales-%s.csv" % ("north", "south", "east")[i % 3],
                "2026-11-%02d,Widget,%d,1.00\n" % (i + 1, i + 1), "a")
        c.write("docs/c%d.md" % i, "# clone %d\n" % i)
        clones.append((c, c.commit("change %d" % i)))
    procs = [hg.popen("push", "--new-branch", served.url, cwd=c.path) for c, _ in clones]
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, out + err
    heads = {h for _, h in clones}
    entries = queue(server)
    assert len(entries) == 11 and {e["head"] for e in entries} == heads | {base}

    # two workers drain the queue at once
    workers = [hg.popen("luigi-worker", "--once", cwd=server.path) for _ in range(2)]
    outs = [w.communicate(timeout=600) for w in workers]
    assert all(w.returncode == 0 for w in workers), outs
    entries = queue(server)
    assert all(e["state"] == "done" and e["attempts"] == 1 for e in entries)
    assert len({e["run"] for e in entries}) == 11  # one run per head, none twice
    for _, h in clones:
        rows = {r["key"]: r for r in server.json("luigi-lineage", h)}
        assert {r["status"] for r in rows.values()} == {"success"}
        assert rows["DocsIndex()"]["changeset"] == h
        assert {r["trigger"] for r in rows.values()} == {"push"}


def test_explicit_hooks_form(hg, tmp_path):
    server = make_server_repo(hg, str(tmp_path / "server"), "on-push = queue\nauto-hooks = false\n")
    server.config("[hooks]\n"
                  "pretxnchangegroup.luigi = python:hgext_luigi.hooks.pretxnchangegroup_hook\n"
                  "txnabort.luigi = python:hgext_luigi.hooks.txnabort_hook\n"
                  "changegroup.luigi = python:hgext_luigi.hooks.changegroup_hook\n")
    clone = seeded_clone(hg, server, str(tmp_path / "dev"))
    out = clone("push", server.path).stdout
    assert out.count("luigi: queued a build") == 1
    assert len(queue(server)) == 1
