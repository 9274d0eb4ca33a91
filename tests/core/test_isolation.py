"""The guard of the three worlds: every module of ``hgext_luigi.core`` imports
without Mercurial and without Luigi, and none reaches into ``hgext_luigi.hg``
or ``hgext_luigi.pipeline``.

The modules are found on disk, so a module added to core/ is guarded too."""

import ast
import os
import subprocess
import sys

import pytest

import hgext_luigi.core

CORE = os.path.dirname(os.path.abspath(hgext_luigi.core.__file__))
PACKAGE = os.path.dirname(CORE)
ROOT = os.path.dirname(PACKAGE)
FORBIDDEN = ("hgext_luigi.hg", "hgext_luigi.pipeline")

# the modules the restructuring put in core/: each must still be there (or
# deliberately removed from this list)
EXPECTED = {"acl", "affected", "audit", "builds", "credentials", "graph", "identity",
            "lineage", "objects", "olevents", "protocol", "pushqueue", "sandbox",
            "sfnclient", "sqlitedb", "verify", "why"}


def core_modules():
    return sorted(name[:-3] for name in os.listdir(CORE)
                  if name.endswith(".py") and name != "__init__.py")


def test_the_core_modules_are_all_there():
    assert EXPECTED <= set(core_modules())


IMPORT_CHECK = (
    "import hgext_luigi.core.{name}, sys; "
    "bad = sorted(m for m in sys.modules if m == 'mercurial' or m.startswith('mercurial.')"
    " or m == 'luigi' or m.startswith('luigi.')); "
    "assert not bad, bad"
)


@pytest.mark.parametrize("name", core_modules())
def test_importing_loads_neither_mercurial_nor_luigi(name, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HG"))}
    env["PYTHONPATH"] = ROOT
    proc = subprocess.run([sys.executable, "-c", IMPORT_CHECK.format(name=name)],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


def imported_names(path):
    """Every module name ``path`` imports, relative imports made absolute."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = "hgext_luigi.core"
    names = []
    for node in ast.walk(tree):  # function-level imports too
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = base + ("." + node.module if node.module else "")
            else:
                module = node.module or ""
            names.append(module)
            # ``from .. import hg`` / ``from hgext_luigi import pipeline``
            names += ["%s.%s" % (module, a.name) for a in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__" \
                and node.args and isinstance(node.args[0], ast.Constant):
            names.append(str(node.args[0].value))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == \
                "import_module" and node.args and isinstance(node.args[0], ast.Constant):
            names.append(str(node.args[0].value))
    return names


def reaches_out(name):
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN) or \
        name.split(".")[0] in ("mercurial", "luigi")


@pytest.mark.parametrize("name", core_modules() + ["__init__"])
def test_no_import_of_the_hg_or_pipeline_side(name):
    bad = [n for n in imported_names(os.path.join(CORE, name + ".py")) if reaches_out(n)]
    assert bad == []


def test_the_ast_check_sees_what_it_must(tmp_path):
    """The check itself: each way of reaching out is caught."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from ..hg import runs\n"
        "from .. import pipeline\n"
        "import hgext_luigi.hg.config\n"
        "def f():\n"
        "    from mercurial import ui\n"
        "    import luigi\n"
        "    __import__('hgext_luigi.pipeline.runner')\n"
        "from . import lineage\n"
        "import json\n")
    bad = [n for n in imported_names(str(sample)) if reaches_out(n)]
    assert sorted(bad) == sorted([
        "hgext_luigi.hg", "hgext_luigi.hg.runs", "hgext_luigi.pipeline",
        "hgext_luigi.hg.config", "mercurial", "mercurial.ui", "luigi",
        "hgext_luigi.pipeline.runner"])
