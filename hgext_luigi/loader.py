"""Load a pipeline as of a changeset and describe its task graph (subprocess side).

Run as ``python -m hgext_luigi.loader SETTINGS.json`` with the current directory
set to a materialized tree of the repository.  Prints one JSON document:

``{"ok": true, "roots": [...], "tasks": [...], "files": {...}}`` or
``{"ok": false, "error": {"kind", "message", "file", "line", "task"}}``.

Every task is described by its key, family, string parameters, the patterns it
watches, the repository modules its code comes from and the keys it requires.
"""

import ast
import configparser
import importlib
import json
import os
import re
import sys
import traceback


class LoadError(Exception):
    def __init__(self, kind, message, file=None, line=None, task=None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.file = file
        self.line = line
        self.task = task

    def as_dict(self):
        return {"kind": self.kind, "message": self.message, "file": self.file,
                "line": self.line, "task": self.task}


def _inside(path, tree):
    if not path:
        return False
    path = os.path.realpath(path)
    return path == tree or path.startswith(tree + os.sep)


def _rel(path, tree):
    return os.path.relpath(os.path.realpath(path), tree).replace(os.sep, "/")


def locate(exc, tree):
    """(file, line) in the tree where ``exc`` was raised, as best known."""
    if isinstance(exc, SyntaxError) and exc.filename and _inside(exc.filename, tree):
        return _rel(exc.filename, tree), exc.lineno
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if _inside(frame.filename, tree):
            return _rel(frame.filename, tree), frame.lineno
    return None, None


def describe_exception(exc):
    text = "%s: %s" % (type(exc).__name__, exc)
    return text.strip()


# -- watched patterns -------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_GLOB_SPECIAL = re.compile(r"([*?\[\]{}\\,])")


def _escape(kind, value):
    if kind in ("re", "relre"):
        return re.escape(value)
    if kind in ("glob", "relglob", "rootglob", ""):
        return _GLOB_SPECIAL.sub(r"\\\1", value)
    return value


def format_watch(pattern, params):
    """Fill ``{name}`` placeholders with parameter values, escaped for the pattern
    kind so values are matched literally.  Other braces (glob ``{a,b}``) stay."""
    if not isinstance(pattern, str):
        raise TypeError("pattern %r is not a string" % (pattern,))
    kind = pattern.split(":", 1)[0] if re.match(r"^[a-z]+:", pattern) else ""
    if kind == "set":
        return pattern

    def sub(m):
        name = m.group(1)
        if name in params:
            return _escape(kind, params[name])
        return m.group(0)

    return _PLACEHOLDER.sub(sub, pattern)


def read_watches_file(tree, relpath):
    """Watched patterns for plain Luigi tasks, from the versioned watches file::

        [watches]
        Family = pattern
            another-pattern
    """
    path = os.path.join(tree, relpath)
    if not os.path.isfile(path):
        return {}
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f, source=relpath)
    except configparser.Error as e:
        raise LoadError("watches-file", "cannot parse %s: %s" % (relpath, e), relpath,
                        getattr(e, "lineno", None))
    if not parser.has_section("watches"):
        return {}
    out = {}
    for family, value in parser.items("watches"):
        out[family] = [p.strip() for p in value.splitlines() if p.strip()]
    return out


def check_module_in_tree(modname, tree):
    """The pipeline module must come from the repository: an installed module of
    the same name (found on sys.path when the tree has none) is not the pipeline."""
    f = getattr(sys.modules.get(modname), "__file__", None)
    if f and _inside(f, tree):
        return
    message = "no pipeline module '%s' at this revision" % modname
    if modname in sys.modules:
        message += " (found only %s, outside the repository)" % (f or "a namespace package")
    raise LoadError("no-module", message)


# -- module dependencies ------------------------------------------------------

def local_modules(tree):
    out = {}
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None)
        if f and _inside(f, tree) and f.endswith(".py"):
            out[name] = _rel(f, tree)
    return out


def _imports(modname, relpath, tree, is_pkg, modules):
    """Repository modules ``modname`` imports.  ``from pkg import mod`` counts as an
    import of ``pkg.mod`` only: a package's ``__init__`` that imports all its
    submodules would otherwise tie every task to every module."""
    try:
        with open(os.path.join(tree, relpath), "rb") as f:
            node = ast.parse(f.read(), relpath)
    except (OSError, SyntaxError, ValueError):
        return set()
    package = modname if is_pkg else modname.rpartition(".")[0]
    names = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Import):
            names.update(a.name for a in n.names)
        elif isinstance(n, ast.ImportFrom):
            if n.level:
                base_parts = package.split(".") if package else []
                if n.level > 1:
                    base_parts = base_parts[: len(base_parts) - (n.level - 1)]
                base = ".".join(base_parts + ([n.module] if n.module else []))
            else:
                base = n.module or ""
            for a in n.names:
                sub = (base + "." if base else "") + a.name
                names.add(sub if sub in modules else base)
    return names


def code_closure(modules, tree):
    """{module name: sorted list of repository files its code depends on}: the
    module's own file and, transitively, the repository modules it imports."""
    direct = {}
    for name, rel in modules.items():
        is_pkg = os.path.basename(rel) == "__init__.py"
        direct[name] = {m for m in _imports(name, rel, tree, is_pkg, modules)
                        if m in modules and m != name}
    out = {}
    for name in modules:
        seen = {name}
        todo = [name]
        while todo:
            for dep in direct.get(todo.pop(), ()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        out[name] = sorted({modules[m] for m in seen})
    return out


# -- the graph ----------------------------------------------------------------

def load(settings):
    import luigi
    from luigi.task import flatten

    from . import context
    from .task import HgTask, str_params, task_key

    tree = os.path.realpath(settings["tree"])
    modname = settings["module"]
    context.set_current(context.Context({"mode": "index", "rev": settings["rev"]}))
    sys.path.insert(0, tree)

    watches_file = settings.get("watches_file") or ""
    declared = read_watches_file(tree, watches_file) if watches_file else {}

    try:
        importlib.import_module(modname)
    except ModuleNotFoundError as e:
        if e.name and (modname == e.name or modname.startswith(e.name + ".")):
            raise LoadError("no-module", "no pipeline module '%s' at this revision" % modname)
        f, line = locate(e, tree)
        raise LoadError("import", "pipeline module '%s' failed to import: %s"
                        % (modname, describe_exception(e)), f, line)
    except BaseException as e:  # noqa: B902 - anything the pipeline raises
        if isinstance(e, KeyboardInterrupt):
            raise
        f, line = locate(e, tree)
        raise LoadError("import", "pipeline module '%s' failed to import: %s"
                        % (modname, describe_exception(e)), f, line)

    check_module_in_tree(modname, tree)

    local_classes = []
    for cls in luigi.task_register.Register._reg:
        mod = sys.modules.get(cls.__module__)
        f = getattr(mod, "__file__", None)
        if f and _inside(f, tree):
            local_classes.append(cls)

    def family_map():
        out = {}
        for cls in local_classes:
            out.setdefault(cls.get_task_family(), cls)
        return out

    def required_params(cls):
        return [n for n, p in cls.get_params()
                if n != "changeset" and not p.has_task_value(cls.get_task_family(), n)]

    def where(cls):
        mod = sys.modules.get(cls.__module__)
        f = getattr(mod, "__file__", None)
        return (_rel(f, tree) if f and _inside(f, tree) else None)

    def instantiate(cls):
        try:
            return cls()
        except Exception as e:
            f, line = locate(e, tree)
            raise LoadError("task", "%s cannot be instantiated: %s"
                            % (cls.get_task_family(), describe_exception(e)),
                            f or where(cls), line, cls.get_task_family())

    families = family_map()
    roots_cfg = [r for r in settings.get("roots") or [] if r]
    if roots_cfg:
        root_tasks = []
        for name in roots_cfg:
            cls = families.get(name)
            if cls is None:
                raise LoadError("config", "root task '%s' is not defined by '%s'"
                                % (name, modname))
            root_tasks.append(instantiate(cls))
        candidates = root_tasks
    else:
        bases = set()
        for cls in local_classes:
            for b in cls.__mro__[1:]:
                bases.add(b)
        candidates = [instantiate(c) for c in local_classes
                      if c not in bases and not required_params(c)]

    nodes = {}
    requires_of = {}

    def deps_of(task):
        try:
            return flatten(task.requires())
        except Exception as e:
            f, line = locate(e, tree)
            raise LoadError("task", "%s.requires() failed: %s" % (task_key(task), describe_exception(e)),
                            f, line, task_key(task))

    # iterative depth-first walk that reports cycles
    for root in candidates:
        rkey = task_key(root)
        if rkey in nodes:
            continue
        stack = [(root, None)]
        on_path = []
        while stack:
            task, it = stack[-1]
            key = task_key(task)
            if it is None:
                if key in on_path:
                    cycle = on_path[on_path.index(key):] + [key]
                    raise LoadError("cycle", "dependency cycle: %s" % " -> ".join(cycle),
                                    where(type(task)), None, key)
                deps = deps_of(task)
                nodes[key] = task
                requires_of[key] = [task_key(d) for d in deps]
                on_path.append(key)
                stack[-1] = (task, iter(deps))
                continue
            dep = next(it, None)
            if dep is None:
                stack.pop()
                on_path.pop()
                continue
            dkey = task_key(dep)
            if dkey in on_path:
                cycle = on_path[on_path.index(dkey):] + [dkey]
                raise LoadError("cycle", "dependency cycle: %s" % " -> ".join(cycle),
                                where(type(dep)), None, dkey)
            if dkey not in nodes:
                stack.append((dep, None))

    if roots_cfg:
        roots = [task_key(t) for t in candidates]
    else:
        required = {d for deps in requires_of.values() for d in deps}
        roots = sorted({task_key(t) for t in candidates} - required)

    modules = local_modules(tree)
    closure = code_closure(modules, tree)
    tasks = []
    for key, task in nodes.items():
        cls = type(task)
        family = cls.get_task_family()
        params = str_params(task)
        is_hg = isinstance(task, HgTask)
        if is_hg:
            raw = task.watches  # a class list, or a property of the instance
            if isinstance(raw, str) or not all(isinstance(p, str) for p in raw):
                raise LoadError("watches", "watches of %s must be a list of pattern strings"
                                % family, where(cls), None, key)
            watches = [format_watch(p, params) for p in raw]
        else:
            watches = declared.get(family, declared.get(cls.__module__ + "." + cls.__name__, []))
        external = getattr(cls, "run", None) is None or isinstance(task, luigi.ExternalTask)
        tasks.append({
            "key": key,
            "family": family,
            "module": cls.__module__,
            "params": params,
            "hgtask": is_hg,
            "external": bool(external),
            "watches": watches,
            "code": closure.get(cls.__module__, []),
            "requires": requires_of[key],
            "file": where(cls),
        })
    tasks.sort(key=lambda t: t["key"])
    files = sorted(set(modules.values()) | ({watches_file} if watches_file else set()))
    return {"ok": True, "roots": roots, "tasks": tasks, "files": files,
            "declared": sorted(declared)}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0], encoding="utf-8") as f:
        settings = json.load(f)
    out_fd = os.dup(1)
    os.dup2(2, 1)  # whatever the pipeline prints goes to stderr, not into the index
    try:
        result = load(settings)
        code = 0
    except LoadError as e:
        result = {"ok": False, "error": e.as_dict()}
        code = 1
    except Exception as e:  # a bug of ours or an unexpected pipeline failure
        f, line = locate(e, os.path.realpath(settings["tree"]))
        result = {"ok": False, "error": {"kind": "internal", "message": describe_exception(e),
                                         "file": f, "line": line, "task": None,
                                         "traceback": traceback.format_exc()}}
        code = 1
    with os.fdopen(out_fd, "w", encoding="utf-8") as out:
        json.dump(result, out)
    return code


if __name__ == "__main__":
    sys.exit(main())
