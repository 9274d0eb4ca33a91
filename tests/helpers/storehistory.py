"""A SQLite store with a little history (one run, one build with an output,
one pushed head), its audit chain keyed by ``b"k"``: what an import moves."""

from hgext_luigi.core import audit, lineage, pushqueue

A = "a" * 40


def sqlite_store_with_history(path):
    """Write it at ``path``; the head hash of its audit chain."""
    s = lineage.open_store(path, None, audit.Chain(b"k"))
    s.begin_run("r1", A, "alice", "push", "local",
                [{"key": "T()", "family": "T", "changeset": A, "affected": True}])
    b = s.start_build("r1", "T__1", "T()", "T", {}, A, None, [], "alice", "push")
    s.finish_build(b, "success", outputs=[{"path": "/x/out.csv", "size": 1,
                                           "sha256": "1" * 64}])
    s.end_run("r1", "success", {"T()": ("built", "T__1", 0.5)})
    s.close()
    q = pushqueue.open_queue(path, audit.Chain(b"k"))
    q.record([{"head": A, "branch": "default", "pusher": "alice"}], "t1")
    q.confirm("t1")
    head = audit.head(q._db)
    q.close()
    return head
