"""Run the planned tasks through Luigi (subprocess side).

``python -m hgext_luigi.pipeline.runner``, with ``HGEXT_LUIGI_CONTEXT`` naming the run's
context file and the current directory set to the tree materialized at the
revision.  Pipeline code therefore runs as of that changeset, in a process of its
own: it cannot crash or hang hg.

Every task build is reported from Luigi's event handlers to the hg process as
one JSON line per event on the original standard output (see
:mod:`hgext_luigi.core.protocol`).  The hg process records builds in lineage and
the audit log and issues per-task credentials on request
(:class:`~hgext_luigi.pipeline.recording.Run`): this process, which runs pushed
code, holds no audit key and no long-lived credential, and only reads the
lineage store.
"""

import logging
import os
import signal
import sys
import time
import traceback

from . import context
from .context import emit

# Luigi's scheduler looks through the tasks it holds each time it hands one out,
# so one luigi.build of 10,000 tasks costs O(n^2); the affected tasks go to it in
# blocks of this many, in dependency order
BLOCK_SIZE = 1000

# with a central luigid: how long a block waits for tasks another worker holds
# (another build host's; a dead host's until luigid prunes its worker after
# [scheduler] worker_disconnect_delay), and how often it asks again
OTHER_WORKER_WAIT = 3600
OTHER_WORKER_POLL = 2.0


def main():
    ctx = context.current()
    if ctx is None:
        sys.stderr.write("hgext_luigi.pipeline.runner: %s is not set\n" % context.ENV)
        return 2
    _enter_run()
    # Luigi only now, once the run's secrets, events and log are in place
    from . import luigi_shim
    from .recording import Run

    luigi_shim.hide_config_dependencies()
    if not _import_pipeline(ctx):
        return 2
    run = Run(ctx)
    _prepare_classes(ctx, run)
    _connect(run)
    return _build(ctx.data)


def _enter_run():
    """Take the run's secrets and event channel before any pipeline code runs;
    die with hg; pipeline prints go to the run's log."""
    context.stash_secrets()  # before any pipeline code: only who asks by name gets one
    die_with_parent()
    context.set_events_fd(os.dup(1))
    os.dup2(2, 1)  # prints of the pipeline go to the run's log, not into the events
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")


def die_with_parent():
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


def _import_pipeline(ctx):
    """Import the pipeline module from the tree (never an installed namesake);
    False, after an ``error`` event, when it cannot be."""
    from .loader import LoadError, check_module_in_tree, import_pipeline

    sys.path.insert(0, ctx.tree)
    os.chdir(ctx.tree)
    module = ctx.data["module"]
    try:
        import_pipeline(module, ctx.tree)
        check_module_in_tree(module, os.path.realpath(ctx.tree))
    except LoadError as e:
        emit(event="error", message=e.message)
        return False
    except Exception as e:
        emit(event="error", message="pipeline module failed to import: %s: %s"
             % (type(e).__name__, e))
        traceback.print_exc()
        return False
    return True


def _prepare_classes(ctx, run):
    """Adopt the plain task classes the watches file names, and make every
    task class of the pipeline report its scheduling errors and refuse to run
    unrecorded (:mod:`adoption`)."""
    from luigi.task_register import Register

    from . import adoption
    from .task import HgTask

    for family in ctx.data.get("adopted", []):
        adoption.adopt(Register.get_task_cls(family), ctx, ctx.data.get("plain_output_root"))
    for family in ctx.data.get("families", []):
        adoption.report_errors(Register.get_task_cls(family), run.method_failed)
        adoption.refuse_unrecorded(Register.get_task_cls(family))
    adoption.report_errors(HgTask, run.method_failed)


def _connect(run):
    """Hand Luigi's events about tasks to ``run``."""
    import luigi

    parent = os.getpid()

    def started(task):
        if os.getpid() != parent:
            die_with_parent()  # a forked task process: PDEATHSIG is not inherited
        run.started(task)

    handlers = {luigi.Event.START: started, luigi.Event.SUCCESS: run.succeeded,
                luigi.Event.FAILURE: run.failed,
                luigi.Event.PROCESS_FAILURE: run.process_failed,
                luigi.Event.BROKEN_TASK: run.broken}
    for event, handler in handlers.items():
        luigi.Task.event_handler(event)(handler)


def _build(data):
    """``luigi.build`` the targets block by block, then the ``done`` event:
    0 when all went well, 1 when a task did not, 2 when Luigi itself failed."""
    import luigi
    from luigi.task_register import Register

    from .task import task_key

    options = luigi_options(data)
    results = Results(data.get("needs", {}))
    for block in blocks(data["targets"], int(data.get("block_size") or BLOCK_SIZE)):
        ready = results.ready(block)
        if not ready:
            continue
        tasks = [Register.get_task_cls(t["family"]).from_str_params(t["params"])
                 for t in ready]
        leave_logging_alone()
        try:
            result = _build_block(luigi, tasks, options)
        except Exception as e:
            emit(event="error", message="luigi failed: %s: %s" % (type(e).__name__, e))
            traceback.print_exc()
            return 2
        results.add(result, task_key)
    emit(event="done", succeeded=results.succeeded, status=results.status,
         luigi=results.outcome, summary=results.summary, ids=results.ids)
    return 0 if results.succeeded else 1


def _build_block(luigi, tasks, options):
    """``luigi.build`` one block; with a central scheduler, while some of its
    tasks are run by another worker, wait and build it again (Luigi's own
    workers give such tasks up, even with ``keep_alive``)."""
    from .luigi_shim import run_by_other_workers
    from .task import task_key

    deadline, told = time.time() + OTHER_WORKER_WAIT, set()
    while True:
        result = luigi.build(tasks, **options)
        held = run_by_other_workers(result) if "scheduler_url" in options else ()
        if not held or time.time() > deadline:
            return result
        for task in set(held) - told:
            emit(event="status", key=task_key(task),
                 message="waiting: run by another worker (%s)" % options["scheduler_url"])
        told.update(held)
        time.sleep(OTHER_WORKER_POLL)


def luigi_options(data):
    """The keyword arguments of ``luigi.build`` for the run."""
    options = {"detailed_summary": True, "workers": max(1, int(data.get("workers") or 1)),
               "no_lock": True}
    if data.get("scheduler"):
        options["scheduler_url"] = data["scheduler"]
    else:
        options["local_scheduler"] = True
    return options


def leave_logging_alone():
    """Keep Luigi from configuring logging in ``luigi.build`` (``[core]
    no_configure_logging``): the runner set it up, to the run's log.  Set
    again before each build, as pipeline code may load configuration files."""
    from luigi.configuration import get_config

    get_config().set("core", "no_configure_logging", "true")


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
        """The targets of ``block`` whose needs did not fail; the others get
        the outcome Luigi would have given them."""
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
        """Merge a ``luigi.build`` result (``detailed_summary=True``)."""
        from .luigi_shim import task_outcomes

        for name, tasks in task_outcomes(result).items():
            for task in tasks:
                key = task_key(task)
                self.ids[key] = task.task_id
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
