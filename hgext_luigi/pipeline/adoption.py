"""What the runner changes in the pipeline's task classes before Luigi sees them.

Plain ``luigi.Task`` classes adopted through the watches file are complete only
when lineage holds their build at the planned changeset, and keep their
relative outputs under one root.  Every task class reports the exceptions of
the methods Luigi calls while scheduling, and fails before its ``run()`` when
the hg side refused to start its build.  The wrapping itself is
:func:`luigi_shim.replace_method`.
"""

import os

import luigi
from luigi.task import flatten

from . import luigi_shim
from .task import UnsafePath, task_key


class NotStarted(RuntimeError):
    """The hg side did not record the build or issue its credentials (an STS
    error, a refusal): the task fails before any of its code runs."""


def adopt(cls, ctx, output_root):
    """Make the plain task class ``cls`` complete only when lineage has its
    build at the planned stamp, with relative outputs under ``output_root``."""
    luigi_shim.replace_method(cls, "complete", lambda orig: _complete_when_built(orig, ctx),
                              "adopted", inherited=True)
    luigi_shim.replace_method(cls, "output", lambda orig: rooted_outputs(orig, output_root),
                              "adopted", inherited=True)


def _complete_when_built(complete, ctx):
    """``complete`` of an adopted class, also asking lineage."""

    def complete_when_built(self):
        key = task_key(self)
        if complete is luigi.Task.complete:  # Luigi's own: outputs exist (one output())
            outputs = flatten(self.output())
            if outputs and not all(o.exists() for o in outputs):
                return False
        elif flatten(self.output()) and not complete(self):
            return False
        return ctx.is_built(self.task_id, ctx.stamp_for(key), key)

    return complete_when_built


def rooted_outputs(output, root):
    """``output`` of a plain task with relative ``LocalTarget`` paths resolved
    under ``root`` instead of the current directory (a tree recycled from one
    revision to the next): its outputs stay put, so they are reused."""

    def rooted(self):
        targets = output(self)
        for t in flatten(targets):
            if root and isinstance(t, luigi.LocalTarget) and not os.path.isabs(t.path):
                path = os.path.normpath(os.path.join(root, t.path))
                if not path.startswith(os.path.join(root, "")):
                    raise UnsafePath("%s: path %r must stay under the plain output root"
                                     % (self.get_task_family(), t.path))
                t.path = path
        return targets

    return rooted


def report_errors(cls, report):
    """Make the methods Luigi calls while scheduling call ``report(task, method
    name, exception)`` before raising, so the failure is recorded and shown
    naming the task and the exception (Luigi itself only logs it, and calls the
    task "failed scheduling")."""
    for name in ("complete", "requires", "output"):
        luigi_shim.replace_method(cls, name, lambda orig, name=name: _reporting(orig, name, report),
                                  "reports")


def _reporting(method, name, report):
    def reporting(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as e:
            report(self, name, e)
            raise

    return reporting


def refuse_unrecorded(cls):
    """Make a task whose start the hg side refused fail with the reason, before
    its own ``run()``: Luigi ignores the exceptions of event handlers, where
    the start is asked for (:meth:`recording.Run.started` leaves the reason in
    the task)."""
    owner = next(k for k in cls.__mro__ if "run" in k.__dict__)  # luigi.Task at worst
    if owner.__dict__["run"] is not None:  # None: an ExternalTask, which Luigi never runs
        luigi_shim.replace_method(owner, "run", _refusing, "refuses")


def _refusing(run):
    def refusing(self, *args, **kwargs):
        refused = self.__dict__.pop("_hgluigi_refused", None)
        if refused is not None:
            raise NotStarted(refused)
        if self.__dict__.get("_hgluigi_done") is not None:
            return None  # another run built it at this changeset while this one waited
        return run(self, *args, **kwargs)

    return refusing
