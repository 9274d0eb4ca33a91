"""Hooks the extension registers itself.

``commit``: with ``[luigi] on-commit = plan`` prints the tasks the new changeset
affects (one line; from the cached task graph, so no Luigi import unless the
pipeline code changed); with ``run`` it runs them.  The ``commit`` hook runs
after the repository lock is released, so builds never hold it.

Hooks return a false value on success, as Mercurial expects.
"""

from mercurial import error
from mercurial.i18n import _

from . import config


def uipopulate(ui):
    ui.setconfig(b'hooks', b'commit.hgext_luigi', commit_hook, b'hgext_luigi')


def commit_hook(ui, repo, hooktype, node=None, **kwargs):
    mode = ui.config(b'luigi', b'on-commit')
    if mode == b'off' or node is None:
        return None
    if mode not in config.ON_COMMIT:
        ui.warn(_(b'luigi: unknown [luigi] on-commit value %s (use off, plan or run)\n')
                % mode)
        return True
    from . import dispatch, planner

    settings = config.Settings(ui, repo)
    ctx = repo[node]
    try:
        if mode == b'plan':
            with planner.Workspace(ui, repo, ctx, settings) as ws:
                planned = planner.make(ui, repo, ctx, settings, ws)
            affected = planned.affected
            if not affected:
                ui.status(_(b'luigi: no task affected by %s\n') % ctx.hex()[:12])
            else:
                names = b', '.join(config.local(d.key) for d in affected[:6])
                more = b' and %d more' % (len(affected) - 6) if len(affected) > 6 else b''
                ui.status(_(b'luigi: %d of %d tasks affected by %s: %s%s\n')
                          % (len(affected), len(planned.decisions), ctx.hex()[:12],
                             names, more))
                ui.status(_(b'luigi: build them with hg luigi-run\n'))
            return None
        rc = dispatch.run(ui, repo, ctx, settings, {}, trigger="commit")
        return bool(rc)
    except error.Abort as e:
        ui.warn(_(b'luigi: %s\n') % e.message)
        if e.hint:
            ui.warn(_(b'(%s)\n') % e.hint)
        return True
