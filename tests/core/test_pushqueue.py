"""core.pushqueue: the durable queue of push triggers, in SQLite under
tmp_path, with real concurrent workers."""

import json
import sqlite3
import threading

import pytest

from hgext_luigi.core import audit, pushqueue

H1, H2, H3 = "1" * 40, "2" * 40, "3" * 40


@pytest.fixture
def queue(location):
    q = pushqueue.open_queue(location, audit.Chain())
    yield q
    q.close()


def entry(head, branch="default", **kw):
    return dict({"head": head, "branch": branch, "pusher": "alice", "author": "Alice",
                 "source": "serve", "identity": {"user": "alice", "groups": ["data"]}},
                **kw)


def pushed(q, *heads, txn="txn1", **kw):
    ids = q.record([entry(h, **kw) for h in heads], txn)
    q.confirm(txn)
    return ids


def states(q):
    return [(e["id"], e["state"]) for e in q.entries()]


# -- the push side --------------------------------------------------------------------

def test_an_entry_is_claimable_only_once_its_push_closed(queue):
    [i] = queue.record([entry(H1)], "txn1")
    e = queue.get(i)
    assert (e["state"], e["pusher"], e["head"]) == ("incoming", "alice", H1)
    assert json.loads(e["identity"]) == {"user": "alice", "groups": ["data"]}
    assert queue.claim("w1", 60, 3) is None
    assert queue.confirm("txn1") == [i]
    assert queue.get(i)["state"] == "pending"
    assert queue.claim("w1", 60, 3)["id"] == i


def test_an_aborted_push_leaves_nothing(queue):
    queue.record([entry(H1), entry(H2)], "txn1")
    [kept] = queue.record([entry(H3)], "txn2")
    queue.abort("txn1")
    assert [e["id"] for e in queue.entries()] == [kept]
    assert queue.confirm("txn1") == []


def test_a_skipped_entry_is_never_claimed(queue):
    [i] = queue.record([entry(H1, state="skipped", summary="[luigi skip]")], "txn1")
    queue.confirm("txn1")
    assert queue.get(i)["state"] == "skipped"
    assert queue.claim("w1", 60, 3) is None


def test_recover_lost_confirmations(queue):
    """The server died between the two hooks: an incoming entry whose head is
    in the repository is pending, one whose head never arrived is dropped."""
    [a, b] = queue.record([entry(H1), entry(H2)], "txn1")
    assert queue.recover(3600, lambda head: True) == 0  # too young
    assert queue.recover(-1, lambda head: head == H1) == 2
    assert states(queue) == [(a, "pending")]


# -- the worker side --------------------------------------------------------------------

def test_oldest_first_and_one_worker_per_entry(queue):
    a, b = pushed(queue, H1, H2)
    assert queue.claim("w1", 60, 3)["id"] == a
    assert queue.claim("w2", 60, 3)["id"] == b
    assert queue.claim("w3", 60, 3) is None


def test_claim_only_the_entry_asked_for(queue):
    a, b = pushed(queue, H1, H2)
    assert queue.claim("w1", 60, 3, only=b)["id"] == b
    assert queue.claim("w1", 60, 3, only=b) is None
    assert queue.claim("w1", 60, 3, only=999) is None
    assert queue.get(a)["state"] == "pending"


def test_only_the_owner_may_finish_and_only_once(queue):
    [a] = pushed(queue, H1)
    e = queue.claim("w1", 60, 3)
    assert e["owner"] == "w1" and e["attempts"] == 1
    assert queue.finish(a, "w2", "done", "stolen") is False
    assert queue.get(a)["state"] == "running"
    assert queue.finish(a, "w1", "done", "2 ran", run_id="run1") is True
    done = queue.get(a)
    assert (done["state"], done["summary"], done["run_id"], done["owner"]) == (
        "done", "2 ran", "run1", None)
    assert queue.finish(a, "w1", "failed", "again") is False
    assert queue.get(a)["state"] == "done"


def test_an_expired_lease_is_taken_over_and_the_old_worker_refused(queue):
    [a] = pushed(queue, H1)
    queue.claim("w1", -1, 3)  # its worker died: the lease has run out
    e = queue.claim("w2", 60, 3)
    assert (e["id"], e["owner"], e["attempts"]) == (a, "w2", 2)
    assert queue.finish(a, "w1", "done") is False  # w1 came back too late
    assert queue.finish(a, "w2", "done") is True


def test_an_entry_whose_worker_keeps_dying_fails(queue):
    [a] = pushed(queue, H1)
    queue.claim("w1", -1, 2)
    queue.claim("w2", -1, 2)
    assert queue.claim("w3", 60, 2) is None
    e = queue.get(a)
    assert e["state"] == "failed"
    assert e["error"] == "gave up after 2 attempts: the worker died each time"


def test_release_gives_the_entry_back_untouched(queue):
    [a] = pushed(queue, H1)
    queue.claim("w1", 60, 3)
    queue.release(a, "w2")  # not its entry: nothing happens
    assert queue.get(a)["owner"] == "w1"
    queue.release(a, "w1")
    e = queue.get(a)
    assert (e["state"], e["owner"], e["attempts"]) == ("pending", None, 0)


def test_coalesced_entries_close_with_the_main_one(queue):
    a, b, c = pushed(queue, H1, H2, H3)
    claimed = queue.claim("w1", 60, 3)
    assert [e["id"] for e in queue.same_branch_pending(claimed)] == [b, c]
    main = queue.coalesce("w1", a, c, [a, b], 60)
    assert main["id"] == c and main["owner"] == "w1"
    assert queue.get(a)["covered_by"] == c and queue.get(b)["covered_by"] == c
    assert queue.claim("w2", 60, 3) is None  # nothing left to take
    assert queue.finish(c, "w1", "done", "built %s" % H3[:12]) is True
    assert [(e["state"], e["summary"]) for e in queue.entries()] == [
        ("done", "covered by entry %d" % c), ("done", "covered by entry %d" % c),
        ("done", "built %s" % H3[:12])]


def test_coalesce_refused_when_another_worker_took_the_main_entry(queue):
    a, b = pushed(queue, H1, H2)
    queue.claim("w1", 60, 3)
    queue.claim("w2", 60, 3)  # takes b
    assert queue.coalesce("w1", a, b, [a], 60) is None
    assert queue.get(b)["owner"] == "w2" and queue.get(a)["covered_by"] is None


def test_branches_do_not_mix(queue):
    a = pushed(queue, H1, branch="default", txn="t1")[0]
    b = pushed(queue, H2, branch="stable", txn="t2")[0]
    c = pushed(queue, H3, branch=None, txn="t3")[0]
    e = queue.claim("w1", 60, 3)
    assert e["id"] == a and queue.same_branch_pending(e) == []
    assert [x["id"] for x in queue.same_branch_pending(queue.get(c))] == []
    assert [x["id"] for x in queue.same_branch_pending(dict(queue.get(b), id=-1))] == [b]


def test_retry_only_a_failed_entry(queue):
    [a] = pushed(queue, H1)
    with pytest.raises(pushqueue.QueueError, match="is pending, not failed"):
        queue.retry(a, actor="bob")
    with pytest.raises(pushqueue.QueueError, match="no queue entry 999"):
        queue.retry(999)
    queue.claim("w1", 60, 3)
    queue.finish(a, "w1", "failed", error="boom")
    e = queue.retry(a, actor="bob")
    assert (e["state"], e["attempts"], e["error"]) == ("pending", 0, None)
    retried = list(audit.records(queue._db, kinds=["queue-retry"]))
    assert retried[0]["actor"] == "bob" and retried[0]["data"]["pusher"] == "alice"


def test_entries_by_state_and_the_latest_few(queue):
    ids = pushed(queue, H1, H2, H3)
    queue.claim("w1", 60, 3)
    assert [e["id"] for e in queue.entries(["pending"])] == ids[1:]
    assert [e["id"] for e in queue.entries(limit=2)] == ids[1:]
    assert [e["id"] for e in queue.entries(["running", "done"])] == ids[:1]


def test_every_state_change_is_on_the_record(queue):
    [a] = pushed(queue, H1)
    queue.claim("w1", 60, 3)
    queue.finish(a, "w1", "done", "ok")
    queue.record_decision("push-refused", {"why": "acl"}, actor="mallory")
    kinds = [(r["kind"], r["actor"]) for r in audit.records(queue._db)]
    assert kinds == [("audit-started", None), ("push-accepted", "alice"),
                     ("queue-taken", "alice"), ("queue-finished", "alice"),
                     ("push-refused", "mallory")]
    assert audit.verify_chain(queue._db) == ([], 5)


def test_hostile_push_fields_are_stored_as_data(queue):
    evil = "x'); DELETE FROM entries; --"
    [a] = pushed(queue, H1, branch=evil, pusher=evil)
    e = queue.get(a)
    assert e["branch"] == evil and e["pusher"] == evil
    assert len(queue.entries()) == 1
    with pytest.raises((ValueError, TypeError)):
        queue.entries(limit="1) ORDER BY id; DROP TABLE entries; --")
    assert len(queue.entries()) == 1


def test_two_workers_never_claim_the_same_entry(location):
    """Two processes' worth of connections claiming at once: every entry is
    taken exactly once."""
    path = location
    setup = pushqueue.open_queue(path, audit.Chain())
    ids = setup.record([entry("%040x" % i) for i in range(30)], "txn")
    setup.confirm("txn")
    setup.close()
    taken = {"w1": [], "w2": []}
    errors = []

    def work(owner):
        q = pushqueue.open_queue(path, audit.Chain())
        try:
            while True:
                e = q.claim(owner, 60, 3)
                if e is None:
                    return
                taken[owner].append(e["id"])
                assert q.finish(e["id"], owner, "done")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            q.close()

    threads = [threading.Thread(target=work, args=(o,)) for o in taken]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(taken["w1"] + taken["w2"]) == ids
    q = pushqueue.open_queue(path, audit.Chain())
    try:
        assert audit.verify_chain(q._db)[0] == []  # the chain never forked
    finally:
        q.close()


# -- older versions -------------------------------------------------------------------------

def test_a_queue_of_an_older_version_gains_its_new_columns(tmp_path):
    path = str(tmp_path / "lineage.db")
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE entries(
            id INTEGER PRIMARY KEY AUTOINCREMENT, head TEXT NOT NULL, branch TEXT,
            pusher TEXT, source TEXT, created REAL NOT NULL, updated REAL,
            state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            force INTEGER NOT NULL DEFAULT 0, txnid TEXT, owner TEXT, lease_until REAL,
            run_id TEXT, covered_by INTEGER, summary TEXT, error TEXT);
        INSERT INTO entries(head, pusher, created, state) VALUES ('%s', 'old', 1, 'pending');
    """ % H1)
    db.close()
    q = pushqueue.open_queue(path)
    try:
        old = q.get(1)
        assert old["head"] == H1 and old["author"] is None and old["identity"] is None
        [new] = pushed(q, H2)
        assert q.get(new)["author"] == "Alice"
    finally:
        q.close()


def test_a_legacy_queue_db_is_imported_once(tmp_path):
    legacy = str(tmp_path / "queue.db")
    old = pushqueue.open_queue(legacy)
    pushed(old, H1, H2)
    old.close()
    q = pushqueue.open_queue(str(tmp_path / "lineage.db"))
    try:
        assert [e["head"] for e in q.entries()] == [H1, H2]
    finally:
        q.close()
    assert not (tmp_path / "queue.db").exists()
    assert (tmp_path / "queue.db.imported").exists()
    q = pushqueue.open_queue(str(tmp_path / "lineage.db"))  # again: nothing doubled
    try:
        assert len(q.entries()) == 2
    finally:
        q.close()


def test_a_file_that_is_not_a_queue_is_refused(tmp_path):
    path = tmp_path / "lineage.db"
    path.write_bytes(b"garbage" * 1000)
    with pytest.raises(pushqueue.QueueError, match="cannot open queue"):
        pushqueue.open_queue(str(path))
