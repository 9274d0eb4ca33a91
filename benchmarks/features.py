"""Benchmarks (``make bench``): ratios against a baseline measured in the same run.

1. ``hg commit`` of a one-file data change on the demo repository with the
   extension enabled and ``[luigi] on-commit = plan`` versus the extension
   disabled (target: <= 1.3x).  Runs alternate so drift hits both sides.
2. ``hg push`` of one changeset to a server repository with ``[luigi] on-push =
   queue`` versus the extension disabled (target: <= 1.2x).
3. Materializing the tree of the next changeset (one file changed) from the
   cached tree versus materializing it from scratch, on a repository of
   ``--files`` files: the incremental update must cost in proportion to what
   changed, not to the size of the repository.

4. A 3-task ``AnsiblePlaybookTask`` run versus ``ansible-playbook`` by hand.
5. The audit log: recording builds with the keyed chain versus without audit
   records (overhead per task build), and ``--verify``'s chain and lineage
   checks of 10,000 records versus merely reading them.
6. Per-task credentials: ``hg luigi-run --all`` of 10 tasks whose family has a
   role (an ``AssumeRole`` + ``GetCallerIdentity`` per build, against
   ``moto_server``) versus the same run without roles.

7. Lineage facts: builds recorded with what they depended on versus without
   (cost per build, store size per 10,000 builds).

Results are printed and written to ``bench-out/results.json``.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "demo"))
from example import copy_example  # noqa: E402
OUT = os.path.join(ROOT, "bench-out")
BIN = os.path.dirname(sys.executable)
HG = os.path.join(BIN, "hg") if os.path.exists(os.path.join(BIN, "hg")) else shutil.which("hg")


def env_for(hgrc_text):
    path = os.path.join(OUT, "hgrc-%d" % abs(hash(hgrc_text)))
    with open(path, "w") as f:
        f.write("[ui]\nusername = Bench <bench@example.com>\n" + hgrc_text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HG")}
    env.update(HGRCPATH=path, HGPLAIN="1", PATH=BIN + os.pathsep + env.get("PATH", ""))
    return env


def hg(env, cwd, *args):
    proc = subprocess.run([HG] + list(args), cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit("bench failed: hg %s: %s%s" % (" ".join(args), proc.stdout, proc.stderr))
    return proc.stdout


def demo_repo(path, env):
    subprocess.run([HG, "init", path], env=env, check=True)
    copy_example(path)
    hg(env, path, "commit", "-A", "-q", "-m", "example pipeline")


def bench_commit(rounds):
    off = env_for("")
    plan = env_for("[extensions]\nhgext_luigi =\n[luigi]\non-commit = plan\n")
    repo_off = os.path.join(OUT, "commit-off")
    repo_plan = os.path.join(OUT, "commit-plan")
    demo_repo(repo_off, off)
    demo_repo(repo_plan, plan)
    hg(plan, repo_plan, "luigi-run", "-q")  # built once, as a team's repository would be
    times = {"off": [], "plan": []}

    def one(env, repo, key, i):
        with open(os.path.join(repo, "data", "raw", "sales-north.csv"), "a") as f:
            f.write("2026-11-%02d,Widget,%d,9.99\n" % (1 + i % 28, i))
        t = time.perf_counter()
        out = hg(env, repo, "commit", "-m", "north %d" % i)
        times[key].append(time.perf_counter() - t)
        return out

    one(off, repo_off, "off", 0)  # warm caches on both sides, not counted
    out = one(plan, repo_plan, "plan", 0)
    assert "tasks affected" in out, out
    times = {"off": [], "plan": []}
    for i in range(1, rounds + 1):
        one(off, repo_off, "off", i)
        one(plan, repo_plan, "plan", i)
    off_m = statistics.median(times["off"])
    plan_m = statistics.median(times["plan"])
    return {"rounds": rounds, "commit_disabled_s": round(off_m, 4),
            "commit_on_commit_plan_s": round(plan_m, 4), "ratio": round(plan_m / off_m, 3),
            "target": 1.3}


def bench_push(rounds):
    """``hg push`` of one changeset to a local server repository with
    ``on-push = queue`` versus the same push with the extension disabled."""
    off = env_for("")
    queue = env_for("[extensions]\nhgext_luigi =\n[luigi]\non-push = queue\n")
    times = {"off": [], "queue": []}
    sides = {}
    for key, env in (("off", off), ("queue", queue)):
        server = os.path.join(OUT, "push-server-%s" % key)
        subprocess.run([HG, "init", server], env=env, check=True)
        clone = os.path.join(OUT, "push-clone-%s" % key)
        demo_repo(clone, env)
        hg(env, clone, "push", "-q", server)
        sides[key] = (env, clone, server)

    def one(key, i):
        env, clone, server = sides[key]
        with open(os.path.join(clone, "data", "raw", "sales-south.csv"), "a") as f:
            f.write("2026-11-%02d,Widget,%d,9.99\n" % (1 + i % 28, i))
        hg(env, clone, "commit", "-m", "south %d" % i)
        t = time.perf_counter()
        out = hg(env, clone, "push", server)
        times[key].append(time.perf_counter() - t)
        return out

    one("off", 0)
    assert "queued a build" in one("queue", 0)
    times = {"off": [], "queue": []}
    for i in range(1, rounds + 1):
        one("off", i)
        one("queue", i)
    off_m = statistics.median(times["off"])
    q_m = statistics.median(times["queue"])
    return {"rounds": rounds, "push_disabled_s": round(off_m, 4),
            "push_on_push_queue_s": round(q_m, 4), "ratio": round(q_m / off_m, 3),
            "target": 1.2}


def bench_trees(files, rounds):
    env = env_for("[extensions]\nhgext_luigi =\n")
    repo = os.path.join(OUT, "trees")
    os.makedirs(os.path.join(repo, "pipelines"))
    subprocess.run([HG, "init", repo], env=env, check=True)
    with open(os.path.join(repo, "pipelines", "__init__.py"), "w") as f:
        f.write("from hgext_luigi import HgTask\n\n\nclass Noop(HgTask):\n"
                "    watches = ['data/0/0.txt']\n\n    def output(self):\n"
                "        return self.stamped_target('noop.txt')\n\n    def run(self):\n"
                "        with self.output().open('w') as f:\n            f.write('ok')\n")
    for i in range(files):
        d = os.path.join(repo, "data", str(i % 50))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "%d.txt" % i), "w") as f:
            f.write(("line %d\n" % i) * 40)
    hg(env, repo, "commit", "-A", "-q", "-m", "big tree")
    trees = os.path.join(repo, ".hg", "luigi", "trees")
    full, incr = [], []
    for i in range(rounds):
        # from scratch: no cached tree to start from
        shutil.rmtree(trees, ignore_errors=True)
        t = time.perf_counter()
        hg(env, repo, "debugluigitree", "-r", ".")
        full.append(time.perf_counter() - t)
        # one changeset later, from the cached tree (kept to one)
        with open(os.path.join(repo, "data", "0", "0.txt"), "a") as f:
            f.write("round %d\n" % i)
        hg(env, repo, "commit", "-q", "-m", "round %d" % i)
        t = time.perf_counter()
        hg(env, repo, "debugluigitree", "-r", ".", "--config", "luigi.tree-cache=1")
        incr.append(time.perf_counter() - t)
    f_m, i_m = statistics.median(full), statistics.median(incr)
    return {"files": files, "rounds": rounds, "full_s": round(f_m, 4),
            "incremental_s": round(i_m, 4), "ratio": round(i_m / f_m, 3)}


ANSIBLE_PIPELINE = """from hgext_luigi.ansible import AnsiblePlaybookTask


class Configure(AnsiblePlaybookTask):
    playbook = "deploy/site.yml"
    inventory = "deploy/inventory"
"""

ANSIBLE_PLAYBOOK = """- hosts: all
  gather_facts: false
  tasks:
    - name: state dir
      file: {path: "{{ lookup('env', 'BENCH_DIR') }}", state: directory}
    - name: record the changeset
      copy: {dest: "{{ lookup('env', 'BENCH_DIR') }}/release", content: "{{ hg_changeset }}"}
    - name: read it back
      command: cat "{{ lookup('env', 'BENCH_DIR') }}/release"
      changed_when: false
"""


def bench_ansible(rounds):
    """A playbook as an AnsiblePlaybookTask (hg luigi-run --all) vs ansible-playbook
    run by hand on the same files: what hg, planning, the tree, Luigi and
    ansible-runner add."""
    # BENCH_DIR must reach the run ([luigi] pass-env) and ansible-playbook ([ansible]
    # pass_env in luigi.cfg): both environments are allow-lists
    env = env_for("[extensions]\nhgext_luigi =\n[luigi]\n"
                  "pass-env = PATH HOME LANG LC_* BENCH_DIR\n")
    repo = os.path.join(OUT, "ansible")
    os.makedirs(os.path.join(repo, "pipelines"))
    os.makedirs(os.path.join(repo, "deploy"))
    subprocess.run([HG, "init", repo], env=env, check=True)
    files = {"pipelines/__init__.py": ANSIBLE_PIPELINE, "deploy/site.yml": ANSIBLE_PLAYBOOK,
             "luigi.cfg": "[ansible]\npass_env = BENCH_DIR\n",
             "deploy/inventory": 'localhost ansible_connection=local '
                                 'ansible_python_interpreter="{{ansible_playbook_python}}"\n'}
    for rel, text in files.items():
        with open(os.path.join(repo, rel), "w") as f:
            f.write(text)
    hg(env, repo, "commit", "-A", "-q", "-m", "playbook")
    env = dict(env, BENCH_DIR=os.path.join(OUT, "ansible-host"))
    playbook = os.path.join(BIN, "ansible-playbook")
    bare_cmd = [playbook, "-i", "deploy/inventory", "deploy/site.yml",
                "-e", json.dumps({"hg_changeset": "0" * 40})]
    bare, task = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        subprocess.run(bare_cmd, cwd=repo, env=env, check=True, stdout=subprocess.DEVNULL)
        bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        hg(env, repo, "luigi-run", "--all")
        task.append(time.perf_counter() - t)
    b_m, t_m = statistics.median(bare), statistics.median(task)
    return {"rounds": rounds, "ansible_playbook_s": round(b_m, 4),
            "hg_luigi_run_s": round(t_m, 4), "ratio": round(t_m / b_m, 3)}


FACTS = {"watched": {"data/raw/part-%d.csv" % i: "%040x" % i for i in range(5)},
         "source": {"pipelines/sales.py": "b" * 40, "pipelines/common.py": "c" * 40},
         "config": {"T": "d" * 64},
         "runtime": {"python": "3.11.7", "luigi": "3.8.1", "hgext_luigi": "0.1.0"}}


def _fill(store, builds, facts=None):
    for i in range(builds):
        b = store.start_build("run", "T_%d" % i, "T(i=%d)" % i, "T", {"i": str(i)},
                              "a" * 40, None, ["never built"], "bench", "push",
                              facts=facts)
        store.finish_build(b, "success", outputs=[
            {"path": os.path.join(store.output_root, "a" * 40, "t%d.csv" % i),
             "size": 10, "sha256": "b" * 64}],
            inputs=[{"task_id": "U", "key": "U()", "changeset": "a" * 40, "outputs": [],
                     "digests": [] if facts else None}])


def bench_facts(builds):
    """Builds recorded with what they depended on (5 watched files, 2 source
    files, a config digest, 3 versions) vs without: cost per build, and the
    store's size per 10,000 builds (keyed audit chain in both)."""
    sys.path.insert(0, ROOT)
    from hgext_luigi.core import audit, lineage

    out = {}
    for name, facts in (("without", None), ("with", FACTS)):
        path = os.path.join(OUT, "facts-%s.db" % name)
        store = lineage.open_store(path, os.path.join(OUT, "facts-out"),
                                   audit.Chain(b"bench-key"))
        t = time.perf_counter()
        _fill(store, builds, facts)
        out[name] = time.perf_counter() - t
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.close()
        out[name + "_mb_per_10000"] = round(os.path.getsize(path) / builds * 10000 / 1e6, 2)
    return {"builds": builds, "without_s": round(out["without"], 4),
            "with_s": round(out["with"], 4),
            "ms_per_build_without": round(out["without"] / builds * 1000, 3),
            "ms_per_build_with": round(out["with"] / builds * 1000, 3),
            "ratio": round(out["with"] / out["without"], 3),
            "mb_per_10000_without": out["without_mb_per_10000"],
            "mb_per_10000_with": out["with_mb_per_10000"]}


def bench_audit(records):
    """Builds recorded with and without the keyed audit chain; --verify of
    ``records`` records against reading them."""
    sys.path.insert(0, ROOT)
    from hgext_luigi.core import audit, lineage, verify

    builds = records // 4  # start and finish: two build records each, and a margin
    times = {}
    for name, chain in (("none", None), ("keyed", audit.Chain(b"bench-key"))):
        path = os.path.join(OUT, "audit-%s.db" % name)
        store = lineage.open_store(path, os.path.join(OUT, "audit-out"), chain)
        t = time.perf_counter()
        _fill(store, builds)
        times[name] = time.perf_counter() - t
        store.close()
    store = lineage.open_store(os.path.join(OUT, "audit-keyed.db"),
                               os.path.join(OUT, "audit-out"), audit.Chain(b"bench-key"))
    _fill(store, max(0, records // 2 - builds))  # up to ``records`` records
    count = store._db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    t = time.perf_counter()
    n = sum(1 for _ in audit.records(store._db))
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    result = verify.verify(store, b"bench-key", check_outputs=False)
    verify_s = time.perf_counter() - t
    store.close()
    assert n == count and not result["problems"], result["problems"][:3]
    return {"builds": builds, "record_none_s": round(times["none"], 4),
            "record_keyed_s": round(times["keyed"], 4),
            "overhead_ms_per_build": round((times["keyed"] - times["none"]) / builds * 1000, 3),
            "write_ratio": round(times["keyed"] / times["none"], 3),
            "records": count, "read_s": round(read_s, 4), "verify_s": round(verify_s, 4),
            "verify_s_per_10000": round(verify_s / count * 10000, 4),
            "verify_ratio": round(verify_s / read_s, 3)}


ROLES_PIPELINE = '''
import luigi

from hgext_luigi import HgTask


class Step(HgTask):
    n = luigi.IntParameter()
    watches = ["data/{n}.txt"]

    def output(self):
        return self.stamped_target("step-%d.txt" % self.n)

    def run(self):
        with self.output().open("w") as f:
            f.write("ok")


class All(HgTask):
    def requires(self):
        return [Step(n=i) for i in range(10)]

    def output(self):
        return self.stamped_target("all.txt")

    def run(self):
        with self.output().open("w") as f:
            f.write("ok")
'''


def bench_roles(rounds):
    """hg luigi-run --all of 10 tasks with a role (STS against moto_server) vs
    without: what a fresh AssumeRole session per build costs."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "helpers"))
    from motoserver import MotoServer

    moto = MotoServer()
    try:
        repo = os.path.join(OUT, "roles")
        base = "[extensions]\nhgext_luigi =\n[luigi]\naws-endpoint-url = %s\n" \
               "aws-region = us-east-1\n" % moto.url
        plain = env_for(base)
        roles = env_for(base + "[luigi.roles]\nStep = arn:aws:iam::123456789012:role/step\n")
        for env in (plain, roles):
            env.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                       AWS_EC2_METADATA_DISABLED="true")
        os.makedirs(os.path.join(repo, "pipelines"))
        os.makedirs(os.path.join(repo, "data"))
        subprocess.run([HG, "init", repo], env=plain, check=True)
        with open(os.path.join(repo, "pipelines", "__init__.py"), "w") as f:
            f.write(ROLES_PIPELINE)
        for i in range(10):
            with open(os.path.join(repo, "data", "%d.txt" % i), "w") as f:
                f.write("%d\n" % i)
        hg(plain, repo, "commit", "-A", "-q", "-m", "steps")
        without, with_roles = [], []
        for _ in range(rounds):
            for env, out in ((plain, without), (roles, with_roles)):
                t = time.perf_counter()
                hg(env, repo, "luigi-run", "--all")
                out.append(time.perf_counter() - t)
    finally:
        moto.stop()
    w_m, r_m = statistics.median(without), statistics.median(with_roles)
    return {"rounds": rounds, "tasks_with_role": 10, "without_roles_s": round(w_m, 4),
            "with_roles_s": round(r_m, 4),
            "per_task_ms": round((r_m - w_m) / 10 * 1000, 1), "ratio": round(r_m / w_m, 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--records", type=int, default=10000)
    args = ap.parse_args()
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    results = {"commit": bench_commit(args.rounds),
               "push": bench_push(args.rounds),
               "trees": bench_trees(args.files, max(3, args.rounds // 3)),
               "ansible": bench_ansible(max(3, args.rounds // 3)),
               "audit": bench_audit(args.records),
               "roles": bench_roles(max(3, args.rounds // 3)),
               "facts": bench_facts(2500)}
    c, p, t, a = results["commit"], results["push"], results["trees"], results["ansible"]
    au, ro = results["audit"], results["roles"]
    print("hg commit, on-commit = plan vs extension disabled (median of %d):" % c["rounds"])
    print("  disabled %.3fs   plan %.3fs   ratio %.2fx (target <= %.1fx)"
          % (c["commit_disabled_s"], c["commit_on_commit_plan_s"], c["ratio"], c["target"]))
    print("hg push of one changeset, on-push = queue vs extension disabled (median of %d):"
          % p["rounds"])
    print("  disabled %.3fs   queue %.3fs   ratio %.2fx (target <= %.1fx)"
          % (p["push_disabled_s"], p["push_on_push_queue_s"], p["ratio"], p["target"]))
    print("tree at the next changeset, %d files (median of %d):" % (t["files"], t["rounds"]))
    print("  from scratch %.3fs   incremental %.3fs   ratio %.2fx"
          % (t["full_s"], t["incremental_s"], t["ratio"]))
    print("a 3-task playbook on localhost: hg luigi-run --all (AnsiblePlaybookTask) vs "
          "ansible-playbook by hand (median of %d):" % a["rounds"])
    print("  ansible-playbook %.3fs   hg luigi-run %.3fs   ratio %.2fx"
          % (a["ansible_playbook_s"], a["hg_luigi_run_s"], a["ratio"]))
    print("%d builds recorded with the keyed audit chain vs without audit records:"
          % au["builds"])
    print("  without %.3fs   keyed %.3fs   ratio %.2fx   +%.3f ms per build"
          % (au["record_none_s"], au["record_keyed_s"], au["write_ratio"],
             au["overhead_ms_per_build"]))
    print("hg luigi-audit --verify of %d records (chain and lineage) vs reading them:"
          % au["records"])
    print("  read %.3fs   verify %.3fs   ratio %.2fx   %.3fs per 10,000 records"
          % (au["read_s"], au["verify_s"], au["verify_ratio"], au["verify_s_per_10000"]))
    print("hg luigi-run --all of 10 tasks with a role (AssumeRole per build, moto_server) "
          "vs without (median of %d):" % ro["rounds"])
    print("  without %.3fs   with roles %.3fs   ratio %.2fx   +%.1f ms per task"
          % (ro["without_roles_s"], ro["with_roles_s"], ro["ratio"], ro["per_task_ms"]))
    fa = results["facts"]
    print("%d builds recorded with what they depended on vs without (keyed audit in both):"
          % fa["builds"])
    print("  without %.3f ms   with %.3f ms per build   ratio %.2fx   store %.1f MB -> "
          "%.1f MB per 10,000 builds" % (fa["ms_per_build_without"], fa["ms_per_build_with"],
                                         fa["ratio"], fa["mb_per_10000_without"],
                                         fa["mb_per_10000_with"]))
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print("written to %s" % os.path.relpath(os.path.join(OUT, "results.json"), ROOT))
    return 0 if c["ratio"] <= c["target"] and p["ratio"] <= p["target"] else 1


if __name__ == "__main__":
    sys.exit(main())
