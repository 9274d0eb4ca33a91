"""plan, run and trace Luigi pipelines from Mercurial changesets

Luigi tasks declare the repository files they read (``watches``).  For a
revision, :hg:`luigi-affected` tells which tasks it affects and why,
:hg:`luigi-run` runs exactly those through Luigi with the pipeline code as of
that revision and stamps every output with the changeset, and
:hg:`luigi-lineage` tells which changeset, run, user and inputs produced each
output.

Enable it with::

  [extensions]
  hgext_luigi =

Pipeline code subclasses ``hgext_luigi.HgTask`` (see the README).

Configuration (all in the ``[luigi]`` section):

``module``
  Python module (package) of the pipeline, imported from the repository as of
  the revision being built. Default: ``pipelines``.

``roots``
  Task families to build. Default: every task without required parameters that
  no other task requires.

``output-root``
  Where stamped outputs go, relative to the repository root unless absolute.
  Default: ``.hg/luigi/outputs`` (also works without a working directory).

``scheduler``
  URL of a central ``luigid`` (``http://host:8082``). Default: Luigi's local
  scheduler.

``workers``
  Luigi worker processes. Default: 1.

``on-commit``
  ``off``, ``plan`` (print the affected tasks after each commit) or ``run``
  (build them after each commit). Default: ``off``.

``watches-file``
  Versioned file declaring watched paths of plain ``luigi.Task`` classes, in a
  ``[watches]`` section: ``Family = pattern`` (more patterns on indented
  lines). Default: ``.hgluigi``.

``python``
  Interpreter that runs pipeline code (needs luigi). Default: the one running
  Mercurial.

``tree-cache``
  How many materialized trees to keep under ``.hg/luigi/trees``. Default: 3.

``lock-timeout``
  Seconds a run waits for another run of the same repository to finish before
  giving up. Default: 0 (give up at once).

State lives in ``.hg/luigi/``: ``lineage.db`` (SQLite lineage store),
``trees/``, ``index/`` (cached task graphs), ``logs/`` (Luigi's log per run).
"""

testedwith = b'6.9 7.0 7.1 7.2'
minimumhgversion = b'6.5'
buglink = b'https://example.invalid/hgext_luigi/issues'

# Mercurial reads these attributes when it loads the extension; Pipeline code
# only wants HgTask.  Both are resolved lazily, so neither side pays for the
# other's imports (Luigi is never imported by hg for a commit; Mercurial is
# never imported by a pipeline).
_LAZY = {
    'cmdtable': ('commands', 'cmdtable'),
    'configtable': ('config', 'configtable'),
    'uipopulate': ('hooks', 'uipopulate'),
    'HgTask': ('task', 'HgTask'),
}


def __getattr__(name):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module('.' + module, __name__), attr)


__all__ = ['HgTask']
