"""Take push triggers off the queue and build them.

Used by ``hg luigi-worker`` and, with ``[luigi] on-push = run``, by the push hook
for the entries of its own push.  A claimed entry is held by a lease that a
heartbeat thread renews while the build runs; a worker that dies stops renewing
it and the entry is claimed again by the next worker.  Several pending entries of
one branch whose heads are ancestors of a newer pending head are built once, at
the newest head, and recorded as covered by it.
"""

import json
import os
import signal
import socket
import threading
import time
import uuid

from mercurial import error, hg
from mercurial.i18n import _

from . import config, runs, stores
from ..core import pushqueue

_b = config.local


def owner_id():
    return "%s:%d:%s" % (socket.gethostname(), os.getpid(), uuid.uuid4().hex[:8])


def open_queue(settings):
    return stores.open_queue(settings)


class Heartbeat(threading.Thread):
    """Renews an entry's lease every third of it, on a connection of its own."""

    def __init__(self, path, entry_id, owner, lease):
        super().__init__(name="hgext_luigi-heartbeat", daemon=True)
        self.path, self.entry_id, self.owner, self.lease = path, entry_id, owner, lease
        self.stopped = threading.Event()
        self.lost = False

    def run(self):
        q = pushqueue.open_queue(self.path)
        try:
            while not self.stopped.wait(self.lease / 3.0):
                if not q.heartbeat(self.entry_id, self.owner, self.lease):
                    self.lost = True
                    return
        finally:
            q.close()

    def stop(self):
        self.stopped.set()
        self.join()


def _coalesce(repo, q, settings, entry, owner):
    """The entry to build for claimed ``entry``: the newest pending entry of its
    branch whose head descends from it, covering every pending entry whose head
    is an ancestor of that head."""
    unfi = repo.unfiltered()
    cl = unfi.changelog
    try:
        head = unfi[entry["head"].encode("ascii")].node()
    except error.RepoLookupError:
        return entry
    others = []
    for e in q.same_branch_pending(entry):
        try:
            others.append((e, unfi[e["head"].encode("ascii")].node()))
        except error.RepoLookupError:
            continue
    newer = [(e, n) for e, n in others if e["id"] > entry["id"] and cl.isancestor(head, n)]
    if newer:
        main, main_node = newer[-1]
    else:
        main, main_node = entry, head
    covered = [e["id"] for e, n in others
               if e["id"] != main["id"] and cl.isancestor(n, main_node)]
    if main is entry and not covered:
        return entry
    got = q.coalesce(owner, entry["id"], main["id"], covered, settings.lease)
    return got or entry


def process(ui, repo, settings, q, entry, owner, workers=None):
    """Build one claimed entry; returns its final state ('done' or 'failed')."""
    if settings.coalesce:
        entry = _coalesce(repo, q, settings, entry, owner)
    covering = [e for e in q.entries(("running",)) if e["covered_by"] == entry["id"]]
    force = bool(entry["force"]) or any(e["force"] for e in covering)
    unfi = repo.unfiltered()
    what = _(b'luigi: building %s on %s, pushed by %s (queue entry %d%s)\n') % (
        _b(entry["head"][:12]), _b(entry["branch"]), _b(entry["pusher"]), entry["id"],
        (b', covering %s' % b', '.join(b'%d' % e["id"] for e in covering)) if covering else b'')
    ui.status(what)
    hb = Heartbeat(settings.queue, entry["id"], owner, settings.lease)
    hb.start()
    report = {}
    state, err = "failed", None
    try:
        try:
            ctx = unfi[entry["head"].encode("ascii")]
        except error.RepoLookupError:
            raise error.Abort(_(b'head %s is not in the repository (stripped?)')
                              % _b(entry["head"][:12]))
        opts = {"all": force, "workers": workers}
        rc = runs.run(ui, repo, ctx, settings, opts, trigger="push",
                          user=entry["pusher"], report=report, identity=_identity(entry))
        if rc == 0:
            state = "done"
        else:
            err = _failure(report)
    except error.Abort as e:
        err = e.message.decode("utf-8", "replace")
        if e.hint:
            err += " (%s)" % e.hint.decode("utf-8", "replace")
        runs.warn_abort(ui, e)
    except Exception as e:  # a bug, or a pipeline finding one: fail this entry alone
        err = "internal error: %s: %s" % (type(e).__name__, e)
        ui.warn(_(b'luigi: %s\n') % _b(err))
    except BaseException:
        hb.stop()
        q.release(entry["id"], owner)  # stopped by the user: someone else takes it
        raise
    hb.stop()
    if not q.finish(entry["id"], owner, state, summary=report.get("summary"), error=err,
                    run_id=report.get("run_id")):
        ui.warn(_(b'luigi: queue entry %d was taken over by another worker (lease of %ds '
                  b'expired)\n') % (entry["id"], settings.lease))
    return state


def _identity(entry):
    """Who pushed the entry as access control knows them: the user (without
    the client address) and the groups their token had at the push."""
    from ..core import acl

    try:
        known = json.loads(entry.get("identity") or "{}")
    except ValueError:
        known = {}
    if not isinstance(known, dict):
        known = {}
    user = known.get("user") if isinstance(known.get("user"), str) else None
    groups = known.get("groups") if isinstance(known.get("groups"), list) else []
    return acl.Identity(user, tuple(g for g in groups if isinstance(g, str)))


def _failure(report):
    """What a failed run's queue entry says: the tasks that failed and,
    separately, those that did not run because of them."""
    parts = []
    if report.get("failed"):
        parts.append("failed: %s" % ", ".join(report["failed"]))
    if report.get("not_run"):
        parts.append("not run because of them: %s" % ", ".join(report["not_run"]))
    return "; ".join(parts) or "run failed"


def _fresh(repo):
    """A new repository object, so changesets pushed since are seen."""
    return hg.repository(repo.baseui, repo.root)


def _exists(repo):
    unfi = repo.unfiltered()

    def exists(head):
        return head.encode("ascii") in unfi

    return exists


def serve(ui, repo, settings, once=False, workers=None, limit=None):
    """The worker loop.  Returns (processed, failed)."""
    owner = owner_id()
    q = open_queue(settings)
    # a run waits for the repository's run lock (another worker's run) instead of
    # giving up: the lease is renewed meanwhile
    settings = settings.replace(lock_timeout=max(settings.lock_timeout, 24 * 3600))
    processed = failed = 0

    def terminate(signum, frame):
        raise KeyboardInterrupt()

    old = signal.signal(signal.SIGTERM, terminate)
    if not once:
        ui.status(_(b'luigi worker %s: waiting for queue entries\n') % _b(owner))
    try:
        while limit is None or processed < limit:
            repo = _fresh(repo)
            q.recover(settings.lease, _exists(repo))
            entry = q.claim(owner, settings.lease, settings.max_attempts)
            if entry is None:
                if once:
                    break
                time.sleep(settings.poll_interval)
                continue
            if entry["attempts"] > 1:
                ui.status(_(b'luigi: queue entry %d again (attempt %d; its worker '
                            b'died)\n') % (entry["id"], entry["attempts"]))
            state = process(ui, repo, settings, q, entry, owner, workers)
            processed += 1
            failed += state != "done"
    finally:
        signal.signal(signal.SIGTERM, old)
        q.close()
    return processed, failed
