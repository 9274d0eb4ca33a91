"""Who may build what: ``[luigi] acl`` applied to pushes and runs (hg side).

Ownership is the ``[owners]`` section of the watches file (``.hgluigi``) read
at a revision the server already had, never at the changeset being checked:

- a push: the parents, outside the push, of the pushed changesets a new head
  contains (the repository as it was before the push);
- a run (``hg luigi-run``, the worker, the callback): the revision's first parent.

A task is checked when the changed paths touch it: a watched file, or the
module defining it or one it imports.  Tasks rebuilt only because something
upstream changed run their owner's unchanged code and are not checked.
``[luigi all]`` / ``--all`` needs ``[luigi.acl] allow-force``.  Groups come
from the identity provider (a token's groups claim, see ``hgext_luigi.wsgi``)
and from the server's ``[luigi.groups]``.  Every decision is one audit record.
"""

from mercurial import error, pycompat
from mercurial.i18n import _

from . import acl, config

_b = config.local


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


def touched_families(repo, ctx, graph, files):
    """``{family: [changed paths touching it]}``: tasks of ``graph`` (the task
    graph at ``ctx``) whose watches match or whose code is one of ``files``."""
    from . import planner

    nodes = planner.graph_nodes(graph)
    matches = planner.Matchers(repo, ctx, nodes)
    out = {}
    for key, node in nodes.items():
        if node.external:
            continue
        code = set(node.code)
        hits = [f for f in files if f in code or (node.watches and matches(key, f))]
        if hits:
            out.setdefault(node.family, []).extend(hits)
    return {f: sorted(set(p)) for f, p in out.items()}


def push_bases(repo, head, first):
    """The revisions the server had that the push's changesets in ``::head``
    grew from: their parents outside the push (``first`` is the push's first
    revision number)."""
    unfi = repo.unfiltered()
    revs = unfi.revs(b'%d:%d and ::%d', first, head.rev(), head.rev())
    bases = {p for r in revs for p in unfi.changelog.parentrevs(r) if 0 <= p < first}
    return [unfi[p] for p in sorted(bases)] or [unfi[b'null']]


def push_files(repo, head, first):
    """Paths the push's changesets in ``::head`` changed."""
    unfi = repo.unfiltered()
    files = set()
    for r in unfi.revs(b'%d:%d and ::%d', first, head.rev(), head.rev()):
        files.update(unfi[r].files())
    return sorted(pycompat.fsdecode(f) for f in files)


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
        return {"mode": pycompat.sysstr(self.mode), "allowed": self.allowed,
                "groups": list(self.identity.token_groups),
                "checked": sorted(self.touched), "force_denied": self.force_denied,
                "denied": [{"task": d.family, "owners": list(d.owners), "reason": d.reason,
                            "paths": self.touched.get(d.family, [])} for d in self.denied]}

    def message(self):
        """What the pusher reads: each refused task, its owners, the paths."""
        lines = []
        for d in self.denied:
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


def check_run(ui, repo, ctx, settings, graph, identity, force, names, store):
    """Before a run builds ``ctx`` with the server's roles: abort (``enforce``) or
    record (``warn``) when ``identity`` does not own what the revision changes,
    or a task it asked for by name."""
    if settings.acl == b'off':
        return None
    p1 = ctx.p1()
    files = sorted(pycompat.fsdecode(f) for f in ctx.files())
    touched = touched_families(repo, ctx, graph, files)
    for name in names:
        family = name.split("(", 1)[0]
        touched.setdefault(family, []).append("(asked for by name)")
    verdict = decide(settings, identity, pycompat.sysstr(ctx.hex()), touched,
                     owners_at(repo, [p1], settings), force)
    store.record("acl", verdict.record(), actor=identity.user,
                 changeset=pycompat.sysstr(ctx.hex()))
    if verdict.allowed or settings.acl == b'warn':
        return verdict
    ui.warn(_(b'luigi acl: %s may not build at %s:\n%s')
            % (_b(who(identity)), ctx.hex()[:12], verdict.message()))
    raise error.Abort(_(b'luigi acl: %s does not own what %s changes')
                      % (_b(who(identity)), ctx.hex()[:12]),
                      hint=_(b'ownership is [owners] in %s at %s (the first parent)')
                      % (_b(settings.watches_file), p1.hex()[:12]))
