"""core.audit: the hash chain of decisions, in SQLite, and what tampering with
it looks like to ``verify_chain``."""

import hashlib
import json
import time

import pytest

from hgext_luigi.core import audit, sqlitedb

KEY = b"the-audit-key"


def open_db(tmp_path, name="audit.db"):
    return sqlitedb.connect(str(tmp_path / name), audit.SCHEMA)


def append(db, chain, kind, data=None, **columns):
    with sqlitedb.transaction(db):
        return chain.append(db, kind, data, **columns)


@pytest.fixture
def db(tmp_path):
    db = open_db(tmp_path)
    yield db
    db.close()


def fill(db, chain, n=4):
    hashes = []
    for i in range(n):
        hashes.append(append(db, chain, "build", {"build": i, "status": "success"},
                             actor="alice" if i % 2 else "bob", changeset="%040x" % i,
                             task="Clean(region=r%d)" % i, run_id="run%d" % (i // 2)))
    return hashes


def problems(db, key=None, head=None):
    found, _count = audit.verify_chain(db, key, head)
    return [p["problem"] for p in found]


# -- writing -----------------------------------------------------------------------

def test_the_first_record_starts_the_chain_and_each_links_to_the_last(db):
    hashes = fill(db, audit.Chain())
    recs = list(audit.records(db))
    assert [r["kind"] for r in recs] == ["audit-started"] + ["build"] * 4
    assert recs[0]["prev"] == audit.GENESIS and recs[0]["data"] == {"builds_before": 0}
    assert [r["prev"] for r in recs[1:]] == [r["hash"] for r in recs[:-1]]
    assert [r["hash"] for r in recs[1:]] == hashes
    assert audit.head(db) == hashes[-1]
    assert audit.verify_chain(db) == ([], 5)


def test_the_hash_covers_every_field(db):
    append(db, audit.Chain(), "decision", {"why": "owner"}, actor="alice")
    rec = list(audit.records(db))[-1]
    body = {k: rec[k] for k in ("id", "time", "kind", "actor", "changeset", "task",
                                "run_id", "data", "mac", "prev")}
    payload = json.dumps(body, sort_keys=True, separators=(",", ":"),
                         ensure_ascii=False).encode()
    assert rec["hash"] == hashlib.sha256(payload).hexdigest()


def test_a_keyed_chain_is_hmac(db):
    append(db, audit.Chain(KEY), "decision", {"x": 1})
    recs = list(audit.records(db))
    assert {r["mac"] for r in recs} == {audit.HMAC}
    assert audit.verify_chain(db, KEY) == ([], 2)


def test_start_is_idempotent_and_counts_earlier_builds(tmp_path):
    db = open_db(tmp_path)
    db.execute("CREATE TABLE builds(id INTEGER PRIMARY KEY)")
    db.executemany("INSERT INTO builds(id) VALUES (?)", [(1,), (2,), (7,)])
    audit.start(db, audit.Chain())
    audit.start(db, audit.Chain())
    assert [r["kind"] for r in audit.records(db)] == ["audit-started"]
    assert audit.builds_before(db) == 7
    db.close()


def test_a_key_set_later_marks_where_it_took_over(db):
    fill(db, audit.Chain(), 2)
    append(db, audit.Chain(KEY), "decision", {"x": 1})
    recs = list(audit.records(db))
    assert [(r["kind"], r["mac"]) for r in recs] == [
        ("audit-started", "sha256"), ("build", "sha256"), ("build", "sha256"),
        ("audit-key-started", "hmac-sha256"), ("decision", "hmac-sha256")]
    assert recs[3]["data"] == {"unkeyed_before": 3}
    assert audit.verify_chain(db, KEY) == ([], 5)


def test_load_key():
    assert audit.load_key(None, {}) is None
    assert audit.load_key("", {"K": "x"}) is None
    assert audit.load_key("K", {"K": "s3cret"}) == b"s3cret"
    with pytest.raises(audit.AuditError, match="AUDIT_KEY is not set"):
        audit.load_key("AUDIT_KEY", {})
    with pytest.raises(audit.AuditError):
        audit.load_key("AUDIT_KEY", {"AUDIT_KEY": ""})  # empty is no key


# -- reading -----------------------------------------------------------------------

def test_filters(db):
    fill(db, audit.Chain())
    append(db, audit.Chain(), "push-refused", {"why": "acl"}, actor="mallory",
           task="Cleanse()")
    assert [r["data"]["build"] for r in audit.records(db, user="alice")] == [1, 3]
    assert [r["task"] for r in audit.records(db, task="Clean")] == [
        "Clean(region=r%d)" % i for i in range(4)]  # a family
    assert [r["task"] for r in audit.records(db, task="Clean(region=r2)")] == \
        ["Clean(region=r2)"]
    assert [r["task"] for r in audit.records(db, task="Clean*")] == [
        "Clean(region=r%d)" % i for i in range(4)] + ["Cleanse()"]
    assert [r["data"]["build"] for r in audit.records(db, changeset="%040x" % 2)] == [2]
    assert [r["actor"] for r in audit.records(db, kinds=["push-refused"])] == ["mallory"]
    assert list(audit.records(db, since=time.time() + 60)) == []
    assert len(list(audit.records(db, since=0))) == 6


def test_filters_are_values_not_sql(db):
    fill(db, audit.Chain(), 2)
    assert list(audit.records(db, user="x' OR '1'='1")) == []
    assert list(audit.records(db, kinds=["build') OR 1=1 --"])) == []
    assert audit.verify_chain(db) == ([], 3)


# -- tampering -----------------------------------------------------------------------

def test_an_edited_record_is_found(db):
    fill(db, audit.Chain())
    db.execute("UPDATE audit SET actor = 'mallory' WHERE id = 3")
    assert problems(db) == ["record 3 was edited: its hash does not match its content"]


def test_an_edited_record_rehashed_breaks_the_next_link(db):
    fill(db, audit.Chain())
    rec = dict(db.execute("SELECT * FROM audit WHERE id = 3").fetchone())
    rec["data"] = json.dumps({"build": 1, "status": "failed"})
    new = audit.digest(audit.SHA256, None, audit.canonical(rec))
    db.execute("UPDATE audit SET data = ?, hash = ? WHERE id = 3", (rec["data"], new))
    assert problems(db) == ["broken link: record 4 does not follow the record before it "
                            "(edited, inserted or deleted)"]


def test_a_deleted_record_is_found(db):
    fill(db, audit.Chain())
    db.execute("DELETE FROM audit WHERE id = 3")
    found = problems(db)
    assert "records 3 deleted before record 4" in found
    assert any(p.startswith("broken link: record 4") for p in found)


def test_deleting_the_start_is_found(db):
    fill(db, audit.Chain())
    db.execute("DELETE FROM audit WHERE id IN (1, 2)")
    found = problems(db)
    assert found[0] == ("the chain does not begin with its audit-started record "
                        "(records deleted from its start)")
    assert "records 1-2 deleted before record 3" in found


def test_a_truncated_end_is_found_only_against_the_head_kept_elsewhere(db):
    hashes = fill(db, audit.Chain())
    db.execute("DELETE FROM audit WHERE id = 5")
    assert problems(db) == []  # a shorter chain is a valid chain...
    found = problems(db, head=hashes[-1])
    assert len(found) == 1 and "does not reach the head %s" % hashes[-1] in found[0]
    assert problems(db, head=hashes[-2]) == []  # an older head is still reached


def test_the_chain_cannot_be_recomputed_without_the_key(db):
    """Whoever can write the file but holds no key: every way of redoing the
    chain is found."""
    fill(db, audit.Chain(KEY))
    # 1. rewrite the whole chain as plain SHA-256 (valid on its own)
    rows = [dict(r) for r in db.execute("SELECT * FROM audit ORDER BY id")]
    prev = audit.GENESIS
    for r in rows:
        r.update(mac=audit.SHA256, prev=prev)
        r["hash"] = prev = audit.digest(audit.SHA256, None, audit.canonical(r))
        db.execute("UPDATE audit SET mac = ?, prev = ?, hash = ? WHERE id = ?",
                   (r["mac"], r["prev"], r["hash"], r["id"]))
    assert problems(db) == []
    assert problems(db, KEY) == ["no record is keyed although a key is set: the chain "
                                 "was written or rewritten without it"]


def test_appending_without_the_key_after_keyed_records_is_found(db):
    fill(db, audit.Chain(KEY), 2)
    append(db, audit.Chain(), "build", {"build": 99, "status": "success"})
    assert problems(db, KEY) == ["record 4 is not keyed but follows keyed records "
                                 "(written by someone without the key)"]


def test_a_wrong_key_finds_every_record_edited(db):
    fill(db, audit.Chain(KEY), 2)
    assert len(problems(db, b"another key")) == 3


def test_keyed_records_without_the_key_cannot_be_checked(db):
    fill(db, audit.Chain(KEY), 1)
    assert problems(db) == [
        "record %d is keyed (HMAC) and no key is set: set the variable [luigi] "
        "audit-key-env names" % i for i in (1, 2)]


def test_rewriting_unkeyed_records_as_the_first_keyed_one_is_found(db):
    """The key-started record marks the switch: a keyed record before it, not
    the first of the chain, means unkeyed records were rewritten."""
    fill(db, audit.Chain(), 2)
    rec = dict(db.execute("SELECT * FROM audit WHERE id = 3").fetchone())
    rec["mac"] = audit.HMAC
    rec["hash"] = audit.digest(audit.HMAC, KEY, audit.canonical(rec))
    db.execute("UPDATE audit SET mac = ?, hash = ? WHERE id = 3", (rec["mac"], rec["hash"]))
    assert problems(db, KEY) == ["record 3 is the first keyed one but not a "
                                 "audit-key-started record (unkeyed records rewritten)"]


def test_an_unknown_hash_kind_and_garbage_data_are_found_not_raised(db):
    fill(db, audit.Chain(), 2)
    db.execute("UPDATE audit SET mac = 'md5' WHERE id = 2")
    db.execute("UPDATE audit SET data = 'not json' WHERE id = 3")
    found = problems(db)
    assert "record 2 has an unknown hash kind 'md5'" in found
    assert "record 3 was edited: its hash does not match its content" in found
    assert audit.builds_before(db) == 0


def test_a_record_inserted_in_the_middle_is_found(db):
    """A forged record slipped in between 2 and 3, its own hash right: the
    record after it no longer links."""
    fill(db, audit.Chain(), 3)
    db.execute("UPDATE audit SET id = -id WHERE id >= 3")
    db.execute("UPDATE audit SET id = 1 - id WHERE id < 0")  # -3 -> 4, -4 -> 5
    two = dict(db.execute("SELECT * FROM audit WHERE id = 2").fetchone())
    forged = dict(two, id=3, prev=two["hash"], actor="mallory",
                  data=json.dumps({"build": 42, "status": "success"}))
    forged["hash"] = audit.digest(audit.SHA256, None, audit.canonical(forged))
    db.execute("INSERT INTO audit(id, time, kind, actor, changeset, task, run_id, data, mac,"
               " prev, hash) VALUES (:id, :time, :kind, :actor, :changeset, :task, :run_id,"
               " :data, :mac, :prev, :hash)", forged)
    found, _count = audit.verify_chain(db)
    assert found[0]["problem"] == ("broken link: record 4 does not follow the record "
                                   "before it (edited, inserted or deleted)")
    # renumbered to make room, the records after it are edited too
    assert {p["id"] for p in found} == {4, 5}
