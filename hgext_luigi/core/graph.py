"""Lineage as a picture: Graphviz DOT of a run's tasks, or of the builds behind an
output, and SVG rendered from it by Graphviz's ``dot``.

Plain Python (no Mercurial, no Luigi): it reads a :class:`lineage.LineageStore`
and returns ``str`` (DOT) or ``bytes`` (SVG).  Every label comes from data that
whoever may push controls (task keys, paths), so each is written as a DOT quoted
string with its backslashes, quotes, line breaks and control characters escaped,
and nodes are named ``t0``, ``t1``... whatever their keys.
"""

import os
import re
import shutil
import subprocess

# fill colours by the outcome of a task in its run (run_tasks.outcome)
COLORS = {
    "ran": "palegreen",
    "reused": "lightgrey",
    "failed": "lightcoral",
    "not run": "orange",
}
DEFAULT_COLOR = "white"  # external, pending, unknown
RENDER_TIMEOUT = 30.0
NOT_INSTALLED = ("graphviz's dot is not installed: apt-get install graphviz, or use "
                 "-T dot and render it elsewhere")


class GraphError(Exception):
    """The graph cannot be made or rendered."""


class NoLineage(GraphError):
    """Nothing is recorded for what was asked (no run at the revision, no build
    of the output)."""


# control characters but newline and tab, written the way config.local shows them
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text):
    """``text`` with control characters but newline and tab shown as ``\\xNN``
    (as :func:`config.local` shows them) and undecodable bytes (lone surrogates,
    from ``surrogateescape``) as U+FFFD."""
    text = "" if text is None else str(text)
    text = _SURROGATE.sub("\ufffd", text)
    return _CONTROL.sub(lambda m: "\\x%02x" % ord(m.group(0)), text)


def quote(text):
    """``text`` as a DOT quoted string (an escString): ``\\`` and ``"`` escaped,
    a newline as ``\\n`` (a line break in a label), a tab as a space, the rest
    :func:`printable`."""
    text = printable(text)
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    text = text.replace("\t", " ").replace("\n", "\\n")
    return '"%s"' % text


def short(changeset):
    return changeset[:12] if changeset else ""


def _text(rev):
    if isinstance(rev, bytes):
        return rev.decode("ascii")
    return rev


# -- the data ------------------------------------------------------------------

# the build behind each task of a run, as hg luigi-lineage REV picks it: a failed
# task's build in this run, else the latest successful build at its changeset
_TASKS_SQL = """
SELECT rt.key, rt.family, rt.task_id, rt.changeset, rt.affected, rt.outcome,
       rt.status, b.id AS build_id, b.status AS build_status
FROM run_tasks rt
LEFT JOIN builds b ON b.id = COALESCE(
    CASE WHEN rt.outcome = 'failed' THEN
        (SELECT MAX(f.id) FROM builds f WHERE f.run_id = rt.run_id AND f.key = rt.key)
    END,
    (SELECT MAX(s.id) FROM builds s
     WHERE s.key = rt.key AND s.changeset = rt.changeset AND s.status = 'success'))
WHERE rt.run_id = ?
ORDER BY rt.rowid
"""


def _is_external(row):
    """As commands._is_external: a luigi.ExternalTask of the plan."""
    if row.get("status"):
        return row["status"] == "external"
    return row.get("outcome") == "external" or not (row.get("affected")
                                                   or row.get("changeset"))


def _tasks_sql(store, run_id):
    db = store._db
    tasks = [dict(r) for r in db.execute(_TASKS_SQL, (run_id,))]
    ids = sorted({t["build_id"] for t in tasks if t["build_id"] is not None})
    inputs = {}
    for chunk in range(0, len(ids), 500):
        part = ids[chunk:chunk + 500]
        for r in db.execute(
                "SELECT build_id, key, changeset FROM inputs WHERE build_id IN (%s)"
                " ORDER BY build_id, key, rowid" % ",".join("?" * len(part)), part):
            inputs.setdefault(r["build_id"], []).append((r["key"], r["changeset"]))
    return tasks, inputs


def _tasks_api(store, run_id):
    """The same through the store's public methods (another store implementation)."""
    tasks, inputs = [], {}
    for r in store.run_tasks(run_id):
        build = None
        if r["outcome"] == "failed":
            build = store.last_build_in_run(run_id, r["key"])
        if build is None and r["changeset"]:
            build = store.success_for_key(r["key"], r["changeset"])
        t = {k: r.get(k) for k in ("key", "family", "task_id", "changeset", "affected",
                                   "outcome", "status")}
        t["build_id"] = build["id"] if build else None
        t["build_status"] = build["status"] if build else None
        if build:
            inputs[build["id"]] = [(i["key"], i["changeset"])
                                   for i in store.inputs(build["id"])]
        tasks.append(t)
    return tasks, inputs


def run_graph(store, rev):
    """The graph of the latest run at ``rev`` (40 hex digits, str or bytes): a
    dict with ``run`` (its row), ``tasks`` (one dict per task of its plan, in plan
    order: ``key``, ``family``, ``changeset`` its output comes from, ``outcome``,
    ``status`` of its build (``success``, ``failed``, ``missing``, ``external``),
    ``build_id``, ``node`` (its DOT name)), ``extra`` (upstream tasks not in the
    plan, same keys) and ``edges`` (``(node, upstream node, upstream changeset)``).
    Raises :class:`NoLineage` when no run is recorded at ``rev``."""
    rev = _text(rev)
    run = store.latest_run(rev)
    if run is None:
        raise NoLineage("no luigi run recorded at %s" % short(rev))
    if hasattr(store, "_db"):
        rows, inputs = _tasks_sql(store, run["id"])
    else:
        rows, inputs = _tasks_api(store, run["id"])
    tasks, by_key = [], {}
    for r in rows:
        external = r["build_id"] is None and _is_external(r)
        t = dict(r, node="t%d" % len(tasks),
                 status=r["build_status"] or ("external" if external else "missing"),
                 plan_status=r["status"])
        del t["build_status"]
        tasks.append(t)
        by_key.setdefault(t["key"], t)
    extra, edges = [], []
    for t in tasks:
        for key, changeset in inputs.get(t["build_id"], ()):
            up = by_key.get(key)
            if up is None:  # consumed, but not in this run's plan
                up = {"key": key, "family": None, "task_id": None,
                      "changeset": changeset, "outcome": None, "status": "not planned",
                      "build_id": None, "node": "t%d" % (len(tasks) + len(extra))}
                extra.append(up)
                by_key[key] = up
            edges.append((t["node"], up["node"], changeset))
    return {"run": run, "tasks": tasks, "extra": extra, "edges": edges}


def _node_line(node, label, fill, tooltip=None, extra=""):
    return "  %s [label=%s, fillcolor=%s, tooltip=%s%s];" % (
        node, quote(label), quote(fill), quote(tooltip if tooltip is not None else label),
        extra)


def _header(title):
    return ["digraph lineage {",
            "  graph [rankdir=RL, charset=\"UTF-8\", labelloc=t, fontname=\"Helvetica\","
            " label=%s];" % quote(title),
            "  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];",
            "  edge [fontname=\"Helvetica\", fontsize=10];"]


def task_color(task):
    """Fill colour of a :func:`run_graph` task: by its outcome, white for an
    external task (whatever its outcome) and an unknown outcome."""
    if task.get("status") == "external":
        return DEFAULT_COLOR
    return COLORS.get(task.get("outcome"), DEFAULT_COLOR)


def graph_dot(graph):
    """DOT text of a :func:`run_graph` result."""
    run = graph["run"]
    lines = _header("run %s at %s: %s" % (short(run["id"]), short(run["rev"]),
                                          run["status"] or "running"))
    for t in graph["tasks"] + graph["extra"]:
        source = short(t["changeset"]) or t["status"]
        outcome = t["outcome"] or t["status"]
        lines.append(_node_line(
            t["node"], "%s\n%s" % (t["key"], source), task_color(t),
            "%s\n%s at %s" % (t["key"], outcome, source)))
    for node, up, changeset in graph["edges"]:
        lines.append("  %s -> %s [label=%s];" % (node, up, quote(short(changeset))))
    lines.append("}")
    return "\n".join(lines) + "\n"


def lineage_dot(store, rev):
    """DOT digraph of the latest run at ``rev`` (40 hex digits): one box per task
    (its key and the changeset its output comes from), filled by its outcome
    (:data:`COLORS`), an arrow from each task to every upstream task its build
    consumed, labelled with the upstream changeset.  Raises :class:`NoLineage`."""
    return graph_dot(run_graph(store, rev))


# -- the builds behind an output ---------------------------------------------------

def output_graph(store, path):
    """The build that produced ``path`` (an absolute path, or a list of candidate
    paths: the first one recorded wins) and its upstream builds, recursively: a
    dict with ``path``, ``root`` (build id), ``builds`` (build id -> dict with the
    build's row and ``node``), ``missing`` (inputs without a recorded build: dicts
    key, changeset, node) and ``edges`` (node, upstream node, changeset).  Raises
    :class:`NoLineage` when no build recorded it."""
    candidates = [path] if isinstance(path, (str, bytes, os.PathLike)) else list(path)
    root = found = None
    for candidate in candidates:
        builds = store.builds_producing(os.fsdecode(candidate))
        if builds:
            root, found = builds[0], os.fsdecode(candidate)
            break
    if root is None:
        raise NoLineage("no recorded build produced %s"
                        % (os.fsdecode(candidates[0]) if candidates else path))
    nodes = {}
    missing = {}
    edges = []

    def node_of(build):
        if build["id"] not in nodes:
            nodes[build["id"]] = dict(build, node="b%d" % len(nodes))
            return nodes[build["id"]], True
        return nodes[build["id"]], False

    todo = [root]
    node_of(root)
    while todo:  # iterative: a long chain of builds needs no deep recursion
        b = nodes[todo.pop()["id"]]
        for i in store.inputs(b["id"]):
            up = store.success_for(i["task_id"], i["changeset"])
            if up is None:
                ident = (i["key"], i["changeset"])
                if ident not in missing:
                    missing[ident] = {"key": i["key"], "changeset": i["changeset"],
                                      "node": "m%d" % len(missing)}
                edges.append((b["node"], missing[ident]["node"], i["changeset"]))
                continue
            n, new = node_of(up)
            edges.append((b["node"], n["node"], i["changeset"]))
            if new:
                todo.append(n)
    return {"path": found, "root": root["id"], "builds": nodes,
            "missing": list(missing.values()), "edges": edges}


def output_graph_dot(graph):
    """DOT text of an :func:`output_graph` result: builds at the output's own
    changeset filled green, older ones (reused) grey, failed red, inputs without
    a recorded build white and dashed; the output's build drawn bold."""
    builds = graph["builds"]
    root = builds[graph["root"]]
    lines = _header("%s\nbuilt by %s at %s" % (graph["path"], root["key"],
                                               short(root["changeset"])))
    for b in builds.values():
        if b["status"] != "success":
            fill = COLORS["failed"]
        elif b["changeset"] == root["changeset"]:
            fill = COLORS["ran"]
        else:
            fill = COLORS["reused"]
        lines.append(_node_line(
            b["node"], "%s\n%s" % (b["key"], short(b["changeset"])), fill,
            "%s\n%s at %s, build %s" % (b["key"], b["status"], short(b["changeset"]),
                                        b["id"]),
            ", penwidth=2" if b["id"] == graph["root"] else ""))
    for m in graph["missing"]:
        lines.append(_node_line(
            m["node"], "%s\n%s" % (m["key"], short(m["changeset"])), DEFAULT_COLOR,
            "%s\nno build recorded at %s" % (m["key"], short(m["changeset"])),
            ", style=\"rounded,filled,dashed\""))
    for node, up, changeset in graph["edges"]:
        lines.append("  %s -> %s [label=%s];" % (node, up, quote(short(changeset))))
    lines.append("}")
    return "\n".join(lines) + "\n"


def output_dot(store, path):
    """DOT digraph of the build that produced the file ``path`` (absolute, or a
    list of candidate paths) and its upstream builds, recursively, each arrow
    labelled with the upstream changeset.  Raises :class:`NoLineage`."""
    return output_graph_dot(output_graph(store, path))


# -- rendering ---------------------------------------------------------------------

def find_dot(dot=None, path=None):
    """The ``dot`` executable: ``dot`` itself when given (a path or a name looked
    up on ``path``), else ``dot`` on ``path`` (default: ``$PATH``); None when
    there is none."""
    return shutil.which(dot or "dot", path=path)


def render_svg(dot_text, dot=None, path=None, timeout=RENDER_TIMEOUT):
    """SVG (bytes) of a DOT text, by ``dot -Tsvg`` (see :func:`find_dot` for
    ``dot`` and ``path``), killed after ``timeout`` seconds.  Raises
    :class:`GraphError` when ``dot`` is not installed, fails or takes too long."""
    exe = find_dot(dot, path)
    if exe is None:
        raise GraphError(NOT_INSTALLED)
    if isinstance(dot_text, str):
        dot_text = dot_text.encode("utf-8", "replace")
    try:
        proc = subprocess.run([exe, "-Tsvg"], input=dot_text, capture_output=True,
                              timeout=timeout)
    except FileNotFoundError:
        raise GraphError(NOT_INSTALLED)
    except subprocess.TimeoutExpired:
        raise GraphError("graphviz's dot took more than %gs to draw the graph" % timeout)
    except OSError as e:
        raise GraphError("cannot run graphviz's dot (%s): %s" % (exe, e))
    if proc.returncode != 0 or b"<svg" not in proc.stdout:
        err = proc.stderr.decode("utf-8", "replace").strip()
        raise GraphError("graphviz's dot failed (exit %d)%s"
                         % (proc.returncode, ": " + err if err else ""))
    return proc.stdout
