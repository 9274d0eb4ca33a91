"""The lineage store: which changeset, run and inputs produced every output.

Plain Python (``sqlite3`` from the standard library, no Mercurial and no Luigi) so
that both sides use it: the hg process writes runs, their plans and every task
build (as the runner asks, ``core.builds``); the Luigi runner subprocess and its
forked workers only read it (``complete()``, the inputs of a build).

Everything goes through :class:`LineageStore`; :func:`open_store` picks the
implementation.  Only SQLite exists today; a server database can be added behind
the same methods.  Concurrency: WAL journal, a generous busy timeout and one short
transaction per write, so several runs and workers can write at once without
corrupting anything.

Output paths under the output root are stored relative to it (schema 2), so a
repository keeps its lineage when it is moved or restored elsewhere; the store
converts at its boundary and every method takes and gives absolute paths.
"""

import hashlib
import json
import os
import re
import time

from . import audit as auditmod
from . import database
from . import objects

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs(
    id TEXT PRIMARY KEY, rev TEXT NOT NULL, started REAL, ended REAL,
    "user" TEXT, trigger TEXT, status TEXT, scheduler TEXT, summary TEXT);
CREATE TABLE IF NOT EXISTS run_tasks(
    run_id TEXT NOT NULL, key TEXT NOT NULL, family TEXT, task_id TEXT,
    changeset TEXT, base TEXT, affected INTEGER, reasons TEXT, outcome TEXT,
    seconds REAL, status TEXT, PRIMARY KEY(run_id, key));
CREATE TABLE IF NOT EXISTS builds(
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, task_id TEXT NOT NULL,
    key TEXT NOT NULL, family TEXT, params TEXT, changeset TEXT NOT NULL, base TEXT,
    reasons TEXT, status TEXT NOT NULL, error TEXT, traceback TEXT,
    started REAL, ended REAL, "user" TEXT, trigger TEXT, extra TEXT);
CREATE INDEX IF NOT EXISTS builds_key ON builds(key, status);
CREATE INDEX IF NOT EXISTS builds_task ON builds(task_id, status);
CREATE INDEX IF NOT EXISTS builds_family ON builds(family);
CREATE TABLE IF NOT EXISTS outputs(
    build_id INTEGER NOT NULL, path TEXT NOT NULL, size INTEGER, sha256 TEXT);
CREATE INDEX IF NOT EXISTS outputs_path ON outputs(path);
CREATE INDEX IF NOT EXISTS outputs_build ON outputs(build_id);
CREATE TABLE IF NOT EXISTS inputs(
    build_id INTEGER NOT NULL, task_id TEXT, key TEXT, changeset TEXT, outputs TEXT,
    digests TEXT);
CREATE INDEX IF NOT EXISTS inputs_build ON inputs(build_id);
CREATE TABLE IF NOT EXISTS facts(
    build_id INTEGER NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, value TEXT);
CREATE INDEX IF NOT EXISTS facts_build ON facts(build_id);
CREATE TABLE IF NOT EXISTS checks(
    key TEXT PRIMARY KEY, since TEXT NOT NULL, stamp TEXT NOT NULL, node TEXT);
CREATE TABLE IF NOT EXISTS leases(
    task_id TEXT NOT NULL, changeset TEXT NOT NULL, owner TEXT NOT NULL,
    until REAL NOT NULL, PRIMARY KEY(task_id, changeset));
INSERT INTO meta(name, value) VALUES ('schema', '%d') ON CONFLICT(name) DO NOTHING;
""" % SCHEMA_VERSION + auditmod.SCHEMA


class StoreError(Exception):
    """The lineage store cannot be read or written."""


def file_digest(path):
    """(size, sha256) of a file, or of a directory's files taken in sorted order."""
    if os.path.isdir(path):
        h = hashlib.sha256()
        size = 0
        for top, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(top, name)
                fsize, fhash = file_digest(full)
                size += fsize
                rel = os.path.relpath(full, path)
                h.update(("%s\0%s\n" % (rel, fhash)).encode("utf-8", "surrogateescape"))
        return size, h.hexdigest()
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            size += len(chunk)
            h.update(chunk)
    return size, h.hexdigest()


def _loads(text, default):
    if text is None:
        return default
    return json.loads(text)


_CHANGESET = re.compile(r"[0-9a-f]{40}\Z")


def relative_to(path, root):
    """``path`` relative to ``root`` when it lies strictly inside it, else None."""
    if objects.is_url(path) or objects.is_url(root):  # S3: the key under the root
        return objects.relative_to(path, root)
    path = os.path.normpath(path)
    try:
        inside = os.path.commonpath([path, root]) == root
    except ValueError:  # one relative, the other absolute
        return None
    if not inside or path == root:
        return None
    return os.path.relpath(path, root)


def migrated_path(path, changeset, root):
    """The schema 2 form of a path recorded by schema 1 (absolute): relative to
    the output root when inside it; else, when the build's changeset is one of
    its folders (a stamped output of a repository since moved), the part from that
    folder on; else unchanged."""
    if not os.path.isabs(path) or objects.is_url(root):  # a file is never under S3
        return path
    rel = relative_to(path, root)
    if rel is not None:
        return rel
    parts = path.split(os.sep)
    if changeset and _CHANGESET.match(changeset) and changeset in parts[:-1]:
        last = len(parts) - 2 - parts[-2::-1].index(changeset)
        return os.sep.join(parts[last:])
    return path


class LineageStore:
    """SQLite-backed lineage store (``.hg/luigi/lineage.db``).

    ``output_root``: where stamped outputs live (default: ``outputs`` beside the
    store, the default of ``[luigi] output-root``).  ``audit``: the
    :class:`audit.Chain` every write appends its record to, in the same
    transaction; a store opened without one (the runner's) only reads."""

    def __init__(self, path, output_root=None, audit=None):
        self.path = path
        self.audit = audit
        if output_root is None:
            output_root = os.path.join(os.path.dirname(os.path.abspath(path)), "outputs")
        self.output_root = (output_root.rstrip("/") if objects.is_url(output_root)
                            else os.path.normpath(os.path.abspath(output_root)))
        try:
            self._db = database.open_database(path, SCHEMA)
            # several hosts' runs at once: leases say which is alive (a SQLite
            # file is one repository's, whose run lock lets one run at a time)
            self.shared = self._db.dialect != "sqlite"
        except database.ERRORS as e:
            raise StoreError("cannot open lineage store %s: %s" % (database.shown(path), e))
        try:
            self._migrate()
            if audit is not None:
                auditmod.start(self._db, audit)
        except database.ERRORS + (ValueError,) as e:
            self._db.close()
            raise StoreError("cannot migrate lineage store %s: %s"
                             % (database.shown(path), e))

    def _migrate(self):
        """Bring a schema 1 store (absolute output paths) to schema 2, in place, in
        one transaction; a no-op once done, whoever did it.  Then the columns
        added since (the digests of a build's inputs).  A PostgreSQL store
        starts at the current schema (``hg luigi-store --upgrade``)."""
        if self._db.dialect != "sqlite":
            return
        self._add_columns()
        if self._schema(self._db) >= 2:
            return  # without taking the write lock
        with self._tx() as db:
            if self._schema(db) >= 2:
                return  # another process migrated it meanwhile
            columns = [c["name"] for c in db.execute("PRAGMA table_info(run_tasks)")]
            if "status" not in columns:  # the plan's status: external, affected...
                db.execute("ALTER TABLE run_tasks ADD COLUMN status TEXT")
            for o in db.execute("SELECT o.rowid AS id, o.path, b.changeset FROM outputs o"
                                " LEFT JOIN builds b ON b.id = o.build_id").fetchall():
                new = migrated_path(o["path"], o["changeset"], self.output_root)
                if new != o["path"]:
                    db.execute("UPDATE outputs SET path = ? WHERE rowid = ?", (new, o["id"]))
            for i in db.execute("SELECT rowid AS id, changeset, outputs FROM inputs"
                                " WHERE outputs IS NOT NULL").fetchall():
                old = _loads(i["outputs"], [])
                new = [migrated_path(p, i["changeset"], self.output_root) for p in old]
                if new != old:
                    db.execute("UPDATE inputs SET outputs = ? WHERE rowid = ?",
                               (json.dumps(new), i["id"]))
            db.execute("INSERT OR REPLACE INTO meta(name, value) VALUES ('schema', ?)",
                       (str(SCHEMA_VERSION),))

    def _add_columns(self):
        """``inputs.digests`` (what each input held), absent from older stores:
        their builds show it as unknown."""
        def missing():
            return "digests" not in {c["name"] for c in
                                     self._db.execute("PRAGMA table_info(inputs)")}
        if missing():
            with self._tx() as db:
                if missing():
                    db.execute("ALTER TABLE inputs ADD COLUMN digests TEXT")

    @staticmethod
    def _schema(db):
        row = db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
        return int(row["value"]) if row else 0

    def _stored(self, path):
        """How ``path`` (absolute, or relative to the current directory; or an
        ``s3://`` URL) is recorded."""
        path = path if objects.is_url(path) else os.path.abspath(path)
        rel = relative_to(path, self.output_root)
        return path if rel is None else rel

    def _absolute(self, stored):
        """The absolute path (or ``s3://`` URL) of a recorded path."""
        if os.path.isabs(stored) or objects.is_url(stored):
            return stored
        if objects.is_url(self.output_root):  # a key under an S3 output root
            return self.output_root + "/" + stored
        return os.path.join(self.output_root, stored)

    def close(self):
        self._db.close()

    def _tx(self):
        return self._db.transaction()

    def _record(self, db, kind, data=None, **columns):
        """Append an audit record inside the open transaction ``db``."""
        if self.audit is not None:
            self.audit.append(db, kind, data, **columns)

    def record(self, kind, data=None, **columns):
        """An audit record of its own (a decision that changes no other state):
        ``columns`` actor, changeset, task, run_id."""
        with self._tx() as db:
            self._record(db, kind, data, **columns)

    # -- runs (written by the hg side) ------------------------------------

    def interrupt_stale(self, error="interrupted: the run was killed before it finished",
                        shared=False):
        """Mark runs and builds left 'running' by a run that died (SIGKILL, power
        loss) as failed.  On a repository's own store, call it while holding the
        run lock, when no other run can be in progress; on a ``shared`` store,
        only runs whose lease (:meth:`take_lease`) ran out count as dead.
        Returns the number of builds marked."""
        now = self._db.now()
        dead = " AND NOT EXISTS (SELECT 1 FROM leases WHERE owner = %s AND until >= ?)"
        with self._tx() as db:
            where, args = "status = 'running'", []
            runs = db.execute("SELECT id, rev, \"user\" FROM runs WHERE " + where
                              + (dead % "runs.id" if shared else ""),
                              [now] if shared else []).fetchall()
            stale = [r["id"] for r in db.execute(
                "SELECT id FROM builds b WHERE " + where + (dead % "b.run_id" if shared
                                                            else ""),
                [now] if shared else [])]
            for r in runs:  # still running: it may have ended since it was read
                if db.execute("UPDATE runs SET status = 'interrupted', ended = ? WHERE"
                              " id = ? AND status = 'running'", (now, r["id"])
                              ).rowcount != 1:
                    continue
                self._record(db, "run-ended", {"status": "interrupted", "summary": error,
                                               "ended": now},
                             actor=r["user"], changeset=r["rev"], run_id=r["id"])
            marked = 0
            for build_id in stale:
                if db.execute("UPDATE builds SET status = 'failed', error = ?, ended = ?"
                              " WHERE id = ? AND status = 'running'",
                              (error, now, build_id)).rowcount != 1:
                    continue
                marked += 1
                self._record_build(db, build_id)
            db.execute("DELETE FROM leases WHERE until < ?" if shared else
                       "DELETE FROM leases", [now] if shared else [])
            return marked

    # -- leases: which run builds a task at a changeset, across hosts --------

    def take_lease(self, task_id, changeset, owner, seconds):
        """Hold ``(task_id, changeset)`` for ``owner`` (a run id) ``seconds``
        long, in one statement: True, or False while another owner's lease
        lasts.  Runs hold the tasks they build by key, and ``("run", their
        id)`` while they are alive."""
        now = self._db.now()
        row = self._db.execute(
            "INSERT INTO leases(task_id, changeset, owner, until) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(task_id, changeset) DO UPDATE SET owner = excluded.owner,"
            " until = excluded.until WHERE leases.until < ? OR leases.owner ="
            " excluded.owner RETURNING owner",
            (task_id, changeset, owner, now + seconds, now)).fetchone()
        return row is not None

    def lease_holder(self, task_id, changeset):
        """``(owner, until)`` of a live lease, or None."""
        row = self._db.execute("SELECT owner, until FROM leases WHERE task_id = ? AND"
                               " changeset = ? AND until >= ?",
                               (task_id, changeset, self._db.now())).fetchone()
        return (row["owner"], row["until"]) if row else None

    def planned_build(self, run_id, key, changeset):
        """Whether run ``run_id`` planned to build task ``key`` at ``changeset``."""
        return self._db.execute("SELECT 1 FROM run_tasks WHERE run_id = ? AND key = ? AND"
                                " changeset = ? AND affected = 1",
                                (run_id, key, changeset)).fetchone() is not None

    def renew_leases(self, owner, seconds):
        """Extend every lease of ``owner``: the run is alive.  Returns how many."""
        return self._db.execute("UPDATE leases SET until = ? WHERE owner = ?",
                                (self._db.now() + seconds, owner)).rowcount

    def drop_leases(self, owner, task_id=None, changeset=None):
        """Give up ``owner``'s leases (one task's, with ``task_id``)."""
        if task_id is None:
            self._db.execute("DELETE FROM leases WHERE owner = ?", (owner,))
        else:
            self._db.execute("DELETE FROM leases WHERE owner = ? AND task_id = ? AND"
                             " changeset = ?", (owner, task_id, changeset))

    def begin_run(self, run_id, rev, user, trigger, scheduler, plan_rows):
        """Record a run and its plan: one row per task with stamp, base, reasons and
        status (``affected``, ``upstream``, ``unaffected``, ``external``)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO runs(id, rev, started, \"user\", trigger, status, scheduler)"
                " VALUES (?, ?, ?, ?, ?, 'running', ?)",
                (run_id, rev, time.time(), user, trigger, scheduler),
            )
            db.executemany(
                "INSERT INTO run_tasks(run_id, key, family, task_id, changeset, base,"
                " affected, reasons, outcome, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        run_id,
                        r["key"],
                        r["family"],
                        r.get("task_id"),
                        r["changeset"],
                        r.get("base"),
                        int(bool(r["affected"])),
                        json.dumps(r.get("reasons", [])),
                        r.get("outcome", "pending"),
                        r.get("status"),
                    )
                    for r in plan_rows
                ],
            )
            self._record(db, "run-started", dict(
                run_state(db, run_id), tasks=len(plan_rows),
                to_build=sum(1 for r in plan_rows if r["affected"])),
                actor=user, changeset=rev, run_id=run_id)

    def end_run(self, run_id, status, outcomes, summary=None):
        """Close a run; ``outcomes`` maps task key -> (outcome, task_id, seconds)."""
        with self._tx() as db:
            for key, (outcome, task_id, seconds) in outcomes.items():
                db.execute(
                    "UPDATE run_tasks SET outcome = ?, task_id = COALESCE(?, task_id),"
                    " seconds = ? WHERE run_id = ? AND key = ?",
                    (outcome, task_id, seconds, run_id, key),
                )
            db.execute(
                "UPDATE runs SET ended = ?, status = ?, summary = ? WHERE id = ?",
                (time.time(), status, summary, run_id),
            )
            run = db.execute("SELECT rev, \"user\" FROM runs WHERE id = ?", (run_id,)).fetchone()
            self._record(db, "run-ended", {"status": status, "summary": summary,
                                           "ended": db.execute(
                                               "SELECT ended FROM runs WHERE id = ?",
                                               (run_id,)).fetchone()["ended"]},
                         actor=run["user"] if run else None,
                         changeset=run["rev"] if run else None, run_id=run_id)

    def latest_run(self, rev):
        row = self._db.execute(
            "SELECT * FROM runs WHERE rev = ? ORDER BY started DESC LIMIT 1", (rev,)
        ).fetchone()
        return dict(row) if row else None

    def run_tasks(self, run_id):
        rows = self._db.execute(
            "SELECT * FROM run_tasks WHERE run_id = ? ORDER BY rowid", (run_id,)
        ).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["reasons"] = _loads(d["reasons"], [])
            d["affected"] = bool(d["affected"])
            out.append(d)
        return out

    def has_records(self):
        return self._db.execute("SELECT 1 FROM builds LIMIT 1").fetchone() is not None

    # -- builds (written by the runner) -------------------------------------

    def start_build(self, run_id, task_id, key, family, params, changeset, base,
                    reasons, user, trigger, credentials=None, facts=None):
        """Record a build as running.  ``credentials``: what was issued to it
        (role, session name, assumed-role ARN, access key id, expiry; never a
        secret), recorded with it in lineage and the audit log.  ``facts``:
        what it depends on, ``{kind: {name: value}}`` (``watched`` and
        ``source`` files with their Mercurial file node, ``config`` sections
        with a digest, ``runtime`` versions)."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO builds(run_id, task_id, key, family, params, changeset, base,"
                " reasons, status, started, \"user\", trigger, extra)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?) RETURNING id",
                (run_id, task_id, key, family, json.dumps(params, sort_keys=True),
                 changeset, base, json.dumps(reasons or []), time.time(), user, trigger,
                 json.dumps({"credentials": credentials}) if credentials else None),
            )
            build_id = cur.fetchone()[0]
            if credentials:
                self._record(db, "credentials", dict(credentials, build=build_id),
                             actor=user, changeset=changeset, task=key, run_id=run_id)
            db.executemany("INSERT INTO facts(build_id, kind, name, value) VALUES (?, ?, ?, ?)",
                           [(build_id, kind, name, value)
                            for kind, values in sorted((facts or {}).items())
                            for name, value in sorted(values.items())])
            self._record_build(db, build_id)
            return build_id

    def facts(self, build_id):
        """``{kind: {name: value}}`` recorded for a build ({} for a build of an
        older version, which recorded none)."""
        out = {}
        for r in self._db.execute("SELECT kind, name, value FROM facts WHERE build_id = ?",
                                  (build_id,)):
            out.setdefault(r["kind"], {})[r["name"]] = r["value"]
        return out

    def resume_build(self, build_id, credentials=None):
        """A running build started again (Luigi runs a task again once the
        dependencies its ``run()`` yielded are built), with new credentials."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM builds WHERE id = ?", (build_id,)).fetchone()
            if credentials:
                extra = dict(_loads(row["extra"], None) or {}, credentials=credentials)
                db.execute("UPDATE builds SET extra = ? WHERE id = ?",
                           (json.dumps(extra), build_id))
                self._record(db, "credentials", dict(credentials, build=build_id),
                             actor=row["user"], changeset=row["changeset"], task=row["key"],
                             run_id=row["run_id"])
            self._record_build(db, build_id)

    def finish_build(self, build_id, status, error=None, traceback=None,
                     outputs=(), inputs=(), extra=None):
        """Close a running build.  ``outputs``: dicts path/size/sha256; ``inputs``:
        dicts task_id/key/changeset/outputs (list of paths).  False, changing
        nothing, when it is no longer running: recorded as interrupted because
        its run's lease ran out (another host may be building it now)."""
        with self._tx() as db:
            row = db.execute("SELECT extra, status FROM builds WHERE id = ?",
                             (build_id,)).fetchone()
            if row is None or row["status"] != "running":
                return False
            issued = (_loads(row["extra"], None) or {}).get("credentials") if row else None
            if extra and "credentials" in extra:  # the hg side's record alone
                extra = {k: v for k, v in extra.items() if k != "credentials"} or None
            if issued:
                extra = dict(extra or {}, credentials=issued)
            db.execute(
                "UPDATE builds SET status = ?, error = ?, traceback = ?, ended = ?,"
                " extra = ? WHERE id = ?",
                (status, error, traceback, time.time(),
                 json.dumps(extra) if extra is not None else None, build_id),
            )
            db.executemany(
                "INSERT INTO outputs(build_id, path, size, sha256) VALUES (?, ?, ?, ?)",
                [(build_id, self._stored(o["path"]), o.get("size"), o.get("sha256"))
                 for o in outputs],
            )
            db.executemany(
                "INSERT INTO inputs(build_id, task_id, key, changeset, outputs, digests)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(build_id, i.get("task_id"), i.get("key"), i.get("changeset"),
                  json.dumps([self._stored(p) for p in i.get("outputs", [])]),
                  json.dumps(i["digests"]) if i.get("digests") is not None else None)
                 for i in inputs],
            )
            self._record_build(db, build_id)
            return True

    def _record_build(self, db, build_id):
        """The audit record of a build as it now stands in lineage."""
        if self.audit is None:
            return
        state = build_state(db, build_id)
        user, run_id = state.pop("user"), state.pop("run_id")
        self._record(db, "build", state, actor=user, changeset=state["changeset"],
                     task=state["key"], run_id=run_id)

    def has_success(self, task_id, changeset, run_id=None):
        """Whether ``task_id`` was built successfully at ``changeset`` (in ``run_id``
        when given).  This is what makes ``complete()`` a cheap stamp lookup."""
        sql = "SELECT 1 FROM builds WHERE task_id = ? AND changeset = ? AND status = 'success'"
        args = [task_id, changeset]
        if run_id is not None:
            sql += " AND run_id = ?"
            args.append(run_id)
        return self._db.execute(sql + " LIMIT 1", args).fetchone() is not None

    def _chunks(self, sql, ids, size=500):
        """Rows of ``sql`` (with ``{ids}`` for a list of placeholders) for every
        chunk of ``ids``: one query per few hundred builds, not one per build."""
        ids = list(ids)
        for i in range(0, len(ids), size):
            part = ids[i:i + size]
            yield from self._db.execute(sql.format(ids=",".join("?" * len(part))), part)

    def reuse_candidates(self, at=None, limit=5, ancestor=None):
        """``{key: [(changeset, build id)]}`` for every task: its latest successful
        build per changeset, the one at ``at`` first, then the newest; with
        ``ancestor(changeset)``, those at ancestors of ``at`` before the others
        (builds at other branches' heads must not crowd out the one to reuse)."""
        rows = self._db.execute(
            "SELECT key, changeset, MAX(id) AS id, MAX(ended) AS ended FROM builds"
            " WHERE status = 'success' GROUP BY key, changeset").fetchall()
        by_key = {}
        for r in rows:
            by_key.setdefault(r["key"], []).append(r)
        out = {}
        first = ancestor or (lambda changeset: False)
        for key, builds in by_key.items():
            builds.sort(key=lambda r: (first(r["changeset"]), r["ended"] or 0, r["id"]),
                        reverse=True)
            own = [r for r in builds if r["changeset"] == at]
            rest = [r for r in builds if r["changeset"] != at][:limit]
            out[key] = [(r["changeset"], r["id"]) for r in own + rest]
        return out

    def build_details(self, build_ids):
        """``{build id: {"outputs", "overwritten", "inputs"}}``: what reusing each
        build needs, in a few queries for all of them."""
        out = {i: {"outputs": [], "overwritten": [], "inputs": {}} for i in build_ids}
        for r in self._chunks("SELECT build_id, path FROM outputs WHERE build_id IN ({ids})"
                              " ORDER BY build_id, path", out):
            out[r["build_id"]]["outputs"].append(self._absolute(r["path"]))
        # a path that is the same for every revision (a plain task's relative
        # output, an absolute one) holds what a later successful build wrote
        for r in self._chunks(
                "SELECT DISTINCT mine.build_id, o.path FROM outputs mine"
                " JOIN outputs o ON o.path = mine.path AND o.build_id > mine.build_id"
                " JOIN builds b ON b.id = o.build_id AND b.status = 'success'"
                " WHERE mine.build_id IN ({ids}) ORDER BY mine.build_id, o.path", out):
            out[r["build_id"]]["overwritten"].append(self._absolute(r["path"]))
        for r in self._chunks("SELECT build_id, key, changeset FROM inputs"
                              " WHERE build_id IN ({ids})", out):
            out[r["build_id"]]["inputs"][r["key"]] = r["changeset"]
        return out

    # -- checks: how far back planning compares ------------------------------

    def checks(self):
        """``{key: (since, stamp, node)}``: the latest revision ``since`` at which a
        run found that nothing task ``key`` depends on changed since its build at
        ``stamp``, with the digest ``node`` of the task's definition then."""
        return {r["key"]: (r["since"], r["stamp"], r["node"])
                for r in self._db.execute("SELECT key, since, stamp, node FROM checks")}

    def record_checks(self, since, rows):
        """Remember ``(key, stamp, node)`` as checked at ``since``: one row per
        task, replaced by the next run, so the store does not grow with runs."""
        with self._tx() as db:
            db.executemany("INSERT INTO checks(key, since, stamp, node) VALUES (?, ?, ?, ?)"
                           " ON CONFLICT(key) DO UPDATE SET since = excluded.since,"
                           " stamp = excluded.stamp, node = excluded.node",
                           [(key, since, stamp, node) for key, stamp, node in rows])

    # the columns a build is looked up by (never text from elsewhere in SQL)
    _MATCH = ("id", "task_id", "key", "changeset", "run_id", "status")

    def _newest(self, **match):
        """The newest build whose columns have the given values, or None."""
        if not match or not set(match) <= set(self._MATCH):  # kept under python -O
            raise ValueError("look builds up by %s" % ", ".join(self._MATCH))
        where = " AND ".join("%s = ?" % c for c in match)
        row = self._db.execute("SELECT * FROM builds WHERE %s ORDER BY id DESC LIMIT 1"
                               % where, tuple(match.values())).fetchone()
        return self._build_dict(row) if row else None

    def build(self, build_id):
        return self._newest(id=build_id)

    def success_for(self, task_id, changeset):
        return self._newest(task_id=task_id, changeset=changeset, status="success")

    def success_for_key(self, key, changeset):
        return self._newest(key=key, changeset=changeset, status="success")

    def last_build_in_run(self, run_id, key):
        return self._newest(run_id=run_id, key=key)

    def outputs(self, build_id):
        out = []
        for r in self._db.execute(
                "SELECT path, size, sha256 FROM outputs WHERE build_id = ? ORDER BY path",
                (build_id,)):
            d = dict(r)
            d["path"] = self._absolute(d["path"])
            out.append(d)
        return out

    def inputs(self, build_id):
        """What a build consumed: upstream task id, key, changeset, output paths
        and (``digests``, None when not recorded) the sha256 of each."""
        out = []
        for r in self._db.execute(
                "SELECT task_id, key, changeset, outputs, digests FROM inputs"
                " WHERE build_id = ? ORDER BY key", (build_id,)):
            d = dict(r)
            d["outputs"] = [self._absolute(p) for p in _loads(d["outputs"], [])]
            d["digests"] = _loads(d["digests"], None)
            out.append(d)
        return out

    def builds_producing(self, path):
        """Successful builds that recorded ``path`` (absolute) as an output, newest
        first.  Also finds it recorded absolute, as a store that older code
        still writes to may have it."""
        path = path if objects.is_url(path) else os.path.abspath(path)
        rows = self._db.execute(
            "SELECT b.* FROM builds b JOIN outputs o ON o.build_id = b.id"
            " WHERE o.path IN (?, ?) AND b.status = 'success' ORDER BY b.id DESC",
            (self._stored(path), path),
        ).fetchall()
        return [self._build_dict(r) for r in rows]

    def history(self, name):
        """Every build of a task family or task key, oldest first."""
        rows = self._db.execute(
            "SELECT * FROM builds WHERE family = ? OR key = ? OR task_id = ?"
            " ORDER BY id",
            (name, name, name),
        ).fetchall()
        return [self._build_dict(r) for r in rows]

    def _build_dict(self, row):
        d = dict(row)
        d["params"] = _loads(d["params"], {})
        d["reasons"] = _loads(d["reasons"], [])
        d["extra"] = _loads(d["extra"], None)
        return d


class Reuse:
    """``history(key)`` for :func:`plan.classify`: the builds task ``key`` may
    reuse, the one at ``at`` first, then the newest.  Reads the candidates of
    every task and the details of each one's first in a few queries; older
    candidates, rarely needed, one at a time.  ``digest(key)``: the task's
    definition now (:func:`plan.node_digest`); a check recorded under another
    definition does not count."""

    def __init__(self, store, at, digest=None, limit=5, ancestor=None):
        self.store = store
        self.digest = digest
        self.candidates = store.reuse_candidates(at, limit, ancestor)
        self.details = store.build_details([c[0][1] for c in self.candidates.values()])
        self.checks = store.checks() if digest else {}

    def __call__(self, key):
        check = self.checks.get(key)
        for changeset, build_id in self.candidates.get(key, ()):
            details = self.details.get(build_id)
            if details is None:
                details = self.store.build_details([build_id])[build_id]
            build = dict(details, changeset=changeset, build=build_id)
            if check and check[1] == changeset and check[2] == self.digest(key):
                build["since"] = check[0]
            yield build


def build_state(db, build_id):
    """What the audit log records of a build, read from the lineage tables:
    ``--verify`` compares the two."""
    b = db.execute("SELECT * FROM builds WHERE id = ?", (build_id,)).fetchone()
    if b is None:
        return None
    outputs = [[o["path"], o["size"], o["sha256"]] for o in db.execute(
        "SELECT path, size, sha256 FROM outputs WHERE build_id = ? ORDER BY path, rowid",
        (build_id,))]
    inputs = [[i["key"], i["changeset"], _loads(i["outputs"], [])]
              + ([_loads(i["digests"], None)] if i["digests"] is not None else [])
              for i in db.execute(
                  "SELECT key, changeset, outputs, digests FROM inputs WHERE build_id = ?"
                  " ORDER BY key, rowid", (build_id,))]
    facts = [[f["kind"], f["name"], f["value"]] for f in db.execute(
        "SELECT kind, name, value FROM facts WHERE build_id = ? ORDER BY kind, name",
        (build_id,))]
    return {"build": b["id"], "run_id": b["run_id"], "user": b["user"],
            "task_id": b["task_id"], "key": b["key"], "family": b["family"],
            "params": _loads(b["params"], {}), "changeset": b["changeset"],
            "base": b["base"], "reasons": _loads(b["reasons"], []),
            "status": b["status"], "error": b["error"], "traceback": b["traceback"],
            "trigger": b["trigger"], "started": b["started"], "ended": b["ended"],
            "extra": _loads(b["extra"], None), "outputs": outputs, "inputs": inputs,
            **({"facts": hashlib.sha256(json.dumps(facts).encode(
                "utf-8", "surrogatepass")).hexdigest()} if facts else {})}


def run_state(db, run_id):
    """What the audit log records of a run, read from the lineage tables: the
    run's row and a digest of its plan (what was decided, not outcomes)."""
    r = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    if r is None:
        return None
    plan = [[t["key"], t["family"], t["changeset"], t["base"], t["affected"], t["reasons"],
             t["status"]] for t in db.execute(
        "SELECT key, family, changeset, base, affected, reasons, status FROM run_tasks"
        " WHERE run_id = ? ORDER BY key", (run_id,))]
    return {"rev": r["rev"], "user": r["user"], "trigger": r["trigger"],
            "scheduler": r["scheduler"], "started": r["started"],
            "plan": hashlib.sha256(json.dumps(plan, sort_keys=True).encode(
                "utf-8", "surrogatepass")).hexdigest()}


def open_store(path, output_root=None, audit=None):
    """The lineage store at ``path`` (a SQLite file), recording output paths
    relative to ``output_root`` (``Settings.output_root``), and its audit
    records with ``audit`` (an :class:`audit.Chain`; None: read only)."""
    return LineageStore(path, output_root, audit)
