"""core.sfnclient: Step Functions and SQS through boto3, against the real
``moto_server`` (the ``moto`` fixture) executing state machines."""

import json
import os
import re
import time
import uuid

import pytest

from hgext_luigi.core import sfnclient

CS = "0123456789abcdef" * 2 + "01234567"
ROLE = "arn:aws:iam::123456789012:role/sfn"
MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:etl"


@pytest.fixture
def aws(moto, monkeypatch, tmp_path):
    """boto3's standard chain pointed at moto, nothing of the host's."""
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    for k, v in moto.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    sfn = moto.client("stepfunctions")

    def machine(definition):
        return sfn.create_state_machine(name="m-" + uuid.uuid4().hex[:12],
                                        definition=json.dumps(definition),
                                        roleArn=ROLE)["stateMachineArn"]

    moto.machine = machine
    moto.sfn = sfn
    return moto


PASS = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}
FAIL = {"StartAt": "Boom", "States": {"Boom": {"Type": "Fail", "Error": "Bad",
                                               "Cause": "input rejected"}}}
WAIT = {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 30, "End": True}}}


def client(aws):
    return sfnclient.StepFunctionsClient("us-east-1", aws.url)


# -- names -----------------------------------------------------------------------------

def test_execution_names_are_deterministic_and_valid():
    a = sfnclient.execution_name("CleanSales", CS, {"region": "n", "inputs": ["x"]})
    assert a == sfnclient.execution_name("CleanSales", CS, {"inputs": ["x"], "region": "n"})
    assert a != sfnclient.execution_name("CleanSales", CS, {"region": "s", "inputs": ["x"]})
    assert a.startswith("CleanSales-0123456789ab-")
    hostile = sfnclient.execution_name("Évil/Family name:*?" * 10, CS, {"x": "\n"})
    for name in (a, hostile):
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,80}", name), name


def test_execution_arn():
    assert sfnclient.execution_arn(MACHINE, "run-1") == \
        "arn:aws:states:us-east-1:123456789012:execution:etl:run-1"
    for bad in ("arn:aws:states:us-east-1:123456789012:activity:etl",
                "arn:aws:states:us-east-1", "etl"):
        with pytest.raises(sfnclient.StepFunctionsError, match="not a state machine ARN"):
            sfnclient.execution_arn(bad, "x")


@pytest.mark.parametrize("value", [
    "arn:aws:states:us-east-1:123456789012:execution:etl:run-1",
    "arn:aws-us-gov:states:us-gov-west-1:123456789012:execution:etl:run-1",
    "arn:aws:states:eu-west-1:123456789012:express:etl:run-1:0f1e2d3c",
    "arn:aws:states:us-east-1:123456789012:execution:etl/map-label:child-1",
])
def test_execution_arns_are_recognised(value):
    assert sfnclient.is_execution_arn(value)


@pytest.mark.parametrize("value", [
    None, 42, "", "run-1",
    "arn:aws:states:us-east-1:123456789012:stateMachine:etl",
    "arn:aws:lambda:us-east-1:123456789012:execution:etl:run-1",
    "arn:aws:states:us-east-1:12345678901:execution:etl:run-1",  # 11 digits
    "arn:aws:states:us-east-1:123456789012:execution:etl:run-1\n",
    "arn:aws:states:us-east-1:123456789012:execution:etl:run-1\x1b[31m",
    "arn:aws:states:us-east-1:123456789012:execution:etl:run 1",
    "arn:aws:states:us-east-1:123456789012:execution:etl:" + "x" * 81,
    "arn:aws:states:us-east-1:123456789012:execution:etl:run-1/../../x",
    "xarn:aws:states:us-east-1:123456789012:execution:etl:run-1",
])
def test_what_is_not_an_execution_arn(value):
    assert not sfnclient.is_execution_arn(value)


def test_token_digest_hides_the_token():
    d = sfnclient.token_digest("AAAA-secret-task-token")
    assert re.fullmatch(r"[0-9a-f]{16}", d) and "secret" not in d
    assert d == sfnclient.token_digest("AAAA-secret-task-token")
    assert d != sfnclient.token_digest("AAAA-secret-task-token2")


# -- executions -------------------------------------------------------------------------------

def test_start_then_attach_to_the_same_execution(aws):
    c = client(aws)
    machine = aws.machine(PASS)
    arn, name, how, request_id = c.start(machine, "build-1", {"rows": 3})
    assert (name, how) == ("build-1", "started") and request_id
    assert arn == sfnclient.execution_arn(machine, "build-1")
    done = c.wait(arn, timeout=30, poll=0.1)
    assert done["status"] == "SUCCEEDED"
    assert json.loads(done["input"]) == {"rows": 3}
    # asked again (a retry of the task): the same execution, not a new one
    assert c.start(machine, "build-1", {"rows": 3})[:3] == (arn, "build-1", "attached")
    assert len(aws.sfn.list_executions(stateMachineArn=machine)["executions"]) == 1


def test_a_failed_execution_is_run_again_under_a_new_name(aws):
    c = client(aws)
    machine = aws.machine(FAIL)
    arn, _, _, _ = c.start(machine, "build-1", {})
    failed = c.wait(arn, timeout=30, poll=0.1)
    assert (failed["status"], failed["error"], failed["cause"]) == (
        "FAILED", "Bad", "input rejected")
    again = c.start(machine, "build-1", {})
    assert again[1:3] == ("build-1-r2", "rerun")
    with pytest.raises(sfnclient.StepFunctionsError, match="rerun_failed is off"):
        c.start(machine, "build-1", {}, rerun_failed=False)


def test_a_failing_execution_is_not_started_forever(aws):
    c = client(aws)
    machine = aws.machine(FAIL)
    for attempt in range(2):
        arn = c.start(machine, "build-1", {}, max_reruns=1)[0]
        c.wait(arn, timeout=30, poll=0.1)
    with pytest.raises(sfnclient.StepFunctionsError, match="failed 2 times"):
        c.start(machine, "build-1", {}, max_reruns=1)


def test_wait_gives_up_at_its_timeout_and_stop_ends_the_execution(aws):
    c = client(aws)
    arn = c.start(aws.machine(WAIT), "slow", {})[0]
    polls = []
    started = time.monotonic()
    with pytest.raises(sfnclient.WaitTimeout) as e:
        c.wait(arn, timeout=0.5, poll=0.1, on_poll=polls.append)
    assert time.monotonic() - started < 5
    assert e.value.execution["status"] == "RUNNING" and polls
    c.stop(arn, "Stopped" * 100, "a user stopped it " * 5000)  # long: trimmed, not refused
    assert c.describe(arn)["status"] == "ABORTED"


def test_aws_errors_carry_their_code(aws):
    c = client(aws)
    with pytest.raises(sfnclient.StepFunctionsError) as e:
        c.describe("arn:aws:states:us-east-1:123456789012:execution:nope:x")
    assert e.value.code == "ExecutionDoesNotExist"
    with pytest.raises(sfnclient.StepFunctionsError) as e:
        c.send_success("not-a-token", {"ok": True})
    assert e.value.code == "InvalidToken"
    with pytest.raises(sfnclient.StepFunctionsError) as e:
        c.send_failure("not-a-token", "E" * 1000, "cause " * 10000)
    assert e.value.code == "InvalidToken"


def test_no_region_and_no_credentials_are_said_plainly(aws, monkeypatch):
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(sfnclient.StepFunctionsError, match="no AWS region configured"):
        sfnclient.StepFunctionsClient(endpoint_url=aws.url).describe(
            "arn:aws:states:us-east-1:123456789012:execution:x:y")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(sfnclient.StepFunctionsError, match="no AWS credentials found"):
        client(aws).describe("arn:aws:states:us-east-1:123456789012:execution:x:y")


def test_an_unknown_profile_is_an_error_not_a_crash(aws):
    with pytest.raises(sfnclient.StepFunctionsError, match="nobody"):
        sfnclient.StepFunctionsClient("us-east-1", aws.url, profile="nobody").describe(
            "arn:aws:states:us-east-1:123456789012:execution:x:y")


def test_messages_of_a_queue(aws):
    c = client(aws)
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="q-" + uuid.uuid4().hex[:8])["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"taskToken": "t"}))
    [msg] = c.receive(url, wait=0, visibility=30)
    assert json.loads(msg["Body"]) == {"taskToken": "t"}
    assert c.receive(url, wait=0) == []  # invisible while it is worked on
    c.keep_invisible(url, msg["ReceiptHandle"], 0)
    [again] = c.receive(url, wait=0, visibility=30)
    c.delete(url, again["ReceiptHandle"])
    assert c.receive(url, wait=0) == []
