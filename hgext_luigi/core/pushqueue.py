"""The durable queue of push triggers (table ``entries`` of ``.hg/luigi/lineage.db``,
beside lineage and the audit log; a ``queue.db`` of an older version is
imported on first open).

Plain Python (``sqlite3``, no Mercurial, no Luigi).  One entry per new head of a
push.  Life of an entry:

``incoming``  written by the ``pretxnchangegroup`` hook, inside the push's
              transaction but committed to SQLite at once: a crash after the
              repository transaction closes cannot lose the trigger.
``pending``   the push's transaction closed (``changegroup`` hook); or an
              ``incoming`` entry older than the lease whose head is in the
              repository (the server died between the two hooks).
``running``   claimed by a worker, which holds a lease it renews while it works;
              an entry whose lease ran out (its worker died) is claimed again.
``done`` / ``failed``
              the run's outcome and summary; ``covered_by`` names the entry whose
              (newer, descendant) head was built instead.
``skipped``   nothing to build: ``[luigi skip]`` or a branch ``[luigi] branches``
              leaves out.

An ``incoming`` entry of a transaction that aborts is deleted (``txnabort``), or
dropped later when its head never appeared.  Every state change is one short
``BEGIN IMMEDIATE`` transaction, so two workers never claim the same entry.
"""

import json
import os

from . import audit as auditmod
from . import database

STATES = ("incoming", "pending", "running", "done", "failed", "skipped")

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    head TEXT NOT NULL, branch TEXT, pusher TEXT, author TEXT, source TEXT,
    created REAL NOT NULL, updated REAL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    force INTEGER NOT NULL DEFAULT 0, txnid TEXT,
    owner TEXT, lease_until REAL, run_id TEXT, covered_by INTEGER,
    summary TEXT, error TEXT, identity TEXT);
CREATE INDEX IF NOT EXISTS entries_state ON entries(state, branch);
CREATE INDEX IF NOT EXISTS entries_txn ON entries(txnid);
""" + auditmod.SCHEMA


# columns added since the first release: (name, type), added to older queues
_ADDED_COLUMNS = (("author", "TEXT"), ("identity", "TEXT"))


class QueueError(Exception):
    pass


def _add_missing_columns(db):
    """Bring a queue written by an older version up to the schema.  Checked again
    inside the transaction: another process may be doing the same."""
    def missing():
        have = {r["name"] for r in db.execute("PRAGMA table_info(entries)")}
        return [(n, t) for n, t in _ADDED_COLUMNS if n not in have]

    if db.dialect != "sqlite" or not missing():
        return  # a PostgreSQL store changes by 'hg luigi-store --upgrade' alone
    with db.transaction():
        for name, kind in missing():
            db.execute("ALTER TABLE entries ADD COLUMN %s %s" % (name, kind))


def _import_legacy(db, path):
    """Move the entries of ``queue.db`` (where older versions kept the queue)
    into this database, once; the old file is kept as ``queue.db.imported``."""
    if db.dialect != "sqlite":
        return
    legacy = os.path.join(os.path.dirname(path), "queue.db")
    if not os.path.exists(legacy) or os.path.abspath(legacy) == os.path.abspath(path):
        return
    db.execute("ATTACH DATABASE ? AS legacy", (legacy,))
    try:
        have = {r["name"] for r in db.execute("PRAGMA legacy.table_info(entries)")}
        cols = [r["name"] for r in db.execute("PRAGMA main.table_info(entries)")
                if r["name"] in have]
        with db.transaction():
            if cols and db.execute("SELECT COUNT(*) FROM main.entries").fetchone()[0] == 0:
                db.execute("INSERT INTO main.entries(%s) SELECT %s FROM legacy.entries"
                           % (", ".join(cols), ", ".join(cols)))
    finally:
        db.execute("DETACH DATABASE legacy")
    os.replace(legacy, legacy + ".imported")
    for suffix in ("-wal", "-shm"):
        if os.path.exists(legacy + suffix):
            os.unlink(legacy + suffix)


class Queue:
    """``audit``: the :class:`audit.Chain` each state change appends its record
    to, in its own transaction (None: no records)."""

    def __init__(self, path, audit=None):
        self.path = path
        self.audit = audit
        try:
            # synchronous FULL: an acknowledged trigger survives a power loss
            self._db = database.open_database(path, SCHEMA, synchronous="FULL")
            _add_missing_columns(self._db)
            _import_legacy(self._db, path)
        except database.ERRORS + (OSError,) as e:
            raise QueueError("cannot open queue %s: %s" % (database.shown(path), e))

    def _record(self, db, kind, data, entry=None, **columns):
        if self.audit is None:
            return
        if entry is not None:
            columns.setdefault("actor", entry["pusher"])
            columns.setdefault("changeset", entry["head"])
            columns.setdefault("run_id", entry["run_id"])
            data = dict(data, entry=entry["id"])
        self.audit.append(db, kind, data, **columns)

    def record_decision(self, kind, data, **columns):
        """An audit record of its own: a push refused, a gate or ACL verdict."""
        with self._tx() as db:
            self._record(db, kind, data, **columns)

    def close(self):
        self._db.close()

    def _tx(self):
        return self._db.transaction()

    # -- the push side --------------------------------------------------------

    def record(self, entries, txnid):
        """Record the heads of a push still in its transaction.  ``entries``: dicts
        with head, branch, pusher, author (the head's committer), source, force,
        identity (``{"user", "groups"}``: the pusher as access control knows
        them, for the worker's check) and
        optionally state ('skipped') and summary.  Returns their ids."""
        now = self._db.now()
        ids = []
        with self._tx() as db:
            for e in entries:
                cur = db.execute(
                    "INSERT INTO entries(head, branch, pusher, author, source, created,"
                    " updated, state, force, txnid, summary, identity)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (e["head"], e.get("branch"), e.get("pusher"), e.get("author"),
                     e.get("source"), now, now, e.get("state", "incoming"),
                     int(bool(e.get("force"))), txnid, e.get("summary"),
                     json.dumps(e.get("identity") or {})))
                ids.append(cur.fetchone()[0])
        return ids

    def confirm(self, txnid):
        """The push's transaction closed: its entries become pending."""
        with self._tx() as db:
            db.execute("UPDATE entries SET state = 'pending', updated = ? "
                       "WHERE txnid = ? AND state = 'incoming'", (self._db.now(), txnid))
            rows = [dict(r) for r in db.execute(
                "SELECT * FROM entries WHERE txnid = ? ORDER BY id", (txnid,))]
            if rows:
                self._record(db, "push-accepted", {
                    "source": rows[0]["source"], "entries": [r["id"] for r in rows],
                    "heads": [r["head"] for r in rows],
                    "states": [r["state"] for r in rows]},
                    actor=rows[0]["pusher"], changeset=rows[-1]["head"])
            return [r["id"] for r in rows]

    def abort(self, txnid):
        """The push's transaction rolled back: forget its entries."""
        with self._tx() as db:
            db.execute("DELETE FROM entries WHERE txnid = ?", (txnid,))

    # -- the worker side --------------------------------------------------------

    def recover(self, older_than, exists):
        """``incoming`` entries older than ``older_than`` seconds: pending when
        ``exists(head)`` (the push closed but its confirmation was lost), deleted
        otherwise (its transaction never closed)."""
        limit = self._db.now() - older_than
        rows = self._db.execute("SELECT id, head FROM entries WHERE state = 'incoming' "
                                "AND created < ?", (limit,)).fetchall()
        if not rows:
            return 0
        with self._tx() as db:
            for r in rows:
                entry = self.get(r["id"])
                if entry is None or entry["state"] != "incoming":
                    continue
                if exists(r["head"]):
                    db.execute("UPDATE entries SET state = 'pending', updated = ? "
                               "WHERE id = ? AND state = 'incoming'", (self._db.now(), r["id"]))
                    self._record(db, "queue-recovered", {"state": "pending"}, entry)
                else:
                    db.execute("DELETE FROM entries WHERE id = ? AND state = 'incoming'",
                               (r["id"],))
                    self._record(db, "queue-recovered", {"state": "dropped"}, entry)
        return len(rows)

    def claim(self, owner, lease, max_attempts, only=None):
        """Take the oldest claimable entry for ``owner`` (pending, or running with an
        expired lease: its worker died) and hold it for ``lease`` seconds.  With
        ``only``, take that entry id or nothing.  An entry whose worker died
        ``max_attempts`` times becomes failed.  Returns the entry, or None."""
        now = self._db.now()
        with self._tx() as db:
            dead = db.execute(
                "SELECT id, attempts FROM entries WHERE state = 'running' AND covered_by"
                " IS NULL AND lease_until < ? AND attempts >= ?", (now, max_attempts))
            for row in dead.fetchall():
                error = ("gave up after %d attempts: the worker died each time"
                         % row["attempts"])
                db.execute("UPDATE entries SET state = 'failed', error = ?, owner = NULL,"
                           " lease_until = NULL, updated = ? WHERE id = ? OR covered_by = ?",
                           (error, now, row["id"], row["id"]))
            sql = ("SELECT * FROM entries WHERE covered_by IS NULL AND (state = 'pending'"
                   " OR (state = 'running' AND lease_until < ?))")
            args = [now]
            if only is not None:
                sql += " AND id = ?"
                args.append(only)
            # on PostgreSQL, a row another worker is claiming is passed over
            lock = " FOR UPDATE SKIP LOCKED" if db.dialect == "postgresql" else ""
            row = db.execute(sql + " ORDER BY id LIMIT 1" + lock, args).fetchone()
            if row is None:
                return None
            db.execute("UPDATE entries SET state = 'running', owner = ?, lease_until = ?,"
                       " attempts = attempts + 1, updated = ? WHERE id = ?",
                       (owner, now + lease, now, row["id"]))
            entry = self.get(row["id"])
            self._record(db, "queue-taken", {"worker": owner, "attempt": entry["attempts"]},
                         entry)
            return entry

    def same_branch_pending(self, entry):
        """The other pending entries of ``entry``'s branch, oldest first."""
        same = "IS" if self._db.dialect == "sqlite" else "IS NOT DISTINCT FROM"
        rows = self._db.execute(
            "SELECT * FROM entries WHERE state = 'pending' AND covered_by IS NULL AND"
            " branch %s ? AND id != ? ORDER BY id" % same, (entry["branch"], entry["id"]))
        return [dict(r) for r in rows.fetchall()]

    def coalesce(self, owner, claimed, main, covered, lease):
        """Build ``main``'s head for the claimed entry and the ``covered`` pending
        entries too (their heads are ancestors of it).  ``main`` is claimed if it is
        not ``claimed``; the others are marked covered by it and closed with it.
        Returns the main entry, or None if another worker took it first."""
        now = self._db.now()
        with self._tx() as db:
            if main != claimed:
                cur = db.execute("UPDATE entries SET state = 'running', owner = ?,"
                                 " lease_until = ?, attempts = attempts + 1, updated = ?"
                                 " WHERE id = ? AND state = 'pending'",
                                 (owner, now + lease, now, main))
                if cur.rowcount != 1:
                    return None
                db.execute("UPDATE entries SET covered_by = ?, lease_until = NULL,"
                           " updated = ? WHERE id = ? AND owner = ?",
                           (main, now, claimed, owner))
            for cid in covered:
                if cid in (main, claimed):
                    continue
                db.execute("UPDATE entries SET state = 'running', owner = ?, covered_by = ?,"
                           " attempts = attempts + 1, updated = ? WHERE id = ? AND state ="
                           " 'pending'", (owner, main, now, cid))
            self._record(db, "queue-coalesced", {"worker": owner, "covered": sorted(
                {claimed, *covered} - {main})}, self.get(main))
        return self.get(main)

    def heartbeat(self, entry_id, owner, lease):
        """Renew the lease; False when the entry is no longer ours."""
        now = self._db.now()
        with self._tx() as db:
            cur = db.execute("UPDATE entries SET lease_until = ?, updated = ? WHERE id = ?"
                             " AND owner = ? AND state = 'running'",
                             (now + lease, now, entry_id, owner))
            return cur.rowcount == 1

    def finish(self, entry_id, owner, state, summary=None, error=None, run_id=None):
        """Close a claimed entry (and the entries it covers).  False when it is no
        longer ours (its lease ran out and another worker took it)."""
        now = self._db.now()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE entries SET state = ?, summary = ?, error = ?, run_id ="
                " COALESCE(?, run_id), owner = NULL, lease_until = NULL, updated = ?"
                " WHERE id = ? AND owner = ? AND state = 'running'",
                (state, summary, error, run_id, now, entry_id, owner))
            if cur.rowcount != 1:
                return False
            self._record(db, "queue-finished", {"state": state, "summary": summary,
                                                "error": error},
                         self.get(entry_id))
            db.execute(
                "UPDATE entries SET state = ?, summary = ?, error = ?, run_id ="
                " COALESCE(?, run_id), owner = NULL, lease_until = NULL, updated = ?"
                " WHERE covered_by = ? AND state = 'running'",
                (state, "covered by entry %d" % entry_id, error, run_id, now, entry_id))
            return True

    def release(self, entry_id, owner):
        """Give a claimed entry back untouched (the worker is stopping)."""
        with self._tx() as db:
            self._record(db, "queue-released", {"worker": owner}, self.get(entry_id))
            db.execute("UPDATE entries SET state = 'pending', owner = NULL, lease_until ="
                       " NULL, attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, updated = ? WHERE"
                       " (id = ? OR covered_by = ?) AND owner = ? AND state = 'running'",
                       (self._db.now(), entry_id, entry_id, owner))
            db.execute("UPDATE entries SET covered_by = NULL WHERE covered_by = ? AND"
                       " state = 'pending'", (entry_id,))

    def retry(self, entry_id, actor=None):
        """Requeue a failed entry for ``actor``.  Returns the entry, or raises
        QueueError."""
        with self._tx() as db:
            row = db.execute("SELECT state FROM entries WHERE id = ?", (entry_id,)).fetchone()
            if row is None:
                raise QueueError("no queue entry %d" % entry_id)
            if row["state"] != "failed":
                raise QueueError("queue entry %d is %s, not failed" % (entry_id, row["state"]))
            db.execute("UPDATE entries SET state = 'pending', attempts = 0, error = NULL,"
                       " covered_by = NULL, updated = ? WHERE id = ?", (self._db.now(), entry_id))
            entry = self.get(entry_id)
            self._record(db, "queue-retry", {"pusher": entry["pusher"]}, entry, actor=actor)
        return self.get(entry_id)

    # -- reading ------------------------------------------------------------------

    def get(self, entry_id):
        row = self._db.execute("SELECT * FROM entries WHERE id = ?", (entry_id,)).fetchone()
        return dict(row) if row else None

    def entries(self, states=None, limit=None):
        sql = "SELECT * FROM entries"
        args = []
        if states:
            sql += " WHERE state IN (%s)" % ",".join("?" * len(states))
            args.extend(states)
        sql += " ORDER BY id"
        if limit:
            sql = "SELECT * FROM (%s DESC LIMIT %d) AS recent ORDER BY id" % (sql, int(limit))
        return [dict(r) for r in self._db.execute(sql, args)]


def open_queue(path, audit=None):
    return Queue(path, audit)
