"""Which tasks a revision affects, and why.  Plain Python: no Mercurial, no Luigi.

The caller (``hgext_luigi.planner`` on the Mercurial side) supplies three things:

- the task graph, as :class:`Node` objects (from the pipeline index);
- ``history(key)``: the task's successful builds, newest first, each a dict with
  ``changeset``, ``outputs`` (paths) and ``inputs`` ({upstream key: changeset});
- ``changes(base)``: {path: 'modified' | 'added' | 'removed'} between ``base`` and
  the revision being planned (``None`` when ``base`` is unknown to the repository),
  and ``matches(key, path, kind, base)``: whether a task watches a path.

Each task is compared with its own last successful build rather than with a guessed
"previous revision": several changesets in one push, merges, branch switches and
a previous run that failed all come out right, because the only question asked is
"does the content this task depends on differ from what its last good build saw?".
"""

import os

NEVER_BUILT = "never built"


def short(node):
    return node[:12] if node else "-"


class PlanError(Exception):
    """The task graph or the selection cannot be planned."""

    def __init__(self, message, hint=None):
        super().__init__(message)
        self.hint = hint


class Node:
    """A task in the graph, identified by ``key`` (family and parameters without the
    changeset; stable across revisions)."""

    __slots__ = ("key", "family", "requires", "watches", "code", "external", "params")

    def __init__(self, key, family, requires=(), watches=(), code=(), external=False,
                 params=None):
        self.key = key
        self.family = family
        self.requires = list(requires)
        self.watches = list(watches)
        self.code = list(code)
        self.external = external
        self.params = dict(params or {})

    def __repr__(self):
        return "Node(%r)" % self.key


class Decision:
    """The plan for one task."""

    __slots__ = ("key", "family", "affected", "direct", "changeset", "base", "reasons",
                 "external")

    def __init__(self, key, family, affected, direct, changeset, base, reasons,
                 external=False):
        self.key = key
        self.family = family
        self.affected = affected
        self.direct = direct
        self.changeset = changeset
        self.base = base
        self.reasons = reasons
        self.external = external

    @property
    def status(self):
        if not self.affected:
            return "external" if self.external else "unaffected"
        return "affected" if self.direct or self.external else "upstream"

    def as_dict(self):
        return {
            "key": self.key,
            "family": self.family,
            "affected": self.affected,
            "status": self.status,
            "changeset": self.changeset,
            "base": self.base,
            "reasons": list(self.reasons),
        }


def toposort(nodes, roots=None):
    """Keys in dependency order (upstream first) reachable from ``roots``.

    Raises :class:`PlanError` naming the cycle when there is one.
    """
    order = []
    state = {}  # key -> 1 visiting, 2 done
    for root in (roots if roots is not None else sorted(nodes)):
        if state.get(root) == 2:
            continue
        stack = [(root, iter(nodes[root].requires))]
        state[root] = 1
        path = [root]
        while stack:
            key, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                path.pop()
                state[key] = 2
                order.append(key)
                continue
            if nxt not in nodes:
                raise PlanError("task %s requires %s, which is not in the graph" % (key, nxt))
            st = state.get(nxt)
            if st == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise PlanError("dependency cycle: %s" % " -> ".join(cycle))
            if st is None:
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(nodes[nxt].requires)))
    return order


def select(nodes, names):
    """Keys of the tasks named (by family or by key); raises for an unknown name."""
    chosen = []
    for name in names:
        hits = sorted(k for k, n in nodes.items() if k == name or n.family == name)
        if not hits:
            families = sorted({n.family for n in nodes.values()})
            raise PlanError(
                "unknown task: %s" % name,
                hint="tasks in this pipeline: %s" % ", ".join(families),
            )
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def _describe(path, kind, base):
    return "%s %s since %s" % (path, kind, short(base))


def _direct_reasons(node, build, changed, matches, outputs_exist):
    """Why ``node`` must rebuild relative to ``build``, or [] when it need not."""
    base = build["changeset"]
    if changed is None:
        return ["base %s is not in this repository" % short(base)]
    reasons = []
    code = set(node.code)
    for path in sorted(changed):
        kind = changed[path]
        if path in code:
            reasons.append("pipeline code " + _describe(path, kind, base))
        elif node.watches and matches(node.key, path, kind, base):
            reasons.append(_describe(path, kind, base))
    missing = [p for p in build.get("outputs", []) if not outputs_exist(p)]
    if missing:
        reasons.append("output %s of the build at %s is missing" % (missing[0], short(base)))
    elif build.get("overwritten"):
        reasons.append("output %s of the build at %s was overwritten by a later build"
                       % (build["overwritten"][0], short(base)))
    return reasons


def _external_reasons(nodes, node, decisions, build, changed, matches):
    """Watched files of the external tasks ``node`` requires (an ``ExternalTask``
    listed in the watches file) that changed since ``build``: Luigi cannot run
    those tasks, so the change lands on their dependents."""
    if changed is None:
        return []
    reasons = []
    for u in node.requires:
        ext = nodes[u]
        if not (ext.external and ext.watches):
            continue
        for path in sorted(changed):
            if matches(u, path, changed[path], build["changeset"]):
                reasons.append("input of external %s: %s"
                               % (u, _describe(path, changed[path], build["changeset"])))
    return reasons


def _mark_externals(nodes, node, decisions, reasons, rev):
    """Show an external task whose watched files changed as affected, with the
    reasons its dependents found."""
    for u in node.requires:
        d = decisions[u]
        prefix = "input of external %s: " % u
        mine = [r[len(prefix):] for r in reasons if r.startswith(prefix)]
        if d.external and mine:
            d.affected = d.direct = True
            d.changeset = rev
            kept = [r for r in d.reasons if not r.startswith("external task")]
            d.reasons = sorted(set(kept) | set(mine))


def _candidates(builds, rev, count):
    """The builds to try reusing: the one at ``rev`` itself first (what is built
    stays built, however much was built since), then the ``count`` newest."""
    own = [b for b in builds if b["changeset"] == rev][:1]
    return own + [b for b in builds if b["changeset"] != rev][:count]


def classify(nodes, roots, rev, history, changes, matches, force=False,
             outputs_exist=os.path.exists, candidates=3):
    """Classify every task reachable from ``roots`` at ``rev``.

    Returns the decisions in dependency order (upstream first).
    """
    order = toposort(nodes, roots)
    decisions = {}
    change_cache = {}

    def changed_since(base):
        if base not in change_cache:
            change_cache[base] = changes(base)
        return change_cache[base]

    for key in order:
        node = nodes[key]
        if node.external:
            decisions[key] = Decision(key, node.family, False, False, None, None,
                                      ["external task: Luigi checks its output"], True)
            continue
        if force:
            decisions[key] = Decision(key, node.family, True, True, rev, None,
                                      ["rebuild of every task requested (--all)"])
            continue
        builds = _candidates(history(key), rev, candidates)
        upstream = [u for u in node.requires if decisions[u].affected]
        if not builds:
            reasons = [NEVER_BUILT] + ["upstream %s affected" % u for u in upstream]
            decisions[key] = Decision(key, node.family, True, True, rev, None, reasons)
            continue
        chosen = None
        first_reasons = None
        for build in builds:
            reasons = _direct_reasons(node, build, changed_since(build["changeset"]),
                                      matches, outputs_exist)
            reasons += _external_reasons(nodes, node, decisions, build,
                                         changed_since(build["changeset"]), matches)
            for u in node.requires:
                d = decisions[u]
                if d.external or d.affected:
                    continue
                seen = build.get("inputs", {}).get(u)
                if seen is not None and seen != d.changeset:
                    reasons.append("upstream %s rebuilt at %s since %s"
                                   % (u, short(d.changeset), short(build["changeset"])))
            if first_reasons is None:
                first_reasons = reasons
            if not reasons:
                chosen = build
                break
        if chosen is not None and not upstream:
            decisions[key] = Decision(
                key, node.family, False, False, chosen["changeset"], chosen["changeset"],
                ["nothing it depends on changed since %s" % short(chosen["changeset"])])
            continue
        base = (chosen or builds[0])["changeset"]
        direct = chosen is None
        if direct:
            _mark_externals(nodes, node, decisions, first_reasons, rev)
        reasons = (first_reasons if direct else []) + [
            "upstream %s affected" % u for u in upstream]
        decisions[key] = Decision(key, node.family, True, direct, rev, base, reasons)
    return [decisions[k] for k in order]
