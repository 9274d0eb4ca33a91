"""Every use of Luigi beyond its public API, in one place.

Luigi offers no public way to do what the functions here do.  Each names the
private thing it relies on and why; ``tests/test_pipeline_luigi_shim.py`` fails
when the Luigi in use changes one of them.  Nothing else in hgext_luigi may
reach into Luigi's private names or patch its classes.
"""

import luigi
from luigi import execution_summary
from luigi.task_register import Register


def task_classes():
    """Every task class defined so far, in the order of definition.

    Reads ``Register._reg``, the list Luigi's metaclass appends each class to.
    The public ``Register.task_names()`` and ``get_task_cls()`` leave out the
    classes that share a family name (Luigi calls them ambiguous) and those
    hidden from the registry, and ``type.__subclasses__()`` loses the order of
    definition, which decides the order of the default roots (and so which
    error or cycle is reported first)."""
    return list(Register._reg)


def config_paths(parser):
    """The files the Luigi configuration parser class ``parser`` reads, whether
    they exist or not (``LUIGI_CONFIG_PATH`` once it exists, too).

    Reads the class attribute ``_config_paths`` that ``add_config_path()``
    appends to: Luigi lists the files it reads nowhere else."""
    return list(parser._config_paths)


def task_outcomes(result):
    """``{outcome: set of tasks}`` of a ``luigi.build(..., detailed_summary=True)``
    result, under the names of Luigi's execution summary (``completed``,
    ``already_done``, ``failed``, ``still_pending_ext``, ...); a task may be
    under several names, the later one being the more precise.

    Calls ``luigi.execution_summary._partition_tasks``, which reads
    ``Worker._add_task_history``: the public ``LuigiRunResult`` gives the
    summary as text and one status for the whole build, not what became of
    each task."""
    return execution_summary._partition_tasks(result.worker)


def run_by_other_workers(result):
    """The tasks of a ``luigi.build`` a central scheduler kept for another
    worker (``luigi.execution_summary._get_run_by_other_worker``, which the
    summary's "were being run by another worker" is made from)."""
    return execution_summary._get_run_by_other_worker(result.worker)


def hide_config_dependencies():
    """Make Luigi's worker leave out the ``luigi.Config`` objects a task lists
    in ``requires()``: they are configuration, not dependencies.  Scheduled,
    one would never be complete, and its id (its values, a password from
    luigi.cfg among them) would be printed as an unfulfilled dependency.

    Replaces ``luigi.Task.deps``, which Luigi documents as "internal method used
    by the scheduler": it is where the worker reads a task's dependencies, at
    scheduling and before running it.  ``requires()`` and ``input()`` stay as
    the author wrote them.  Done once per process."""
    deps = luigi.Task.deps
    if getattr(deps, "_hgluigi_hides_config", False):
        return

    def without_config(self):
        return [d for d in deps(self) if not isinstance(d, luigi.Config)]

    without_config._hgluigi_hides_config = True
    without_config.__wrapped__ = deps
    luigi.Task.deps = without_config


def replace_method(cls, name, make, tag, inherited=False):
    """Set method ``name`` of the task class ``cls`` to ``make(original)``,
    where ``original`` is the class's own method (with ``inherited``: the one
    it has, maybe from a base class).  Once per ``tag``: a method ``tag``
    already wraps stays as it is.  Returns whether it replaced the method.

    Luigi has no hook to judge a task's completeness, place its outputs, see
    the exceptions of its scheduling methods or fail it before ``run()`` (it
    logs and swallows exceptions of event handlers); its worker calls the
    task's ``complete()``, ``output()``, ``requires()`` and ``run()``, so the
    runner wraps those of the pipeline's classes, here."""
    original = getattr(cls, name, None) if inherited else cls.__dict__.get(name)
    tags = getattr(original, "_hgluigi_tags", frozenset())
    if original is None or tag in tags:
        return False
    method = make(original)
    method._hgluigi_tags = tags | {tag}
    method.__wrapped__ = original
    setattr(cls, name, method)
    return True
