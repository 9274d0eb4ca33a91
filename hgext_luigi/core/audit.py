"""The audit log: one record per decision and action, in a hash chain.

Plain Python (``sqlite3``, ``hmac``; no Mercurial, no Luigi).  The records live
in the ``audit`` table of the lineage store's database and are appended inside
the SQLite transaction that changes the state they describe (a queue entry, a
build, a run), so a record exists exactly when its change does.

Each record holds the hash of the record before it (``prev``) and the hash of
its own canonical JSON (``hash``, which covers ``prev``): editing, inserting or
deleting a record breaks every link after it.  With ``[luigi] audit-key-env``
the hashes are HMAC-SHA256 keyed by that environment variable of the hg
process (never written down, never handed to pipeline code), so whoever can
write the database file cannot recompute the chain.  Deleting records from the
end leaves a shorter valid chain: keep the head hash (``hg luigi-audit
--head``) elsewhere and check against it.  Anchor: AWS CloudTrail's log file
integrity validation.

Only the hg side appends (hooks, runs, the worker, the callback); the runner
process of a pipeline holds no key and writes nothing here.
"""

import hashlib
import hmac
import json
import time

GENESIS = "0" * 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit(
    id INTEGER PRIMARY KEY, time REAL NOT NULL, kind TEXT NOT NULL, actor TEXT,
    changeset TEXT, task TEXT, run_id TEXT, data TEXT NOT NULL,
    mac TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_kind ON audit(kind);
CREATE INDEX IF NOT EXISTS audit_run ON audit(run_id);
CREATE INDEX IF NOT EXISTS audit_hash ON audit(hash);
"""

SHA256 = "sha256"
HMAC = "hmac-sha256"
START = "audit-started"
KEY_START = "audit-key-started"

_NOBODY = (None, None, None, None)  # actor, changeset, task, run_id
_FIELDS = ("id", "time", "kind", "actor", "changeset", "task", "run_id", "data", "mac",
           "prev")


class AuditError(Exception):
    """The audit log cannot be written or its key is missing."""


def load_key(name, environ):
    """The chain's key from the variable ``name`` of ``environ`` (bytes), None
    when no name is configured.  A configured but unset variable is an error:
    records written without it could not be told from forged ones."""
    if not name:
        return None
    value = environ.get(name)
    if not value:
        raise AuditError("the audit key variable %s is not set in this process's "
                         "environment ([luigi] audit-key-env)" % name)
    return value.encode("utf-8", "surrogateescape")


def canonical(record):
    """The bytes a record's hash covers: its fields but ``hash``, as sorted,
    compact, UTF-8 JSON (``data`` included as parsed JSON)."""
    body = {f: record[f] for f in _FIELDS}
    body["data"] = json.loads(record["data"]) if isinstance(record["data"], str) \
        else record["data"]
    return json.dumps(body, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8", "surrogatepass")


def digest(mac, key, payload):
    """The record hash: SHA-256, or HMAC-SHA256 with ``key``."""
    if mac == HMAC:
        return hmac.new(key, payload, hashlib.sha256).hexdigest()
    return hashlib.sha256(payload).hexdigest()


def _json(data):
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class Chain:
    """Appends records to the chain of one database.  ``key``: bytes for HMAC,
    None for plain SHA-256."""

    def __init__(self, key=None):
        self.key = key
        self.mac = HMAC if key else SHA256

    def append(self, db, kind, data=None, actor=None, changeset=None, task=None,
               run_id=None):
        """Append one record (``data``: a JSON-able dict).  Call it inside the
        write transaction (``BEGIN IMMEDIATE``) of the change it describes: the
        transaction serializes writers, so the chain never forks (on
        PostgreSQL, the append waits for the end of the transaction and its
        lock: :mod:`core.pgdb`).  The first record of a chain says how many
        builds it found (``audit-started``); the first keyed one marks where
        the key took over (``audit-key-started``).  Returns the record's hash
        (None when deferred)."""
        return db.before_commit(lambda: self._append(db, kind, data, actor, changeset, task,
                                              run_id))

    def _append(self, db, kind, data, actor, changeset, task, run_id):
        # hashed as stored: PostgreSQL keeps no NUL in text
        kind, actor, changeset, task, run_id = (
            db.clean(v) for v in (kind, actor, changeset, task, run_id))
        last = db.execute("SELECT id, hash, mac FROM audit ORDER BY id DESC LIMIT 1"
                          ).fetchone()
        if last is None and kind != START:
            self._append(db, START, {"builds_before": _max_build(db)}, *_NOBODY)
        elif last is not None and self.key and last[2] != HMAC and kind != KEY_START:
            self._append(db, KEY_START, {"unkeyed_before": last[0]}, *_NOBODY)
        last = db.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        record = {"id": (last[0] + 1) if last else 1, "time": round(time.time(), 6),
                  "kind": kind, "actor": actor, "changeset": changeset, "task": task,
                  "run_id": run_id, "data": _json(data or {}), "mac": self.mac,
                  "prev": last[1] if last else GENESIS}
        record["hash"] = digest(self.mac, self.key, canonical(record))
        db.execute("INSERT INTO audit(%s, hash) VALUES (%s)"
                   % (", ".join(_FIELDS), ", ".join("?" * (len(_FIELDS) + 1))),
                   [record[f] for f in _FIELDS] + [record["hash"]])
        return record["hash"]


def start(db, chain):
    """Begin the chain (its ``audit-started`` record) if it is empty, before a
    writer changes any state: the record counts the builds that came before."""
    if db.execute("SELECT 1 FROM audit LIMIT 1").fetchone() is None:
        with db.transaction():
            if db.execute("SELECT 1 FROM audit LIMIT 1").fetchone() is None:
                chain.append(db, START, {"builds_before": _max_build(db)})


def _max_build(db):
    """The last build id of the lineage tables sharing the database (0 when
    there are none yet)."""
    try:
        return db.execute("SELECT COALESCE(MAX(id), 0) FROM builds").fetchone()[0]
    except Exception:  # no lineage tables in this database yet
        return 0


def builds_before(db):
    """Builds the chain's first record says existed before the audit log (their
    lineage is not checked against it); 0 without such a record."""
    row = db.execute("SELECT kind, data FROM audit WHERE id = 1").fetchone()
    if row is None or row[0] != START:
        return 0
    try:
        return int(json.loads(row[1]).get("builds_before") or 0)
    except (ValueError, TypeError, AttributeError):
        return 0


def head(db):
    """The hash of the last record (the chain's head), or None when empty."""
    row = db.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    return row[0] if row else None


def records(db, since=None, user=None, task=None, changeset=None, kinds=None):
    """Records in order, as dicts with ``data`` parsed; filters: ``since`` (a
    Unix time), ``user`` (the actor), ``task`` (a family, key or task id, or a
    glob of one), ``changeset`` (full hex)."""
    sql, args = "SELECT * FROM audit WHERE 1 = 1", []
    if since is not None:
        sql += " AND time >= ?"
        args.append(since)
    if user is not None:
        sql += " AND actor = ?"
        args.append(user)
    if task is not None:
        if db.dialect == "sqlite":
            sql += " AND (task GLOB ? OR task GLOB ? || '(*')"
            args += [task, task]
        else:  # PostgreSQL has no GLOB: the same match as a regular expression
            sql += " AND task ~ ?"
            args.append(glob_regex(task))
    if changeset is not None:
        sql += " AND changeset = ?"
        args.append(changeset)
    if kinds:
        sql += " AND kind IN (%s)" % ", ".join("?" * len(kinds))
        args += list(kinds)
    for row in db.execute(sql + " ORDER BY id", args):
        rec = dict(row)
        rec["data"] = json.loads(rec["data"])
        yield rec


def verify_chain(db, key=None, expected_head=None):
    """Recompute the chain.  Returns ``(problems, count)``: problems as dicts
    ``{"id": record id, "problem": sentence}``, in order."""
    problems = []
    prev_hash, prev_id, keyed, count = GENESIS, 0, False, 0
    heads = set()
    for row in db.execute("SELECT * FROM audit ORDER BY id"):
        rec = dict(row)
        count += 1
        rid = rec["id"]
        if count == 1 and (rid != 1 or rec["kind"] != START):
            problems.append({"id": rid, "problem": "the chain does not begin with its "
                             "%s record (records deleted from its start)" % START})
        if rec["mac"] == HMAC and not keyed and rec["kind"] != KEY_START and rid != 1:
            problems.append({"id": rid, "problem": "record %d is the first keyed one but "
                             "not a %s record (unkeyed records rewritten)" % (rid, KEY_START)})
        if rid != prev_id + 1:
            problems.append({"id": rid, "problem": "records %s deleted before record %d"
                             % (_span(prev_id + 1, rid - 1), rid)})
        if rec["prev"] != prev_hash:
            problems.append({"id": rid, "problem": "broken link: record %d does not follow "
                             "the record before it (edited, inserted or deleted)" % rid})
        problems += _check_hash(rec, key, keyed)
        keyed = keyed or rec["mac"] == HMAC
        prev_hash, prev_id = rec["hash"], rid
        heads.add(rec["hash"])
    if key is not None and count and not keyed:
        problems.append({"id": None, "problem": "no record is keyed although a key is set: "
                         "the chain was written or rewritten without it"})
    if expected_head and expected_head not in heads:
        problems.append({"id": prev_id + 1 if count else None, "problem":
                         "the chain does not reach the head %s kept elsewhere: records were "
                         "deleted from its end or the chain was replaced" % expected_head})
    return problems, count


def _check_hash(rec, key, keyed):
    rid = rec["id"]
    if rec["mac"] == HMAC and key is None:
        return [{"id": rid, "problem": "record %d is keyed (HMAC) and no key is set: "
                 "set the variable [luigi] audit-key-env names" % rid}]
    if rec["mac"] not in (HMAC, SHA256):
        return [{"id": rid, "problem": "record %d has an unknown hash kind %r"
                 % (rid, rec["mac"])}]
    if rec["mac"] == SHA256 and keyed:
        return [{"id": rid, "problem": "record %d is not keyed but follows keyed records "
                 "(written by someone without the key)" % rid}]
    try:
        expected = digest(rec["mac"], key, canonical(rec))
    except ValueError:
        expected = None
    if not hmac.compare_digest(expected or "", rec["hash"] or ""):
        return [{"id": rid, "problem": "record %d was edited: its hash does not match its "
                 "content" % rid}]
    return []


def _span(first, last):
    return "%d" % first if first == last else "%d-%d" % (first, last)


_REGEX_SPECIAL = set(".^$|()[]{}*+?\\")


def glob_regex(pattern):
    """A POSIX regular expression matching what SQLite's ``GLOB pattern`` and
    ``GLOB pattern || '(*'`` match together (a task, or any task id of it)."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        end = pattern.find("]", i + 2) if ch == "[" else -1
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif end != -1:  # a set, negated by ^ in both languages
            out.append("[%s]" % pattern[i + 1:end].replace("\\", "\\\\"))
            i = end
        else:
            out.append("\\" + ch if ch in _REGEX_SPECIAL else ch)
        i += 1
    return "^%s(\\(.*)?$" % "".join(out)
