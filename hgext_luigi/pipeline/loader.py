"""Load a pipeline as of a changeset and describe its task graph (subprocess side).

Run as ``python -m hgext_luigi.pipeline.loader SETTINGS.json`` with the current directory
set to a materialized tree of the repository.  Prints one JSON document:

``{"ok": true, "roots": [...], "tasks": [...], "files": [...], "warnings": [...],
"aliases": {...}}`` or ``{"ok": false, "error": {"kind", "message", "file", "line",
"hint"}}`` (and ``"traceback"`` for a failure of the loader itself).

Every task is described by its key, family, string parameters, the patterns it
watches, the repository modules its code comes from and the keys it requires.
``luigi.Config`` classes are configuration (often secrets from ``luigi.cfg``):
never tasks, never described.
"""

import ast
import configparser
import importlib
import importlib.machinery
import importlib.util
import json
import os
import re
import sys
import traceback


PARAMS_HINT = "set [luigi] roots or pass --task 'Family(param=value)'"


class LoadError(Exception):
    """The pipeline cannot be loaded: ``kind`` of error (``hg.graphcache``
    picks its hint by it), where (``file`` of the tree, ``line``), what to do."""

    def __init__(self, kind, message, file=None, line=None, hint=None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.file = file
        self.line = line
        self.hint = hint

    def as_dict(self):
        return {"kind": self.kind, "message": self.message, "file": self.file,
                "line": self.line, "hint": self.hint}


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


def shown(text):
    """``text`` (a --task argument, a name from the watches file: anyone's input)
    with control characters escaped, safe to print on a terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


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
    except UnicodeDecodeError as e:
        raise LoadError("watches-file", "cannot parse %s: not UTF-8 text (%s)" % (relpath, e),
                        relpath)
    except configparser.Error as e:
        raise LoadError("watches-file", "cannot parse %s: %s" % (relpath, e), relpath,
                        getattr(e, "lineno", None))
    if not parser.has_section("watches"):
        return {}
    out = {}
    for family, value in parser.items("watches"):
        out[family] = [p.strip() for p in value.splitlines() if p.strip()]
    return out


def watches_file_lines(tree, relpath):
    """{family: line number} of the entries of the ``[watches]`` section, for
    warnings (configparser does not keep line numbers)."""
    lines = {}
    section = None
    try:
        with open(os.path.join(tree, relpath), encoding="utf-8") as f:
            text = f.read()
    except (OSError, ValueError):
        return lines
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;" or line[0].isspace():
            continue
        if stripped.startswith("["):
            section = stripped.strip("[]").strip()
        elif section == "watches" and "=" in line:
            lines.setdefault(line.split("=", 1)[0].strip(), number)
    return lines


def _forget_outside(top, tree):
    """Drop imported modules named ``top`` (or under it) that do not come from the
    tree: an installed package of the same name must not stand in for it."""
    for name in list(sys.modules):
        if name == top or name.startswith(top + "."):
            if not _inside(getattr(sys.modules[name], "__file__", None), tree):
                del sys.modules[name]


def import_pipeline(modname, tree):
    """Import the pipeline module ``modname`` from the tree only.  Its top-level
    package is found in the tree itself (not through sys.path, where this
    project's own ``pipelines``, PYTHONPATH or site-packages could come first)."""
    tree = os.path.realpath(tree)
    top = modname.partition(".")[0]
    spec = importlib.machinery.PathFinder.find_spec(top, [tree]) if top else None
    if spec is None:
        raise LoadError("no-module", "no pipeline module '%s' at this revision" % modname)
    _forget_outside(top, tree)
    if top not in sys.modules:
        module = importlib.util.module_from_spec(spec)
        if spec.origin is None and spec.submodule_search_locations is not None:
            module.__path__ = list(spec.submodule_search_locations)  # namespace: tree only
        sys.modules[top] = module
        try:
            if spec.loader is not None:
                spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(top, None)
            raise
    return importlib.import_module(modname)


def check_module_in_tree(modname, tree):
    """The pipeline module must come from the repository: an installed module of
    the same name (found on sys.path when the tree has none) is not the pipeline."""
    module = sys.modules.get(modname)
    f = getattr(module, "__file__", None)
    if f and _inside(f, tree):
        return
    search = list(getattr(module, "__path__", None) or [])
    if f is None and search and all(_inside(p, tree) for p in search):
        return  # a namespace package of the tree
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


# -- Luigi configuration files -------------------------------------------------

def luigi_config_files(tree):
    """The Luigi configuration files of the tree, relative, listed whether or
    not they exist at this revision: adding one changes the graph.  (Those
    outside the tree are the hg side's to watch: ``hg.graphcache``.)"""
    from luigi.configuration import core

    from .luigi_shim import config_paths

    active = active_config_parser()
    in_tree = set()
    # LUIGI_CONFIG_PATH is only added when it exists: list it anyway
    extra = [os.environ["LUIGI_CONFIG_PATH"]] if os.environ.get("LUIGI_CONFIG_PATH") else []
    for parser in core.PARSERS.values():
        for path in config_paths(parser) + (extra if parser is active else []):
            rel = os.path.normpath(path)
            if not os.path.isabs(rel) and rel != ".." and not rel.startswith(".." + os.sep):
                in_tree.add(rel.replace(os.sep, "/"))  # read from the cwd: the tree
            elif _inside(path, tree):
                in_tree.add(_rel(path, tree))
    return sorted(in_tree)


def active_config_parser():
    """The class of the configuration parser Luigi uses, as Luigi picks it:
    ``LUIGI_CONFIG_PARSER``, or the default for an unknown name."""
    from luigi.configuration import core

    return core.PARSERS.get(os.environ.get("LUIGI_CONFIG_PARSER", core.DEFAULT_PARSER),
                            core.PARSERS[core.DEFAULT_PARSER])


# -- the tasks of the pipeline ---------------------------------------------------

_KEY = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*\((.*)\)\s*$", re.S)


def pipeline_classes(luigi, tree):
    """Task classes defined in the tree, in the order of definition.
    ``luigi.Config`` classes hold configuration (passwords from luigi.cfg):
    never tasks."""
    from .luigi_shim import task_classes

    out = []
    for cls in task_classes():
        if issubclass(cls, luigi.Config):
            continue
        if _inside(getattr(sys.modules.get(cls.__module__), "__file__", None), tree):
            out.append(cls)
    return out


def required_params(cls):
    """Parameters of ``cls`` with no default and no value in the Luigi configuration."""
    family = cls.get_task_family()
    return [n for n, p in cls.get_params()
            if n != "changeset" and not p.has_task_value(family, n)]


def param_names(cls):
    return [n for n, _p in cls.get_params() if n != "changeset"]


def parse_key(text, families):
    """``(class, {name: string value})`` for a ``--task`` argument written as a key
    (``Family(name=value, ...)``, what ``task.format_key`` prints), or None for a
    plain family name."""
    m = _KEY.match(text)
    if m is None:
        return None
    family, body = m.group(1), m.group(2)
    cls = families.get(family)
    if cls is None:
        raise unknown_family(family, families)
    names = param_names(cls)
    params = {}
    if not body.strip():
        return cls, params
    # values may hold ", " themselves (lists, JSON): split before a known name only
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    pieces = re.split(r",\s*(?=(?:%s)\s*=)" % alternatives, body) if names else [body]
    for piece in pieces:
        name, eq, value = piece.partition("=")
        name = name.strip()
        if not eq or name not in names:
            raise LoadError("task-arg", "--task %s: %s has no parameter '%s'"
                            % (shown(text), family, shown(name or piece.strip())),
                            hint="parameters of %s: %s" % (family, ", ".join(names) or "none"))
        if name in params:
            raise LoadError("task-arg", "--task %s: parameter '%s' given twice"
                            % (shown(text), name))
        params[name] = value
    return cls, params


def unknown_family(name, families):
    return LoadError("task-arg", "unknown task: %s" % shown(name),
                     hint="tasks in this pipeline: %s" % ", ".join(sorted(families)))


def needs_params(cls, missing):
    family = cls.get_task_family()
    return LoadError("params", "task %s needs the parameter%s %s" % (
        family, "s" if len(missing) > 1 else "", ", ".join(missing)), hint=PARAMS_HINT)


def class_file(cls, tree):
    """The tree file defining ``cls``, relative, or None."""
    f = getattr(sys.modules.get(cls.__module__), "__file__", None)
    return _rel(f, tree) if f and _inside(f, tree) else None


def instantiate(cls, tree, params=None):
    """A task of ``cls`` from string parameters, as Luigi's command line makes
    it; missing parameters are named, with what to do about them."""
    from luigi.parameter import MissingParameterException

    params = params or {}
    try:
        return cls.from_str_params(params)
    except MissingParameterException as e:
        missing = [n for n in required_params(cls) if n not in params]
        raise needs_params(cls, missing or [describe_exception(e)])
    except Exception as e:
        f, line = locate(e, tree)
        raise LoadError("task", "%s cannot be instantiated: %s"
                        % (cls.get_task_family(), describe_exception(e)),
                        f or class_file(cls, tree), line)


def task_arguments(texts, families, tree):
    """``(tasks, plain names, aliases)`` of the ``--task`` arguments: a key
    (``Family(p=v)``) is instantiated, as is a plain family name that needs no
    parameters; plain names are then looked up in the graph (:func:`check_names`).
    ``aliases`` maps each key given to the task's own key (defaults filled in)."""
    from .task import task_key

    tasks, names, aliases = [], [], {}
    for text in texts:
        parsed = parse_key(text, families)
        if parsed is None:
            cls = families.get(text)
            if cls is not None and not required_params(cls):
                tasks.append(instantiate(cls, tree))
            names.append(text)
            continue
        task = instantiate(parsed[0], tree, parsed[1])
        tasks.append(task)
        aliases[text] = task_key(task)
    return tasks, names, aliases


def configured_roots(names, families, tree, modname):
    """The tasks ``[luigi] roots`` names."""
    out = []
    for name in names:
        cls = families.get(name)
        if cls is None:
            raise LoadError("config", "root task '%s' is not defined by '%s'" % (name, modname))
        out.append(instantiate(cls, tree))
    return out


def default_roots(classes, tree, modname, has_arguments):
    """The tasks of the classes nothing derives from that need no parameters.
    When every one needs some and no ``--task`` says which: an error naming
    them, rather than a silently empty plan."""
    bases = set()
    for cls in classes:
        bases.update(cls.__mro__[1:])
    leaves = [c for c in classes if c not in bases]
    roots = [instantiate(c, tree) for c in leaves if not required_params(c)]
    if leaves and not roots and not has_arguments:
        needs = "; ".join("%s needs %s" % (c.get_task_family(), ", ".join(required_params(c)))
                          for c in sorted(classes, key=lambda c: c.get_task_family())
                          if required_params(c))
        raise LoadError("params", "every task of '%s' needs parameters: %s" % (modname, needs),
                        hint=PARAMS_HINT)
    return roots


def check_names(names, graph_families, families):
    """Plain ``--task`` family names must name a task of the graph."""
    for name in names:
        if name in graph_families:
            continue
        cls = families.get(name)
        if cls is None:
            raise unknown_family(name, families)
        raise needs_params(cls, required_params(cls))


def walk(roots, tree):
    """``(nodes, requires_of)``: every task reachable from ``roots`` by key, and
    the keys each requires; a :class:`LoadError` when they form a cycle."""
    import luigi
    from luigi.task import flatten

    from .task import task_key

    def deps_of(task):
        try:
            deps = flatten(task.requires())
        except Exception as e:
            f, line = locate(e, tree)
            raise LoadError("task", "%s.requires() failed: %s"
                            % (task_key(task), describe_exception(e)), f, line)
        return [d for d in deps if not isinstance(d, luigi.Config)]

    nodes, requires_of = {}, {}
    stack = list(reversed(roots))
    while stack:  # every task reachable, once (a cycle is found below)
        task = stack.pop()
        key = task_key(task)
        if key in nodes:
            continue
        deps = deps_of(task)
        nodes[key] = task
        requires_of[key] = [task_key(d) for d in deps]
        stack.extend(reversed(deps))
    _check_cycles(nodes, requires_of, [task_key(r) for r in roots], tree)
    return nodes, requires_of


def _check_cycles(nodes, requires_of, roots, tree):
    """A :class:`LoadError` naming the cycle and the file of the task that
    closes it, when there is one (``core.affected.toposort`` finds it)."""
    import types

    from ..core import affected

    graph = {k: types.SimpleNamespace(requires=r) for k, r in requires_of.items()}
    try:
        affected.toposort(graph, roots)
    except affected.PlanError as e:
        if e.cycle is None:
            raise
        raise LoadError("cycle", str(e), class_file(type(nodes[e.cycle[0]]), tree))


def import_or_fail(modname, tree):
    """Import the pipeline; any failure is a :class:`LoadError` naming file and line."""
    try:
        import_pipeline(modname, tree)
    except LoadError:
        raise
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


# -- the graph ----------------------------------------------------------------

def load(settings):
    import luigi

    from . import context
    from .task import task_key

    tree = os.path.realpath(settings["tree"])
    modname = settings["module"]
    context.set_current(context.Context({"rev": settings["rev"]}))
    sys.path.insert(0, tree)

    watches_file = settings.get("watches_file") or ""
    declared = read_watches_file(tree, watches_file) if watches_file else {}

    import_or_fail(modname, tree)

    local_classes = pipeline_classes(luigi, tree)
    families = {}
    for cls in local_classes:
        families.setdefault(cls.get_task_family(), cls)

    texts = settings.get("tasks") or []
    explicit, plain_names, aliases = task_arguments(texts, families, tree)
    roots_cfg = [r for r in settings.get("roots") or [] if r]
    if roots_cfg:
        candidates = configured_roots(roots_cfg, families, tree, modname)
    else:
        candidates = default_roots(local_classes, tree, modname, bool(texts))
    candidates += explicit

    nodes, requires_of = walk(candidates, tree)
    graph_families = {type(t).get_task_family() for t in nodes.values()}
    check_names(plain_names, graph_families, families)

    candidate_keys = list(dict.fromkeys(task_key(t) for t in candidates))
    if roots_cfg:
        roots = candidate_keys
    else:
        required = {d for deps in requires_of.values() for d in deps}
        roots = sorted(set(candidate_keys) - required)

    modules = local_modules(tree)
    closure = code_closure(modules, tree)
    tasks = [describe(task, key, requires_of[key], declared, closure, tree)
             for key, task in nodes.items()]
    tasks.sort(key=lambda t: t["key"])

    known = set(families) | graph_families
    known.update(c.__module__ + "." + c.__name__ for c in local_classes)
    warnings = unknown_watch_entries(declared, known, tree, watches_file)
    files = sorted(set(modules.values()) | set(luigi_config_files(tree))
                   | ({watches_file} if watches_file else set()))
    return {"ok": True, "roots": roots, "tasks": tasks, "files": files,
            "warnings": warnings, "aliases": aliases}


def describe(task, key, requires, declared, closure, tree):
    """One row of the graph: what the planner needs to know of a task."""
    import luigi

    from .task import HgTask, str_params

    cls = type(task)
    family = cls.get_task_family()
    params = str_params(task)
    is_hg = isinstance(task, HgTask)
    if is_hg:
        raw = task.watches  # a class list, or a property of the instance
        if isinstance(raw, str) or not all(isinstance(p, str) for p in raw):
            raise LoadError("watches", "watches of %s must be a list of pattern strings"
                            % family, class_file(cls, tree))
    else:  # a plain Luigi task: what the watches file says, by family or class path
        raw = declared.get(family, declared.get(cls.__module__ + "." + cls.__name__, []))
    external = getattr(cls, "run", None) is None or isinstance(task, luigi.ExternalTask)
    return {
        "key": key,
        "family": family,
        "params": params,
        "hgtask": is_hg,
        "external": bool(external),
        "watches": [format_watch(p, params) for p in raw],
        "code": closure.get(cls.__module__, []),
        "requires": requires,
    }


def unknown_watch_entries(declared, known, tree, watches_file):
    """Warnings for entries of the watches file that name no task family (a typo
    would otherwise leave a task watching nothing, silently)."""
    unknown = [f for f in declared if f not in known]
    if not unknown:
        return []
    lines = watches_file_lines(tree, watches_file)
    out = []
    for family in unknown:
        where = watches_file
        if lines.get(family):
            where += ", line %d" % lines[family]
        out.append("%s: no task family '%s' in the pipeline" % (shown(where), shown(family)))
    return out


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
                                         "file": f, "line": line,
                                         "traceback": traceback.format_exc()}}
        code = 1
    with os.fdopen(out_fd, "w", encoding="utf-8") as out:
        json.dump(result, out)
    return code


if __name__ == "__main__":
    sys.exit(main())
