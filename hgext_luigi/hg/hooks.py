"""Hooks the extension registers itself.

``commit``: with ``[luigi] on-commit = plan`` prints the tasks the new changeset
affects (one line; from the cached task graph, so no Luigi import unless the
pipeline code changed); with ``run`` it runs them.  The ``commit`` hook runs
after the repository lock is released, so builds never hold it.

Pushes (``source`` push or serve; pulls and unbundles are not pushes):

``pretxnchangegroup``: with ``[luigi] gate``, loads the pipeline at each new
head (in a subprocess) and rejects the push when it is broken.  Then, unless
``on-push = off``, records one queue entry per new head, inside the push's
transaction (durable before the push is acknowledged).
``txnabort``: the push was rolled back, its entries are forgotten.
``changegroup`` (after the transaction closed and the lock was released): the
entries become pending; with ``on-push = run`` they are built there and then.

Hooks return a false value on success, as Mercurial expects.
"""

import dataclasses
import os

from mercurial import error
from mercurial.i18n import _

from . import config

_b = config.local


def _auto(func):
    """The registered form of a hook: stands aside when ``[luigi] auto-hooks`` is
    false in the configuration of the repository it runs for (hooks are then
    listed in ``[hooks]`` by hand)."""

    def hook(ui, repo, *args, **kwargs):
        if not config.auto_hooks(ui):
            return False
        return func(ui, repo, *args, **kwargs)

    hook.__name__ = func.__name__
    return hook


def uipopulate(ui):
    for name, func in ((b'commit', commit_hook),
                       (b'pretxnchangegroup', pretxnchangegroup_hook),
                       (b'txnabort', txnabort_hook),
                       (b'changegroup', changegroup_hook)):
        ui.setconfig(b'hooks', b'%s.hgext_luigi' % name, _auto(func), b'hgext_luigi')


def commit_hook(ui, repo, hooktype, node=None, **kwargs):
    try:
        settings = config.Settings.read(ui, repo)
    except error.Abort as e:
        from . import runs

        runs.warn_abort(ui, e)
        return True
    mode = settings.on_commit
    if mode == b'off' or node is None:
        return None
    from . import runs, planning

    ctx = repo[node]
    try:
        if mode == b'plan':
            with planning.Workspace(ui, repo, ctx, settings) as ws:
                planned = planning.make(ui, repo, ctx, settings, ws)
            affected = planned.affected
            if not affected:
                ui.status(_(b'luigi: no task affected by %s\n') % ctx.hex()[:12])
            else:
                names = b', '.join(_b(d.key) for d in affected[:6])
                more = b' and %d more' % (len(affected) - 6) if len(affected) > 6 else b''
                ui.status(_(b'luigi: %d of %d tasks affected by %s: %s%s\n')
                          % (len(affected), len(planned.decisions), ctx.hex()[:12],
                             names, more))
                ui.status(_(b'luigi: build them with hg luigi-run\n'))
            return None
        return bool(runs.run(ui, repo, ctx, settings, runs.Request(trigger="commit")).status)
    except error.Abort as e:
        runs.warn_abort(ui, e)
        return True


# -- pushes -------------------------------------------------------------------

def check_pipeline(ui, repo, ctx, settings):
    """Load the pipeline at ``ctx`` in a subprocess and check it: imports, task
    graph without cycles, valid ``watches`` patterns.  Aborts when broken, or
    when ``ctx`` holds a path no tree may be written at (``../x``, ``.hg/hgrc``,
    a file under a symlink), even if the task graph is cached."""
    from . import graphcache, planning, trees

    trees.check_paths(ctx)
    with planning.Workspace(ui, repo, ctx, settings) as ws:
        graph = graphcache.load(ui, ctx, settings, ws.path)
    planning.Matchers(repo, ctx, planning.graph_nodes(graph)).check_all()


def _reject(ui, q, ctx, who, source, e):
    """Refuse the push.  The details go out as hook output, which reaches the
    pusher whole; the abort itself stays short (over HTTP it travels as a
    bundle2 parameter, which holds at most 255 bytes).  The refusal is an audit
    record of its own: the push's transaction rolls back, the record stays."""
    ui.warn(_(b'luigi gate: the pipeline at %s (%s) is broken:\n%s\n')
            % (ctx.hex()[:12], ctx.branch(), e.message))
    if e.hint and e.hint not in e.message:
        ui.warn(b'(%s)\n' % e.hint)
    q.record_decision("push-rejected", {"source": source, "reason": "gate",
                                        "message": config.text(e.message)},
                      actor=who, changeset=config.hexstr(ctx))
    raise error.Abort(_(b'luigi gate rejected the push: the pipeline at %s is broken')
                      % ctx.hex()[:12],
                      hint=_(b'fix it and push again (details above)'))


def _check_access(ui, repo, q, settings, ctx, node, identity, force, source):
    """``[luigi] acl`` for one new head: what its changesets change must be
    owned by the pusher, as the server had ``[owners]`` before the push.
    Decided from accepted code alone, before any of the push runs (the gate)."""
    from . import access

    first = repo.unfiltered()[node].rev()
    bases = access.push_bases(repo, ctx, first)
    others = access.branch_heads(repo, ctx, first)
    verdict = access.check(ui, repo, settings, identity, ctx, bases, others, force)
    q.record_decision("acl", dict(verdict.record(), source=source,
                                  owners_from=[config.hexstr(b) for b in bases + others]),
                      actor=identity.user, changeset=config.hexstr(ctx))
    if verdict.allowed:
        return
    if settings.acl == b'warn':
        ui.note(_(b'luigi acl (warn): %s does not own what %s changes\n')
                % (_b(access.who(identity)), ctx.hex()[:12]))
        return
    ui.warn(_(b'luigi acl: %s may not push %s:\n%s')
            % (_b(access.who(identity)), ctx.hex()[:12], verdict.message()))
    q.record_decision("push-rejected", {"source": source, "reason": "acl"},
                      actor=identity.user, changeset=config.hexstr(ctx))
    raise error.Abort(_(b'luigi acl rejected the push: %s does not own what %s changes')
                      % (_b(access.who(identity)), ctx.hex()[:12]),
                      hint=_(b'ask an owner (details above); ownership is [owners] in %s '
                             b'as the server had it') % _b(settings.watches_file))


def pretxnchangegroup_hook(ui, repo, hooktype, node=None, node_last=None, source=None,
                           url=None, txnid=None, **kwargs):
    from ..core import acl, identity
    from . import trigger

    if node is None or source not in trigger.PUSH_SOURCES:
        return False
    settings = config.Settings.read(ui, repo)
    gate, mode, enforce = settings.gate, settings.on_push, settings.acl != b'off'
    if not gate and mode == b'off' and not enforce:
        return False
    push = _Push(heads=trigger.push_heads(repo, node, node_last), node=node,
                 who=trigger.pusher(ui, url), user=trigger.acl_user(url),
                 source=trigger.describe_source(url))
    q = _queue(settings)
    try:
        groups = identity.token_groups(push.user)
        for ctx in push.heads if enforce else ():  # every branch: a merge can bring any in
            force = trigger.directives(repo, ctx, node)[1]
            _check_access(ui, repo, q, settings, ctx, node, acl.Identity(push.user, groups),
                          force, push.source)
        if gate:  # runs pushed code: only once access is decided
            _gate(ui, repo, q, settings, push)
        if mode != b'off':
            q.record([_entry(repo, settings, push, ctx, groups) for ctx in push.heads],
                     _txn(txnid, node))
    finally:
        q.close()
    return False


@dataclasses.dataclass(frozen=True)
class _Push:
    """One push as the hooks know it: its new heads, first node, who pushed
    (as recorded, and as access control names them) and from where."""

    heads: list
    node: bytes
    who: str
    user: str
    source: str


def _gate(ui, repo, q, settings, push):
    from . import trigger

    for ctx in push.heads:
        if not trigger.branch_allowed(settings, ctx.branch()):
            continue
        try:
            check_pipeline(ui, repo, ctx, settings)
        except error.Abort as e:
            _reject(ui, q, ctx, push.who, push.source, e)
        q.record_decision("gate", {"verdict": "ok", "source": push.source}, actor=push.who,
                          changeset=config.hexstr(ctx))
        ui.note(_(b'luigi gate: pipeline at %s checked\n') % ctx.hex()[:12])


def _entry(repo, settings, push, ctx, groups):
    """The queue entry of one pushed head."""
    from . import trigger

    skip, force = trigger.directives(repo, ctx, push.node)
    entry = {"head": config.hexstr(ctx), "force": force, "pusher": push.who,
             "author": trigger.author(ctx),
             "identity": {"user": push.user, "groups": list(groups)},
             "branch": config.text(ctx.branch(), errors='replace'), "source": push.source}
    if not trigger.branch_allowed(settings, ctx.branch()):
        entry.update(state="skipped", summary="branch %s is not built ([luigi] branches)"
                     % entry["branch"])
    elif skip:
        entry.update(state="skipped", summary="[luigi skip] in the commit message")
    return entry


def _queue(settings):
    from . import stores

    return stores.open_queue(settings)


def _record_accepted(ui, repo, settings, node, node_last, url):
    from . import trigger

    heads = trigger.push_heads(repo, node, node_last)
    q = _queue(settings)
    try:
        q.record_decision("push-accepted", {
            "source": trigger.describe_source(url), "entries": [],
            "heads": [config.hexstr(h) for h in heads]},
            actor=trigger.pusher(ui, url), changeset=config.hexstr(heads[-1]))
    finally:
        q.close()


def _txn(txnid, node):
    return (txnid or b'').decode('ascii') or 'node:' + node.decode('ascii')


def txnabort_hook(ui, repo, hooktype, txnid=None, **kwargs):
    from ..core import pushqueue
    from . import stores

    settings = config.Settings.read(ui, repo)
    if not txnid or not stores.recorded(settings):
        return False
    try:
        # deletes what was never accepted: no record
        q = pushqueue.open_queue(settings.queue)
    except pushqueue.QueueError as e:
        raise error.Abort(_b(str(e)))
    try:
        q.abort(_txn(txnid, b''))
    finally:
        q.close()
    return False


def changegroup_hook(ui, repo, hooktype, node=None, source=None, txnid=None, **kwargs):
    from . import trigger

    if node is None or source not in trigger.PUSH_SOURCES:
        return False
    settings = config.Settings.read(ui, repo)
    mode = settings.on_push
    if mode == b'off':
        if settings.gate or settings.acl != b'off':  # decisions were recorded: and this
            _record_accepted(ui, repo, settings, node, kwargs.get('node_last'),
                             kwargs.get('url'))
        return False
    q = _queue(settings)
    try:
        ids = q.confirm(_txn(txnid, node))
        entries = [q.get(i) for i in ids]
        for e in entries:
            if e["state"] == "skipped":
                ui.status(_(b'luigi: nothing built for %s: %s\n')
                          % (_b(e["head"][:12]), _b(e["summary"])))
        pending = [e for e in entries if e["state"] == "pending"]
        if mode == b'queue':
            if pending:
                ui.status(_(b'luigi: queued %s for %s (queue entr%s %s)\n')
                          % (b'a build' if len(pending) == 1 else b'%d builds' % len(pending),
                             b', '.join(_b(e["head"][:12]) for e in pending),
                             b'y' if len(pending) == 1 else b'ies',
                             b', '.join(b'%d' % e["id"] for e in pending)))
            return False
        # on-push = run: build this push's heads now, streaming to the pusher
        from . import worker

        owner = worker.owner_id()
        failed = False
        for e in pending:
            entry = q.claim(owner, settings.lease, settings.max_attempts, only=e["id"])
            if entry is None:
                continue  # a worker took it first
            # this push's own heads, nothing else
            state = worker.process(ui, repo, settings, q, entry, owner, coalesce=False)
            failed = failed or state != "done"
        if failed:
            ui.warn(_(b'luigi: the pipeline failed; the push itself is kept '
                      b'(see hg luigi-queue and hg luigi-lineage on the server)\n'))
        return failed
    finally:
        q.close()
