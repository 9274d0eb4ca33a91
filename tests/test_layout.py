"""The layout ARCHITECTURE.md describes, kept true: hg/ and pipeline/ meet only
in core/ (and the protocol it describes), labels have colors, functions fit on a
screen."""

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "hgext_luigi")


def modules(world):
    folder = os.path.join(PKG, world)
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".py"))


def imported(path):
    """Absolute names of everything ``path`` imports (at any depth)."""
    rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    package = rel[:-1]
    out = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out.add(mod)
            out.update("%s.%s" % (mod, a.name) for a in node.names)
    return out


def crossings(world, forbidden):
    return sorted((os.path.basename(p), name) for p in modules(world) for name in imported(p)
                  if any(name == f or name.startswith(f + ".") for f in forbidden))


def test_the_pipeline_side_never_imports_mercurial_or_the_hg_side():
    assert crossings("pipeline", ["mercurial", "hgext_luigi.hg"]) == []


def test_the_hg_side_never_imports_the_pipeline_side():
    # Luigi itself only where -T json prints Luigi's task ids (planning.task_id)
    assert crossings("hg", ["hgext_luigi.pipeline", "ansible_runner"]) == []
    assert crossings("hg", ["luigi"]) == [("planning.py", "luigi.task"),
                                          ("planning.py", "luigi.task.task_id_str")]


def test_core_imports_neither_side():
    assert crossings("core", ["mercurial", "luigi", "hgext_luigi.hg",
                              "hgext_luigi.pipeline"]) == []


def test_the_task_types_users_import_stay_on_the_pipeline_side():
    for name in ("ansible.py", "stepfunctions.py"):
        names = imported(os.path.join(PKG, name))
        assert not [n for n in names if n.startswith(("mercurial", "hgext_luigi.hg"))]


def test_every_label_written_has_a_color():
    from hgext_luigi.hg.show import colortable

    names = {k.decode() for k in colortable}
    for path in modules("hg"):
        text = open(path, encoding="utf-8").read()
        fixed = re.findall(r"label=b'(luigi\.[a-z.-]+)'", text)
        fixed += re.findall(r"ui\.label\([^\n]*, b'(luigi\.[a-z.-]+)'\)", text)
        for label in fixed:
            assert label in names, (path, label)
        for prefix in re.findall(r"b'(luigi\.[a-z.-]+\.)%s'", text):
            assert any(n.startswith(prefix) for n in names), (path, prefix)


@pytest.mark.parametrize("world", ["hg", "core", "pipeline", ""])
def test_no_function_is_longer_than_a_screen(world):
    folder = os.path.join(PKG, world)
    long = []
    for f in sorted(os.listdir(folder)):
        if f.endswith(".py"):
            tree = ast.parse(open(os.path.join(folder, f), encoding="utf-8").read())
            long += ["%s:%s (%d lines)" % (f, n.name, n.end_lineno - n.lineno + 1)
                     for n in ast.walk(tree)
                     if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                     and n.end_lineno - n.lineno + 1 > 60]
    assert long == []
