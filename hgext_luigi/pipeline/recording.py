"""A run's task builds, as the hg side records them (runner side).

The hg process alone writes lineage and the audit log and issues credentials:
:class:`Run` asks it to start and finish each build (``context.request``) and
tells it what happened (``context.emit``), following Luigi's events.  With
several workers, those fire in the forked process that ran the task.
"""

import hashlib
import logging
import time
import traceback

import luigi
from luigi.configuration import get_config
from luigi.task import flatten

from . import context
from ..core import credentials
from .task import HgTask, output_digests, recorded_extra, str_params, task_key


class Run:
    """The builds of one run: one per task Luigi starts, or fails to schedule.
    Each task in progress carries ``(key, build id, start time)`` as
    ``_hgluigi``."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.runtime = runtime_versions()
        self.broken_keys = set()  # tasks failed for a scheduling error, by key

    def changeset_of(self, task, key):
        """The changeset ``task`` is built at (a plain task: its planned stamp)."""
        return task.changeset if isinstance(task, HgTask) else self.ctx.stamp_for(key)

    def start_build(self, task):
        """Ask the hg side to record the build and to issue the task's
        credentials, if its family has a role: ``(key, answer)``.  While a run
        of another build host holds the task, ask again (between asks the
        channel is free for this run's other builds)."""
        key = task_key(task)
        event = dict(op="start-build", task_id=task.task_id, key=key,
                     family=task.get_task_family(), params=str_params(task),
                     changeset=self.changeset_of(task, key),
                     facts={"config": self.config_digests(task), "runtime": self.runtime})
        answer = context.request(**event)
        while answer.get("wait"):
            time.sleep(min(float(answer["wait"]), 5.0))
            answer = context.request(**event)
        return key, answer

    def finish_build(self, build, status, **fields):
        credentials.deactivate()  # the task's credentials end with it
        try:
            context.request(op="finish-build", build=build, status=status, **fields)
        except context.RequestError as e:
            logging.getLogger("hgext_luigi").error("build %s not recorded: %s", build, e)

    def started(self, task):
        """Luigi starts ``task``: its build is recorded and its credentials set,
        or the reason it may not run is left for its ``run()`` to raise."""
        try:
            key, answer = self.start_build(task)
        except context.RequestError as e:
            task._hgluigi_refused = str(e)
            return
        if answer.get("done") is not None:  # another run (host) built it meanwhile
            task._hgluigi_done = answer["done"]
            task._hgluigi = (key, None, time.time())
            return
        if answer.get("refused"):  # no credentials
            task._hgluigi_refused = answer["refused"]
        credentials.activate(answer.get("credentials"))
        task._hgluigi = (key, answer["build"], time.time())
        context.emit(event="start", key=key, task_id=task.task_id)

    def succeeded(self, task):
        """Luigi says ``task`` ran: recorded with its outputs and inputs, unless
        an output is missing."""
        info = getattr(task, "_hgluigi", None)
        if info is None:
            return self.fail(task, "%s: not recorded" % task.task_id)
        key, build, started = info
        seconds = time.time() - started
        if task.__dict__.pop("_hgluigi_done", None) is not None:
            context.emit(event="success", key=key, task_id=task.task_id, seconds=seconds)
            return  # recorded by the run that built it
        extra = recorded_extra(task)
        try:
            outputs, missing = output_digests(task)
            error = missing and "finished without writing its output %s" % missing[0]
        except Exception as e:  # an output it cannot read back (S3: access denied)
            outputs, error = [], "cannot hash its outputs: %s: %s" % (type(e).__name__, e)
        if error:
            self.finish_build(build, "failed", error=error, outputs=outputs, extra=extra)
            context.emit(event="failure", key=key, task_id=task.task_id, error=error,
                         seconds=seconds)
            return
        inputs = [self.input_record(dep) for dep in flatten(task.requires())
                  if not isinstance(dep, luigi.Config)]
        self.finish_build(build, "success", outputs=outputs, inputs=inputs, extra=extra)
        context.emit(event="success", key=key, task_id=task.task_id, seconds=seconds)

    def input_record(self, dep):
        """What ``dep`` handed the task: its outputs as lineage recorded them
        (no second call of its ``output()``, no second hash), or, for a task
        Luigi checked but never built here (an external one), its targets."""
        key = task_key(dep)
        changeset = self.changeset_of(dep, key)
        store = self.ctx.store  # opened again in a forked worker
        built = store.success_for(dep.task_id, changeset)
        if built is not None:
            outs = store.outputs(built["id"])
        else:  # an external input: what it holds now is what this build read
            outs, _missing = output_digests(dep)
        return {"task_id": dep.task_id, "key": key, "changeset": changeset,
                "outputs": [o["path"] for o in outs], "digests": [o["sha256"] for o in outs]}

    def config_digests(self, task):
        """A digest of each Luigi configuration section the task reads: its
        family's and those of the luigi.Config classes it requires."""
        conf = get_config()
        sections = {task.get_task_family()} | {
            d.get_task_family() for d in flatten(_requires_of(task))
            if isinstance(d, luigi.Config)}
        out = {}
        for name in sorted(sections):
            if conf.has_section(name):
                items = sorted((k, v) for k, v in conf.items(name))
                out[name] = hashlib.sha256(repr(items).encode("utf-8", "surrogatepass")
                                           ).hexdigest()
        return out

    def fail(self, task, error, tb=None):
        """Record ``task`` failed with ``error``: its build, or a new one when
        Luigi failed it before it started."""
        info = getattr(task, "_hgluigi", None)
        if info is None:
            try:
                key, answer = self.start_build(task)
            except context.RequestError as e:
                context.emit(event="failure", key=task_key(task), task_id=task.task_id,
                             error="%s (%s)" % (error, e), seconds=0.0)
                return
            info = (key, answer.get("build"), time.time())
        key, build, started = info
        if build is None:  # built by another run meanwhile: nothing of ours to close
            context.emit(event="failure", key=key, task_id=task.task_id, error=error,
                         seconds=time.time() - started)
            return
        task._hgluigi = None
        seconds = time.time() - started
        self.finish_build(build, "failed", error=error, traceback=tb,
                          extra=recorded_extra(task))
        context.emit(event="failure", key=key, task_id=task.task_id, error=error,
                     seconds=seconds)

    def failed(self, task, exc):
        """Luigi's FAILURE event: ``run()`` (or a check around it) raised."""
        self.fail(task, "%s: %s" % (type(exc).__name__, exc), _traceback(exc))

    def process_failed(self, task, message):
        """Luigi's PROCESS_FAILURE event: the worker process running it died."""
        self.fail(task, "worker process failed: %s" % message)

    def broken(self, task, exc):
        """Luigi's BROKEN_TASK event, unless :meth:`method_failed` told first."""
        if task_key(task) not in self.broken_keys:
            self.fail(task, "broken task: %s: %s" % (type(exc).__name__, exc))

    def method_failed(self, task, method, exc):
        """``method`` (complete, requires, output) of ``task`` raised while Luigi
        scheduled it; recorded once per task."""
        key = task_key(task)
        if key in self.broken_keys:
            return
        self.broken_keys.add(key)
        self.fail(task, "%s() raised %s: %s" % (method, type(exc).__name__, exc),
                  _traceback(exc))


def _requires_of(task):
    try:
        return task.requires()
    except Exception:
        return []


def _traceback(exc):
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def runtime_versions():
    """What runs the pipeline: Python, Luigi and hgext_luigi versions."""
    import platform

    return {"python": platform.python_version(),
            "luigi": getattr(luigi, "__version__", None) or _dist_version("luigi"),
            "hgext_luigi": _dist_version("hgext_luigi")}


def _dist_version(name):
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return "unknown"
