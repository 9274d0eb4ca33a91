"""The pipeline's task graph at a revision, cached by the content of its files.

Loading a pipeline means importing Luigi and the pipeline code in a subprocess
(``hgext_luigi.pipeline.loader``), which costs far more than a commit.  The result names
the repository files it was derived from (the pipeline's modules and the watches
file); it is stored with their file nodes, and reused for any revision whose
manifest has the same nodes for those files.  So planning after a data-only
commit never starts Python or imports Luigi.
"""

import hashlib
import json
import os
import tempfile

from mercurial import error, pycompat
from mercurial.i18n import _
from mercurial.node import hex as hexnode

from . import config, subproc
from ..core import protocol, sandbox

_KEEP = 8  # cached graphs per settings
_PLANNING = 1  # the form of what affected.planning_facts() adds to a cached graph


# Luigi's configuration files outside the tree (those inside are repository
# files: the loader lists them with the pipeline's sources)
_GLOBAL_LUIGI_CONFIG = ("/etc/luigi/client.cfg", "/etc/luigi/luigi.cfg",
                        "/etc/luigi/luigi.toml")


def _outside_config(env):
    paths = list(_GLOBAL_LUIGI_CONFIG)
    if env.get("LUIGI_CONFIG_PATH"):
        paths.append(env["LUIGI_CONFIG_PATH"])
    out = {}
    for p in paths:
        try:
            with open(p, "rb") as f:
                out[p] = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            out[p] = None
    return out


def _interpreter(python):
    try:
        st = os.stat(python)
        return [os.path.realpath(python), st.st_size, st.st_mtime_ns]
    except OSError:
        return [python]


def cache_key(settings, tasks=()):
    """Everything besides repository files that shapes the task graph: the
    settings, the ``--task`` arguments, the interpreter, what the pipeline sees
    of the environment and the Luigi configuration files outside the tree."""
    env = sandbox.filter_env(os.environ, settings.pass_env)
    return dict(settings.index_settings(), tasks=list(tasks), planning=_PLANNING,
                interpreter=_interpreter(settings.python),
                env=sandbox.env_digest(env), luigi_config=_outside_config(env))


def _cache_file(settings, key):
    blob = json.dumps(key, sort_keys=True).encode("utf-8")
    name = "graph-%s.json" % hashlib.sha1(blob).hexdigest()[:16]
    return os.path.join(settings.state, "index", name)


def _filenodes(ctx, files):
    mf = ctx.manifest()
    out = {}
    for f in files:
        node = mf.get(pycompat.fsencode(f))
        out[f] = hexnode(node).decode("ascii") if node is not None else None
    return out


def _read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return []


def _graph_file(settings, key, nodes):
    """Where the graph for these file nodes is kept: a file of its own, so a
    plan reads one graph, not every graph cached for these settings."""
    blob = json.dumps(nodes, sort_keys=True).encode("utf-8")
    stem = os.path.basename(_cache_file(settings, key))[:-len(".json")]
    return os.path.join(settings.state, "index", "%s-%s.json"
                        % (stem, hashlib.sha1(blob).hexdigest()[:16]))


def cached(ctx, settings, key):
    """The cached graph valid for ``ctx``, or None."""
    entries = _read(_cache_file(settings, key))
    for entry in entries:
        if _filenodes(ctx, entry["files"]) == entry["nodes"]:
            graph = _read(_graph_file(settings, key, entry["nodes"]))
            if isinstance(graph, dict) and "tasks" in graph:
                return graph
    return None


def _write(path, data):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".graph-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _store(ctx, settings, key, graph):
    """Keep ``graph`` for the nodes of its files; the list of the ``_KEEP``
    latest (files and nodes alone) says which graph file serves a revision."""
    path = _cache_file(settings, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    entry = {"nodes": _filenodes(ctx, graph["files"]), "files": graph["files"]}
    _write(_graph_file(settings, key, entry["nodes"]), graph)
    entries = [e for e in _read(path) if e["nodes"] != entry["nodes"]]
    for old in entries[_KEEP - 1:]:
        try:
            os.unlink(_graph_file(settings, key, old["nodes"]))
        except OSError:
            pass
    _write(path, [entry] + [{"nodes": e["nodes"], "files": e["files"]}
                            for e in entries[: _KEEP - 1]])


def load(ui, ctx, settings, get_tree, tasks=()):
    """The task graph of the pipeline at ``ctx`` with the ``--task`` arguments
    ``tasks`` as extra roots: from the cache, or by loading the pipeline from the
    tree ``get_tree()`` materializes.  Aborts on a broken pipeline, naming the
    file and line."""
    key = cache_key(settings, tasks)
    graph = cached(ctx, settings, key)
    if graph is not None:
        ui.debug(b'luigi: task graph from cache\n')
        return graph
    tree = get_tree()
    ui.note(_(b'loading pipeline %s at %s\n')
            % (config.local(settings.module), ctx.hex()[:12]))
    args = dict(settings.index_settings(), tasks=list(tasks), tree=tree,
                rev=config.hexstr(ctx))
    with subproc.json_file(args, prefix="hgluigi-index-") as path:
        proc = subproc.start(settings, protocol.LOADER, tree, [path])
        stdout, stderr = proc.communicate()
    try:
        result = json.loads(stdout.decode("utf-8"))
    except ValueError:
        err = stderr.decode("utf-8", "replace").strip().splitlines()
        raise error.Abort(_(b'loading the pipeline failed (exit %d): %s')
                          % (proc.returncode,
                             config.local(err[-1] if err else "no output")))
    if stderr:
        ui.debug(stderr)
    if not result.get("ok"):
        raise_load_error(result["error"], ctx)
    from ..core import affected
    from . import planning  # planning imports this module

    # a graph is checked once, then cached with what planning derives from each
    # task's definition; planning builds matchers lazily
    nodes = planning.graph_nodes(result)
    planning.Matchers(ctx.repo(), ctx, nodes).check_all()
    for t in result["tasks"]:
        t.update(affected.planning_facts(nodes[t["key"]]))
    _store(ctx, settings, key, result)
    return result


def raise_load_error(err, ctx):
    b = config.local
    msg = b(err["message"])
    where = b''
    if err.get("file"):
        where = b'%s' % b(err["file"])
        if err.get("line"):
            where += b', line %d' % err["line"]
    kind = err.get("kind")
    hint = None
    if kind == "no-module":
        msg = b'%s (%s)' % (msg, ctx.hex()[:12])
        hint = _(b'add the module to the repository or set [luigi] module')
    elif kind == "import":
        hint = _(b'fix the error in the pipeline code and commit again')
    elif kind == "cycle":
        hint = _(b'a task must not require itself, directly or through others')
    elif kind == "config":
        hint = _(b'check [luigi] roots')
    if err.get("hint"):  # the loader knows best what to do (--task, [luigi] roots)
        hint = b(err["hint"])
    if where:
        msg = b'%s: %s' % (where, msg)
    if err.get("traceback"):
        hint = b(err["traceback"].strip().splitlines()[-1])
    raise error.Abort(msg, hint=hint)
