"""``hg luigi-why`` (hg side): find the two builds, ask the repository what only
it knows, show ``why.compare``'s answer grouped as data, logic, runtime and a
verdict."""

import difflib
import os

from mercurial import error, node as nodemod, pycompat
from mercurial.i18n import _

from . import config, planning
from ..core import why

_b = config.local
MAX_DEPTH = 10


class RepoFacts:
    """What ``why.compare`` asks the repository."""

    def __init__(self, repo):
        self.repo = repo.unfiltered()

    def stat(self, path, old, new):
        """``+A -R`` lines for text, ``X -> Y bytes`` for binary, or what the
        file became (added, removed)."""
        flog = self.repo.file(pycompat.fsencode(path))
        try:
            a = flog.read(nodemod.bin(old)) if old else b''
            b = flog.read(nodemod.bin(new)) if new else b''
        except (error.LookupError, ValueError):
            return "changed"
        if b'\0' in a or b'\0' in b:
            return "%d -> %d bytes" % (len(a), len(b))
        added = removed = 0
        matcher = difflib.SequenceMatcher(None, a.splitlines(), b.splitlines(),
                                          autojunk=False)
        for op, i1, i2, j1, j2 in matcher.get_opcodes():
            if op != 'equal':
                removed += i2 - i1
                added += j2 - j1
        return "+%d -%d" % (added, removed)

    def changesets(self, path, old, new):
        """The changesets between the two builds that touched ``path``."""
        try:
            revs = self.repo.revs(b'(only(%s, %s) or only(%s, %s)) and file(%s)',
                                  config.node(new), config.node(old),
                                  config.node(old), config.node(new),
                                  b'path:' + pycompat.fsencode(path))
        except (error.RepoLookupError, error.ParseError):
            return []
        out = []
        for r in revs:
            ctx = self.repo[r]
            summary = ctx.description().splitlines()[0] if ctx.description() else b''
            out.append({"node": config.hexstr(ctx),
                        "summary": config.text(summary)})
        return out


def _load(store, build):
    return {"build": build, "facts": store.facts(build["id"]),
            "inputs": store.inputs(build["id"]), "outputs": store.outputs(build["id"])}


def _key_at(store, rev, name):
    """The task key ``name`` (a key or a family) names in the latest run at
    ``rev``, and the changeset its build there is stamped with."""
    run = store.latest_run(rev)
    rows = store.run_tasks(run["id"]) if run else []
    matches = [r for r in rows if r["key"] == name] or \
        [r for r in rows if r["family"] == name]
    if len(matches) > 1:
        raise error.Abort(_(b'%s names %d tasks at %s') % (_b(name), len(matches),
                                                              _b(rev[:12])),
                          hint=_(b'name one: %s') % _b(", ".join(r["key"] for r in matches)))
    if matches:
        return matches[0]["key"], matches[0]["changeset"]
    return name, rev


def build_at(store, rev, name):
    """The successful build of task ``name`` that REV uses."""
    key, stamp = _key_at(store, rev, name)
    build = store.success_for_key(key, stamp) if stamp else None
    if build is None:
        raise error.Abort(_(b'no successful build of %s at %s') % (_b(name), _b(rev[:12])),
                          hint=_(b'see hg luigi-lineage %s') % _b(rev[:12]))
    return build


def build_of_output(store, paths):
    for path in paths:
        found = store.builds_producing(path)
        if found:
            return found[0]
    return None


def previous(store, build):
    """The newest earlier successful build of the same task whose output
    differs (what ``--previous`` compares with)."""
    mine = sorted(o["sha256"] for o in store.outputs(build["id"]))
    for b in reversed(store.history(build["key"])):
        if b["id"] >= build["id"] or b["status"] != "success" or b["key"] != build["key"]:
            continue
        if sorted(o["sha256"] for o in store.outputs(b["id"])) != mine:
            return b
    return None


def explain(store, repo, new, old, upstream=False, depth=0, seen=None):
    """``why.compare`` of two builds; with ``upstream``, each upstream task whose
    output changed is explained in turn (``result["upstream_why"]``)."""
    result = why.compare(_load(store, new), _load(store, old), RepoFacts(repo))
    result["depth"] = depth
    explained = [result]
    seen = seen if seen is not None else set()
    if not upstream or depth >= MAX_DEPTH:
        return explained
    for key, cs_old, cs_new in why.changed_upstream(result):
        a, b = store.success_for_key(key, cs_new), store.success_for_key(key, cs_old)
        if a is None or b is None or (a["id"], b["id"]) in seen:
            continue
        seen.add((a["id"], b["id"]))
        explained += explain(store, repo, a, b, True, depth + 1, seen)
    return explained


def show(ui, fm, result):
    """One comparison, grouped: data, logic, runtime, verdict."""
    indent = b'  ' * result["depth"]
    new, old = result["build"], result["against"]
    fm.startitem()
    fm.write(b'task', indent + b'%s', _b(result["task"]))
    fm.plain(b': build %d at %s against build %d at %s\n'
             % (new["build"], _b(new["changeset"][:12]), old["build"],
                _b(old["changeset"][:12])))
    fm.data(build=new["build"], changeset=_b(new["changeset"]),
            against=config.local_data(old), depth=result["depth"])
    _group(fm, indent, b'data', [
        b'%s %s (%s)' % (_b(f["change"]), _b(f["path"]), _b(f["stat"]))
        for f in result["data"]["files"]] + [
        b'upstream %s: %s (%s -> %s)' % (
            _b(u["task"]), _b(u["change"]), _b((u["from"] or "-")[:12]),
            _b((u["to"] or "-")[:12])) for u in result["data"]["upstream"]])
    _group(fm, indent, b'logic', [
        b'%s %s%s' % (_b(f["change"]), _b(f["path"]), b''.join(
            b'\n%s      %s %s' % (indent, _b(c["node"][:12]), _b(c["summary"]))
            for c in f["changesets"])) for f in result["logic"]["files"]] + [
        b'parameter %s: %s -> %s' % (_b(p["name"]), _b(str(p["from"])), _b(str(p["to"])))
        for p in result["logic"]["params"]] + [
        b'configuration [%s] %s' % (_b(c["section"]), _b(c["change"]))
        for c in result["logic"]["config"]])
    _group(fm, indent, b'runtime', [
        b'%s %s -> %s' % (_b(r["name"]), _b(str(r["from"])), _b(str(r["to"])))
        for r in result["runtime"]])
    fm.data(data=config.local_data(result["data"]), logic=config.local_data(result["logic"]),
            runtime=config.local_data(result["runtime"]), unknown=config.local_data(result["unknown"]),
            outputs_differ=result["outputs_differ"])
    fm.write(b'verdict', indent + b'  verdict: %s\n', _b(result["verdict"]))


def _group(fm, indent, name, lines):
    if not lines:
        return
    fm.plain(b'%s  %s\n' % (indent, name))
    for line in lines:
        fm.plain(b'%s    %s\n' % (indent, line))


def resolve(ui, repo, store, settings, target, rev, against, resolve_output):
    """(new build, old build) for ``hg luigi-why TARGET [-r REV] [--against REV]``."""
    pathlike = os.sep in pycompat.fsdecode(target) or os.path.exists(target)
    new = build_of_output(store, resolve_output(repo, settings, target)) if pathlike \
        else None
    if pathlike and new is None:
        raise error.Abort(_(b'no recorded build produced %s') % target,
                          hint=_(b'give the path shown by hg luigi-lineage REV, or a task'))
    if new is None:
        ctx = planning.resolve_rev(repo.unfiltered(), rev or b'tip')
        new = build_at(store, config.hexstr(ctx), config.text(target))
    if against:
        ctx = planning.resolve_rev(repo.unfiltered(), against)
        old = build_at(store, config.hexstr(ctx), new["key"])
    else:
        old = previous(store, new)
    if old is None:
        raise error.Abort(_(b'nothing to compare: no earlier build of %s with another '
                            b'output') % _b(new["key"]),
                          hint=_(b'name one with --against REV'))
    return new, old
