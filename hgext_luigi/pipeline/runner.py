"""Run the planned tasks through Luigi (subprocess side).

``python -m hgext_luigi.pipeline.runner``, with ``HGEXT_LUIGI_CONTEXT`` naming the run's
context file and the current directory set to the tree materialized at the
revision.  Pipeline code therefore runs as of that changeset, in a process of its
own: it cannot crash or hang hg.

Every task build is reported from Luigi's event handlers (which, with several
workers, fire in the forked worker that ran the task) to the hg process as one
JSON line per event on the original standard output.  The hg process records
builds in lineage and the audit log and issues per-task credentials on request
(``context.request``): this process, which runs pushed code, holds no audit
key and no long-lived credential, and only reads the lineage store.
"""

import hashlib
import logging
import os
import signal
import sys
import time
import traceback

from .context import emit


def _die_with_parent():
    """Ask Linux to kill us if hg dies, so an orphaned run never goes on alone."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:
            os._exit(3)
    except Exception:
        pass


def _rooted_outputs(output, root):
    """``output`` of a plain task with relative ``LocalTarget`` paths resolved
    under ``root`` instead of the current directory (a tree recycled from one
    revision to the next): its outputs stay put, so they are reused."""
    import luigi
    from luigi.task import flatten

    def rooted(self):
        from .task import UnsafePath

        targets = output(self)
        for t in flatten(targets):
            if root and isinstance(t, luigi.LocalTarget) and not os.path.isabs(t.path):
                path = os.path.normpath(os.path.join(root, t.path))
                if not path.startswith(os.path.join(root, "")):
                    raise UnsafePath("%s: path %r must stay under the plain output root"
                                     % (self.get_task_family(), t.path))
                t.path = path
        return targets

    rooted.__wrapped__ = output
    return rooted


def _hide_config_dependencies(luigi):
    """A ``luigi.Config`` a task lists in ``requires()`` is configuration, not a
    dependency: Luigi would schedule it and print its id (its values, a password
    from luigi.cfg among them) as an unfulfilled dependency.  ``Task.deps`` is
    where Luigi's worker reads dependencies; ``requires()`` and ``input()`` are
    left as the author wrote them."""
    deps = luigi.Task.deps

    def without_config(self):
        return [d for d in deps(self) if not isinstance(d, luigi.Config)]

    luigi.Task.deps = without_config


def _report_errors(cls, report):
    """Wrap the methods Luigi calls while scheduling, so an exception in them is
    recorded and shown naming the task and the exception (Luigi itself only logs
    it, and calls the task \"failed scheduling\")."""
    for name in ("complete", "requires", "output"):
        method = cls.__dict__.get(name)
        if method is None or getattr(method, "_hgluigi_reports", False):
            continue

        def wrapped(self, *args, _method=method, _name=name, **kwargs):
            try:
                return _method(self, *args, **kwargs)
            except Exception as e:
                report(self, _name, e)
                raise

        wrapped._hgluigi_reports = True
        setattr(cls, name, wrapped)


def runtime_versions(luigi):
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


class NotStarted(RuntimeError):
    """The hg side did not record the build or issue its credentials (an STS
    error, a refusal): the task fails before any of its code runs."""


def _refuse_unrecorded(cls):
    """Wrap ``cls.run`` so that a task whose start the hg side refused fails with
    the reason, before its own ``run()`` (Luigi ignores exceptions of event
    handlers, which is where the start is asked for)."""
    owner = next(k for k in cls.__mro__ if "run" in k.__dict__)  # luigi.Task at worst
    run = owner.__dict__["run"]
    if run is None or getattr(run, "_hgluigi_refuses", False):
        return  # run = None: an ExternalTask, which Luigi never runs

    def wrapped(self, *args, **kwargs):
        refused = self.__dict__.pop("_hgluigi_refused", None)
        if refused is not None:
            raise NotStarted(refused)
        return run(self, *args, **kwargs)

    wrapped._hgluigi_refuses = True
    wrapped.__wrapped__ = run
    owner.run = wrapped


def main():
    from . import context
    from ..core import credentials

    ctx = context.current()
    if ctx is None:
        sys.stderr.write("hgext_luigi.pipeline.runner: %s is not set\n" % context.ENV)
        return 2
    context.stash_secrets()  # before any pipeline code: only who asks by name gets one
    _die_with_parent()
    context.set_events_fd(os.dup(1))
    os.dup2(2, 1)  # prints of the pipeline go to the run's log, not into the events

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    import luigi
    import luigi.setup_logging
    from luigi.task import flatten

    from .task import HgTask, output_digests, recorded_extra, str_params, task_key

    luigi.setup_logging.InterfaceLogging._configured = True
    _hide_config_dependencies(luigi)
    sys.path.insert(0, ctx.tree)
    os.chdir(ctx.tree)
    data = ctx.data

    from .loader import LoadError, check_module_in_tree, import_pipeline

    try:
        import_pipeline(data["module"], ctx.tree)  # from the tree, never an installed namesake
        check_module_in_tree(data["module"], os.path.realpath(ctx.tree))
    except LoadError as e:
        emit(event="error", message=e.message)
        return 2
    except Exception as e:
        emit(event="error", message="pipeline module failed to import: %s: %s"
             % (type(e).__name__, e))
        traceback.print_exc()
        return 2

    store = ctx.store
    registry = luigi.task_register.Register
    RUNTIME = runtime_versions(luigi)

    def changeset_of(task, key):
        return task.changeset if isinstance(task, HgTask) else ctx.stamp_for(key)

    # plain luigi.Task classes adopted through the watches file: complete only when
    # the lineage store has their build at the planned stamp; relative outputs
    # under the plain output root, the same for every revision
    for family in data.get("adopted", []):
        cls = registry.get_task_cls(family)

        def complete(self, _orig=cls.complete):
            key = task_key(self)
            if _orig is luigi.Task.complete:  # Luigi's own: outputs exist (one output())
                outputs = flatten(self.output())
                if outputs and not all(o.exists() for o in outputs):
                    return False
            elif flatten(self.output()) and not _orig(self):
                return False
            return ctx.is_built(self.task_id, ctx.stamp_for(key), key)

        cls.complete = complete
        cls.output = _rooted_outputs(cls.output, data.get("plain_output_root"))

    def start_build(task):
        """Ask the hg side to record the build (it alone writes lineage and the
        audit log) and to issue the task's credentials, if its family has a role."""
        key = task_key(task)
        answer = context.request(op="start-build", task_id=task.task_id, key=key,
                                 family=task.get_task_family(), params=str_params(task),
                                 changeset=changeset_of(task, key),
                                 facts={"config": config_digests(task), "runtime": RUNTIME})
        return key, answer

    runner_pid = os.getpid()

    @luigi.Task.event_handler(luigi.Event.START)
    def on_start(task):
        if os.getpid() != runner_pid:
            _die_with_parent()  # a forked task process: PDEATHSIG is not inherited
        try:
            key, answer = start_build(task)
        except context.RequestError as e:  # the task's run() raises it
            task._hgluigi_refused = str(e)
            return
        if answer.get("refused"):  # no credentials: run() fails with the reason
            task._hgluigi_refused = answer["refused"]
        credentials.activate(answer.get("credentials"))
        task._hgluigi = (key, answer["build"], time.time())
        emit(event="start", key=key, task_id=task.task_id)

    def finish_build(task, build, status, **fields):
        credentials.deactivate()  # gone when the task ends
        try:
            context.request(op="finish-build", build=build, status=status, **fields)
        except context.RequestError as e:
            logging.getLogger("hgext_luigi").error("build %s not recorded: %s", build, e)

    @luigi.Task.event_handler(luigi.Event.SUCCESS)
    def on_success(task):
        info = getattr(task, "_hgluigi", None)
        if info is None:
            return fail(task, "%s: not recorded" % task.task_id)
        key, build, started = info
        seconds = time.time() - started
        outputs, missing = output_digests(task)
        extra = recorded_extra(task)
        if missing:
            error = "finished without writing its output %s" % missing[0]
            finish_build(task, build, "failed", error=error, outputs=outputs, extra=extra)
            emit(event="failure", key=key, task_id=task.task_id, error=error, seconds=seconds)
            return
        inputs = [input_record(dep) for dep in flatten(task.requires())
                  if not isinstance(dep, luigi.Config)]
        finish_build(task, build, "success", outputs=outputs, inputs=inputs, extra=extra)
        emit(event="success", key=key, task_id=task.task_id, seconds=seconds)

    def input_record(dep):
        """What ``dep`` handed the task: its outputs as lineage recorded them
        (no second call of its ``output()``, no second hash), or, for a task
        Luigi checked but never built here (an external one), its targets."""
        key = task_key(dep)
        changeset = changeset_of(dep, key)
        built = store.success_for(dep.task_id, changeset)
        if built is not None:
            outs = store.outputs(built["id"])
            paths, digests = [o["path"] for o in outs], [o["sha256"] for o in outs]
        else:  # an external input: what it holds now is what this build read
            outs, _missing = output_digests(dep)
            paths, digests = [o["path"] for o in outs], [o["sha256"] for o in outs]
        return {"task_id": dep.task_id, "key": key, "changeset": changeset,
                "outputs": paths, "digests": digests}

    def config_digests(task):
        """A digest of each Luigi configuration section the task reads: its
        family's and those of the luigi.Config classes it requires."""
        from luigi.configuration import get_config

        conf = get_config()
        sections = {task.get_task_family()} | {
            d.get_task_family() for d in flatten(requires_of(task)) if isinstance(d, luigi.Config)}
        out = {}
        for name in sorted(sections):
            if conf.has_section(name):
                items = sorted((k, v) for k, v in conf.items(name))
                out[name] = hashlib.sha256(repr(items).encode("utf-8", "surrogatepass")
                                           ).hexdigest()
        return out

    def requires_of(task):
        try:
            return task.requires()
        except Exception:
            return []

    def fail(task, error, tb=None):
        info = getattr(task, "_hgluigi", None)
        if info is None:
            try:
                key, answer = start_build(task)
            except context.RequestError as e:
                key = task_key(task)
                emit(event="failure", key=key, task_id=task.task_id,
                     error="%s (%s)" % (error, e), seconds=0.0)
                return
            info = (key, answer["build"], time.time())
        key, build, started = info
        task._hgluigi = None
        seconds = time.time() - started
        finish_build(task, build, "failed", error=error, traceback=tb,
                     extra=recorded_extra(task))
        emit(event="failure", key=key, task_id=task.task_id, error=error, seconds=seconds)

    @luigi.Task.event_handler(luigi.Event.FAILURE)
    def on_failure(task, exc):
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        fail(task, "%s: %s" % (type(exc).__name__, exc), tb)

    @luigi.Task.event_handler(luigi.Event.PROCESS_FAILURE)
    def on_process_failure(task, message):
        fail(task, "worker process failed: %s" % message)

    @luigi.Task.event_handler(luigi.Event.BROKEN_TASK)
    def on_broken(task, exc):
        if task_key(task) not in broken:
            fail(task, "broken task: %s: %s" % (type(exc).__name__, exc))

    def fail_broken(task, method, exc):
        key = task_key(task)
        if key in broken:
            return
        broken.add(key)
        error = "%s() raised %s: %s" % (method, type(exc).__name__, exc)
        fail(task, error, "".join(traceback.format_exception(type(exc), exc,
                                                             exc.__traceback__)))

    broken = set()
    for family in data.get("families", []):
        _report_errors(registry.get_task_cls(family), fail_broken)
        _refuse_unrecorded(registry.get_task_cls(family))
    _report_errors(HgTask, fail_broken)

    options = {"detailed_summary": True, "workers": max(1, int(data.get("workers") or 1)),
               "no_lock": True}
    if data.get("scheduler"):
        options["scheduler_url"] = data["scheduler"]
    else:
        options["local_scheduler"] = True
    results = Results(data.get("needs", {}))
    for block in blocks(data["targets"], int(data.get("block_size") or BLOCK_SIZE)):
        ready = results.ready(block)
        if not ready:
            continue
        tasks = [registry.get_task_cls(t["family"]).from_str_params(t["params"])
                 for t in ready]
        try:
            result = luigi.build(tasks, **options)
        except Exception as e:
            emit(event="error", message="luigi failed: %s: %s" % (type(e).__name__, e))
            traceback.print_exc()
            return 2
        results.add(result, task_key)
    emit(event="done", succeeded=results.succeeded, status=results.status,
         luigi=results.outcome, summary=results.summary, ids=results.ids)
    return 0 if results.succeeded else 1


# Luigi's scheduler looks through the tasks it holds each time it hands one out,
# so one luigi.build of 10,000 tasks costs O(n^2); the affected tasks go to it in
# blocks of this many, in dependency order
BLOCK_SIZE = 1000


def blocks(targets, size):
    """``targets`` (upstream first) in blocks of ``size``: every task a block
    needs is in it or in an earlier one, so each ``luigi.build`` finds the
    earlier blocks' outputs complete."""
    for i in range(0, len(targets), size):
        yield targets[i:i + size]


class Results:
    """What the blocks of one run came to, merged; and which targets a later
    block must leave alone because a task they need did not complete (Luigi
    would otherwise run a failed task again as a dependency)."""

    DONE = ("completed", "already_done")

    def __init__(self, needs):
        self.needs = needs  # key -> keys it requires
        self.outcome = {}
        self.ids = {}
        self.blocked = {}  # key -> why its dependents are not run
        self.succeeded = True
        self.status = "SUCCESS"
        self.summaries = []

    def ready(self, block):
        out = []
        for t in block:
            stop = [self.blocked[k] for k in self.needs.get(t["key"], ()) if k in self.blocked]
            if stop:
                why = ("upstream_missing_dependency" if "still_pending_ext" in stop
                       else "upstream_failure")
                self.outcome[t["key"]] = self.blocked[t["key"]] = why
                self.succeeded = False
            else:
                out.append(t)
        return out

    def add(self, result, task_key):
        from luigi.execution_summary import _partition_tasks

        parts = _partition_tasks(result.worker)
        for name, tasks in parts.items():
            for task in tasks:
                key = task_key(task)
                self.ids[key] = task.task_id
                if name == "still_pending" and key in self.outcome:
                    continue  # keep the more precise sub-status
                self.outcome[key] = name
        for key, name in self.outcome.items():
            if name not in self.DONE:
                self.blocked.setdefault(key, name)
        if not result.scheduling_succeeded:
            self.succeeded = False
            self.status = str(result.status)
        elif self.succeeded:
            self.status = str(result.status)
        self.summaries.append(result.summary_text)

    @property
    def summary(self):
        return "\n".join(self.summaries)


if __name__ == "__main__":
    sys.exit(main())
