"""``hg luigi-why``: what differs between two builds of a task, and whether that
is data, logic or the runtime.  Plain Python: the builds and their recorded
facts come from the lineage store, what only the repository knows (line counts
of a changed file, the changesets that touched it) through callbacks.

A build records what it depended on (``LineageStore.facts``): watched files
and pipeline source files with their Mercurial file node ids, the digests of
the Luigi configuration sections it reads, the runtime versions; its inputs
record each upstream output with its sha256.  Comparing two builds is
comparing those.
"""

DATA, LOGIC, RUNTIME = "data", "logic", "runtime"


def _diff_nodes(old, new):
    """[(path, 'added'|'removed'|'modified', old node, new node)] between two
    ``{path: node}``."""
    out = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path), new.get(path)
        if a == b:
            continue
        kind = "added" if a is None else "removed" if b is None else "modified"
        out.append((path, kind, a, b))
    return out


def _diff_values(old, new):
    return [{"name": k, "from": old.get(k), "to": new.get(k)}
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _upstream(inputs_old, inputs_new):
    """Upstream outputs whose content differs: by upstream task key."""
    old = {i["key"]: i for i in inputs_old}
    out = []
    for i in inputs_new:
        prev = old.get(i["key"])
        if prev is None:
            out.append({"task": i["key"], "from": None, "to": i["changeset"],
                        "change": "added"})
            continue
        if i.get("digests") is None or prev.get("digests") is None:
            same = i["changeset"] == prev["changeset"] and i["outputs"] == prev["outputs"]
            if not same:
                out.append({"task": i["key"], "from": prev["changeset"],
                            "to": i["changeset"], "change": "unknown content"})
            continue
        if sorted(i["digests"]) != sorted(prev["digests"]):
            out.append({"task": i["key"], "from": prev["changeset"], "to": i["changeset"],
                        "change": "output changed"})
    for key in sorted(set(old) - {i["key"] for i in inputs_new}):
        out.append({"task": key, "from": old[key]["changeset"], "to": None,
                    "change": "removed"})
    return out


def _digests(outputs):
    return sorted(o["sha256"] for o in outputs)


def compare(new, old, repo):
    """The explanation of build ``new`` against build ``old``.  Each build is a
    dict: ``build`` (the lineage row), ``facts``, ``inputs``, ``outputs``.
    ``repo`` gives ``stat(path, old node, new node)`` (a short text) and
    ``changesets(path, old changeset, new changeset)`` (``[(node, summary)]``)."""
    fn, fo = new["facts"], old["facts"]
    unknown = sorted(k for k in ("watched", "source", "runtime")
                     if k not in fn or k not in fo)

    def known(kind):  # a side that recorded nothing of a kind: not compared
        return ({}, {}) if kind in unknown else (fo.get(kind, {}), fn.get(kind, {}))

    data_files = [{"path": p, "change": kind, "stat": repo.stat(p, a, b)}
                  for p, kind, a, b in _diff_nodes(*known("watched"))]
    upstream = _upstream(old["inputs"], new["inputs"])
    logic_files = [{"path": p, "change": kind,
                    "changesets": repo.changesets(p, old["build"]["changeset"],
                                                  new["build"]["changeset"])}
                   for p, kind, a, b in _diff_nodes(*known("source"))]
    params = _diff_values(old["build"]["params"], new["build"]["params"])
    config = [{"section": d["name"], "change": "added" if d["from"] is None else
               "removed" if d["to"] is None else "modified"}
              # only sections that exist are recorded: a build that recorded its
              # runtime recorded its configuration too, even when it had none
              for d in (_diff_values(fo.get("config", {}), fn.get("config", {}))
                        if "runtime" not in unknown else [])]
    runtime = _diff_values(*known("runtime"))
    result = {
        "task": new["build"]["key"],
        "build": _side(new), "against": _side(old),
        DATA: {"files": data_files, "upstream": upstream},
        LOGIC: {"files": logic_files, "params": params, "config": config},
        RUNTIME: runtime,
        "unknown": unknown,
        "outputs_differ": _digests(new["outputs"]) != _digests(old["outputs"]),
    }
    result["verdict"] = verdict(result)
    return result


def _side(b):
    row = b["build"]
    return {"build": row["id"], "changeset": row["changeset"], "status": row["status"],
            "outputs": [{"path": o["path"], "sha256": o["sha256"]} for o in b["outputs"]]}


def verdict(result):
    """One line: what changed between the two builds."""
    data = bool(result[DATA]["files"] or result[DATA]["upstream"])
    logic = bool(result[LOGIC]["files"] or result[LOGIC]["params"]
                 or result[LOGIC]["config"])
    if data and logic:
        return "data drift and logic change"
    if data:
        return "data drift"
    if logic:
        return "logic change"
    if result[RUNTIME]:
        return "runtime change"
    if result["unknown"]:
        return "unknown: the older build recorded no %s" % ", ".join(result["unknown"])
    if result["outputs_differ"]:
        return "nothing recorded changed: output differs anyway (non-deterministic task?)"
    return "nothing changed: same inputs, same output"


def changed_upstream(result):
    """Upstream tasks whose output differs between the two builds: (key, old
    changeset, new changeset), to explain in turn (``--upstream``)."""
    return [(u["task"], u["from"], u["to"]) for u in result[DATA]["upstream"]
            if u["from"] and u["to"] and u["change"] != "removed"]
