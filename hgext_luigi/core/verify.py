"""``hg luigi-audit --verify``: the audit chain, the lineage it describes and
the outputs on disk, checked against each other.  Plain Python.

Three checks, each problem reported by the id of the record it concerns:

1. the chain: every record's hash recomputed, every link followed, and the head
   kept elsewhere found (``audit.verify_chain``);
2. lineage against the audit log: every build row equals the last audit record
   of that build, every run row what its run-started and run-ended records
   say (its plan by digest), and every build and run the log describes still
   exists;
3. outputs on disk against the sha256 lineage recorded, for the latest build
   of each path (an older build's output that a later one wrote again holds the
   later content by design).
"""

import json
import os

from . import audit, lineage, objects


def verify(store, key=None, expected_head=None, check_outputs=True, s3=None):
    """``{"problems": [...], "records": n, "builds": n, "outputs": n,
    "before_audit": n}`` for the store (a :class:`lineage.LineageStore`).
    ``s3``: how to reach outputs in S3 (:func:`objects.client`'s arguments)."""
    db = store._db
    problems, count = audit.verify_chain(db, key, expected_head)
    for p in problems:
        p["kind"] = "audit"
    built, lineage_problems = _lineage_against_audit(db)
    problems += lineage_problems + _runs_against_audit(db)
    checked = 0
    if check_outputs:
        checked, output_problems = _outputs_on_disk(store, db, objects.Reader(s3))
        problems += output_problems
    return {"problems": problems, "records": count, "builds": built,
            "outputs": checked, "before_audit": _before_audit(db)}


def _object(text):
    """A record's data as a dict, or None when it holds anything else."""
    try:
        data = json.loads(text)
    except (ValueError, TypeError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _last_build_records(db):
    """build id -> (audit record id, the build as that record describes it)."""
    out = {}
    for rec in db.execute("SELECT id, actor, run_id, data FROM audit WHERE kind = 'build'"
                          " ORDER BY id"):
        data = _object(rec["data"])
        if data is None or "build" not in data:
            continue  # an edited record: the chain check reports it
        data.update(user=rec["actor"], run_id=rec["run_id"])
        try:
            out[data["build"]] = (rec["id"], data)
        except TypeError:  # an unhashable build id: edited too
            continue
    return out


def _after(db):
    return audit.builds_before(db)


def _before_audit(db):
    return db.execute("SELECT COUNT(*) FROM builds WHERE id <= ?", (_after(db),)).fetchone()[0]


def _lineage_against_audit(db):
    recorded = _last_build_records(db)
    problems = []
    ids = [r["id"] for r in db.execute("SELECT id FROM builds WHERE id > ? ORDER BY id",
                                       (_after(db),))]
    for build_id in ids:
        rec = recorded.pop(build_id, None)
        try:
            state = lineage.build_state(db, build_id)
        except ValueError:  # a JSON column no longer holds JSON
            problems.append({"id": build_id, "kind": "lineage", "problem":
                             "lineage build %d holds a value that is not JSON (edited)"
                             % build_id})
            continue
        if rec is None:
            problems.append({"id": build_id, "kind": "lineage", "problem":
                             "lineage build %d has no audit record (inserted)" % build_id})
        elif rec[1] != state:
            fields = sorted(k for k in set(state) | set(rec[1])
                            if state.get(k) != rec[1].get(k))
            problems.append({"id": build_id, "kind": "lineage", "problem":
                             "lineage build %d differs from audit record %d (%s edited)"
                             % (build_id, rec[0], ", ".join(fields))})
    for build_id, (rec_id, _data) in sorted(recorded.items()):
        problems.append({"id": build_id, "kind": "lineage", "problem":
                         "lineage build %d described by audit record %d is gone (deleted)"
                         % (build_id, rec_id)})
    return len(ids), problems


def _run_records(db):
    """run id -> (record id, what run-started and run-ended said), merged."""
    out = {}
    for rec in db.execute("SELECT id, kind, actor, changeset, run_id, data FROM audit"
                          " WHERE kind IN ('run-started', 'run-ended') ORDER BY id"):
        data = _object(rec["data"])
        if data is None:
            continue  # an edited record: the chain check reports it
        rid, seen = out.get(rec["run_id"], (rec["id"], {}))
        if rec["kind"] == "run-started":
            seen.update({k: data.get(k) for k in ("rev", "user", "trigger", "scheduler",
                                                  "started", "plan")})
        else:
            seen.update(status=data.get("status"), ended=data.get("ended"))
        out[rec["run_id"]] = (rid, seen)
    return out


def _runs_against_audit(db):
    recorded = _run_records(db)
    first = db.execute("SELECT MIN(time) FROM audit").fetchone()[0]
    problems = []
    for r in db.execute("SELECT * FROM runs ORDER BY started"):
        rec = recorded.pop(r["id"], None)
        if rec is None:
            if first is not None and (r["started"] or 0) >= first:
                problems.append({"id": r["id"], "kind": "lineage", "problem":
                                 "run %s has no audit record (inserted)" % r["id"]})
            continue
        state = dict(lineage.run_state(db, r["id"]), status=r["status"], ended=r["ended"])
        fields = sorted(k for k in rec[1] if rec[1][k] != state.get(k))
        if fields:
            problems.append({"id": r["id"], "kind": "lineage", "problem":
                             "run %s differs from audit record %d (%s edited)"
                             % (r["id"], rec[0], ", ".join(fields))})
    for run_id, (rec_id, _seen) in sorted(recorded.items(), key=lambda x: x[1][0]):
        problems.append({"id": run_id, "kind": "lineage", "problem":
                         "run %s described by audit record %d is gone (deleted)"
                         % (run_id, rec_id)})
    return problems


def _outputs_on_disk(store, db, reader):
    """Each path's latest successful build: its file (or object, read with
    ``reader``) still has that sha256."""
    rows = db.execute(
        "SELECT o.build_id, o.path, o.sha256 FROM outputs o JOIN builds b"
        " ON b.id = o.build_id AND b.status = 'success'"
        " WHERE o.build_id = (SELECT MAX(o2.build_id) FROM outputs o2 JOIN builds b2"
        " ON b2.id = o2.build_id AND b2.status = 'success' WHERE o2.path = o.path)"
        " ORDER BY o.build_id, o.path").fetchall()
    problems = []
    for r in rows:
        path = store._absolute(r["path"])
        digest = _digest(path, reader)
        if digest is None:
            problems.append({"id": r["build_id"], "kind": "output", "path": path,
                             "problem": "output %s of build %d is missing"
                             % (path, r["build_id"])})
            continue
        if digest != r["sha256"]:
            what = (digest if digest.startswith("unreadable: ") else
                    "changed since it was built")
            problems.append({"id": r["build_id"], "kind": "output", "path": path,
                             "problem": "output %s of build %d %s"
                             % (path, r["build_id"], what)})
    return len(rows), problems


def _digest(path, reader):
    """The sha256 of an output now, None when it is gone, or ``unreadable: ...``
    (which never equals a recorded digest)."""
    if objects.is_url(path):
        try:
            got = reader.digest(path)
        except Exception as e:  # boto3's errors: no credentials, access denied...
            return "unreadable: %s: %s" % (type(e).__name__, e)
        return got and got[1]
    if not os.path.exists(path):
        return None
    try:
        return lineage.file_digest(path)[1]
    except OSError as e:
        return "unreadable: %s" % e.strerror
