"""Scale-out benchmarks: the push queue on PostgreSQL against SQLite, and one
build host against two (``make bench``, or alone ``make bench-scaleout``).

1. Queue claims.  N entries are recorded, then taken one at a time with
   ``claim`` and closed with ``finish`` (latency of each, median and p95), and
   again by two threads claiming at once, each on its own connection (entries
   per second).  The baseline is the same on SQLite; the figure is the ratio.
2. Build hosts.  A server repository of gen.py's ``medium`` size on a
   PostgreSQL store with ``on-push = queue`` and a shared output root; the base
   revision built once (not timed); then K pushes, each on a new branch of its
   own (nothing coalesced), each a pending entry.  That state is saved (the
   database as a template, the hosts' clones as copies) and restored before
   each measurement, so every measurement does the same work: draining the
   queue with one host (``hg luigi-worker --once`` in one clone) and with two
   (two clones, two workers started together).  The baseline is one host; the
   figure is the speedup.

Both use a throwaway PostgreSQL server (``tests/helpers/pgserver.py``) on
loopback, its data directory on the same disk as the SQLite files, with fsync and
synchronous commits on (the queue's SQLite file is written with ``synchronous =
FULL``).  Results go to ``benchmarks/results/scaleout.json`` (raw numbers) and
the section "Scaling out" of ``BENCHMARKS.md`` (``run.py`` writes it again
from the JSON when it rewrites the file).  No test asserts them.
"""

import argparse
import json
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
RESULT = os.path.join(RESULTS, "scaleout.json")
MARKDOWN = os.path.join(ROOT, "BENCHMARKS.md")
HEADING = "## Scaling out"

# per push, one data file of each of "tasks" tasks
FULL = {"size": "medium", "pushes": 8, "tasks": 3, "entries": 500, "claim_rounds": 3,
        "rounds": 3}
QUICK = {"size": "small", "pushes": 4, "tasks": 1, "entries": 100, "claim_rounds": 1,
         "rounds": 1}
LEASE, MAX_ATTEMPTS = 300, 3

# a production-like server: the test helper's defaults turn durability off
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


class Failed(Exception):
    pass


# -- set-up shared by both parts ---------------------------------------------------

def start_server():
    sys.path.insert(0, os.path.join(ROOT, "tests", "helpers"))
    import pgserver

    reason = pgserver.why_unavailable()
    if reason:
        raise Failed("no PostgreSQL server: %s (make postgres)" % reason)
    pgserver.SETTINGS = dict(pgserver.SETTINGS, **DURABLE)
    server = pgserver.PgServer()
    os.environ.update(server.env())  # the stores opened in this process
    with server.connect() as conn:
        server.version = conn.execute("SHOW server_version").fetchone()[0]
    return server


def percentile(samples, p):
    """The ``p``-th percentile (0-100), linear between the nearest ranks."""
    s = sorted(samples)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def ms(samples):
    """Seconds as milliseconds, to the microsecond (the raw numbers kept)."""
    return [round(x * 1000, 3) for x in samples]


def summary(samples_ms):
    return {"median": statistics.median(samples_ms), "p95": percentile(samples_ms, 95)}


def spread(samples_ms):
    """What the raw numbers keep of one run's samples (ms): their percentiles."""
    return {"n": len(samples_ms), "mean": round(statistics.mean(samples_ms), 3),
            **{"p%d" % p: round(percentile(samples_ms, p), 3)
               for p in (0, 10, 25, 50, 75, 90, 95, 99, 100)}}


def compact(raw):
    """The runs of :func:`claims` with their samples as percentiles."""
    return {kind: {mode: [dict(run, claim=spread(run["claim"]), finish=spread(run["finish"]))
                          for run in runs] for mode, runs in modes.items()}
            for kind, modes in raw.items()}


# -- 1. queue claims ---------------------------------------------------------------

def queue_at(location):
    from hgext_luigi.core import audit, pushqueue

    return pushqueue.open_queue(location, audit.Chain())


def fresh_queue(kind, server, work, name, count, flush=True):
    """The location of a new queue holding ``count`` pending entries, pushed
    ten at a time (one transaction each, as ten-head pushes).  ``flush``
    False: PostgreSQL commits without waiting for the disk (for the figure
    without the flush; SQLite's is turned off by :func:`drain`)."""
    from hgext_luigi.core import database, lineage, pushqueue

    if kind == "sqlite":
        location = os.path.join(work, name + ".db")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(location + suffix):
                os.unlink(location + suffix)
    else:
        location = server.create_database(name)
        database.upgrade(location, lineage.SCHEMA + pushqueue.SCHEMA)
        if not flush:
            from psycopg import sql

            with server.connect(autocommit=True) as conn:
                conn.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = off")
                             .format(sql.Identifier(name)))
    q = queue_at(location)
    try:
        for start in range(0, count, 10):
            txn = "txn-%d" % start
            q.record([{"head": secrets.token_hex(20), "branch": "b%d" % i,
                       "pusher": "bench", "author": "bench", "source": "push",
                       "identity": {"user": "bench", "groups": []}}
                      for i in range(start, min(start + 10, count))], txn)
            q.confirm(txn)
    finally:
        q.close()
    return location


def drain(location, owner, barrier=None, flush=True):
    """Claim and finish until the queue is empty: (entry ids, claim seconds,
    finish seconds, seconds of the last claim, the one that found nothing)."""
    q = queue_at(location)
    if not flush and q._db.dialect == "sqlite":  # the store's own is FULL
        q._db.execute("PRAGMA synchronous = OFF")
    ids, claims, finishes = [], [], []
    try:
        if barrier is not None:
            barrier.wait()
        while True:
            t0 = time.perf_counter()
            entry = q.claim(owner, LEASE, MAX_ATTEMPTS)
            t1 = time.perf_counter()
            if entry is None:
                return ids, claims, finishes, t1 - t0
            if not q.finish(entry["id"], owner, "done"):
                raise Failed("%s: entry %d was not ours to finish" % (owner, entry["id"]))
            t2 = time.perf_counter()
            ids.append(entry["id"])
            claims.append(t1 - t0)
            finishes.append(t2 - t1)
    finally:
        q.close()


def check_drained(location, count, claimed):
    """Every entry claimed once and done."""
    q = queue_at(location)
    try:
        states = [e["state"] for e in q.entries()]
        attempts = [e["attempts"] for e in q.entries()]
    finally:
        q.close()
    if len(claimed) != count or len(set(claimed)) != count:
        raise Failed("%d claims of %d entries (%d distinct)"
                     % (len(claimed), count, len(set(claimed))))
    if states != ["done"] * count or set(attempts) != {1}:
        raise Failed("queue not drained once: states %s, attempts %s"
                     % (sorted(set(states)), sorted(set(attempts))))


def one_claimer(location, count, flush):
    started = time.perf_counter()
    ids, claims, finishes, _ = drain(location, "solo", flush=flush)
    wall = time.perf_counter() - started
    check_drained(location, count, ids)
    return {"claim": ms(claims), "finish": ms(finishes), "seconds": wall}


def two_claimers(location, count, flush):
    barrier = threading.Barrier(3)
    out, errors = {}, []

    def worker(name):
        try:
            out[name] = drain(location, name, barrier, flush)
        except BaseException as e:  # reported below, in the main thread
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("w1", "w2")]
    for t in threads:
        t.start()
    barrier.wait()  # both connections open: the clock starts
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        raise Failed("a claimer failed: %r" % errors[0])
    check_drained(location, count, out["w1"][0] + out["w2"][0])
    return {"claim": ms(out["w1"][1] + out["w2"][1]),
            "finish": ms(out["w1"][2] + out["w2"][2]),
            "seconds": wall, "split": [len(out["w1"][0]), len(out["w2"][0])],
            # a claimer kept waiting while the other took every entry shows here
            "longest_call_ms": round(1000 * max(out["w1"][1] + out["w2"][1] +
                                                [out["w1"][3], out["w2"][3]]), 3)}


def fsync_ms(work, count=100):
    """Milliseconds of a small durable write to a file in ``work``, two ways:
    128 bytes appended then ``fsync`` (as a SQLite WAL grows), 8 kB written
    over a preallocated file then ``fdatasync`` (as PostgreSQL's WAL segments
    are).  The floor under a durable commit on this disk; on a virtual disk the
    two differ, and vary with time."""
    path = os.path.join(work, "fsync.probe")
    out = {}
    for way in ("append", "overwrite"):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        samples = []
        try:
            if way == "overwrite":
                os.write(fd, b"\0" * (8192 * count))
                os.fsync(fd)
            for i in range(count):
                if way == "append":
                    os.write(fd, b"x" * 128)
                else:
                    os.pwrite(fd, b"y" * 8192, 8192 * i)
                t0 = time.perf_counter()
                (os.fsync if way == "append" else os.fdatasync)(fd)
                samples.append(time.perf_counter() - t0)
        finally:
            os.close(fd)
            os.unlink(path)
        out[way] = spread(ms(samples))
    return out


# (mode, claimers, commits wait for the disk)
MODES = (("one", one_claimer, True), ("two", two_claimers, True),
         ("one-noflush", one_claimer, False), ("two-noflush", two_claimers, False))


def claims(server, work, count, rounds):
    """Both stores, ``rounds`` times, each measurement of one store next to the
    same of the other (which goes first alternates), each round after a
    measure of this disk's flush, which varies: raw samples per store, the
    flush of each round."""
    os.makedirs(work, exist_ok=True)
    kinds = ("sqlite", "postgresql")
    raw = {kind: {mode: [] for mode, _, _ in MODES} for kind in kinds}
    fsyncs = []
    for r in range(rounds):
        fsyncs.append(fsync_ms(work))
        for mode, fn, flush in MODES:
            for kind in (kinds if r % 2 == 0 else kinds[::-1]):
                name = "q_%s_%s_%d" % (kind, mode.replace("-", "_"), r)
                location = fresh_queue(kind, server, work, name, count, flush)
                raw[kind][mode].append(fn(location, count, flush))
        print("  claims, round %d (durable write %.2f ms appended, %.2f ms over): %s" % (
            r + 1, fsyncs[-1]["append"]["p50"], fsyncs[-1]["overwrite"]["p50"], "; ".join(
            "%s %s" % (kind, ", ".join("%s %.0f/s" % (mode, count / raw[kind][mode][-1]["seconds"])
                                       for mode, _, _ in MODES)) for kind in kinds)),
            flush=True)
    return raw, fsyncs


def claim_figures(raw, count):
    figures = {}
    for kind, modes in raw.items():
        one = [x for run in modes["one"] for x in run["claim"]]
        fin = [x for run in modes["one"] for x in run["finish"]]
        both = [c + f for run in modes["one"] for c, f in zip(run["claim"], run["finish"])]
        contended = [x for run in modes["two"] for x in run["claim"]]
        figures[kind] = {
            "claim_ms": summary(one), "finish_ms": summary(fin),
            "claim_finish_ms": summary(both), "contended_claim_ms": summary(contended),
            "one_rate": statistics.median(count / run["seconds"] for run in modes["one"]),
            "two_rate": statistics.median(count / run["seconds"] for run in modes["two"]),
            "two_split": [run["split"] for run in modes["two"]],
            "two_longest_call_ms": max(run["longest_call_ms"] for run in modes["two"]),
            "noflush_two_split": [run["split"] for run in modes["two-noflush"]],
            "noflush_claim_finish_ms": summary(
                [c + f for run in modes["one-noflush"]
                 for c, f in zip(run["claim"], run["finish"])]),
            "noflush_one_rate": statistics.median(
                count / run["seconds"] for run in modes["one-noflush"]),
            "noflush_two_rate": statistics.median(
                count / run["seconds"] for run in modes["two-noflush"])}
    return figures


def per_round(raw, fsyncs):
    """Claim + finish (1 claimer, median ms) of each store in each round, their
    ratio and that round's fsync: how far the disk moved the figure."""
    rounds = []
    for i, fsync in enumerate(fsyncs):
        med = {kind: statistics.median(c + f for c, f in zip(raw[kind]["one"][i]["claim"],
                                                              raw[kind]["one"][i]["finish"]))
               for kind in raw}
        rounds.append({"fsync_append_ms": fsync["append"]["p50"],
                       "fsync_overwrite_ms": fsync["overwrite"]["p50"],
                       "sqlite_ms": med["sqlite"],
                       "postgresql_ms": med["postgresql"],
                       "ratio": med["postgresql"] / med["sqlite"]})
    return rounds


# -- 2. build hosts ----------------------------------------------------------------

def disjoint_tasks(tasks, count):
    """``count`` tasks of gen.py's graph, from the second layer on, whose
    downstream tasks (``All`` aside) are disjoint and reach the last layer.

    So no task but ``All`` is built at more than one head, and each head
    rebuilds ``All``: the builds do not depend on the order the heads are built
    in.  (Where they overlap they do: a plan tries the newest builds of a task
    first, a few at most, and the newest may be one made at another branch's
    head.)"""
    import gen

    needed_by = {i: [] for i in range(tasks)}
    for i in range(tasks):
        for r in gen.requires_of(i, tasks):
            needed_by[r].append(i)
    last = set(gen.last_layer(tasks))
    used, chosen = set(), []
    for t in range(tasks // gen.LAYERS, tasks):
        down, todo = set(), [t]
        while todo:
            x = todo.pop()
            if x not in down:
                down.add(x)
                todo += needed_by[x]
        if down & last and not down & used:
            used |= down
            chosen.append(t)
            if len(chosen) == count:
                return chosen
    raise Failed("no %d tasks with disjoint downstream tasks in %d" % (count, tasks))


class Hosts:
    """The server repository, its build hosts and the saved pending state."""

    def __init__(self, bench, server, size, pushes, per_push, work):
        self.bench = bench  # run.py: run(), HG, ENV
        self.pg = server
        self.size = size
        self.pushes = pushes
        self.per_push = per_push
        self.work = work
        self.env = dict(bench.ENV, **server.env())
        self.src = os.path.join(work, "src")
        self.server = os.path.join(work, "server")
        self.outputs = os.path.join(work, "outputs")
        self.hosts = [os.path.join(work, "host%d" % i) for i in (1, 2)]
        self.db = "scaleout_%s" % secrets.token_hex(3)
        self.url = None

    def hg(self, *args, repo=None):
        argv = [self.bench.HG] + (["-R", repo] if repo else []) + list(args)
        return self.bench.run(argv, env=self.env)

    def hgrc(self):
        return ("[extensions]\nhgext_luigi =\n[luigi]\nroots = All\nstore = %s\n"
                "output-root = %s\n" % (self.url, self.outputs))

    def prepare(self):
        """Everything but the measurements, ending with the pending state
        saved; returns the base revision and the pushed heads, in order."""
        import gen

        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        started = time.perf_counter()
        info = gen.generate(self.size, self.src)
        base = info["revs"]["one-file"]
        print("  %s: %d files, %d tasks, generated in %.0fs" % (
            self.size, info["files"], info["tasks"], time.perf_counter() - started),
            flush=True)
        self.url = self.pg.create_database(self.db)
        self.hg("clone", "-q", "-U", self.src, self.server)
        with open(os.path.join(self.server, ".hg", "hgrc"), "a") as f:
            f.write(self.hgrc() + "on-push = queue\n")
        self.hg("luigi-store", "--upgrade", repo=self.server)
        for host in self.hosts:  # clones of the server before the pushes: they pull
            self.hg("clone", "-q", "-U", self.server, host)
            with open(os.path.join(host, ".hg", "hgrc"), "a") as f:
                f.write(self.hgrc())
        started = time.perf_counter()
        self.hg("luigi-run", "-q", "-r", base, "--workers", "2", repo=self.hosts[0])
        print("  base built on host1 in %.0fs (not timed)" % (time.perf_counter() - started),
              flush=True)
        # host2 loads the task graph at the base: its graph cache and a tree to recycle,
        # as host1 has from its build
        self.hg("luigi-affected", "-q", "-r", base, repo=self.hosts[1])
        heads = self.push(info, base)
        entries = self.queue()
        if [e["state"] for e in entries] != ["pending"] * self.pushes or \
                [e["head"] for e in entries] != heads:
            raise Failed("after %d pushes the queue holds %s" % (
                self.pushes, [(e["head"][:12], e["state"]) for e in entries]))
        self.save()
        return base, heads

    def push(self, info, base):
        """K commits on new branches from the base, each pushed alone."""
        import gen

        tasks = info["tasks"]
        chosen = disjoint_tasks(tasks, self.pushes * self.per_push)
        self.chosen = [chosen[k::self.pushes] for k in range(self.pushes)]
        heads = []
        for k in range(self.pushes):
            files = [gen.files_of_tasks(tasks, info["watched"], {t}, 1)[0]
                     for t in self.chosen[k]]
            self.hg("update", "-q", "-r", base, repo=self.src)
            self.hg("branch", "-q", "scaleout-%d" % k, repo=self.src)
            for rel in files:
                with open(os.path.join(self.src, rel), "a") as f:
                    f.write("push %d\n" % k)
            self.hg("commit", "-q", "-m", "push %d" % k, repo=self.src)
            heads.append(self.hg("log", "-r", ".", "-T", "{node}", repo=self.src)[1])
            self.hg("push", "-q", "-r", ".", "--new-branch", self.server, repo=self.src)
        return heads

    # -- the pending state, saved and restored --------------------------------------

    def _template(self):
        return self.db + "_pending"

    def save(self):
        from psycopg import sql

        with self.pg.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(self._template()), sql.Identifier(self.db)))
        for path in self.hosts + [self.outputs]:
            subprocess.run(["cp", "-a", path, path + ".saved"], check=True)

    def restore(self):
        from psycopg import sql

        self.pg.drop_database(self.db)
        with self.pg.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(self.db), sql.Identifier(self._template())))
        for path in self.hosts + [self.outputs]:
            shutil.rmtree(path)
            subprocess.run(["cp", "-a", path + ".saved", path], check=True)
        self.check_trees()

    def check_trees(self):
        """Each host's materialized trees are intact after the copy (else the
        first build would write a whole tree, which the saved state did not
        need)."""
        from hgext_luigi.hg import trees

        for host in self.hosts:
            base = os.path.join(host, ".hg", "luigi", "trees")
            ready = [n for n in os.listdir(base) if n.endswith(".ready")]
            for name in ready:
                node = name[:-len(".ready")].encode()
                if not trees._intact(base.encode(), node):
                    raise Failed("the restored tree %s of %s is not intact"
                                 % (node[:12].decode(), host))
            if not ready:
                raise Failed("%s has no tree to recycle" % host)

    # -- measuring ------------------------------------------------------------------

    def drain(self, count):
        """Seconds for ``count`` hosts to drain the queue, each with one
        ``hg luigi-worker --once`` started at the same time; the CPU seconds of
        the workers and all they started; per host, when it pulled, started
        each build and exited (seconds from the start)."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        procs = [subprocess.Popen([self.bench.HG, "-R", host, "luigi-worker", "--once"],
                                  env=self.env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
                 for host in self.hosts[:count]]
        outs = [[] for _ in procs]
        events = [{"pulls": [], "builds": [], "exit": None} for _ in procs]

        def read(i):  # each worker's output read as it comes: a full pipe would stop it
            for line in procs[i].stdout:
                now = round(time.perf_counter() - started, 2)
                outs[i].append(line)
                if line.startswith("luigi: pulling from"):
                    events[i]["pulls"].append(now)
                elif line.startswith("luigi: building "):
                    events[i]["builds"].append(now)
            procs[i].wait()
            events[i]["exit"] = round(time.perf_counter() - started, 2)

        readers = [threading.Thread(target=read, args=(i,)) for i in range(len(procs))]
        for t in readers:
            t.start()
        for t in readers:
            t.join()
        took = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        for host, p, out in zip(self.hosts, procs, outs):
            if p.returncode != 0:
                raise Failed("luigi-worker on %s: exit %d\n%s"
                             % (os.path.basename(host), p.returncode, "".join(out)[-3000:]))
        return took, cpu, events

    def queue(self):
        from hgext_luigi.core import pushqueue

        q = pushqueue.open_queue(self.url)
        try:
            return q.entries()
        finally:
            q.close()

    def check(self, heads):
        """Every entry done, claimed once, by a run of its own that built its
        head; every build a success, none twice at one changeset.  Returns what
        was built, how many entries each worker took, and the runs that lineage
        records other than 'success' (a race of hgext_luigi's: another host's
        check for dead runs can mark a finished run 'interrupted')."""
        from hgext_luigi.core import database

        entries = self.queue()
        bad = [(e["id"], e["state"], e["attempts"], e["covered_by"]) for e in entries
               if e["state"] != "done" or e["attempts"] != 1 or e["covered_by"] is not None]
        runs = [e["run_id"] for e in entries]
        if bad or len(entries) != len(heads) or None in runs or len(set(runs)) != len(runs):
            raise Failed("queue after the drain: %d entries, not done once: %s, runs %s"
                         % (len(entries), bad, runs))
        db = database.open_database(self.url, "")
        try:
            rows = db.execute("SELECT r.id, r.rev, r.trigger, r.status FROM runs r"
                              " WHERE r.trigger = 'push'").fetchall()
            failed = db.execute("SELECT changeset, key, status FROM builds WHERE"
                                " status != 'success' AND trigger = 'push'").fetchall()
            built = db.execute("SELECT changeset, key, COUNT(*) FROM builds WHERE"
                               " status = 'success' AND trigger = 'push' GROUP BY"
                               " changeset, key").fetchall()
            takers = db.execute("SELECT data FROM audit WHERE kind = 'queue-taken'"
                                " ORDER BY id").fetchall()
        finally:
            db.close()
        if sorted((r[0], r[1]) for r in rows) != sorted(
                (e["run_id"], e["head"]) for e in entries) or \
                not {r[3] for r in rows} <= {"success", "interrupted"} or failed:
            raise Failed("runs of the drain: %s; builds not a success: %s"
                         % ([tuple(r) for r in rows], [tuple(r) for r in failed][:5]))
        odd = [[r[0], r[1], r[3]] for r in rows if r[3] != "success"]
        twice = [(r[0][:12], r[1]) for r in built if r[2] != 1]
        if twice:
            raise Failed("built more than once: %s" % twice[:5])
        if {r[0] for r in built} != set(heads):
            raise Failed("builds at %d changesets, %d heads pushed"
                         % (len({r[0] for r in built}), len(heads)))
        by = {}
        for (data,) in takers:
            worker = json.loads(data)["worker"].split(":")[1]  # host:pid:token
            by[worker] = by.get(worker, 0) + 1
        return sorted((r[0], r[1]) for r in built), sorted(by.values(), reverse=True), odd

    def measure(self, heads, rounds):
        """Alternating one host and two, each from the saved pending state."""
        raw = {"1": [], "2": []}
        work = None
        for r in range(rounds):
            for count in (1, 2):
                self.restore()
                took, cpu, events = self.drain(count)
                built, split, odd = self.check(heads)
                if work is None:
                    work = built
                elif built != work:
                    raise Failed("%d host(s) built other tasks than the first measurement"
                                 % count)
                raw[str(count)].append({"seconds": took, "cpu_seconds": cpu,
                                        "split": split, "hosts": events,
                                        "runs_not_success": odd})
                print("  round %d, %d host(s): %d entries in %.1fs, %.1f CPU seconds (%s "
                      "per worker)%s" % (r + 1, count, len(heads), took, cpu,
                                         "+".join(map(str, split)), "".join(
                                             "; run %s of a done entry recorded %s"
                                             % (x[0][:12], x[2]) for x in odd)), flush=True)
        return raw, len(work)


def races_markdown(h):
    """A bullet for the runs lineage recorded other than 'success' although
    their entries were done and their builds succeeded, if any."""
    odd = [(count, run["runs_not_success"]) for count, runs in sorted(h["raw"].items())
           for run in runs if run.get("runs_not_success")]
    if not odd:
        return []
    return [
        "- In %d of the %d measurements, lineage recorded %s run(s) as `interrupted` "
        "although their queue entries were done and all their builds succeeded: another "
        "host's check for dead runs (at the start of its next run, or when idle) fell "
        "between the run giving up its lease and recording its end, and overwrote "
        "`success` (a race in hgext_luigi: `runs._execute` drops the run's leases before "
        "`end_run`, and `LineageStore.interrupt_stale` updates the runs it selected "
        "without checking their status again). It changes no figure here." % (
            len(odd), sum(len(runs) for runs in h["raw"].values()),
            sum(len(x) for _, x in odd))]


def hosts_figures(raw, pushes):
    out = {}
    for count, runs in raw.items():
        seconds = statistics.median(run["seconds"] for run in runs)
        cpu = statistics.median(run["cpu_seconds"] for run in runs)
        out[count] = {"seconds": seconds, "per_minute": pushes * 60.0 / seconds,
                      "cpu_seconds": cpu,
                      "cores_busy": statistics.median(run["cpu_seconds"] / run["seconds"]
                                                      for run in runs)}
    out["speedup"] = out["2"]["per_minute"] / out["1"]["per_minute"]
    return out


# -- results -----------------------------------------------------------------------

def markdown(result):
    """The lines of the section, from ``scaleout.json`` (run.py calls this too)."""
    m, load = result["machine"], result["load_average"]
    return [
        HEADING, "",
        "Written by `benchmarks/scaleout.py` (`make bench`, or alone `make bench-scaleout`);"
        " raw numbers in `benchmarks/results/scaleout.json`. %s; %s, %d CPUs, Python %s,"
        " PostgreSQL %s, %s; code at %s%s." % (
            m["date"], m["platform"], m["cpus"], m["python"], result["postgresql"],
            m["hg"], m["commit"], " (quick run: smaller sizes)" if result["quick"] else ""),
        "",
        "Everything runs on this one machine: PostgreSQL on loopback TCP, its data "
        "directory on the same local disk (ext4) as the SQLite files, with fsync and "
        "synchronous commits on, as the queue's SQLite file is written with `synchronous "
        "= FULL`. The 2 cores are shared by the database, every `hg` process and the "
        "builds, and with whatever else ran on the machine (load average %.1f when the "
        "benchmark started, %.1f when it ended)." % (load["start"], load["end"]), ""] + \
        claims_markdown(result["claims"]) + hosts_markdown(result["hosts"])


def claims_markdown(c):
    sq, pg = c["figures"]["sqlite"], c["figures"]["postgresql"]
    lines = [
        "### Queue claims: PostgreSQL against SQLite", "",
        "%d entries recorded (ten per transaction), then each taken with `claim` and "
        "closed with `finish` (`hgext_luigi.core.pushqueue`, audit chain on): by one "
        "claimer, then by two threads at once, each on its own connection; %d round(s), "
        "the stores alternating. Latencies are over every claim of every round, rates "
        "are medians of the rounds. The baseline is SQLite." % (c["entries"], c["rounds"]),
        "", "| figure | SQLite | PostgreSQL | PostgreSQL / SQLite |", "|---|---|---|---|"]

    def row(name, key, sub=None, fmt="%.2f ms"):
        a, b = (sq[key][sub], pg[key][sub]) if sub else (sq[key], pg[key])
        lines.append("| %s | %s | %s | %.2fx |" % (name, fmt % a, fmt % b, b / a))

    row("1 claimer: claim, median", "claim_ms", "median")
    row("1 claimer: claim, p95", "claim_ms", "p95")
    row("1 claimer: finish, median", "finish_ms", "median")
    row("1 claimer: claim + finish, median", "claim_finish_ms", "median")
    row("1 claimer: claim + finish, p95", "claim_finish_ms", "p95")
    row("1 claimer: entries/s", "one_rate", fmt="%.0f")
    row("2 claimers: claim, median", "contended_claim_ms", "median")
    row("2 claimers: claim, p95", "contended_claim_ms", "p95")
    row("2 claimers: longest claim call", "two_longest_call_ms")
    row("2 claimers: entries/s", "two_rate", fmt="%.0f")
    lines.append("| 2 claimers: entries each took | %s | %s | |" % (
        ", ".join("+".join(map(str, s)) for s in sq["two_split"]),
        ", ".join("+".join(map(str, s)) for s in pg["two_split"])))
    row("no disk flush, 1 claimer: claim + finish, median", "noflush_claim_finish_ms",
        "median")
    row("no disk flush, 1 claimer: claim + finish, p95", "noflush_claim_finish_ms", "p95")
    row("no disk flush, 1 claimer: entries/s", "noflush_one_rate", fmt="%.0f")
    row("no disk flush, 2 claimers: entries/s", "noflush_two_rate", fmt="%.0f")
    lines.append("| no disk flush, 2 claimers: entries each took | %s | %s | |" % (
        ", ".join("+".join(map(str, s)) for s in sq["noflush_two_split"]),
        ", ".join("+".join(map(str, s)) for s in pg["noflush_two_split"])))
    return lines + [
        "",
        "- Every entry was claimed exactly once, at its first attempt, and ended `done`, "
        "in every run. Two claimers against one: SQLite %.2fx the rate, PostgreSQL %.2fx."
        % (sq["two_rate"] / sq["one_rate"], pg["two_rate"] / pg["one_rate"]),
        "- Each `claim` and each `finish` is one transaction, so one flush to disk, on "
        "either store, and what a flush costs on this (virtual) disk depends on how the "
        "file is written and varies with time. Measured before each round beside the "
        "SQLite files (median): 128 "
        "bytes appended then `fsync`, as a SQLite WAL grows, %s ms; 8 kB written over a "
        "preallocated file then `fdatasync`, as PostgreSQL writes its WAL, %s ms. Per "
        "round, claim + finish (1 claimer, median) took %s ms on SQLite and %s ms on "
        "PostgreSQL (ratios %s). The rows \"no disk flush\" (SQLite's `synchronous = OFF` "
        "on the benchmark's connections, PostgreSQL's `synchronous_commit = off` for the "
        "database) show what the stores cost besides it: PostgreSQL's round trips over "
        "loopback against SQLite's calls in process." % (
            ", ".join("%.2f" % r["fsync_append_ms"] for r in c["per_round"]),
            ", ".join("%.2f" % r["fsync_overwrite_ms"] for r in c["per_round"]),
            ", ".join("%.2f" % r["sqlite_ms"] for r in c["per_round"]),
            ", ".join("%.2f" % r["postgresql_ms"] for r in c["per_round"]),
            ", ".join("%.2fx" % r["ratio"] for r in c["per_round"])),
        "- \"Entries each took\": SQLite makes a writer that finds the database locked "
        "sleep and try again (its busy handler, 1 ms up to 100 ms between tries), so a "
        "claimer committing back to back can keep the other out for most of the run "
        "(the longest claim call is that wait); PostgreSQL queues the waiting "
        "transaction, and `SKIP LOCKED` passes over the entry being claimed. In "
        "`hg luigi-worker` a claim comes once per build, seconds apart, not back to "
        "back.", ""]


def hosts_markdown(h):
    f = h["figures"]
    return [
        "### Build hosts: one against two (%s: %d files, %d tasks)" % (
            h["size"], h["files"], h["tasks"]), "",
        "A server repository on the PostgreSQL store with `on-push = queue` and an output "
        "root both hosts share; the base revision built once on host 1 (not timed) and "
        "the task graph loaded at it on host 2; then %d pushes, each a new branch from "
        "the base (nothing to coalesce) changing %s, "
        "each a pending queue entry. The tasks are chosen so that what a push affects is "
        "its own, `All` aside (every push rebuilds it): the builds are then the same "
        "whatever order the heads are built in. The hosts are clones made before the "
        "pushes: each pulls the heads it lacks from the server. Before each measurement "
        "the pending state is restored (the database from a template copy, the clones and "
        "the output root from copies), so every measurement makes the same %d task "
        "builds; %d round(s), one host and two alternating. Time: from starting the "
        "worker(s) (`hg luigi-worker --once`, started together) until the last exits. The "
        "baseline is one host." % (
            h["pushes"], "one data file of a task" if h["per_push"] == 1 else
            "one data file of each of %d tasks" % h["per_push"], h["builds"], h["rounds"]),
        "",
        "| hosts | seconds to drain | entries per minute | speedup | CPU seconds | cores "
        "busy |", "|---|---|---|---|---|---|",
        "| 1 | %.1f | %.1f | 1.00x | %.1f | %.2f |" % (
            f["1"]["seconds"], f["1"]["per_minute"], f["1"]["cpu_seconds"],
            f["1"]["cores_busy"]),
        "| 2 | %.1f | %.1f | %.2fx | %.1f | %.2f |" % (
            f["2"]["seconds"], f["2"]["per_minute"], f["speedup"], f["2"]["cpu_seconds"],
            f["2"]["cores_busy"]), "",
        "- Seconds: medians of the rounds (%s for one host, %s for two). CPU seconds: "
        "user and system time of the workers and everything they started (hg, the "
        "pipeline runners, Luigi), not the PostgreSQL server's; cores busy: those over "
        "the seconds to drain." % (
            ", ".join("%.1f" % r["seconds"] for r in h["raw"]["1"]),
            ", ".join("%.1f" % r["seconds"] for r in h["raw"]["2"])),
        "- Checked after every measurement: every entry `done` at its first attempt and "
        "covered by no other, each by a run of its own (%d distinct runs, each at its "
        "entry's head), no task built twice at one changeset, and the same builds in "
        "every measurement. With two hosts the entries were split %s, the hosts pulled "
        "from the server %s times, and the workers exited at %s seconds." % (
            h["pushes"], ", ".join("+".join(map(str, run["split"]))
                                   for run in h["raw"]["2"]),
            ", ".join("+".join(str(len(e["pulls"])) for e in run["hosts"])
                      for run in h["raw"]["2"]),
            ", ".join(" and ".join("%.1f" % e["exit"] for e in run["hosts"])
                      for run in h["raw"]["2"])),
    ] + races_markdown(h) + [
        "- Where pushes on different branches affect the same tasks, what each build "
        "reuses may depend on the order heads are built in. A plan tries a few of a "
        "task's builds (four at most), those at the revision's ancestors first, so builds "
        "at other branches' heads no longer hide the base's (they did when this "
        "benchmark was written); the upstream builds a candidate consumed must still "
        "match. This benchmark keeps its pushes' tasks apart, so both measurements make "
        "the same builds whatever the order.",
        "- Not all of a drain is CPU work: each task of gen.py's pipeline sleeps 20 ms "
        "(%.1f s of the %d builds, one Luigi worker per build), and every build's start "
        "and end are durable commits to the store." % (0.02 * h["builds"], h["builds"]),
        "- Both \"hosts\" are clones on this one 2-core machine, sharing its CPUs, disk "
        "and the PostgreSQL server with each other: the speedup shows the coordination "
        "overhead (claims, pulls, leases, the shared lineage) and how far the builds "
        "scale onto the second core, not what a second machine would add.", ""]


def write_section(result):
    """Replace (or append) the section in BENCHMARKS.md, leaving the rest alone."""
    text = ""
    if os.path.exists(MARKDOWN):
        with open(MARKDOWN) as f:
            text = f.read()
    lines = text.split("\n")
    try:
        start = lines.index(HEADING)
    except ValueError:
        start = None
    section = markdown(result)
    if start is None:
        while lines and lines[-1] == "":
            lines.pop()
        lines += [""] + section
    else:
        end = next((i for i in range(start + 1, len(lines))
                    if lines[i].startswith("## ")), len(lines))
        lines[start:end] = section
    with open(MARKDOWN, "w") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: size small, %(pushes)d pushes, %(entries)d entries, "
                         "one round" % QUICK)
    ap.add_argument("--markdown", action="store_true",
                    help="only write the section of BENCHMARKS.md again from "
                         "benchmarks/results/scaleout.json")
    args = ap.parse_args()
    if args.markdown:
        with open(RESULT) as f:
            return write_section(json.load(f))
    sys.path.insert(0, HERE)
    sys.path.insert(0, ROOT)
    import run as bench  # run(), HG, ENV, machine()

    p = QUICK if args.quick else FULL
    work = os.path.join(bench.OUT, "scaleout")
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    try:
        server = start_server()
    except Failed as e:
        sys.exit("benchmark failed: %s" % e)
    try:
        print("queue claims: %d entries, SQLite and PostgreSQL %s" % (
            p["entries"], server.version), flush=True)
        raw, fsyncs = claims(server, os.path.join(work, "queues"), p["entries"],
                             p["claim_rounds"])
        claim = {"entries": p["entries"], "rounds": p["claim_rounds"],
                 "fsync_ms": fsyncs, "per_round": per_round(raw, fsyncs),
                 "figures": claim_figures(raw, p["entries"]), "raw": compact(raw)}
        print("build hosts: %s, %d pushes" % (p["size"], p["pushes"]), flush=True)
        hosts = Hosts(bench, server, p["size"], p["pushes"], p["tasks"],
                      os.path.join(work, "hosts"))
        base, heads = hosts.prepare()
        hraw, builds = hosts.measure(heads, p["rounds"])
        import gen

        files, tasks = gen.SIZES[p["size"]]
        result = {"quick": args.quick, "machine": bench.machine(),
                  "load_average": {"start": load_start, "end": os.getloadavg()[0]},
                  "postgresql": server.version, "claims": claim,
                  "hosts": {"size": p["size"], "files": files, "tasks": tasks,
                            "pushes": p["pushes"], "per_push": p["tasks"],
                            "tasks_changed": hosts.chosen, "rounds": p["rounds"],
                            "builds": builds,
                            "base": base, "heads": heads, "raw": hraw,
                            "figures": hosts_figures(hraw, p["pushes"])}}
    except (Failed, bench.Failed) as e:
        sys.exit("benchmark failed: %s" % e)
    finally:
        server.stop()
    os.makedirs(RESULTS, exist_ok=True)
    with open(RESULT, "w") as f:
        json.dump(result, f, indent=1)
    write_section(result)
    print("\n".join(markdown(result)))
    print("written: BENCHMARKS.md (%s), %s in %.0fs" % (
        HEADING[3:], os.path.relpath(RESULT, ROOT), time.perf_counter() - started))


if __name__ == "__main__":
    main()
