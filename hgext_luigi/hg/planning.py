"""Where Mercurial meets the plain-Python planning of ``core.affected``:
revisions, status, matchers; the plan (:class:`Planned`).

Turns a changectx into the inputs :func:`hgext_luigi.core.affected.classify`
wants (graph nodes, per-task history from the lineage store, ``status`` between
two revisions, Mercurial matchers for ``watches``); ``hg/show.py`` prints it.
"""

import bisect
import functools
import re

from mercurial import error, match as matchmod, pathutil, pycompat, scmutil
from mercurial.i18n import _

from . import config, graphcache, trees as treemod
from ..core import affected, lineage

_b = config.local


def resolve_rev(repo, rev):
    """The changectx to build: REV, else ``.``, else ``tip`` where there is no
    working directory (a server repository).  Only committed changesets are
    built: the working directory (``wdir()``) is refused."""
    if rev:
        ctx = scmutil.revsingle(repo, rev)
    elif repo.dirstate.p1() == repo.nullid:
        ctx = repo[b'tip']
    else:
        ctx = repo[b'.']
    if ctx.rev() is None or ctx.node() in (repo.nullid, None):
        what = (_(b'the working directory is not a changeset') if ctx.rev() is None
                else _(b'the null revision is not a changeset'))
        raise error.InputError(what, hint=_(b'commit first, then run hg luigi-run -r .'))
    return ctx


class Workspace:
    """Lazily materialized tree of one revision (and of the other revisions a
    run reads sources at), released on exit."""

    def __init__(self, ui, repo, ctx, settings):
        self.ui = ui
        self.repo = repo
        self.ctx = ctx
        self.settings = settings
        self.trees = {}  # hex -> held trees.Tree

    def path(self):
        return self.tree_of(config.hexstr(self.ctx))

    def tree_of(self, changeset):
        """The path of the tree of ``changeset`` (full hex), held until exit."""
        tree = self.trees.get(changeset)
        if tree is None:
            ctx = self.repo.unfiltered()[config.node(changeset)]
            ui = self.ui

            def progress(total):
                return ui.makeprogress(_(b'materializing'), unit=_(b'files'), total=total)

            tree = self.trees[changeset] = treemod.materialize(
                self.repo, ctx, keep=self.settings.tree_cache, progress=progress)
            ui.debug(b'luigi: tree %s (%d files written)\n' % (tree.path, tree.written))
        return pycompat.fsdecode(tree.path)

    def release(self):
        for tree in self.trees.values():
            tree.release()
        self.trees.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


# pattern kinds that read files named by the pattern: a pushed changeset must
# not make the server read its files (``listfile:/etc/...``)
_FILE_READING = (b'listfile:', b'listfile0:', b'include:', b'subinclude:')


def _decided(pattern):
    """A pattern planning matches without Mercurial (``DIR/**``, a plain path)
    and that Mercurial's path auditor would take: no ``.hg`` component."""
    prefix, form = affected.watch_rule(pattern)
    parts = prefix.lower().split("/")
    return form is not None and ".hg" not in parts and ".hg." not in parts


class Matchers:
    """``watches`` of every task as Mercurial matchers, each built the first
    time a path could concern its task; filesets (``set:``) are evaluated at the
    planned revision and, for removed files, at the base.  Matching never
    touches the filesystem.  :meth:`check_all` builds every one, so a broken
    pattern shows when the pipeline is loaded rather than when a file changes."""

    def __init__(self, repo, ctx, nodes):
        self.repo = repo
        self.ctx = ctx
        self.nodes = nodes
        self._at = {}
        self._auditor = pathutil.pathauditor(repo.root, realfs=False, cached=True)

    def check_all(self):
        """Build the matcher of every task whose patterns need one (those
        :func:`affected.watch_rule` decides alone are checked here as paths)."""
        for key, node in self.nodes.items():
            if node.watches and not all(_decided(p) for p in node.watches):
                self.get(key)
        return self

    def get(self, key, base=None):
        """The matcher of ``key`` at the planned revision, or at ``base``."""
        m = self._at.get((key, base))
        if m is None and self.nodes[key].watches:
            ctx = self.ctx if base is None else self.repo.unfiltered()[base]
            m = self._at[(key, base)] = self._build(key, ctx)
        return m

    def _build(self, key, ctx):
        pats = [pycompat.fsencode(p) for p in self.nodes[key].watches]
        try:
            for p in pats:
                if p.startswith(_FILE_READING):
                    raise error.Abort(_(b'%s patterns read files outside the revision')
                                      % p.split(b':')[0])
            m = matchmod.match(self.repo.root, b'', pats, ctx=ctx, default=b'glob',
                               auditor=self._auditor)
            m(b'')  # compile lazily built regexes now, so errors show here
            return m
        except (error.Abort, error.ParseError, re.error, ValueError, TypeError) as e:
            msg = e.message if isinstance(e, error.Abort) else _b(str(e))
            if isinstance(e, error.ParseError):
                msg = _b(e.args[0])
            raise error.Abort(_(b'invalid pattern in watches of %s: %s')
                              % (_b(key), msg),
                              hint=_(b'see hg help patterns and hg help filesets'))

    def __call__(self, key, path, kind=None, base=None):
        if key not in self.nodes:
            return False
        m = self.get(key)
        if m is None:
            return False
        bpath = pycompat.fsencode(path)
        if m(bpath):
            return True
        if kind == 'removed' and base and any(p.startswith('set:')
                                               for p in self.nodes[key].watches):
            return self.get(key, config.node(base))(bpath)
        return False


def changes_since(repo, ctx):
    """A ``changes(base)`` function for :func:`affected.classify`: the status
    of each base against ``ctx``, computed once (the run asks again for the
    paths it hands each task)."""
    unfi = repo.unfiltered()

    @functools.lru_cache(maxsize=None)
    def changes(base):
        try:
            bctx = unfi[config.node(base)]
        except (error.RepoLookupError, error.LookupError, error.FilteredRepoLookupError):
            return None
        st = unfi.status(bctx.node(), ctx.node())
        out = {}
        for kind, files in (('modified', st.modified), ('added', st.added),
                            ('removed', st.removed)):
            for f in files:
                out[pycompat.fsdecode(f)] = kind
        return out

    return changes


def graph_nodes(graph):
    return {t["key"]: affected.Node(t["key"], t["family"], t["requires"], t["watches"],
                                t["code"], t.get("external", False), t["params"],
                                t.get("digest"), t.get("rules"))
            for t in graph["tasks"]}


class Planned:
    """A plan: the graph, its decisions, and the comparisons made for them
    (``changes(base)``)."""

    def __init__(self, ctx, graph, nodes, roots, decisions, selected, changes):
        self.ctx = ctx
        self.changes = changes
        self.graph = graph
        self.nodes = nodes
        self.roots = roots
        self.decisions = decisions
        self.by_key = {d.key: d for d in decisions}
        self.selected = selected
        self.tasks = {t["key"]: t for t in graph["tasks"]}

    def in_scope(self):
        """The decisions that concern the run: all of them, or what ``--task``
        selected and what it needs."""
        if self.selected is None:
            return list(self.decisions)
        keep = set(affected.toposort(self.nodes, self.selected))
        return [d for d in self.decisions if d.key in keep]

    @property
    def affected(self):
        return [d for d in self.decisions if d.affected]


def make(ui, repo, ctx, settings, workspace, force=False, names=(), store=None):
    """Plan ``ctx``: load the graph (cached), then classify every task."""
    graph = graphcache.load(ui, ctx, settings, workspace.path, tasks=names)
    for warning in graph.get("warnings", []):
        ui.warn(_(b'warning: %s\n') % _b(warning))
    # a --task key given with other spacing or defaults left out: its canonical key
    names = [graph.get("aliases", {}).get(n, n) for n in names]
    nodes = graph_nodes(graph)
    roots = list(graph["roots"])
    try:
        selected = affected.select(nodes, names) if names else None
        wanted = roots + [k for k in (selected or []) if k not in roots]
        matches = Matchers(repo, ctx, {k: n for k, n in nodes.items()})
        own_store = store is None
        if own_store:
            store = lineage.open_store(settings.store, settings.output_root)
        try:
            rev = config.hexstr(ctx)
            reuse = lineage.Reuse(store, rev, lambda key: affected.node_digest(nodes[key]),
                                  ancestor=ancestry(repo, ctx))
            changes = changes_since(repo, ctx)
            decisions = affected.classify(nodes, wanted, rev, reuse, changes,
                                      matches, force=force,
                                      outputs_exist=_outputs_exist(ui, settings))
        finally:
            if own_store:
                store.close()
    except affected.PlanError as e:
        raise error.Abort(_b(str(e)),
                          hint=_b(e.hint) if e.hint else None)
    except lineage.StoreError as e:
        raise error.Abort(_b(str(e)))
    return Planned(ctx, graph, nodes, roots, decisions, selected, changes)


def ancestry(repo, ctx):
    """``is_ancestor(changeset)``: whether a changeset (hex ``str``) is an
    ancestor of ``ctx``; False for one this clone lacks (another host's)."""
    from mercurial.node import bin

    cl = repo.unfiltered().changelog
    target, known = ctx.rev(), {}

    def is_ancestor(changeset):
        if changeset not in known:
            try:
                known[changeset] = cl.isancestorrev(cl.rev(bin(changeset)), target)
            except (error.LookupError, TypeError, ValueError):
                known[changeset] = False
        return known[changeset]

    return is_ancestor


def _outputs_exist(ui, settings):
    """Whether a reusable build's output is still there: on disk, or in S3 as
    the hg process reads it (boto3 is imported only for an ``s3://`` output).
    When S3 cannot say, lineage is trusted, and the user told once."""
    from ..core import objects

    def warn(path, e):
        ui.warn(_(b'warning: cannot check outputs in S3 (%s: %s); reused builds '
                  b'are taken on lineage alone\n') % (_b(type(e).__name__), _b(str(e))))

    return objects.outputs_exist(settings.s3_client_kwargs(), warn)


def task_id(planned, decision):
    """The Luigi task id the task has (or will have) at its stamp."""
    from luigi.task import task_id_str  # only commands that print ids need Luigi

    t = planned.tasks[decision.key]
    params = dict(t["params"])
    if t["hgtask"] and decision.changeset:
        params["changeset"] = decision.changeset
    return task_id_str(t["family"], params)


def task_files(repo, planned):
    """``files_of(key, changeset)`` for the builds of a run: the files the task
    watches and its pipeline source files at ``changeset``, with their file node
    ids (what changed between two builds is then a comparison of node ids)."""
    nodes = graph_nodes(planned.graph)
    unfi = repo.unfiltered()
    listed = {}  # changeset -> (manifest, its sorted paths): read once per run

    def files_of(key, changeset):
        node = nodes.get(key)
        if node is None:
            return {}
        try:
            ctx = unfi[config.node(changeset)]
        except (error.RepoLookupError, error.LookupError):
            return {}
        if changeset not in listed:
            mf = ctx.manifest()
            listed[changeset] = (mf, list(mf))
        mf, paths = listed[changeset]
        source = {p: mf[pycompat.fsencode(p)].hex()
                  for p in node.code if pycompat.fsencode(p) in mf}
        watched = {}
        if node.watches:
            m = Matchers(repo, ctx, {key: node}).get(key)
            for f in _under(paths, {affected.watch_prefix(p) for p in node.watches}):
                if m(f):
                    watched[pycompat.fsdecode(f)] = mf[f].hex()
        return {"watched": watched, "source": source}

    return files_of


def _under(paths, prefixes):
    """The paths of the sorted list ``paths`` that are, or lie under, one of
    ``prefixes`` (all of them for ``""``): a task's watches need not be matched
    against the whole manifest."""
    if "" in prefixes:
        return paths
    out = []
    for prefix in sorted(prefixes):
        p = pycompat.fsencode(prefix)
        i = bisect.bisect_left(paths, p)
        if i < len(paths) and paths[i] == p:
            out.append(p)
        # b'/' sorts just before b'0': the range of p/...
        out.extend(paths[bisect.bisect_left(paths, p + b'/'):bisect.bisect_left(paths, p + b'0')])
    return sorted(set(out))
