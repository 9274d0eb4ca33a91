"""Take push triggers off the queue and build them.

Used by ``hg luigi-worker`` and, with ``[luigi] on-push = run``, by the push hook
for the entries of its own push.  A claimed entry is held by a lease that a
heartbeat thread renews while the build runs; a worker that dies stops renewing
it and the entry is claimed again by the next worker.  Several pending entries of
one branch whose heads are ancestors of a newer pending head are built once, at
the newest head, and recorded as covered by it.

With a shared store (``[luigi] store``), workers run on several build hosts,
each in a clone of the server repository: a head the clone lacks is pulled from
``[luigi] source`` (default ``paths.default``) before it is built.
"""

import json
import os
import signal
import socket
import time
import uuid

from mercurial import error, hg
from mercurial.i18n import _

from . import config, runs, stores
from ..core import heartbeat, pushqueue

_b = config.local


def owner_id():
    return "%s:%d:%s" % (socket.gethostname(), os.getpid(), uuid.uuid4().hex[:8])


def open_queue(settings):
    return stores.open_queue(settings)


def _lease_keeper(settings, entry_id, owner):
    """A heartbeat renewing an entry's lease every third of it, on a connection
    of the thread's own (SQLite's may not cross threads); a busy database is
    tried again at the next beat, a lease another worker took is lost."""
    opened = []

    def renew():
        if not opened:
            opened.append(pushqueue.open_queue(settings.queue))
        return opened[0].heartbeat(entry_id, owner, settings.lease)

    def close():
        for q in opened:
            q.close()

    return heartbeat.Heartbeat("hgext_luigi-heartbeat", settings.lease / 3.0, renew,
                               keep_going=True, close=close)


def _coalesce(repo, q, settings, entry, owner):
    """The entry to build for claimed ``entry``: the newest pending entry of its
    branch whose head descends from it, covering every pending entry whose head
    is an ancestor of that head."""
    unfi = repo.unfiltered()
    cl = unfi.changelog
    try:
        head = unfi[config.node(entry["head"])].node()
    except error.RepoLookupError:
        return entry
    others = []
    for e in q.same_branch_pending(entry):
        try:
            others.append((e, unfi[config.node(e["head"])].node()))
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


def process(ui, repo, settings, q, entry, owner, workers=None, coalesce=None):
    """Build one claimed entry; returns its final state ('done' or 'failed')."""
    try:
        repo = _with_head(ui, repo, settings, entry)
    except error.Abort as e:
        runs.warn_abort(ui, e)
        q.finish(entry["id"], owner, "failed", error=config.abort_text(e))
        return "failed"
    if settings.coalesce if coalesce is None else coalesce:
        entry = _coalesce(repo, q, settings, entry, owner)
    covering = [e for e in q.entries(("running",)) if e["covered_by"] == entry["id"]]
    force = bool(entry["force"]) or any(e["force"] for e in covering)
    ui.status(_(b'luigi: building %s on %s, pushed by %s (queue entry %d%s)\n') % (
        _b(entry["head"][:12]), _b(entry["branch"]), _b(entry["pusher"]), entry["id"],
        (b', covering %s' % b', '.join(b'%d' % e["id"] for e in covering)) if covering else b''))
    request = runs.Request(trigger="push", force=force, workers=workers,
                           user=entry["pusher"], identity=_identity(entry),
                           wait_for_lock=True)  # the lease is renewed meanwhile
    hb = _lease_keeper(settings, entry["id"], owner)
    hb.start()
    try:
        state, result, err = _build(ui, repo, settings, entry, request)
    except BaseException:
        hb.stop()
        q.release(entry["id"], owner)  # stopped by the user: someone else takes it
        raise
    hb.stop()
    if hb.lost:
        ui.warn(_(b'luigi: renewing the lease of queue entry %d failed: %s\n')
                % (entry["id"], _b(hb.lost)))
    if not q.finish(entry["id"], owner, state, summary=result.summary, error=err,
                    run_id=result.run_id):
        ui.warn(_(b'luigi: queue entry %d was taken over by another worker (lease of %ds '
                  b'expired)\n') % (entry["id"], settings.lease))
    return state


def _build(ui, repo, settings, entry, request):
    """(state, :class:`runs.Result`, error) of the build of ``entry``'s head;
    an error of this entry never stops the worker."""
    result = runs.Result()
    try:
        try:
            ctx = repo.unfiltered()[config.node(entry["head"])]
        except error.RepoLookupError:
            raise error.Abort(_(b'head %s is not in the repository (stripped?)')
                              % _b(entry["head"][:12]))
        result = runs.run(ui, repo, ctx, settings, request)
        if result.status == 0:
            return "done", result, None
        return "failed", result, _failure(result)
    except error.Abort as e:
        runs.warn_abort(ui, e)
        return "failed", result, config.abort_text(e)
    except Exception as e:  # a bug, or a pipeline finding one: fail this entry alone
        err = "internal error: %s: %s" % (type(e).__name__, e)
        ui.warn(_(b'luigi: %s\n') % _b(err))
        return "failed", result, err


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


def _failure(result):
    """What a failed run's queue entry says: the tasks that failed and,
    separately, those that did not run because of them."""
    parts = []
    if result.failed:
        parts.append("failed: %s" % ", ".join(result.failed))
    if result.not_run:
        parts.append("not run because of them: %s" % ", ".join(result.not_run))
    return "; ".join(parts) or "run failed"


def _fresh(repo):
    """A new repository object, so changesets pushed since are seen."""
    return hg.repository(repo.baseui, repo.root)


def _exists(ui, repo, settings):
    """Whether a head is in the repository; on a build host, after pulling
    from the source once (an incoming entry whose head never appears there
    is dropped)."""
    pulled = []

    def exists(head):
        node = config.node(head)
        if node not in repo.unfiltered() and stores.is_shared(settings) and not pulled:
            pulled.append(pull(ui, repo, settings))
        return node in (pulled[0] if pulled else repo).unfiltered()

    return exists


def pull(ui, repo, settings):
    """Pull everything new from ``[luigi] source`` (else ``paths.default``) as
    ``hg pull`` would; the repository as it is afterwards."""
    from mercurial import exchange
    from mercurial.utils import urlutil

    source = config.local(settings.source) if settings.source else None
    try:
        path = urlutil.get_unique_pull_path_obj(b'luigi-worker', ui, source)
    except error.Abort as e:
        raise error.Abort(_(b'cannot pull heads to build: %s') % e.message,
                          hint=_(b'set [luigi] source (or paths.default) to the server '
                                 b'repository'))
    where = urlutil.hidepassword(path.loc)
    ui.status(_(b'luigi: pulling from %s\n') % where)
    try:
        other = hg.peer(repo, {}, path)
        try:
            exchange.pull(repo, other, path=path)
        finally:
            other.close()
    except (error.RepoError, OSError) as e:  # Abort passes as it is
        from mercurial.utils import stringutil

        raise error.Abort(_(b'cannot pull from %s: %s')
                          % (where, stringutil.forcebytestr(e)),
                          hint=_(b'check [luigi] source (or paths.default) and that this '
                                 b'host reaches it'))
    return _fresh(repo)


def _with_head(ui, repo, settings, entry):
    """The repository holding ``entry``'s head, pulled if this clone lacks
    it (a build host); the pull's own errors fail the entry."""
    if config.node(entry["head"]) in repo.unfiltered() or not stores.is_shared(settings):
        return repo
    return pull(ui, repo, settings)


class Reaper:
    """On a shared store, an idle worker records the runs of dead hosts as
    interrupted (their leases ran out), at most once per lease: no later run
    on their host may ever come to do it."""

    def __init__(self, ui, settings):
        self.ui, self.settings, self.last = ui, settings, 0.0

    def __call__(self):
        if not stores.is_shared(self.settings) or \
                time.time() - self.last < self.settings.lease:
            return
        self.last = time.time()
        store = stores.open_store(self.settings)
        try:
            stale = store.interrupt_stale(shared=True)
        finally:
            store.close()
        if stale:
            self.ui.warn(_(b'luigi: %d task builds of runs whose host stopped renewing '
                           b'their lease are recorded as failed\n') % stale)


def serve(ui, repo, settings, once=False, workers=None, limit=None):
    """The worker loop.  Returns (processed, failed)."""
    owner = owner_id()
    reap = Reaper(ui, settings)
    q = open_queue(settings)
    processed = failed = 0

    def terminate(signum, frame):
        raise KeyboardInterrupt()

    old = signal.signal(signal.SIGTERM, terminate)
    if not once:
        ui.status(_(b'luigi worker %s: waiting for queue entries\n') % _b(owner))
    try:
        while limit is None or processed < limit:
            repo = _fresh(repo)
            q.recover(settings.lease, _exists(ui, repo, settings))
            entry = q.claim(owner, settings.lease, settings.max_attempts)
            if entry is None:
                reap()
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
