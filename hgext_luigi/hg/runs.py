"""One run of a revision: :func:`run` takes a :class:`Request` and returns a
:class:`Result`.

Take the repository's run lock, plan, record the run and its plan in the
lineage store, start the runner (``core.protocol``) in the tree of the revision,
answer its requests (``core.builds``), show its progress and print one line per
task and the summary.  Nothing here holds the repository lock: builds only read
history.
"""

import contextlib
import dataclasses
import errno
import fcntl
import os
import time
import uuid

from mercurial import error, pycompat
from mercurial.i18n import _

from ..core import builds, protocol, sandbox
from . import config, planning, show, stores, subproc

_b = config.local


class RunLock:
    """``.hg/luigi/run.lock``: one run at a time per repository."""

    def __init__(self, state, timeout=0):
        os.makedirs(state, exist_ok=True)
        self.path = os.path.join(state, "run.lock")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.time() + max(0, timeout)
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.time() >= deadline:
                    holder = os.pread(self.fd, 64, 0).decode("ascii", "replace").strip()
                    os.close(self.fd)
                    raise error.Abort(
                        _(b'another luigi run is in progress in this repository%s')
                        % (b' (pid %s)' % _b(holder) if holder else b''),
                        hint=_(b'wait for it to finish, or set [luigi] lock-timeout '
                               b'to wait for it'))
                time.sleep(0.2)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, b"%d\n" % os.getpid(), 0)

    def release(self):
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def check_scheduler(url):
    """Fail fast, with a clear message, when the central scheduler is unreachable
    (Luigi itself would retry for a minute and a half)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10):
            pass
    except urllib.error.HTTPError:
        pass  # it answered: a server is there
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise error.Abort(_(b'cannot reach the Luigi scheduler at %s: %s')
                          % (_b(url), _b(str(reason))),
                          hint=_(b'start luigid there, or drop --scheduler / [luigi] '
                                 b'scheduler to use the local scheduler'))


def warn_abort(ui, e):
    """Report an ``error.Abort`` where it must not stop hg (hooks, the worker)."""
    ui.warn(_(b'luigi: %s\n') % e.message)
    if e.hint:
        ui.warn(_(b'(%s)\n') % e.hint)


def warn_dirty(ui, repo, ctx):
    if repo.dirstate.p1() == repo.nullid:
        return
    if repo[None].dirty(missing=True):
        ui.warn(_(b'warning: the working directory has uncommitted changes; they are '
                  b'not built (building %s)\n') % ctx.hex()[:12])


@dataclasses.dataclass(frozen=True)
class Request:
    """What a run is asked to do, by a command, a hook, the worker or the
    callback (``str`` values: decoded where they came in)."""

    trigger: str = "manual"
    force: bool = False  # rebuild every task (--all, [luigi all])
    tasks: tuple = ()  # --task names: these and what they need
    workers: int = None  # None: [luigi] workers
    scheduler: str = None  # None: [luigi] scheduler
    dry_run: bool = False
    warn_dirty: bool = False  # building the working directory's parent
    user: str = None  # who the run is recorded for (default: the hg user name)
    # who triggered it for [luigi] acl (default: the account hg runs as; never
    # the hg user name, which is the caller's to set)
    identity: object = None
    wait_for_lock: bool = False  # wait for another run instead of giving up


@dataclasses.dataclass
class Result:
    """What a run came to: ``status`` 0, or 1 when a task failed or could not run."""

    status: int = 0
    run_id: str = None
    targets: list = dataclasses.field(default_factory=list)  # keys asked for
    summary: str = None
    failed: list = dataclasses.field(default_factory=list)
    not_run: list = dataclasses.field(default_factory=list)


def _asked(planned):
    """The keys the run was asked for: the roots, or the tasks ``--task`` names."""
    return list(planned.selected if planned.selected is not None else planned.roots)


def _target(planned, key):
    t = planned.tasks[key]
    return {"family": t["family"], "params": t["params"], "key": key}


def _luigi_targets(planned, todo):
    """What Luigi is handed: the affected tasks alone, upstream first (the
    runner builds them in blocks of that order).  It then checks the outputs
    of their requirements and stops there, instead of walking (and scheduling)
    every reused task of a large graph from the roots."""
    return [_target(planned, d.key) for d in todo]


def run(ui, repo, ctx, settings, request, fm=None):
    """Plan and run ``ctx`` as ``request`` (a :class:`Request`) says; a
    :class:`Result`."""
    request = _filled(ui, request)
    scheduler = request.scheduler or settings.scheduler
    if request.warn_dirty:
        warn_dirty(ui, repo, ctx)
    if scheduler and not request.dry_run:
        check_scheduler(scheduler)
    if not request.dry_run:
        stores.warn_readable_password(ui, settings)
    timeout = max(settings.lock_timeout, 24 * 3600) if request.wait_for_lock \
        else settings.lock_timeout
    with RunLock(settings.state, timeout), \
            planning.Workspace(ui, repo, ctx, settings) as ws:
        store = stores.open_store(settings)
        try:
            if not request.dry_run:  # decided before any code of ctx runs
                _check_access(ui, repo, ctx, settings, request, store)
            planned = planning.make(ui, repo, ctx, settings, ws, force=request.force,
                                    names=list(request.tasks), store=store)
            if request.dry_run:
                fm = fm or ui.formatter(b'luigi-run', {})
                show.plan(ui, planned, fm)
                fm.end()
                return Result()
            return _execute(ui, repo, settings, ws, store, planned, request, scheduler,
                            fm or ui.formatter(b'luigi-run', {}))
        finally:
            store.close()


def _filled(ui, request):
    """``request`` with its defaults: the hg user name as the run's user, the
    account hg runs as as who triggered it."""
    from ..core import acl
    from . import trigger

    return dataclasses.replace(
        request,
        user=request.user or config.text(ui.username(acceptempty=True) or b'unknown'),
        identity=request.identity or acl.Identity(trigger.os_account()))


def _check_access(ui, repo, ctx, settings, request, store):
    from . import access

    access.check_run(ui, repo, ctx, settings, request.identity, request.force,
                     list(request.tasks), store)


def _changed_since(planned, todo):
    """For the tasks to build: the paths changed since each one's base (its last
    successful build), and under ``""`` the files ``ctx`` itself touched (for
    tasks never built).  Tasks read them through ``Context.changed_paths``.
    The comparisons are the plan's own (each status is computed once)."""
    out = {"": sorted(pycompat.fsdecode(f) for f in planned.ctx.files())}
    for d in todo:
        if d.base and d.base not in out:
            out[d.base] = sorted(planned.changes(d.base) or [])
    return out


def _begin(ui, settings, store, planned, request, scheduler, decisions):
    """Record the run and its plan; its id.  The run holds a lease in the store
    while it lives (:func:`_lease_keeper`): on a shared store, that is how
    another host tells a dead run from a live one."""
    run_id = uuid.uuid4().hex
    stale = store.interrupt_stale(shared=store.shared)
    if store.shared:
        store.take_lease("run", run_id, run_id, settings.lease)
    if stale:
        ui.warn(_(b'luigi: %d task builds of an earlier run that was killed are recorded '
                  b'as failed\n') % stale)
    store.begin_run(run_id, config.hexstr(planned.ctx), request.user,
                    request.trigger, scheduler or "local", [d.as_dict() for d in decisions])
    _record_checks(store, planned.ctx, planned, decisions)
    return run_id


def _execute(ui, repo, settings, ws, store, planned, request, scheduler, fm):
    decisions = planned.in_scope()
    todo = [d for d in decisions if d.affected]
    result = Result(targets=_asked(planned))
    result.run_id = _begin(ui, settings, store, planned, request, scheduler, decisions)
    lines = show.TaskLines(ui, fm, planned, decisions)
    started = time.time()
    logpath = os.path.join(settings.state, "logs", "%s.log" % result.run_id)
    try:  # from here on, and until it is recorded as ended, the run is seen alive
        with _lease_keeper(settings, result.run_id) if store.shared else \
                contextlib.nullcontext():
            try:
                final, rc = _start_and_follow(ui, repo, settings, ws, store, planned,
                                              request, scheduler, decisions, todo,
                                              result.run_id, lines, logpath)
            except BaseException as e:  # the run is over: never left "running"
                why = (config.abort_text(e) if isinstance(e, error.Abort)
                       else type(e).__name__)
                store.end_run(result.run_id, "failed", lines.outcomes,
                              "run failed: %s" % why)
                raise
            lines.finish(final)
            return _end(ui, fm, store, result, lines, final, rc, time.time() - started,
                        logpath)
    finally:
        if store.shared:
            store.drop_leases(result.run_id)


def _start_and_follow(ui, repo, settings, ws, store, planned, request, scheduler,
                      decisions, todo, run_id, lines, logpath):
    """Write the run's tree and context, start the runner and follow it."""
    data = _run_data(settings, planned, decisions, todo, request, scheduler, run_id,
                     ws.path())
    ui.status(_(b'building %d of %d tasks at %s (%s scheduler)\n')
              % (len(todo), len(decisions), planned.ctx.hex()[:12],
                 _b(scheduler) if scheduler else b'local'))
    recorder = builds.Builds(store, settings, data, planning.task_files(repo, planned),
                             _lineage_events(settings), ws.tree_of)
    return _run_runner(ui, settings, store, data, logpath, lines, len(todo), recorder)


def _lease_keeper(settings, run_id):
    """A heartbeat renewing the run's leases (its own, and those of the tasks
    it builds) every third of ``[luigi] lease``, on a connection of its own."""
    from ..core import heartbeat

    opened = []

    def renew():
        if not opened:
            opened.append(stores.open_store(settings, write=False))
        return opened[0].renew_leases(run_id, settings.lease) > 0

    def close():
        for store in opened:
            store.close()

    return heartbeat.Heartbeat("hgext_luigi-run-lease", settings.lease / 3.0, renew,
                               keep_going=True, close=close)


def _end(ui, fm, store, result, lines, final, rc, elapsed, logpath):
    """Record how the run ended and say it: the summary line, the log when it
    failed."""
    counts = lines.counts()
    failed = counts["failed"] + counts["not run"] > 0 or rc != 0
    store.end_run(result.run_id, "failed" if failed else "success", lines.outcomes,
                  final.get("summary"))
    result.summary = "%d ran, %d reused, %d failed, %d not run" % (
        counts["ran"], counts["reused"], counts["failed"], counts["not run"])
    result.failed, result.not_run = lines.keys("failed"), lines.keys("not run")
    fm.end()
    end = _(b'%s in %.1fs (run %s)\n') % (_b(result.summary), elapsed,
                                          _b(result.run_id[:12]))
    if fm.isplain() and ui.quiet:
        ui.write(end)  # -q: the summary alone
    else:
        ui.status(end)
    if failed:
        ui.warn(_(b'luigi run failed; log: %s\n') % pycompat.fsencode(logpath))
        result.status = 1
    return result


def _record_checks(store, ctx, planned, decisions):
    """Move the comparison point of every task the plan found unaffected up to
    ``ctx``: the next plan compares from here, not from its (maybe old) build,
    so one large commit no task watches is paid for once."""
    from ..core import affected

    store.record_checks(config.hexstr(ctx), [
        (d.key, d.changeset, affected.node_digest(planned.nodes[d.key]))
        for d in decisions if not d.affected and not d.external and d.changeset])


def _run_data(settings, planned, decisions, todo, request, scheduler, run_id, tree):
    """What the runner subprocess learns about the run (its context file; see
    ``core.protocol``)."""
    ctx, tasks = planned.ctx, planned.graph["tasks"]
    return {
        "tree": tree,
        "rev": config.hexstr(ctx), "output_root": settings.output_root,
        # a shared store's connection stays with hg: the runner asks it instead
        "store": None if stores.is_shared(settings) else settings.store,
        "lineage_by_request": stores.is_shared(settings), "module": settings.module,
        "branch": config.text(ctx.branch()), "state": settings.state,
        "run_id": run_id, "user": request.user, "trigger": request.trigger,
        "identity": request.identity.user,
        "plan": [d.as_dict() for d in decisions],
        "changed_since": _changed_since(planned, todo),
        "stamps": {d.key: d.changeset for d in planned.decisions if d.changeset},
        "force": [d.key for d in decisions] if request.force else [],
        "adopted": sorted({t["family"] for t in tasks
                           if not t["hgtask"] and not t.get("external")}),
        "families": sorted({t["family"] for t in tasks}),
        "plain_output_root": settings.plain_output_root,
        "ansible_vault_env": settings.secret_env[0] if settings.secret_env else None,
        "targets": _luigi_targets(planned, todo),
        "workers": request.workers or settings.workers,
        "needs": {d.key: planned.nodes[d.key].requires for d in todo},
        "block_size": settings.block_size, "scheduler": scheduler,
    }


def _lineage_events(settings):
    """The OpenLineage emitter of a run, or None (not configured: the client's
    own ``OPENLINEAGE_URL``, ``OPENLINEAGE_CONFIG`` or ``openlineage.yml``)."""
    from ..core import olevents

    url = settings.repository_url
    return olevents.Emitter.create(settings.openlineage_namespace or url, url)


def _run_runner(ui, settings, store, data, logpath, lines, total, recorder):
    """Start ``hgext_luigi.pipeline.runner`` in the tree with the allow-listed environment,
    its log in ``logpath``, and follow it.  Returns (final event, exit status)."""
    os.makedirs(os.path.dirname(logpath), exist_ok=True)
    secret_fd, secret_env = sandbox.secrets_pipe(os.environ, settings.secret_env)
    reply_r, reply_w = os.pipe()  # the answers to the runner's requests
    child_fds = [reply_r] + ([secret_fd] if secret_fd is not None else [])
    try:
        with subproc.json_file(data, "context-", os.path.dirname(logpath)) as ctxpath, \
                open(logpath, "wb") as log:
            env = dict(secret_env, **{protocol.CONTEXT_ENV: ctxpath,
                                      protocol.REPLY_FD_ENV: str(reply_r)})
            fds, child_fds = child_fds, []  # start() closes them, started or not
            proc = subproc.start(settings, protocol.RUNNER, data["tree"], env=env,
                                 pass_fds=fds, stderr=log)
            try:
                return _follow(ui, proc, lines, total, _answerer(recorder, reply_w))
            finally:
                recorder.close_open()
    finally:
        for fd in child_fds:  # never handed to start(): an error before it
            os.close(fd)
        os.close(reply_w)


def _answerer(recorder, fd):
    """Answer one request of the runner on the pipe ``fd``."""
    def answer(ev):
        try:
            protocol.write_all(fd, protocol.encode(recorder.handle(ev)))
        except OSError:
            pass  # the runner is gone: its exit status says the rest
    return answer


def _follow(ui, proc, lines, total, answer):
    """Read the runner's events until it exits: a line per task as it finishes,
    a request answered as it comes.  Returns (the final event, the exit status)."""
    final = {}
    prog = ui.makeprogress(_(b'luigi'), unit=_(b'tasks'), total=total)
    try:
        for line in iter(lambda: proc.stdout.readline(protocol.MAX_EVENT), b''):
            if len(line) >= protocol.MAX_EVENT and not line.endswith(b'\n'):
                proc.kill()  # pipeline code flooding the channel: stop, do not buffer it
                final = {"event": "error", "message": "the run wrote an event line longer "
                         "than %d bytes on the events channel; stopped" % protocol.MAX_EVENT}
                ui.warn(_(b'luigi: %s\n') % _b(final["message"]))
                break
            ev = protocol.parse_event(line)
            if ev is None:
                continue  # pipeline code can write here too: never trust a line
            kind = ev["event"]
            if kind == "request":
                answer(ev)
            elif kind == "start":
                ui.note(_(b'  started %s\n') % _b(ev["key"]))
                lines.started(ev)
            elif kind in ("success", "failure"):
                prog.increment(item=_b(ev["key"]))
                lines.finished(ev)
            elif kind == "status":
                ui.note(_(b'  %s: %s\n') % (_b(ev["key"]), _b(ev["message"])))
            elif kind == "done":
                final = ev
            elif kind == "error":
                final = ev
                ui.warn(_(b'luigi: %s\n') % _b(ev["message"]))
        return final, proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        prog.complete()
