"""Which tasks a revision affects, and why.  Plain Python: no Mercurial, no Luigi.

The caller (``hgext_luigi.hg.planning`` on the Mercurial side) supplies three things:

- the task graph, as :class:`Node` objects (from the pipeline index);
- ``history(key)``: the task's successful builds, the one at the revision
  planned first, then newest first, each a dict with ``changeset``, ``outputs``
  (paths), ``inputs`` ({upstream key: changeset}) and maybe ``since`` (a later
  revision a run checked it against);
- ``changes(base)``: {path: 'modified' | 'added' | 'removed'} between ``base`` and
  the revision being planned (``None`` when ``base`` is unknown to the repository),
  and ``matches(key, path, kind, base)``: whether a task watches a path.

Each task is compared with its own last successful build rather than with a guessed
"previous revision": several changesets in one push, merges, branch switches and
a previous run that failed all come out right, because the only question asked is
"does the content this task depends on differ from what its last good build saw?".
"""

import hashlib
import itertools
import json
import os
import posixpath
import re

NEVER_BUILT = "never built"


def short(node):
    return node[:12] if node else "-"


class PlanError(Exception):
    """The task graph or the selection cannot be planned."""

    def __init__(self, message, hint=None, cycle=None):
        super().__init__(message)
        self.hint = hint
        self.cycle = cycle  # the keys of a dependency cycle, the first one repeated


class Node:
    """A task in the graph, identified by ``key`` (family and parameters without the
    changeset; stable across revisions)."""

    __slots__ = ("key", "family", "requires", "watches", "code", "external", "params",
                 "digest", "rules")

    def __init__(self, key, family, requires=(), watches=(), code=(), external=False,
                 params=None, digest=None, rules=None):
        self.key = key
        self.family = family
        self.requires = list(requires)
        self.watches = list(watches)
        self.code = list(code)
        self.external = external
        self.params = dict(params or {})
        # precomputed node_digest() and watch rules (kept with a cached graph)
        self.digest = digest
        self.rules = rules

    def __repr__(self):
        return "Node(%r)" % self.key


def node_digest(node):
    """What a task depends on by definition (its watches and code files): a
    check recorded under another definition says nothing about this one."""
    if node.digest:
        return node.digest
    blob = json.dumps([sorted(node.watches), sorted(node.code), node.external])
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()


def planning_facts(node):
    """What planning derives from a task's definition alone, to keep with the
    task graph: ``{"digest": ..., "rules": [[prefix, form], ...]}``."""
    return {"digest": node_digest(node),
            "rules": sorted([list(r) for r in {watch_rule(p) for p in node.watches}],
                            key=lambda r: (r[0], r[1] or ""))}


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
                raise PlanError("dependency cycle: %s" % " -> ".join(cycle), cycle=cycle)
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


# Mercurial's pattern kinds (``hg help patterns``) whose paths sit under a fixed
# directory; any other kind (re:, relglob:, set:, ...) may match anywhere
_ROOTED = {"glob", "rootglob", "path", "filepath", "rootfilesin"}
_KINDS = _ROOTED | {"re", "relglob", "relpath", "relre", "listfile", "listfile0", "set",
                    "include", "subinclude"}
_GLOB_META = re.compile(r"[*?\[{\\]")


def _kind(pattern):
    """``(kind, rest)`` as Mercurial splits a pattern (default ``glob``)."""
    kind, sep, rest = pattern.partition(":")
    if not sep or kind not in _KINDS:
        return "glob", pattern
    return kind, rest


def watch_prefix(pattern):
    """The directory (or file) under which every path ``pattern`` matches lies,
    or ``""`` when it may match anywhere.  Errs towards ``""``: the index built
    from it only narrows which tasks' matchers are asked."""
    kind, rest = _kind(pattern)
    if kind not in _ROOTED:
        return ""
    if kind in ("glob", "rootglob"):
        meta = _GLOB_META.search(rest)
        if meta:
            rest = rest[:meta.start()].rpartition("/")[0]
    if rest.startswith("/") or not rest:
        return ""
    rest = posixpath.normpath(rest)
    if rest == "." or rest == ".." or rest.startswith("../"):
        return ""
    return rest


def watch_rule(pattern):
    """``(prefix, form)``: :func:`watch_prefix`, and how far the prefix alone
    decides a match, as Mercurial's matcher does: ``"under"`` for ``DIR/**`` and
    ``path:DIR`` (DIR itself or any path under it), ``"exact"`` for a glob
    without wildcards (that path alone), None when only the matcher can tell.
    (``tests/test_affected.py`` holds this against Mercurial's own matcher.)"""
    prefix = watch_prefix(pattern)
    kind, rest = _kind(pattern)
    if not prefix:
        return prefix, None
    if kind == "glob" and rest == prefix + "/**":
        return prefix, "under"
    if rest == prefix and kind in ("glob", "path"):
        return prefix, "exact" if kind == "glob" else "under"
    return prefix, None


class WatchIndex:
    """Which tasks a changed path can concern: its pipeline code's users and the
    tasks with a ``watches`` pattern rooted at one of its parent directories
    (or anywhere).  Planning then asks ``matches`` about those tasks only, so
    its cost follows the paths changed, not tasks x paths; patterns the prefix
    decides alone (``dir/**``, a plain path) need no matcher at all."""

    def __init__(self, nodes):
        self._under = {}
        self._code = {}
        for key, node in nodes.items():
            rules = node.rules
            if rules is None:
                rules = {watch_rule(p) for p in node.watches}
            for prefix, form in rules:
                self._under.setdefault(prefix, []).append((key, form))
            for path in node.code:
                self._code.setdefault(path, []).append(key)

    def code_users(self, path):
        return self._code.get(path, ())

    def watchers(self, path):
        """``{key: True}`` for tasks whose watches match ``path`` for certain,
        ``{key: None}`` for those a matcher must decide; each key once."""
        found = {}
        cut = 0
        while True:
            sub = "" if cut == 0 else path if cut < 0 else path[:cut]
            for key, form in self._under.get(sub, ()):
                if form is None:
                    found.setdefault(key, None)
                elif form == "under" or cut < 0:  # "exact": the path itself
                    found[key] = True
            if cut < 0:
                return found
            cut = path.find("/", cut + 1)


def touched(index, changed, matches, base):
    """``{key: [(path, kind, how)]}``, ``how`` being "code" or "watch", for the
    paths of ``changed`` ({path: kind}) in sorted order: what each task sees
    change since ``base``."""
    out = {}
    for path in sorted(changed):
        kind = changed[path]
        users = index.code_users(path)
        for key in users:
            out.setdefault(key, []).append((path, kind, "code"))
        for key, certain in index.watchers(path).items():
            if key not in users and (certain or matches(key, path, kind, base)):
                out.setdefault(key, []).append((path, kind, "watch"))
    return out


def _direct_reasons(node, build, seen, since, outputs_exist):
    """Why ``node`` must rebuild relative to ``build``, or [] when it need not.
    ``seen``: what :func:`touched` found for it since ``since`` (None when that
    revision is unknown)."""
    base = build["changeset"]
    if seen is None:
        return ["base %s is not in this repository" % short(since)]
    reasons = []
    for path, kind, how in seen.get(node.key, ()):
        if how == "code":
            reasons.append("pipeline code " + _describe(path, kind, since))
        elif node.watches:
            reasons.append(_describe(path, kind, since))
    missing = [p for p in build.get("outputs", []) if not outputs_exist(p)]
    if missing:
        reasons.append("output %s of the build at %s is missing" % (missing[0], short(base)))
    elif build.get("overwritten"):
        reasons.append("output %s of the build at %s was overwritten by a later build"
                       % (build["overwritten"][0], short(base)))
    return reasons


def _external_reasons(nodes, node, seen, since):
    """Watched files of the external tasks ``node`` requires (an ``ExternalTask``
    listed in the watches file) that changed since ``since``: Luigi cannot run
    those tasks, so the change lands on their dependents."""
    if seen is None:
        return []
    reasons = []
    for u in node.requires:
        ext = nodes[u]
        if not (ext.external and ext.watches):
            continue
        for path, kind, how in seen.get(u, ()):
            if how == "watch":
                reasons.append("input of external %s: %s" % (u, _describe(path, kind, since)))
    return reasons


def _mark_externals(nodes, node, decisions, reasons, rev):
    """Show an external task whose watched files changed as affected, with the
    reasons its dependents found."""
    for u in node.requires:
        d = decisions[u]
        if not d.external:
            continue
        prefix = "input of external %s: " % u
        mine = [r[len(prefix):] for r in reasons if r.startswith(prefix)]
        if mine:
            d.affected = d.direct = True
            d.changeset = rev
            kept = [r for r in d.reasons if not r.startswith("external task")]
            d.reasons = sorted(set(kept) | set(mine))


def classify(nodes, roots, rev, history, changes, matches, force=False,
             outputs_exist=os.path.exists, candidates=3):
    """Classify every task reachable from ``roots`` at ``rev``.

    ``history(key)`` yields the task's successful builds to try reusing, best
    first: the build at ``rev`` itself (what is built stays built), then the
    newest.  A build may carry ``since``: a later revision at which a run found
    nothing it depends on changed, so only what changed after that is compared.

    Returns the decisions in dependency order (upstream first).
    """
    order = toposort(nodes, roots)
    decisions = {}
    seen = _Comparisons(WatchIndex(nodes), changes, matches)
    for key in order:
        node = nodes[key]
        if node.external:
            decisions[key] = Decision(key, node.family, False, False, None, None,
                                      ["external task: Luigi checks its output"], True)
        elif force:
            decisions[key] = Decision(key, node.family, True, True, rev, None,
                                      ["rebuild of every task requested (--all)"])
        else:
            builds = itertools.islice(history(key), candidates + 1)  # read as needed
            decisions[key] = _decide(nodes, node, decisions, builds, seen, rev,
                                     outputs_exist)
    return [decisions[k] for k in order]


class _Comparisons:
    """What changed per task since a revision, each revision compared once."""

    def __init__(self, index, changes, matches):
        self.index, self.changes, self.matches = index, changes, matches
        self.cache = {}

    def since(self, build):
        """(what changed per task, the revision compared with) for ``build``:
        from its ``since`` when that revision is known, else its changeset."""
        for since in (build.get("since"), build["changeset"]):
            if not since:
                continue
            if since not in self.cache:
                changed = self.changes(since)
                self.cache[since] = (None if changed is None else
                                     touched(self.index, changed, self.matches, since))
            if self.cache[since] is not None or since == build["changeset"]:
                return self.cache[since], since


def _decide(nodes, node, decisions, builds, seen, rev, outputs_exist):
    """The decision for ``node``: reuse the first of ``builds`` nothing it
    depends on changed since, else build it at ``rev``."""
    key = node.key
    upstream = [u for u in node.requires if decisions[u].affected]
    first = next(builds, None)
    if first is None:
        reasons = [NEVER_BUILT] + ["upstream %s affected" % u for u in upstream]
        return Decision(key, node.family, True, True, rev, None, reasons)
    chosen = first_reasons = None
    for build in itertools.chain([first], builds):
        reasons = _reasons(nodes, node, decisions, build, seen, outputs_exist)
        if first_reasons is None:
            first_reasons = reasons
        if not reasons:
            chosen = build
            break
    if chosen is not None and not upstream:
        return Decision(
            key, node.family, False, False, chosen["changeset"], chosen["changeset"],
            ["nothing it depends on changed since %s" % short(chosen["changeset"])])
    direct = chosen is None
    if direct:
        _mark_externals(nodes, node, decisions, first_reasons, rev)
    reasons = (first_reasons if direct else []) + [
        "upstream %s affected" % u for u in upstream]
    return Decision(key, node.family, True, direct, rev, (chosen or first)["changeset"],
                    reasons)


def _reasons(nodes, node, decisions, build, seen, outputs_exist):
    """Why ``build`` cannot be reused for ``node`` (none: it can)."""
    changed, since = seen.since(build)
    reasons = _direct_reasons(node, build, changed, since, outputs_exist)
    reasons += _external_reasons(nodes, node, changed, since)
    for u in node.requires:
        d = decisions[u]
        if d.external or d.affected:
            continue
        consumed = build.get("inputs", {}).get(u)
        if consumed is not None and consumed != d.changeset:
            reasons.append("upstream %s rebuilt at %s since %s"
                           % (u, short(d.changeset), short(build["changeset"])))
    return reasons
