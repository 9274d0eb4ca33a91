"""Scale benchmarks: ``make bench`` (sizes small and medium) and ``make bench
SIZE=large``.

Each size gets a synthetic repository from :mod:`gen` and a run of figures, each a
ratio (or a difference) against a floor measured in the same run on the same
machine: ``hg status`` on the same revisions, a plain commit or push, ``hg
version``, and the same graph built by bare Luigi in a plain Python process.
Timings are medians of ``--rounds`` (at least 5) alternating runs; full builds,
which take minutes, are timed once.  Every plan measured is also checked against
an oracle that works out the affected set from ``hg status`` alone.

Results go to ``benchmarks/results/SIZE.json`` (raw numbers) and
``BENCHMARKS.md`` (the table, the machine, the date).  No test asserts them.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import gen  # noqa: E402

BIN = os.path.dirname(sys.executable)
HG = os.path.join(BIN, "hg") if os.path.exists(os.path.join(BIN, "hg")) else shutil.which("hg")
OUT = os.path.join(ROOT, "bench-out")
RESULTS = os.path.join(HERE, "results")

# (figure, target, how the figure compares with its target)
TARGETS = {
    "plan-1-file": (1.5, "ratio"),
    "plan-1-file-after-large-commit": (1.5, "ratio"),
    "plan-1000-files": (2.0, "ratio"),
    "nothing-affected": (0.5, "seconds"),
    "commit-on-commit-plan": (1.3, "ratio"),
    "push-on-push-queue": (1.1, "ratio"),
    "run-1pct-affected": (1.3, "ratio"),
    "full-build-workers-1": (1.5, "ratio"),
    "full-build-workers-4": (1.5, "ratio"),
    "workers-4-vs-1": (1.0, "below"),
    "full-build-tasks-per-second": (None, "rate"),
    "plan-peak-rss": (300.0, "MB"),
    "plan-100000-tasks": (5.0, "seconds"),
}


# the same figures when this work started (before the watch index, the checks,
# batched lineage reads and blocks), as measured then; "" where not measured
BEFORE = {
    "plan-1-file": ("1.44x", "2.25x", "8.3x (2.02s vs 0.24s)"),
    "nothing-affected": ("", "", "+1.9s"),
    "commit-on-commit-plan": ("1.20x", "1.92x", "3.10x"),
    "run-1pct-affected": ("~2.1x", "~2.3x", "2.5x (10.7s vs 4.2s)"),
    "full-build-tasks-per-second": ("", "", "~16 tasks/s"),
}


class Failed(Exception):
    pass


def environment():
    hgrc = os.path.join(OUT, "hgrc")
    os.makedirs(OUT, exist_ok=True)
    with open(hgrc, "w") as f:
        f.write("[ui]\nusername = Bench <bench@example.com>\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HG")}
    env.update(HGRCPATH=hgrc, HGPLAIN="1", PATH=BIN + os.pathsep + env.get("PATH", ""))
    return env


ENV = environment()


def run(argv, cwd=None, env=None):
    """(seconds, stdout) of ``argv``; a failure ends the benchmark."""
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env or ENV, capture_output=True, text=True)
    took = time.perf_counter() - started
    if proc.returncode != 0:
        raise Failed("%s: exit %d\n%s%s" % (" ".join(argv), proc.returncode,
                                              proc.stdout[-2000:], proc.stderr[-2000:]))
    return took, proc.stdout


def alternate(rounds, *commands):
    """Median seconds of each callable, run in turn ``rounds`` times so that
    drift of the machine hits all of them alike."""
    samples = [[] for _ in commands]
    for _ in range(rounds):
        for i, command in enumerate(commands):
            samples[i].append(command())
    return [statistics.median(s) for s in samples], samples


class Size:
    """One synthetic repository and the figures measured on it."""

    def __init__(self, size, rounds):
        self.size = size
        self.rounds = rounds
        # commits and pushes take a fraction of a second and differ by less than
        # the machine's noise: three times the rounds
        self.quick_rounds = 3 * rounds
        self.path = os.path.join(OUT, "scale-%s" % size)
        self.figures = []
        self.raw = {}
        self.commits = 0

    # -- helpers ---------------------------------------------------------------

    def hg(self, *args, repo=None):
        return run([HG, "-R", repo or self.path] + list(args))

    def rev(self, spec):
        return self.hg("log", "-r", spec, "-T", "{node}")[1]

    def figure(self, name, value, floor, samples=None, unit="x"):
        target, kind = TARGETS[name]
        if kind == "ratio":
            measured = value / floor
        elif kind == "seconds" and floor is not None:
            measured = value - floor
        else:
            measured = value
        if kind == "rate":
            met = True  # reported, no target
        else:
            met = measured < target if kind == "below" else measured <= target
        row = {"figure": name, "value": value, "floor": floor, "measured": measured,
               "target": target, "kind": kind, "met": met}
        self.figures.append(row)
        if samples is not None:
            self.raw[name] = samples
        print("  %-32s %s" % (name, describe(row)), flush=True)

    def touch(self, files, message):
        self.commits += 1
        gen.touch(self.path, files, message, tag="c%d" % self.commits)
        return self.rev(".")

    # -- setup -----------------------------------------------------------------

    def generate(self):
        if os.path.exists(self.path):
            shutil.rmtree(self.path)
        started = time.perf_counter()
        self.info = gen.generate(self.size, self.path)
        with open(os.path.join(self.path, ".hg", "hgrc"), "a") as f:
            f.write("[extensions]\nhgext_luigi =\n")
        self.tasks = self.info["tasks"]
        self.revs = self.info["revs"]
        self.bare_out = os.path.join(OUT, "bare-%s" % self.size)
        print("%s: %d files, %d tasks, generated in %.0fs"
              % (self.size, self.info["files"], self.tasks, time.perf_counter() - started),
              flush=True)

    # -- the oracle ------------------------------------------------------------

    def built_at(self):
        """{task index (or "All"): changeset of its last successful build}."""
        db = sqlite3.connect(os.path.join(self.path, ".hg", "luigi", "lineage.db"))
        out = {}
        for key, changeset in db.execute(
                "SELECT key, changeset FROM builds WHERE status = 'success' ORDER BY id"):
            out["All" if key == "All()" else int(key.split("idx=")[1].split(",")[0])] = \
                changeset
        db.close()
        return out

    def oracle(self, rev):
        """The task keys ``rev`` affects, worked out from ``hg status`` alone."""
        built = self.built_at()
        changed = {}
        for cs in set(built.values()):
            out = self.hg("status", "--rev", cs, "--rev", rev, "-n")[1]
            changed[cs] = out.split()
        direct = {}
        for cs, paths in changed.items():
            code = any(p.startswith("pipelines/") for p in paths)
            touched = {gen.task_of_path(p) for p in paths}
            direct[cs] = (code, touched)
        affected = set()
        for idx in range(self.tasks):  # requirements have lower indices
            cs = built.get(idx)
            code, touched = direct[cs] if cs else (True, set())
            if cs is None or code or idx in touched or any(
                    r in affected for r in gen.requires_of(idx, self.tasks)):
                affected.add(idx)
        keys = {gen.key_of(i) for i in affected}
        all_cs = built.get("All")
        if affected & set(gen.last_layer(self.tasks)) or all_cs is None \
                or direct[all_cs][0]:
            keys.add("All()")
        return keys

    def check_plan(self, rev):
        tasks = json.loads(self.hg("luigi-affected", "-r", rev, "-T", "json")[1])
        got = {t["key"] for t in tasks if t["affected"]}
        want = self.oracle(rev)
        if got != want:
            raise Failed("%s: the plan of %s differs from hg status: %d extra %s, "
                         "%d missing %s" % (self.size, rev[:12], len(got - want),
                                            sorted(got - want)[:5], len(want - got),
                                            sorted(want - got)[:5]))
        return len(got)

    # -- figures ---------------------------------------------------------------

    def full_builds(self):
        """The first build, as ``hg luigi-run`` and as bare Luigi, at 1 and 4
        workers.  Leaves every task built at the data revision.  On ``large``
        only ``hg luigi-run`` at 1 worker runs (bare Luigi's would take as
        long again: Luigi's scheduler costs O(tasks) per task handed out, and
        more workers ask it more often), and the bare outputs are written
        directly: all bare Luigi checks of them is that they exist."""
        if self.size == "large":
            hg_s = self.hg("luigi-run", "-q", "-r", self.revs["data"], "--workers", "1")[0]
            self.figure("full-build-tasks-per-second", self.tasks / hg_s, None,
                        {"hg": [hg_s]})
            self.seed_bare()
            return
        took = {}
        for workers in (1, 4):
            all_flag = ["--all"] if workers != 1 else []
            hg_s = self.hg("luigi-run", "-q", "-r", self.revs["data"],
                           "--workers", str(workers), *all_flag)[0]
            bare_s = self.bare_build(None, workers)
            took[workers] = hg_s
            self.figure("full-build-workers-%d" % workers, hg_s, bare_s,
                        {"hg": [hg_s], "bare": [bare_s]})
            print("    %d tasks/s (bare Luigi %d tasks/s)"
                  % (self.tasks / hg_s, self.tasks / bare_s), flush=True)
        self.figure("workers-4-vs-1", took[4] / took[1], None)

    def seed_bare(self):
        """Every bare output, as a full bare build would leave it."""
        os.makedirs(self.bare_out, exist_ok=True)
        for i in range(self.tasks):
            with open(os.path.join(self.bare_out, "node-%05d.txt" % i), "w") as f:
                f.write("%d\n" % i)
        with open(os.path.join(self.bare_out, "all.txt"), "w") as f:
            f.write("done\n")

    def bare_build(self, indices, workers=1):
        """Seconds of ``luigi.build`` in a plain process: every task from scratch
        (``indices`` None) or those tasks and ``All`` with the rest built."""
        if indices is None:
            shutil.rmtree(self.bare_out, ignore_errors=True)
        else:
            for i in indices:
                os.unlink(os.path.join(self.bare_out, "node-%05d.txt" % i))
            os.unlink(os.path.join(self.bare_out, "all.txt"))
        os.makedirs(self.bare_out, exist_ok=True)
        wanted = "[bare.All()]" if indices is None else \
            "[bare.node(i) for i in %r] + [bare.All()]" % sorted(indices)
        code = ("import luigi, bare\n"
                "ok = luigi.build(%s, local_scheduler=True, workers=%d, log_level='WARNING',"
                " detailed_summary=True).status.name\n"
                "assert ok == 'SUCCESS', ok\n" % (wanted, workers))
        env = dict(ENV, BARE_OUT=self.bare_out,
                   PYTHONPATH=os.path.join(self.path, ".hg"))
        return run([sys.executable, "-c", code], env=env)[0]

    def planning(self):
        r = self.revs
        # built at the data revision; a large commit no task watches came after
        n = self.check_plan(r["one-file"])
        self.plan_figure("plan-1-file-after-large-commit", r["one-file"], r["data"], n)
        # a run at the large commit: the comparison moves forward
        self.hg("luigi-run", "-q", "-r", r["vendor"])
        self.plan_figure("plan-1-file", r["one-file"], r["vendor"], n)
        plan_s, version_s = alternate(
            self.rounds, lambda: self.hg("luigi-affected", "-r", r["vendor"])[0],
            lambda: run([HG, "version", "-q"])[0])[0]
        self.figure("nothing-affected", plan_s, version_s)
        # a 1,000-file change: files of tasks of the last layer
        chosen = set(gen.last_layer(self.tasks))
        files = gen.files_of_tasks(self.tasks, self.info["watched"], chosen, 1000)
        r["many-files"] = self.touch(files, "%d data files" % len(files))
        n = self.check_plan(r["many-files"])
        self.plan_figure("plan-1000-files", r["many-files"], r["vendor"], n,
                         note="%d files" % len(files))
        self.peak_rss(r["many-files"])

    def plan_figure(self, name, rev, base, affected, note=""):
        medians, samples = alternate(
            self.rounds, lambda: self.hg("luigi-affected", "-r", rev)[0],
            lambda: self.hg("status", "--rev", base, "--rev", rev)[0])
        self.figure(name, medians[0], medians[1], {"plan": samples[0], "status": samples[1],
                                                   "affected": affected, "note": note})

    def peak_rss(self, rev):
        code = ("import resource, subprocess, sys\n"
                "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
        out = run([sys.executable, "-c", code, HG, "-R", self.path, "luigi-affected",
                   "-r", rev])[1]
        self.figure("plan-peak-rss", int(out) / 1024.0, None)

    def run_one_percent(self):
        """``hg luigi-run`` of a change to 1% of the tasks (and ``All``) versus bare
        Luigi building exactly those tasks."""
        self.hg("luigi-run", "-q", "-r", self.revs["many-files"])  # caught up
        count = max(1, self.tasks // 100)
        chosen = gen.last_layer(self.tasks)[:count]
        files = gen.files_of_tasks(self.tasks, self.info["watched"], set(chosen), 10 ** 9)
        per_task = {}
        for f in files:
            per_task.setdefault(gen.task_of_path(f), f)
        self.bare_build(chosen)  # warm
        checked = []

        def hg_run():
            rev = self.touch(sorted(per_task.values()), "1% of the tasks")
            if not checked:
                checked.append(self.check_plan(rev))
            took, out = self.hg("luigi-run", "-q", "-r", rev)
            if not out.startswith("%d ran," % (count + 1)):
                raise Failed("1%% run: %s" % out)
            return took

        medians, samples = alternate(self.rounds, hg_run, lambda: self.bare_build(chosen))
        self.figure("run-1pct-affected", medians[0], medians[1],
                    {"hg": samples[0], "bare": samples[1], "tasks": count + 1})

    def commits_and_pushes(self):
        watched = self.info["watched"]
        files = [gen.data_file(i, self.tasks)
                 for i in range(watched - 4 * self.quick_rounds, watched)]
        it = iter(files)

        def commit(*config):
            def one():
                with open(os.path.join(self.path, next(it)), "a") as f:
                    f.write("commit\n")
                return run([HG, "-R", self.path, "commit", "-q", "-m", "c"] + list(config))[0]
            return one

        medians, samples = alternate(
            self.quick_rounds, commit("--config", "extensions.hgext_luigi=!"),
            commit("--config", "luigi.on-commit=plan"))
        self.figure("commit-on-commit-plan", medians[1], medians[0],
                    {"plain": samples[0], "plan": samples[1]})
        self.pushes(it)

    def pushes(self, files):
        servers = {}
        for name, hgrc in (("plain", ""), ("queue", "[extensions]\nhgext_luigi =\n"
                                                   "[luigi]\nroots = All\non-push = queue\n")):
            path = os.path.join(OUT, "scale-%s-server-%s" % (self.size, name))
            shutil.rmtree(path, ignore_errors=True)
            run([HG, "clone", "-q", "-U", self.path, path])
            with open(os.path.join(path, ".hg", "hgrc"), "a") as f:
                f.write(hgrc)
            servers[name] = path

        def push(name):
            def one():
                return run([HG, "-R", self.path, "push", "-q", "-r", ".",
                            servers[name]])[0]
            return one

        def next_commit():
            with open(os.path.join(self.path, next(files)), "a") as f:
                f.write("push\n")
            run([HG, "-R", self.path, "commit", "-q", "-m", "p",
                 "--config", "extensions.hgext_luigi=!"])

        next_commit()
        push("plain")(), push("queue")()  # warm: the gate caches the task graph
        samples = {"plain": [], "queue": []}
        for _ in range(self.quick_rounds):
            next_commit()
            samples["plain"].append(push("plain")())
            samples["queue"].append(push("queue")())
        self.figure("push-on-push-queue", statistics.median(samples["queue"]),
                    statistics.median(samples["plain"]), samples)


def plan_many_tasks(count=100000):
    """Planning ``count`` tasks with nothing affected, in process: the graph
    from its cache file, every task's last build from a real lineage store, one
    unwatched path changed.  (No repository of that size is built: 100,000 tasks
    would take hours to run once.)"""
    sys.path.insert(0, ROOT)
    from hgext_luigi.core import lineage, affected

    work = os.path.join(OUT, "plan-%d" % count)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    per = count // 5
    cs = "a" * 40
    tasks = []
    for i in range(count):
        layer = i // per
        req = [] if layer == 0 else sorted({(layer - 1) * per + (i * 7) % per,
                                            (layer - 1) * per + (i * 13 + 1) % per})
        tasks.append({"key": gen.key_of(i), "family": "Node", "requires":
                      [gen.key_of(r) for r in req], "watches": ["data/%s/**" % gen.group_of(i)],
                      "code": ["pipelines/__init__.py"], "params": {"idx": str(i)}})
    graph_file = os.path.join(work, "graph.json")
    with open(graph_file, "w") as f:
        json.dump({"tasks": tasks}, f)
    store = lineage.open_store(os.path.join(work, "lineage.db"))
    with store._tx() as db:  # seeding only: the measured part reads
        db.executemany("INSERT INTO builds(task_id, key, family, changeset, status, ended)"
                       " VALUES (?, ?, 'Node', ?, 'success', ?)",
                       [(t["key"], t["key"], cs, i) for i, t in enumerate(tasks)])
    store.close()
    started = time.perf_counter()
    with open(graph_file) as f:
        graph = json.load(f)
    nodes = {t["key"]: affected.Node(t["key"], t["family"], t["requires"], t["watches"],
                                 t["code"], False, t["params"]) for t in graph["tasks"]}
    store = lineage.open_store(os.path.join(work, "lineage.db"))
    reuse = lineage.Reuse(store, "b" * 40, lambda k: affected.node_digest(nodes[k]))
    roots = [t["key"] for t in graph["tasks"][(count // per - 1) * per:]]
    decisions = affected.classify(nodes, roots, "b" * 40, reuse,
                              lambda base: {"docs/readme.md": "modified"},
                              lambda *a: False, outputs_exist=lambda p: True)
    took = time.perf_counter() - started
    store.close()
    if any(d.affected for d in decisions) or len(decisions) != count:
        raise Failed("100,000 tasks: %d decisions, %d affected"
                     % (len(decisions), sum(d.affected for d in decisions)))
    return took


def describe(row):
    kind = row["kind"]
    if kind == "ratio":
        text = "%.2fx (%.3fs vs %.3fs)" % (row["measured"], row["value"], row["floor"])
    elif kind == "seconds" and row["floor"] is not None:
        text = "+%.3fs (%.3fs vs %.3fs)" % (row["measured"], row["value"], row["floor"])
    elif kind == "seconds":
        text = "%.2fs" % row["measured"]
    elif kind == "MB":
        text = "%.0f MB" % row["measured"]
    elif kind == "rate":
        text = "%.1f tasks/s" % row["measured"]
    else:
        text = "%.2fx" % row["measured"]
    if kind == "rate":
        return "%-40s target %-10s %s" % (text, "-", "")
    target = {"ratio": "<= %.1fx", "seconds": "< %.1fs", "MB": "<= %.0f MB",
              "below": "< %.1fx"}[kind] % row["target"]
    return "%-40s target %-10s %s" % (text, target, "met" if row["met"] else "NOT MET")


def machine():
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "hg": run([HG, "version", "-q"])[1].strip(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True).stdout.strip()}


def measure(size, rounds):
    s = Size(size, rounds)
    s.generate()
    s.full_builds()
    s.planning()
    s.run_one_percent()
    s.commits_and_pushes()
    if size == "large":
        took = plan_many_tasks()
        s.figure("plan-100000-tasks", took, None)
    return {"size": size, "files": s.info["files"], "tasks": s.tasks, "rounds": rounds,
            "machine": machine(), "figures": s.figures, "raw": s.raw}


def write_markdown():
    results = []
    for size in ("small", "medium", "large"):
        path = os.path.join(RESULTS, "%s.json" % size)
        if os.path.exists(path):
            with open(path) as f:
                results.append(json.load(f))
    lines = ["# Benchmarks", "",
             "Written by `make bench` (small, medium) and `make bench SIZE=large` from "
             "`benchmarks/run.py`; raw numbers in `benchmarks/results/`. Every figure is "
             "measured against a floor taken in the same run: `hg status` on the same "
             "revisions, a plain commit or push, `hg version -q`, or the same graph built "
             "by bare Luigi in a plain Python process. Medians of the rounds shown (three "
             "times as many for commits and pushes); full builds are timed once. Every plan measured was checked against an oracle "
             "working from `hg status` alone.", ""]
    for r in results:
        m = r["machine"]
        lines += ["## %s: %d files, %d tasks" % (r["size"], r["files"], r["tasks"]), "",
                  "%s; %s, %d CPUs, Python %s, %s; code at %s; %d rounds." % (
                      m["date"], m["platform"], m["cpus"], m["python"], m["hg"],
                      m["commit"], r["rounds"]), "",
                  "| figure | measured | target | |", "|---|---|---|---|"]
        for row in r["figures"]:
            text = describe(row)
            measured, target = text.split(" target ")
            lines.append("| %s | %s | %s | %s |" % (
                row["figure"], measured.strip(),
                re.sub(r"\s*(NOT MET|met)$", "", target).strip(), "" if row["kind"] == "rate"
                else "met" if row["met"] else "**not met**"))
        lines.append("")
    notes = os.path.join(HERE, "NOTES.md")
    if os.path.exists(notes):
        with open(notes) as f:
            lines += [f.read().replace("AFTER_ROWS", before_and_after(results))]
    if os.path.exists(os.path.join(RESULTS, "scaleout.json")):  # benchmarks/scaleout.py
        import scaleout
        with open(os.path.join(RESULTS, "scaleout.json")) as f:
            lines += scaleout.markdown(json.load(f))
    with open(os.path.join(ROOT, "BENCHMARKS.md"), "w") as f:
        f.write("\n".join(lines))


def before_and_after(results):
    """Rows of the before/after table: BEFORE, then this run's figures."""
    after = {r["size"]: {row["figure"]: describe(row).split(" target ")[0].strip()
                         for row in r["figures"]} for r in results}
    rows = []
    for name, before in BEFORE.items():
        now = [after.get(size, {}).get(name, "") for size in ("small", "medium", "large")]
        if name == "full-build-tasks-per-second":  # on large; S and M give ratios
            now[:2] = ["", ""]
        rows.append("| %s | %s |" % (name, " | ".join(list(before) + now)))
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sizes", nargs="*", metavar="SIZE",
                    help="%s (default: small medium)" % ", ".join(sorted(gen.SIZES)))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--markdown", action="store_true",
                    help="only write BENCHMARKS.md again from benchmarks/results/")
    args = ap.parse_args()
    if args.markdown:
        return write_markdown()
    args.sizes = args.sizes or ["small", "medium"]
    unknown = [x for x in args.sizes if x not in gen.SIZES]
    if unknown:
        ap.error("unknown size %s (sizes: %s)" % (unknown[0], ", ".join(sorted(gen.SIZES))))
    if args.rounds < 5:
        sys.exit("at least 5 rounds: the figures are medians")
    os.makedirs(RESULTS, exist_ok=True)
    for size in args.sizes:
        try:
            result = measure(size, args.rounds)
        except Failed as e:
            sys.exit("benchmark failed: %s" % e)
        with open(os.path.join(RESULTS, "%s.json" % size), "w") as f:
            json.dump(result, f, indent=1)
    write_markdown()
    print("written: BENCHMARKS.md, benchmarks/results/")


if __name__ == "__main__":
    main()
