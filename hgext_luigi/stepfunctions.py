"""AWS Step Functions as Luigi tasks.

:class:`StepFunctionsTask` starts an execution of a state machine with an input
carrying the task's lineage, under a deterministic name, waits for it to end and
records it in lineage.  The plain client is :class:`~hgext_luigi.core.sfnclient.
StepFunctionsClient`; the other direction (a ``.waitForTaskToken`` state waiting
on Luigi work) is ``hg luigi-callback`` (:mod:`hgext_luigi.hg.callback`).

Settings shared by every task live in the ``[stepfunctions]`` section of the
Luigi configuration; credentials never do (boto3's standard chain finds them)::

    [stepfunctions]
    region = eu-west-1
    timeout = 3600
"""

import json
import os

import luigi
from luigi.task import flatten

from .pipeline import context
from .core.sfnclient import FAILED, StepFunctionsClient, StepFunctionsError, WaitTimeout, execution_name
from .pipeline.task import HgTask, output_digests, read_config, task_key

__all__ = ["StepFunctionsTask", "StepFunctionsClient", "StepFunctionsError",
           "StepFunctionsExecutionError", "stepfunctions"]


class stepfunctions(luigi.Config):
    """``[stepfunctions]``: settings for every :class:`StepFunctionsTask`."""

    region = luigi.Parameter(default="", description="AWS region (default: boto3's "
                             "chain, e.g. AWS_REGION or the profile's region).")
    endpoint_url = luigi.Parameter(default="", description="Endpoint URL (default: "
                                   "boto3's chain, e.g. AWS_ENDPOINT_URL_SFN).")
    profile = luigi.Parameter(default="", description="AWS profile name.")
    poll_interval = luigi.FloatParameter(default=2.0, description="First wait between "
                                         "status checks, in seconds.")
    max_poll_interval = luigi.FloatParameter(default=30.0, description="Longest wait "
                                             "between status checks (backoff x1.5).")
    timeout = luigi.IntParameter(default=3600, description="Seconds to wait for an "
                                 "execution to end (0: no limit).")
    stop_on_timeout = luigi.BoolParameter(default=False, description="Stop an execution "
                                          "still running at the timeout (default: leave "
                                          "it; a retry attaches to it).")
    rerun_failed = luigi.BoolParameter(default=True, description="When the execution of "
                                       "this name already failed, start '<name>-r2'...")


def _settings():
    return read_config(stepfunctions, {"poll_interval": 0.1, "max_poll_interval": 0.1,
                                       "timeout": 0})


class StepFunctionsExecutionError(StepFunctionsError):
    """The execution ended FAILED, TIMED_OUT or ABORTED, or outlived the wait."""


def _upstream(task):
    out = []
    for dep in flatten(task.requires()):
        outputs, _missing = output_digests(dep)
        out.append({"task": task_key(dep), "task_id": dep.task_id,
                    "changeset": getattr(dep, "changeset", None),
                    "outputs": [{"path": o["path"], "sha256": o["sha256"]} for o in outputs]})
    return out


class StepFunctionsTask(HgTask):
    """Run one execution of a Step Functions state machine.

    Set ``state_machine_arn`` (a class attribute or property).  Override
    :meth:`execution_input` to add your own input; it is sent under ``"input"``,
    next to ``"hg"``: changeset, branch, task key and id, user, run id and the
    upstream outputs with the changesets they were built at.

    The execution name is derived from the task id (which holds the changeset)
    and the upstream outputs' digests: a retried task finds the execution it
    started instead of starting a second one.  A successful execution's
    description (ARN, status, output) is the task's stamped JSON output and goes
    into the lineage record; FAILED, TIMED_OUT or ABORTED fail the task with the
    execution's error and cause.  ``timeout`` (seconds) overrides the
    ``[stepfunctions]`` setting for this task."""

    state_machine_arn = None
    timeout = None

    def execution_input(self):
        """Your part of the execution's input (JSON data)."""
        return {}

    def output(self):
        return self.stamped_target(os.path.join("stepfunctions", self.task_id + ".json"))

    def client(self):
        cfg = _settings()
        return StepFunctionsClient(region=cfg.region, endpoint_url=cfg.endpoint_url,
                                   profile=cfg.profile)

    def lineage_input(self):
        ctx = context.current()
        return {
            "changeset": self.changeset,
            "branch": self.run_branch,
            "task": self.hg_key,
            "task_id": self.task_id,
            "user": self.run_user,
            "run_id": ctx.run_id if ctx else None,
            "upstream": _upstream(self),
        }

    def run(self):
        if not self.state_machine_arn:
            raise StepFunctionsError("%s sets no state_machine_arn" % self.get_task_family())
        cfg = _settings()
        client = self.client()
        hg = self.lineage_input()
        identity = {"task_id": self.task_id, "state_machine": self.state_machine_arn,
                    "upstream": [(u["task_id"], u["changeset"],
                                  [o["sha256"] for o in u["outputs"]]) for u in hg["upstream"]]}
        name = execution_name(self.get_task_family(), self.changeset, identity)
        arn, name, how, request_id = client.start(
            self.state_machine_arn, name, {"hg": hg, "input": self.execution_input()},
            rerun_failed=cfg.rerun_failed)
        record = self.lineage_extra.setdefault("stepfunctions", {})
        record.update(state_machine=self.state_machine_arn, execution_arn=arn, name=name,
                      start=how, request_id=request_id, status="RUNNING",
                      summary="%s %s (RUNNING)" % (how, arn))
        self.report("execution %s %s" % (name, how))
        timeout = cfg.timeout if self.timeout is None else self.timeout
        try:
            desc = client.wait(arn, timeout=timeout, poll=cfg.poll_interval,
                               max_poll=cfg.max_poll_interval,
                               on_poll=lambda d: self.report("execution %s %s" % (name, d["status"])))
        except WaitTimeout as e:
            cause = str(e)
            if cfg.stop_on_timeout:
                client.stop(arn, "hgext_luigi.WaitTimeout", cause)
                cause += "; stopped it"
            else:
                cause += "; left running: a retry of this task waits for it again"
            record.update(status="RUNNING", summary="%s %s (wait timed out)" % (how, arn))
            raise StepFunctionsExecutionError(cause, e.execution)
        status = desc["status"]
        output = desc.get("output")
        try:
            parsed = json.loads(output) if output else None
        except ValueError:
            parsed = output
        record.update(status=status, error=desc.get("error"), cause=desc.get("cause"),
                      started=str(desc.get("startDate")), stopped=str(desc.get("stopDate")),
                      output=parsed, summary="%s %s (%s)" % (how, arn, status))
        if status in FAILED:
            detail = ": ".join(x for x in (desc.get("error"), desc.get("cause")) if x)
            raise StepFunctionsExecutionError("execution %s %s%s" % (
                arn, status, (": " + detail) if detail else ""), desc)
        with self.output().open("w") as f:
            json.dump({"execution_arn": arn, "name": name, "status": status,
                       "output": parsed, "changeset": self.changeset}, f, indent=2,
                      sort_keys=True)
