"""Dispatch a planned revision to Luigi and follow it (hg side).

One run: take the repository's run lock, plan, record the plan in the lineage
store, start ``hgext_luigi.pipeline.runner`` in the tree materialized at the revision,
show its progress and print the per-task summary.  Nothing here holds the
repository lock: builds only read history.
"""

import errno
import fcntl
import json
import os
import subprocess
import tempfile
import time
import uuid

from mercurial import error, pycompat
from mercurial.i18n import _

from ..core import builds, protocol, sandbox
from . import config, graphcache, planning, stores

_b = planning._b


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


# why Luigi left a task unrun (names from luigi.execution_summary)
_NOT_RUN = {
    "not_run": "not granted run permission by the scheduler (a central luigid refuses "
               "to rerun a task it marked done in the last stable_done_cooldown_secs)",
    "upstream_failure": "an upstream task failed",
    "upstream_missing_dependency": "an upstream dependency is missing",
    "still_pending_ext": "an external dependency is missing",
    "still_pending_not_ext": "an input it needs is missing",
    "run_by_other_worker": "being run by another worker",
    "upstream_run_by_other_worker": "an upstream task is being run by another worker",
    "scheduling_error": "failed scheduling",
    "upstream_scheduling_error": "an upstream task failed scheduling",
}


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


def _targets(planned):
    """What the run was asked for: the roots, or the tasks ``--task`` names."""
    keys = planned.selected if planned.selected is not None else planned.roots
    return [_target(planned, k) for k in keys]


def _target(planned, key):
    t = planned.tasks[key]
    return {"family": t["family"], "params": t["params"], "key": key}


def _luigi_targets(planned, todo):
    """What Luigi is handed: the affected tasks alone, upstream first (the
    runner builds them in blocks of that order).  It then checks the outputs
    of their requirements and stops there, instead of walking (and scheduling)
    every reused task of a large graph from the roots."""
    return [_target(planned, d.key) for d in todo]


def run(ui, repo, ctx, settings, opts, trigger="manual", fm=None, user=None, report=None,
        identity=None):
    """Plan and run ``ctx``.  Returns the exit status (0, or 1 if a task failed).

    ``user``: who the run is recorded for (default: the hg user name); ``report``:
    a dict filled with ``run_id``, ``summary`` and ``failed`` (task keys) as they
    are known; ``identity``: the ``acl.Identity`` that triggered the run, for
    ``[luigi] acl`` (default: the account hg runs as; never the hg user name,
    which is the caller's to set)."""
    force = bool(opts.get("all"))
    names = [config.text(n) for n in opts.get("task") or []]
    workers = opts.get("workers") or settings.workers
    sched = opts.get("scheduler")
    scheduler = pycompat.sysstr(sched) if sched else settings.scheduler
    if trigger == "manual" and not opts.get("rev"):  # -r REV: not the working directory
        warn_dirty(ui, repo, ctx)
    if scheduler and not opts.get("dry_run"):
        check_scheduler(scheduler)
    with RunLock(settings.state, settings.lock_timeout), \
            planning.Workspace(ui, repo, ctx, settings) as ws:
        store = stores.open_store(settings)
        try:
            if identity is None:
                from ..core import acl
                from . import trigger as triggers

                identity = acl.Identity(triggers.os_account())
            if not opts.get("dry_run"):  # decided before any code of ctx runs
                from . import access

                access.check_run(ui, repo, ctx, settings, identity, force, names, store)
            planned = planning.make(ui, repo, ctx, settings, ws, force=force, names=names,
                                   store=store)
            if opts.get("dry_run"):
                fm = fm or ui.formatter(b'luigi-run', {})
                planning.show(ui, planned, fm)
                fm.end()
                return 0
            return _execute(ui, repo, ctx, settings, ws, store, planned, force,
                            workers, scheduler, trigger, fm, user,
                            report if report is not None else {}, identity)
        finally:
            store.close()


def _changed_since(repo, ctx, todo):
    """For the tasks to build: the paths changed since each one's base (its last
    successful build), and under ``""`` the files ``ctx`` itself touched (for
    tasks never built).  Tasks read them through ``Context.changed_paths``."""
    changes = planning.changes_since(repo, ctx)
    out = {"": sorted(pycompat.fsdecode(f) for f in ctx.files())}
    for d in todo:
        if d.base and d.base not in out:
            out[d.base] = sorted(changes(d.base) or [])
    return out


def _execute(ui, repo, ctx, settings, ws, store, planned, force, workers, scheduler,
             trigger, fm, user, report, identity):
    decisions = _in_scope(planned)
    todo = [d for d in decisions if d.affected]
    run_id = uuid.uuid4().hex
    if user is None:
        user = config.text(ui.username(acceptempty=True) or b'unknown')
    targets = _targets(planned)
    report.update(run_id=run_id, targets=[t["key"] for t in targets])
    rows = [dict(d.as_dict()) for d in decisions]
    stale = store.interrupt_stale()
    if stale:
        ui.warn(_(b'luigi: %d task builds of an earlier run that was killed are recorded '
                  b'as failed\n') % stale)
    store.begin_run(run_id, pycompat.sysstr(ctx.hex()), user, trigger,
                    scheduler or "local", rows)
    _record_checks(store, ctx, planned, decisions)
    data = dict(_run_data(repo, ctx, settings, planned, decisions, todo, force),
                tree=ws.path(), run_id=run_id, user=user, trigger=trigger, plan=rows,
                identity=identity.user,
                targets=_luigi_targets(planned, todo), workers=workers,
                needs={d.key: planned.nodes[d.key].requires for d in todo},
                block_size=settings.block_size,
                scheduler=scheduler)

    fm = fm or ui.formatter(b'luigi-run', {})
    ui.status(_(b'building %d of %d tasks at %s (%s scheduler)\n')
              % (len(todo), len(decisions), ctx.hex()[:12],
                 _b(scheduler) if scheduler else b'local'))
    lines = TaskLines(ui, fm, planned, decisions)
    started = time.time()
    logpath = os.path.join(settings.state, "logs", "%s.log" % run_id)
    final, rc = _run_runner(ui, settings, store, data, logpath, lines, len(todo),
                            planning.task_files(repo, planned), _lineage_events(repo, settings),
                            ws.tree_of)
    elapsed = time.time() - started

    lines.finish(final)
    counts = lines.counts()
    failed = counts["failed"] + counts["not run"] > 0 or rc != 0
    store.end_run(run_id, "failed" if failed else "success", lines.outcomes,
                  final.get("summary"))
    summary = "%d ran, %d reused, %d failed, %d not run" % (
        counts["ran"], counts["reused"], counts["failed"], counts["not run"])
    report.update(summary=summary, failed=lines.keys("failed"),
                  not_run=lines.keys("not run"))
    fm.end()
    end = _(b'%s in %.1fs (run %s)\n') % (_b(summary), elapsed, _b(run_id[:12]))
    if fm.isplain() and ui.quiet:
        ui.write(end)  # -q: the summary alone
    else:
        ui.status(end)
    if failed:
        ui.warn(_(b'luigi run failed; log: %s\n') % pycompat.fsencode(logpath))
        return 1
    return 0


def _record_checks(store, ctx, planned, decisions):
    """Move the comparison point of every task the plan found unaffected up to
    ``ctx``: the next plan compares from here, not from its (maybe old) build,
    so one large commit no task watches is paid for once."""
    from ..core import affected

    store.record_checks(pycompat.sysstr(ctx.hex()), [
        (d.key, d.changeset, affected.node_digest(planned.nodes[d.key]))
        for d in decisions if not d.affected and not d.external and d.changeset])


def _in_scope(planned):
    """The decisions of the run: all of them, or what ``--task`` selected and
    what it needs."""
    if planned.selected is None:
        return list(planned.decisions)
    from ..core import affected

    keep = set(affected.toposort(planned.nodes, planned.selected))
    return [d for d in planned.decisions if d.key in keep]


def _run_data(repo, ctx, settings, planned, decisions, todo, force):
    """What the runner subprocess learns about the run (its context file)."""
    tasks = planned.graph["tasks"]
    return {
        "mode": "run", "repo": pycompat.fsdecode(repo.root),
        "rev": pycompat.sysstr(ctx.hex()), "output_root": settings.output_root,
        "store": settings.store, "module": settings.module,
        "branch": config.text(ctx.branch()), "state": settings.state,
        "changed_since": _changed_since(repo, ctx, todo),
        "stamps": {d.key: d.changeset for d in planned.decisions if d.changeset},
        "force": [d.key for d in decisions] if force else [],
        "adopted": sorted({t["family"] for t in tasks
                           if not t["hgtask"] and not t.get("external")}),
        "families": sorted({t["family"] for t in tasks}),
        "plain_output_root": settings.plain_output_root,
        "ansible_vault_env": settings.secret_env[0] if settings.secret_env else None,
    }


def _lineage_events(repo, settings):
    """The OpenLineage emitter of a run, or None (not configured: the client's
    own ``OPENLINEAGE_URL``, ``OPENLINEAGE_CONFIG`` or ``openlineage.yml``)."""
    from ..core import olevents

    url = config.text(repo.ui.config(b'paths', b'default') or repo.root)
    return olevents.Emitter.create(settings.openlineage_namespace or url, url)


def _run_runner(ui, settings, store, data, logpath, lines, total, files_of=None,
                lineage_events=None, tree_of=None):
    """Start ``hgext_luigi.pipeline.runner`` in the tree with the allow-listed environment,
    its log in ``logpath``, and follow it.  Returns (final event, exit status)."""
    logdir = os.path.dirname(logpath)
    os.makedirs(logdir, exist_ok=True)
    fd, ctxpath = tempfile.mkstemp(prefix="context-", suffix=".json", dir=logdir)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)
    secret_fd, secret_env = sandbox.secrets_pipe(os.environ, settings.secret_env)
    reply_r, reply_w = os.pipe()  # the answers to the runner's requests
    child_fds = [reply_r] + ([secret_fd] if secret_fd is not None else [])
    env = dict(secret_env, **{protocol.CONTEXT_ENV: ctxpath,
                              protocol.REPLY_FD_ENV: str(reply_r)})
    try:
        with open(logpath, "wb") as log:
            try:
                proc = subprocess.Popen(
                    [settings.python, "-m", protocol.RUNNER], cwd=data["tree"],
                    env=graphcache.pipeline_env(settings, env), pass_fds=child_fds,
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
            except OSError as e:
                store.end_run(data["run_id"], "failed", {},
                              "cannot start %s: %s" % (settings.python, e))
                raise error.Abort(_(b'cannot start %s: %s')
                                  % (pycompat.fsencode(settings.python), _b(e.strerror)))
            finally:
                for fd in child_fds:
                    os.close(fd)  # the child has its copies
            recorder = builds.Builds(store, settings, data, files_of, lineage_events,
                                     tree_of)
            try:
                return _follow(ui, proc, lines, total, _answerer(recorder, reply_w))
            finally:
                recorder.close_open()
    finally:
        os.close(reply_w)
        try:
            os.unlink(ctxpath)
        except OSError:
            pass


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


class TaskLines:
    """One line (one formatter item) per task of the run, written once: as the
    task finishes for the tasks Luigi ran, at the end for the others.  Outcomes
    are ``ran``, ``reused``, ``failed`` and ``not run``."""

    def __init__(self, ui, fm, planned, decisions):
        self.ui, self.fm, self.planned = ui, fm, planned
        self.decisions = decisions
        self.width = max([len(d.key) for d in decisions] + [4])
        self.events = {}
        self.outcomes = {}  # key -> (outcome, task id, seconds)

    def started(self, ev):
        self.events.setdefault(ev["key"], {})["task_id"] = ev["task_id"]

    def finished(self, ev):
        info = self.events.setdefault(ev["key"], {})
        info.update(ev)
        d = self.planned.by_key.get(ev["key"])
        if d is None or ev["key"] in self.outcomes:
            return
        if ev["event"] == "success":
            self._write(d, "ran", ev.get("task_id"), ev.get("seconds"), None)
        else:
            self._write(d, "failed", ev.get("task_id"), ev.get("seconds"), ev.get("error"))

    def finish(self, final):
        """The lines of the tasks that did not finish while we watched."""
        luigi_outcome = final.get("luigi", {})
        ids = final.get("ids", {})
        for d in self.decisions:
            if d.key in self.outcomes:
                continue
            ev = self.events.get(d.key, {})
            task_id = ev.get("task_id") or ids.get(d.key)
            error_msg = None
            if ev:
                outcome, error_msg = "failed", "interrupted"
            elif d.external and luigi_outcome.get(d.key) == "still_pending_ext":
                outcome = "not run"
                error_msg = "its output is missing (an external input: produce it, then run again)"
            elif d.external or not d.affected or luigi_outcome.get(d.key) == "already_done":
                outcome = "reused"
            else:
                outcome = "not run"
                why = luigi_outcome.get(d.key)
                error_msg = _NOT_RUN.get(why, why.replace("_", " ") if why else None)
            if task_id is None and not self.fm.isplain():  # ids need Luigi: for -T only
                task_id = planning.task_id(self.planned, d)
            self._write(d, outcome, task_id, None, error_msg)

    def _write(self, d, outcome, task_id, seconds, error_msg):
        self.outcomes[d.key] = (outcome, task_id, seconds)
        fm = self.fm
        if fm.isplain() and self.ui.quiet:
            return  # -q: the summary line alone
        fm.startitem()
        fm.write(b'outcome', b'%-8s ', _b(outcome),
                 label=b'luigi.outcome.%s' % _b(outcome.replace(' ', '-')))
        fm.write(b'key', b'%%-%ds  ' % self.width, _b(d.key))
        fm.plain(b'%-12s' % (_b(d.changeset[:12]) if d.changeset else b'-'))
        fm.data(changeset=_b(d.changeset) if d.changeset else None, family=_b(d.family),
                affected=d.affected, task=_b(task_id) if task_id else None)
        fm.condwrite(seconds is not None, b'seconds', b'  %.2fs', seconds or 0.0)
        fm.condwrite(bool(error_msg), b'error', b'  %s', _b(error_msg))
        fm.plain(b'\n')

    def counts(self):
        out = {"ran": 0, "reused": 0, "failed": 0, "not run": 0}
        for outcome, _id, _s in self.outcomes.values():
            out[outcome] += 1
        return out

    def keys(self, outcome):
        return [d.key for d in self.decisions if self.outcomes[d.key][0] == outcome]
