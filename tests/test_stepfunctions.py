"""Step Functions both ways, against a real moto_server on loopback (boto3 over HTTP)."""

import json
import os
import signal
import time
import uuid

import pytest

from conftest import Repo

ROLE = "arn:aws:iam::123456789012:role/stepfunctions"

PIPELINE = '''import json
import os
import time

import luigi
from hgext_luigi import HgTask
from hgext_luigi.stepfunctions import StepFunctionsTask


class Prepare(HgTask):
    watches = ["data/**"]

    def output(self):
        return self.stamped_target("dataset.json")

    def run(self):
        with open(self.source_path("data/rows.txt")) as f:
            rows = f.read().split()
        with self.output().open("w") as f:
            json.dump({"rows": rows}, f)


class Process(StepFunctionsTask):
    @property
    def state_machine_arn(self):
        return os.environ["SFN_ARN"]

    def requires(self):
        return Prepare()

    def execution_input(self):
        with self.input().open() as f:
            return json.load(f)


class Consume(HgTask):
    def requires(self):
        return Process()

    def output(self):
        return self.stamped_target("consumed.json")

    def run(self):
        with self.input().open() as f:
            result = json.load(f)
        with self.output().open("w") as f:
            json.dump({"from": result["execution_arn"], "rows": result["output"]["rows"]}, f)


class Report(HgTask):
    watches = ["data/**"]

    def output(self):
        return self.stamped_target("report.txt")

    def run(self):
        time.sleep(float(os.environ.get("REPORT_SECONDS", "0")))
        with open(self.source_path("data/rows.txt")) as f:
            rows = f.read().split()
        with self.output().open("w") as f:
            f.write("%d rows\\n" % len(rows))


class Broken(HgTask):
    def output(self):
        return self.stamped_target("never")

    def run(self):
        raise RuntimeError("no data for the broken task")
'''

LUIGI_CFG = "[stepfunctions]\npoll_interval = 0.2\nmax_poll_interval = 0.5\n"

PASS = {"StartAt": "Count", "States": {"Count": {
    "Type": "Pass", "End": True,
    "Parameters": {"rows.$": "$.input.rows", "changeset.$": "$.hg.changeset",
                   "upstream.$": "$.hg.upstream"}}}}


def waiting(seconds):
    return {"StartAt": "Wait", "States": {
        "Wait": {"Type": "Wait", "Seconds": seconds, "Next": "Count"},
        "Count": PASS["States"]["Count"]}}


@pytest.fixture
def aws(moto):
    class Aws:
        sfn = moto.client("stepfunctions")
        sqs = moto.client("sqs")
        env = moto.env()

        def machine(self, definition):
            return self.sfn.create_state_machine(
                name="m-" + uuid.uuid4().hex[:12], definition=json.dumps(definition),
                roleArn=ROLE)["stateMachineArn"]

        def executions(self, arn):
            return self.sfn.list_executions(stateMachineArn=arn)["executions"]

        def wait_done(self, arn, timeout=20):
            deadline = time.time() + timeout
            while True:
                d = self.sfn.describe_execution(executionArn=arn)
                if d["status"] != "RUNNING" or time.time() > deadline:
                    return d
                time.sleep(0.2)

    return Aws()


@pytest.fixture
def flow(hg, tmp_path, aws):
    path = str(tmp_path / "flow")
    hg("init", path)
    repo = Repo(hg, path)
    repo.write("pipelines/__init__.py", PIPELINE)
    repo.write("data/rows.txt", "a\nb\nc\n")
    repo.write("luigi.cfg", LUIGI_CFG)
    # the pipeline reaches moto through the AWS_* variables the server passes it
    repo.write(".hg/hgrc", "[luigi]\nroots = Consume\n"
               "pass-env = PATH HOME LANG AWS_* SFN_ARN REPORT_SECONDS\n")
    repo.env = dict(aws.env)
    return repo


def lineage(repo):
    return {r["key"]: r for r in repo.json("luigi-lineage")}


def test_dataset_to_workflow_to_consumer(flow, aws):
    arn = aws.machine(PASS)
    env = dict(flow.env, SFN_ARN=arn)
    rev = flow.commit("pipeline")
    out = flow("luigi-run", env=env).stdout
    assert "3 ran, 0 reused, 0 failed, 0 not run" in out

    [ex] = aws.executions(arn)
    assert ex["status"] == "SUCCEEDED"
    assert ex["name"].startswith("Process-%s-" % rev[:12]) and len(ex["name"]) <= 80
    desc = aws.sfn.describe_execution(executionArn=ex["executionArn"])
    sent = json.loads(desc["input"])
    assert sent["input"] == {"rows": ["a", "b", "c"]}
    hgpart = sent["hg"]
    assert hgpart["changeset"] == rev and hgpart["task"] == "Process()"
    assert hgpart["branch"] == "default" and hgpart["user"] == "Alice <alice@example.com>"
    [up] = hgpart["upstream"]
    assert up["task"] == "Prepare()" and up["changeset"] == rev
    assert up["outputs"][0]["path"].endswith(os.path.join(rev, "dataset.json"))
    assert len(up["outputs"][0]["sha256"]) == 64

    rows = lineage(flow)
    rec = rows["Process()"]["extra"]["stepfunctions"]
    assert rec["execution_arn"] == ex["executionArn"] and rec["status"] == "SUCCEEDED"
    assert rec["start"] == "started" and rec["state_machine"] == arn
    assert rec["output"]["rows"] == ["a", "b", "c"] and rec["output"]["changeset"] == rev
    consumed = json.load(open(rows["Consume()"]["outputs"][0]["path"]))
    assert consumed == {"from": ex["executionArn"], "rows": ["a", "b", "c"]}
    assert "stepfunctions started %s (SUCCEEDED)" % ex["executionArn"] in \
        flow("luigi-lineage").stdout

    # rebuilding everything at the same changeset, from the same inputs, finds
    # the execution instead of starting a second one
    flow("luigi-run", "--all", env=env)
    assert len(aws.executions(arn)) == 1
    assert lineage(flow)["Process()"]["extra"]["stepfunctions"]["start"] == "attached"
    # new data: a new execution
    flow.write("data/rows.txt", "a\nb\nc\nd\n")
    flow.commit("one more row")
    flow("luigi-run", env=env)
    assert len(aws.executions(arn)) == 2


def test_killed_waiter_retry_attaches_to_the_same_execution(flow, aws):
    arn = aws.machine(waiting(4))
    env = dict(flow.env, SFN_ARN=arn)
    flow.commit("pipeline")
    proc = flow.hg.popen("luigi-run", cwd=flow.path, env=env)
    deadline = time.time() + 60
    while not aws.executions(arn):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    out = flow("luigi-run", env=env).stdout
    assert "ran      Process()" in out and "ran      Consume()" in out
    [ex] = aws.executions(arn)
    assert ex["status"] == "SUCCEEDED"
    history = flow.json("luigi-lineage", "--task", "Process")
    assert [b["status"] for b in history] == ["failed", "success"]
    assert history[0]["error"].startswith("interrupted")
    assert history[1]["extra"]["stepfunctions"]["start"] == "attached"


def test_failed_execution_fails_the_task_with_its_cause_then_reruns(flow, aws):
    arn = aws.machine({"StartAt": "Check", "States": {"Check": {
        "Type": "Fail", "Error": "BadInput", "Cause": "three rows are not enough"}}})
    env = dict(flow.env, SFN_ARN=arn)
    flow.commit("pipeline")
    proc = flow("luigi-run", env=env, check=False)
    assert proc.returncode == 1
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("failed   Process()")][0]
    assert ("StepFunctionsExecutionError: execution %s FAILED: "
            "BadInput: three rows are not enough" % aws.executions(arn)[0]["executionArn"]
            ) in line
    assert "not run  Consume()" in proc.stdout
    rec = lineage(flow)["Process()"]
    assert rec["status"] == "failed" and rec["outputs"] == []
    assert rec["extra"]["stepfunctions"]["error"] == "BadInput"

    # the workflow is fixed in the cloud: the next run starts <name>-r2
    aws.sfn.update_state_machine(stateMachineArn=arn, definition=json.dumps(PASS))
    flow("luigi-run", env=env)
    names = sorted(e["name"] for e in aws.executions(arn))
    assert len(names) == 2 and names[1] == names[0] + "-r2"
    assert lineage(flow)["Process()"]["extra"]["stepfunctions"]["start"] == "rerun"


def test_timeouts(flow, aws):
    # the execution itself times out (TimeoutSeconds of the state machine)
    arn = aws.machine(dict(waiting(5), TimeoutSeconds=1))
    env = dict(flow.env, SFN_ARN=arn)
    flow.commit("pipeline")
    proc = flow("luigi-run", env=env, check=False)
    assert proc.returncode == 1
    assert "execution %s TIMED_OUT" % aws.executions(arn)[0]["executionArn"] in proc.stdout

    # our wait times out: the task fails, the execution is left running
    arn = aws.machine(waiting(30))
    flow.write("luigi.cfg", LUIGI_CFG + "timeout = 1\n")
    flow.commit("wait one second")
    proc = flow("luigi-run", env=dict(env, SFN_ARN=arn), check=False)
    assert proc.returncode == 1
    [ex] = aws.executions(arn)
    assert ("execution %s still RUNNING after 1s; left running: a retry of this task "
            "waits for it again" % ex["executionArn"]) in proc.stdout
    assert ex["status"] == "RUNNING"


CALLBACK_ROOTS = "luigi.roots=Report Broken"


def callback_machine(aws, queue, tasks, heartbeat=3, rev="tip"):
    return aws.machine({"StartAt": "Build", "States": {"Build": {
        "Type": "Task", "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
        "HeartbeatSeconds": heartbeat, "End": True,
        "Parameters": {"QueueUrl": queue, "MessageBody": {
            "TaskToken.$": "$$.Task.Token", "execution.$": "$$.Execution.Id",
            "rev": rev, "tasks": tasks}}}}})


def test_callback_success_with_heartbeats(flow, aws):
    queue = aws.sqs.create_queue(QueueName="q-" + uuid.uuid4().hex[:8])["QueueUrl"]
    arn = callback_machine(aws, queue, ["Report"], heartbeat=2)
    rev = flow.commit("pipeline")
    ex = aws.sfn.start_execution(stateMachineArn=arn, name="nightly")["executionArn"]
    # the build takes longer than HeartbeatSeconds: heartbeats keep the state alive
    proc = flow("luigi-callback", "--queue", queue, "--once", "--wait", "5",
                "--config", "luigi.callback-heartbeat=1", "--config", CALLBACK_ROOTS,
                env=dict(flow.env, REPORT_SECONDS="4"))
    assert "1 requests answered, 0 failed" in proc.stdout
    assert "answered" in proc.stdout and "success" in proc.stdout
    d = aws.wait_done(ex)
    assert d["status"] == "SUCCEEDED"
    result = json.loads(d["output"])
    assert result["changeset"] == rev and result["summary"].startswith("1 ran")
    [task] = result["tasks"]
    assert task["key"] == "Report()" and task["changeset"] == rev
    [out] = task["outputs"]
    assert out["path"].endswith(os.path.join(rev, "report.txt"))
    assert open(out["path"]).read() == "3 rows\n"
    rec = flow.json("luigi-lineage", "--task", "Report")[-1]
    assert rec["trigger"] == "stepfunctions" and rec["user"] == "stepfunctions:" + ex
    assert aws.sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0).get("Messages") is None


def test_callback_failure_sends_the_error(flow, aws):
    queue = aws.sqs.create_queue(QueueName="q-" + uuid.uuid4().hex[:8])["QueueUrl"]
    broken = callback_machine(aws, queue, ["Broken"])
    unknown = callback_machine(aws, queue, ["NoSuchTask"])
    flow.commit("pipeline")
    ex1 = aws.sfn.start_execution(stateMachineArn=broken)["executionArn"]
    ex2 = aws.sfn.start_execution(stateMachineArn=unknown)["executionArn"]
    # heartbeats every second: a slow build (a loaded machine) must not time the
    # state out (HeartbeatSeconds 3) before the failure is sent
    proc = flow("luigi-callback", "--queue", queue, "--once", "--wait", "2",
                "--config", "luigi.callback-heartbeat=1", "--config", CALLBACK_ROOTS,
                env=flow.env, check=False)
    assert proc.returncode == 1
    assert "2 requests answered, 2 failed" in proc.stdout
    # moto's HTTP layer drops the cause of send_task_failure: it is checked in
    # what hg reports sending
    d1 = aws.wait_done(ex1)
    assert d1["status"] == "FAILED" and d1["error"] == "hgext_luigi.TaskFailed"
    assert ("failure (hgext_luigi.TaskFailed: Broken(): RuntimeError: no data for the "
            "broken task") in proc.stdout
    d2 = aws.wait_done(ex2)
    assert d2["status"] == "FAILED" and d2["error"] == "hgext_luigi.Abort"
    assert "failure (hgext_luigi.Abort: unknown task: NoSuchTask" in proc.stdout


def test_callback_needs_a_queue(flow, moto):
    flow.commit("pipeline")
    proc = flow("luigi-callback", "--once", check=False)
    assert proc.returncode == 255
    assert "abort: no queue to receive from" in proc.stderr
    assert "(pass --queue URL or set [luigi] callback-queue)" in proc.stderr
    proc = flow("luigi-callback", "--once", "--queue", moto.url + "/123456789012/nope",
                env=flow.env, check=False)
    assert proc.returncode == 255
    assert proc.stderr.startswith("abort: sqs receive_message: ")
    assert "(check the AWS region, endpoint and credentials" in proc.stderr


def test_a_callback_names_a_changeset_never_a_revset(flow, aws):
    """The sender is no user of this server: ``remote()`` would make hg contact
    another one, ``all()`` would pick for it; a symbol or a hash only."""
    queue = aws.sqs.create_queue(QueueName="q-" + uuid.uuid4().hex[:8])["QueueUrl"]
    rev = flow.commit("pipeline")
    revset = callback_machine(aws, queue, ["Report"], rev="first(all())")
    by_hash = callback_machine(aws, queue, ["Report"], rev=rev[:12])
    ex1 = aws.sfn.start_execution(stateMachineArn=revset)["executionArn"]
    proc = flow("luigi-callback", "--queue", queue, "--once", "--wait", "2",
                "--config", "luigi.callback-heartbeat=1", "--config", CALLBACK_ROOTS,
                env=flow.env, check=False)
    assert "failure (hgext_luigi.Abort: unknown revision first(all())" in proc.stdout
    assert aws.wait_done(ex1)["error"] == "hgext_luigi.Abort"
    ex2 = aws.sfn.start_execution(stateMachineArn=by_hash)["executionArn"]
    flow("luigi-callback", "--queue", queue, "--once", "--wait", "2",
         "--config", "luigi.callback-heartbeat=1", "--config", CALLBACK_ROOTS, env=flow.env)
    assert json.loads(aws.wait_done(ex2)["output"])["changeset"] == rev
