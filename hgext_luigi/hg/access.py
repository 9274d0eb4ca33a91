"""Who may build what: ``[luigi] acl`` applied to pushes and runs (hg side).

Everything is decided from what the server already accepted, before any code
of the changeset being checked runs:

- the bases: for a push, the parents (outside the push) of the pushed
  changesets a new head contains; for a run, the revision's first parent;
- ownership: the ``[owners]`` section of the watches file (``.hgluigi``) at the
  bases and at the other heads of the branch the server had (ownership revoked
  on the branch is not regained by building on an older revision);
- the task graph at the bases (accepted code), and the paths that differ
  between each base and the new revision (``hg status``, so a merge brings in
  everything its other parent changed).

A changed file that a task watches touches that task.  A changed file of
pipeline code — a module the pipeline imports, any ``.py`` file, a Luigi
configuration file, the — touches every task: modules share one process, where
code can change any task; such a change needs every task's owner and the
``*`` owner.  A change to the watches file (``[owners]``, ``[watches]``) needs
the ``*`` owner: they administer ownership.
Tasks rebuilt only because something upstream changed are not checked.
``[luigi all]`` / ``--all`` needs ``[luigi.acl] allow-force``.  Groups come from
the identity provider (a token's groups claim, see ``hgext_luigi.wsgi``) and
from the server's ``[luigi.groups]``.  Every decision is one audit record.
"""

import os

from mercurial import error, pycompat
from mercurial.i18n import _

from ..core import acl
from . import config

_b = config.local

# the pseudo-family of pipeline code: owned by the `*` rule of [owners]
ALL = "*"
_CONFIG_NAMES = ("luigi.cfg", "luigi.toml", "client.cfg")


def owners_at(repo, ctxs, settings):
    """The ``[owners]`` of the watches file at each of ``ctxs`` (the null
    revision and a revision without the file have none)."""
    path = pycompat.fsencode(settings.watches_file)
    out = []
    for ctx in ctxs:
        data = ctx[path].data() if ctx.rev() >= 0 and path in ctx else None
        try:
            out.append(acl.parse_owners(data, settings.watches_file))
        except acl.AclError as e:
            raise error.Abort(_(b'cannot read the owners at %s: %s')
                              % (ctx.hex()[:12], _b(e.message)),
                              hint=_(b'fix [owners] in %s') % _b(settings.watches_file))
    return out


def graph_at(ui, repo, ctx, settings):
    """The task graph of accepted code at ``ctx``; None at the null revision or
    where no pipeline loads (then every change counts as pipeline code)."""
    from . import graphcache, planning

    if ctx.rev() < 0:
        return None
    try:
        with planning.Workspace(ui, repo, ctx, settings) as ws:
            return graphcache.load(ui, ctx, settings, ws.path)
    except error.Abort as e:
        ui.note(_(b'luigi acl: no task graph at %s: %s\n') % (ctx.hex()[:12], e.message))
        return None


def changed_paths(repo, bases, ctx):
    """``{path: kind}`` of what differs between any of ``bases`` and ``ctx``."""
    out = {}
    unfi = repo.unfiltered()
    for base in bases:
        st = unfi.status(base.node(), ctx.node())
        for kind, files in (('modified', st.modified), ('added', st.added),
                            ('removed', st.removed)):
            for f in files:
                out.setdefault(pycompat.fsdecode(f), kind)
    return out


def _is_code(path, graph, settings):
    known = set(graph["files"]) if graph else set()
    package = settings.module.split(".")[0] + "/"
    return path != settings.watches_file and (
        path in known or path.endswith(".py") or os.path.basename(path) in _CONFIG_NAMES
        or path.startswith(package))


def touched_families(repo, base, graph, changed, settings):
    """``{family: [changed paths touching it]}`` by the task graph at ``base``:
    watched files touch their tasks, pipeline code touches every task and
    the ``*`` pseudo-family."""
    from . import planning

    nodes = planning.graph_nodes(graph) if graph else {}
    families = sorted({n.family for n in nodes.values() if not n.external})
    code = sorted(p for p in changed if _is_code(p, graph, settings))
    out = {f: list(code) for f in families + [ALL]} if code else {}
    if settings.watches_file in changed:  # [owners] and [watches]: the `*` owners'
        out.setdefault(ALL, []).append(settings.watches_file)
    data = [p for p in changed if p not in code and p != settings.watches_file]
    if data and nodes:
        from ..core import affected

        watching = {k: n for k, n in nodes.items() if not n.external and n.watches}
        seen = affected.touched(affected.WatchIndex(watching), {p: changed[p] for p in data},
                            planning.Matchers(repo, base, watching),
                            config.hexstr(base))
        for key, hits in seen.items():
            paths = [path for path, kind, how in hits if how == "watch"]
            if paths:
                out.setdefault(nodes[key].family, []).extend(paths)
    return {f: sorted(set(p)) for f, p in out.items()}


def push_bases(repo, head, first):
    """The revisions the server had that the push's changesets in ``::head``
    grew from: their parents outside the push (``first`` is the push's first
    revision number)."""
    unfi = repo.unfiltered()
    revs = unfi.revs(b'%d:%d and ::%d', first, head.rev(), head.rev())
    bases = {p for r in revs for p in unfi.changelog.parentrevs(r) if 0 <= p < first}
    return [unfi[p] for p in sorted(bases)] or [unfi[b'null']]


def branch_heads(repo, ctx, before):
    """The heads of ``ctx``'s branch among the revisions below ``before`` that
    ``ctx`` does not descend from: newer ownership than the bases may hold."""
    unfi = repo.unfiltered()
    if before <= 0:
        return []
    revs = unfi.revs(b'heads(branch(%s) and 0:%d) - ::%d', ctx.branch(), before - 1,
                     ctx.rev())
    return [unfi[r] for r in revs]


def check(ui, repo, settings, identity, ctx, bases, others, force, names=()):
    """The :class:`Verdict` for ``identity`` bringing ``ctx`` over ``bases``."""
    changed = changed_paths(repo, bases, ctx)
    touched = {}
    for base in bases:
        graph = graph_at(ui, repo, base, settings)
        for family, paths in touched_families(repo, base, graph, changed,
                                              settings).items():
            touched.setdefault(family, []).extend(paths)
    for name in names:
        family = name.strip().split("(", 1)[0].strip()
        touched.setdefault(family, []).append("(asked for by name)")
    touched = {f: sorted(set(p)) for f, p in touched.items()}
    owners = owners_at(repo, list(bases) + list(others), settings)
    return decide(settings, identity, config.hexstr(ctx), touched, owners, force)


def who(identity):
    """How messages name an identity (an anonymous one has no user)."""
    return acl.show(identity.user) if identity.user else "an anonymous user"


class Verdict:
    """The decisions for one revision: ``denied`` (acl.Decision list) and what
    the audit record holds."""

    def __init__(self, identity, changeset, touched, denied, force_denied, mode):
        self.identity, self.changeset = identity, changeset
        self.touched, self.denied, self.force_denied = touched, denied, force_denied
        self.mode = mode

    @property
    def allowed(self):
        return not self.denied and not self.force_denied

    def record(self):
        return {"mode": config.text(self.mode), "allowed": self.allowed,
                "groups": list(self.identity.token_groups),
                "checked": sorted(self.touched), "force_denied": self.force_denied,
                "denied": [{"task": d.family, "owners": list(d.owners), "reason": d.reason,
                            "paths": self.touched.get(d.family, [])} for d in self.denied]}

    def message(self, shown=8):
        """What the pusher reads: each refused task, its owners, the paths."""
        lines = []
        if len(self.denied) > shown:
            lines.append(_(b'  (%d tasks refused; the first %d:)\n') % (len(self.denied), shown))
        for d in self.denied[:shown]:
            paths = self.touched.get(d.family, [])
            lines.append(_(b'  %s: %s\n    changed: %s\n')
                         % (_b(d.family), _b(d.reason),
                            _b(", ".join(paths[:5]) + (" ..." if len(paths) > 5 else ""))))
        if self.force_denied:
            lines.append(_(b'  [luigi all] / --all: %s may not rebuild every task '
                           b'([luigi.acl] allow-force)\n') % _b(who(self.identity)))
        return b''.join(lines)


def decide(settings, identity, changeset, touched, owners_list, force):
    """The :class:`Verdict` of ``identity`` building ``touched`` families."""
    denied = acl.check_all(identity, sorted(touched), owners_list, settings.groups,
                           settings.acl_deny)
    force_denied = bool(force) and not acl.may_force(identity, settings.allow_force,
                                                     settings.groups)
    return Verdict(identity, changeset, touched, denied, force_denied, settings.acl)


def check_run(ui, repo, ctx, settings, identity, force, names, store):
    """Before a run builds ``ctx`` with the server's roles: abort (``enforce``) or
    record (``warn``) when ``identity`` does not own what the revision changes
    since its first parent, or a task it asked for by name."""
    if settings.acl == b'off':
        return None
    p1 = ctx.p1()
    others = branch_heads(repo, ctx, len(repo.unfiltered()))
    verdict = check(ui, repo, settings, identity, ctx, [p1], others, force, names)
    store.record("acl", dict(verdict.record(), owners_from=[
        config.hexstr(c) for c in [p1] + others]),
        actor=identity.user, changeset=config.hexstr(ctx))
    if verdict.allowed or settings.acl == b'warn':
        return verdict
    ui.warn(_(b'luigi acl: %s may not build at %s:\n%s')
            % (_b(who(identity)), ctx.hex()[:12], verdict.message()))
    raise error.Abort(_(b'luigi acl: %s does not own what %s changes')
                      % (_b(who(identity)), ctx.hex()[:12]),
                      hint=_(b'ownership is [owners] in %s at %s (the first parent)')
                      % (_b(settings.watches_file), p1.hex()[:12]))
