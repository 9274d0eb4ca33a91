"""The pipeline's task graph at a revision, cached by the content of its files.

Loading a pipeline means importing Luigi and the pipeline code in a subprocess
(``hgext_luigi.loader``), which costs far more than a commit.  The result names
the repository files it was derived from (the pipeline's modules and the watches
file); it is stored with their file nodes, and reused for any revision whose
manifest has the same nodes for those files.  So planning after a data-only
commit never starts Python or imports Luigi.
"""

import hashlib
import json
import os
import subprocess
import tempfile

from mercurial import error, pycompat
from mercurial.i18n import _
from mercurial.node import hex as hexnode

from . import config

_KEEP = 8  # cached graphs per settings


def pipeline_env(extra=None):
    """Environment of a pipeline subprocess: our package importable whatever the
    interpreter, no bytecode written into the materialized trees."""
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in [here, env.get("PYTHONPATH")] if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("HGEXT_LUIGI_CONTEXT", None)
    if extra:
        env.update(extra)
    return env


def _cache_file(settings):
    blob = json.dumps(settings.index_settings(), sort_keys=True).encode("utf-8")
    name = "graph-%s.json" % hashlib.sha1(blob).hexdigest()[:16]
    return os.path.join(settings.state, "index", name)


def _filenodes(ctx, files):
    mf = ctx.manifest()
    out = {}
    for f in files:
        node = mf.get(pycompat.fsencode(f))
        out[f] = pycompat.sysstr(hexnode(node)) if node is not None else None
    return out


def _read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return []


def cached(ctx, settings):
    """The cached graph valid for ``ctx``, or None."""
    entries = _read(_cache_file(settings))
    for entry in entries:
        if _filenodes(ctx, entry["files"]) == entry["nodes"]:
            return entry["graph"]
    return None


def _store(ctx, settings, graph):
    path = _cache_file(settings)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    entry = {"nodes": _filenodes(ctx, graph["files"]), "files": graph["files"],
             "graph": graph}
    entries = [e for e in _read(path) if e["nodes"] != entry["nodes"]]
    entries = [entry] + entries[: _KEEP - 1]
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".graph-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(entries, f)
    os.replace(tmp, path)


def load(ui, ctx, settings, get_tree):
    """The task graph of the pipeline at ``ctx``: from the cache, or by loading the
    pipeline from the tree ``get_tree()`` materializes.  Aborts on a broken
    pipeline, naming the file and line."""
    graph = cached(ctx, settings)
    if graph is not None:
        ui.debug(b'luigi: task graph from cache\n')
        return graph
    tree = get_tree()
    ui.note(_(b'loading pipeline %s at %s\n')
            % (config.local(settings.module), ctx.hex()[:12]))
    args = dict(settings.index_settings(), tree=tree, rev=pycompat.sysstr(ctx.hex()))
    fd, path = tempfile.mkstemp(prefix="hgluigi-index-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(args, f)
        try:
            proc = subprocess.run(
                [settings.python, "-m", "hgext_luigi.loader", path],
                cwd=tree, env=pipeline_env(), stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            )
        except OSError as e:
            raise error.Abort(_(b'cannot start %s: %s')
                              % (pycompat.fsencode(settings.python),
                                 config.local(e.strerror)),
                              hint=_(b'set [luigi] python to an interpreter with luigi'))
    finally:
        os.unlink(path)
    try:
        result = json.loads(proc.stdout.decode("utf-8"))
    except ValueError:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise error.Abort(_(b'loading the pipeline failed (exit %d): %s')
                          % (proc.returncode,
                             config.local(err[-1] if err else "no output")))
    if proc.stderr:
        ui.debug(proc.stderr)
    if not result.get("ok"):
        raise_load_error(result["error"], ctx)
    _store(ctx, settings, result)
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
    if where:
        msg = b'%s: %s' % (where, msg)
    if err.get("traceback"):
        hint = b(err["traceback"].strip().splitlines()[-1])
    raise error.Abort(msg, hint=hint)
