"""Who a build is recorded for cannot be chosen by the one who asks for it.

Pushes: the pusher is the authenticated HTTP user, the ssh gateway's
``REMOTE_USER``, or the operating-system account; never the committer name
(``HGUSER``, ``ui.username``), which is recorded apart as the author.
Callbacks: the ``execution`` of an SQS message must be a Step Functions
execution ARN, else the request fails and nothing is built.
"""

import json
import os
import sqlite3
import subprocess
import time
import uuid

import pytest

from conftest import Repo, make_server_repo, seeded_clone

HELPERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers")
# what a pusher may set on its side to pass for someone else
SPOOF = "mallory"
SPOOF_ENV = {"HGUSER": SPOOF, "USER": SPOOF, "LOGNAME": SPOOF, "USERNAME": SPOOF}
COMMITTER = "Eve Committer <eve@example.com>"


def account():
    """The account the tests (and so every hg they start) run as, as `id -un` says."""
    return subprocess.run(["id", "-un"], capture_output=True, text=True,
                          check=True).stdout.strip()


def queue(repo):
    return repo.json("luigi-queue")


@pytest.fixture
def server(hg, tmp_path):
    return make_server_repo(hg, str(tmp_path / "server"), "on-push = queue\n")


def pipeline_clone(hg, server, path, url=None):
    """A clone of ``server`` holding the example pipeline, committed by
    ``COMMITTER``, not pushed."""
    return seeded_clone(hg, server, path, url, "--user", COMMITTER)


def test_local_push_records_the_os_account_not_the_committer_name(hg, server, tmp_path):
    me = account()
    assert me != SPOOF
    clone = pipeline_clone(hg, server, str(tmp_path / "bob"))
    clone("push", server.path, "--config", "ui.username=%s" % SPOOF, env=SPOOF_ENV)
    [entry] = queue(server)
    assert entry["pusher"] == me
    assert entry["author"] == COMMITTER

    # a second push, naming someone else only through ui.username
    clone.write("data/raw/sales-north.csv", "2026-11-21,Widget,1,9.99\n", "a")
    clone.commit("north", "--user", "Zed <zed@example.com>")
    clone("push", server.path, "--config", "ui.username=root <root@localhost>")
    entry = queue(server)[-1]
    assert entry["pusher"] == me and entry["author"] == "Zed <zed@example.com>"

    out = server("luigi-worker", "--once").stdout
    assert "pushed by %s " % me in out and SPOOF not in out
    rows = server.json("luigi-lineage")
    assert rows and {r["user"] for r in rows} == {me}
    assert "by %s (push)" % me in server("luigi-lineage").stdout.splitlines()[0]


def test_ssh_without_gateway_records_the_account_at_the_client(hg, server, tmp_path):
    """No ``REMOTE_USER`` from a gateway: the account hg runs as over ssh, @ the
    client address, whatever the client's HGUSER, USER or LOGNAME say."""
    clone = pipeline_clone(hg, server, str(tmp_path / "carol"))
    ssh = os.path.join(HELPERS, "dummyssh")
    clone("push", "--config", "ui.ssh=%s" % ssh, "--config", "ui.username=%s" % SPOOF,
          "ssh://hg@localhost/%s" % server.path, env=SPOOF_ENV)
    [entry] = queue(server)
    assert entry["pusher"] == "%s@127.0.0.1" % account()
    assert entry["author"] == COMMITTER and entry["source"] == "remote:ssh:127.0.0.1"


def test_ssh_gateway_user_and_ipv6_client(hg, server, tmp_path):
    """``REMOTE_USER`` set by the gateway names the pusher; an IPv6 client address
    (colons in the hook's url) is kept whole, not read as a user name."""
    clone = pipeline_clone(hg, server, str(tmp_path / "dave"))
    # dummyssh as a gateway would run it: from an IPv6 client, REMOTE_USER set
    with open(os.path.join(HELPERS, "dummyssh")) as f:
        script = f.read()
    gateway = 'SSH_CLIENT="::1 40022 22"\nREMOTE_USER=dave\nexport REMOTE_USER\n'
    ssh = str(tmp_path / "gateway-ssh")
    with open(ssh, "w") as f:
        f.write(script.replace('SSH_CLIENT="127.0.0.1 40022 22"\n', gateway))
    os.chmod(ssh, 0o755)
    clone("push", "--config", "ui.ssh=%s" % ssh, "--config", "ui.username=%s" % SPOOF,
          "ssh://hg@localhost/%s" % server.path, env={"HGUSER": SPOOF})
    [entry] = queue(server)
    assert entry["pusher"] == "dave@::1" and entry["source"] == "remote:ssh:::1"
    assert entry["author"] == COMMITTER


def test_http_push_ignores_the_committer_name(hg, server, serve, tmp_path):
    served = serve(server)
    clone = pipeline_clone(hg, server, str(tmp_path / "web"), served.url)
    clone("push", served.url, "--config", "ui.username=%s" % SPOOF, env=SPOOF_ENV)
    [entry] = queue(server)
    assert entry["pusher"] == "anonymous@127.0.0.1" and entry["author"] == COMMITTER
    server("luigi-worker", "--once")
    assert {r["user"] for r in server.json("luigi-lineage")} == {"anonymous@127.0.0.1"}


def test_a_queue_of_an_older_version_gains_the_author_column(hg, server, tmp_path):
    """A queue.db written before entries had an author: its entries stay, listed
    without one, and the next push records the author."""
    path = os.path.join(server.state, "queue.db")
    os.makedirs(server.state)
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE entries(
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            head TEXT NOT NULL, branch TEXT, pusher TEXT, source TEXT,
            created REAL NOT NULL, updated REAL,
            state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            force INTEGER NOT NULL DEFAULT 0, txnid TEXT,
            owner TEXT, lease_until REAL, run_id TEXT, covered_by INTEGER,
            summary TEXT, error TEXT);
        INSERT INTO entries(head, branch, pusher, source, created, state, summary)
            VALUES ('%s', 'default', 'olduser', 'local', 1.0, 'skipped', 'old entry');
    """ % ("0" * 40))
    db.commit()
    db.close()
    clone = pipeline_clone(hg, server, str(tmp_path / "new"))
    clone("push", server.path)
    old, new = queue(server)
    assert old["pusher"] == "olduser" and old["summary"] == "old entry"
    assert not old["author"]
    assert new["author"] == COMMITTER and new["pusher"] == account()


# -- hg luigi-callback: the execution named in the message ---------------------

ROLE = "arn:aws:iam::123456789012:role/stepfunctions"

CALLBACK_PIPELINE = '''from hgext_luigi import HgTask


class Report(HgTask):
    watches = ["data/**"]

    def output(self):
        return self.stamped_target("report.txt")

    def run(self):
        with self.output().open("w") as f:
            f.write("built\\n")
'''

FORGED = [
    "mallory",
    "arn:aws:iam::123456789012:role/admin",
    "arn:aws:states:us-east-1:123456789012:execution:m:n\nluigi: answered x: success",
    "arn:aws:states:us-east-1:123456789012:execution:m:$(id)",
    42,
    "",
]


@pytest.fixture
def callback_repo(hg, tmp_path):
    path = str(tmp_path / "cb")
    hg("init", path)
    repo = Repo(hg, path)
    repo.write("pipelines/__init__.py", CALLBACK_PIPELINE)
    repo.write("data/rows.txt", "a\n")
    repo.write(".hg/hgrc", "[luigi]\nroots = Report\n")
    return repo


def machine(sfn, queue_url, execution, tasks=("Report",)):
    """A state machine whose callback message names ``execution`` (a literal:
    whatever the sender writes)."""
    return sfn.create_state_machine(
        name="m-" + uuid.uuid4().hex[:12], roleArn=ROLE,
        definition=json.dumps({"StartAt": "Build", "States": {"Build": {
            "Type": "Task", "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
            "HeartbeatSeconds": 30, "End": True,
            "Parameters": {"QueueUrl": queue_url, "MessageBody": {
                "TaskToken.$": "$$.Task.Token", "execution": execution,
                "rev": "tip", "tasks": list(tasks)}}}}}))["stateMachineArn"]


def wait_done(sfn, arn, timeout=30):
    deadline = time.time() + timeout
    while True:
        d = sfn.describe_execution(executionArn=arn)
        if d["status"] != "RUNNING" or time.time() > deadline:
            return d
        time.sleep(0.2)


def test_callback_refuses_an_execution_that_is_not_an_execution_arn(callback_repo, moto):
    sfn, sqs = moto.client("stepfunctions"), moto.client("sqs")
    queue_url = sqs.create_queue(QueueName="q-" + uuid.uuid4().hex[:8])["QueueUrl"]
    callback_repo.commit("pipeline")
    started = [sfn.start_execution(stateMachineArn=machine(sfn, queue_url, value))
               ["executionArn"] for value in FORGED]
    # a well-formed execution, but tasks that are not names
    started.append(sfn.start_execution(stateMachineArn=machine(
        sfn, queue_url, "arn:aws:states:us-east-1:123456789012:execution:m:n",
        tasks=[1, {"a": 2}]))["executionArn"])
    proc = callback_repo("luigi-callback", "--queue", queue_url, "--once", "--wait", "2",
                         env=moto.env(), check=False)
    assert proc.returncode == 1
    assert "%d requests answered, %d failed" % (len(started), len(started)) in proc.stdout
    for arn in started:
        d = wait_done(sfn, arn)
        assert d["status"] == "FAILED" and d["error"] == "hgext_luigi.Abort"
    assert proc.stdout.count("failure (hgext_luigi.Abort: execution ") == len(FORGED)
    assert "is not a Step Functions execution ARN" in proc.stdout
    assert "failure (hgext_luigi.Abort: tasks is not a list of task names)" in proc.stdout
    # the forged text never reaches the log as a line of its own
    assert not any(line.startswith("luigi: answered x") for line in proc.stdout.splitlines())
    # nothing built, nothing recorded, every message answered and deleted
    listed = callback_repo("luigi-lineage", "-T", "json", check=False)
    assert json.loads(listed.stdout) == []
    assert not os.path.exists(os.path.join(callback_repo.state, "outputs"))
    assert sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0).get("Messages") is None


def test_callback_records_a_real_execution_arn(callback_repo, moto):
    sfn, sqs = moto.client("stepfunctions"), moto.client("sqs")
    queue_url = sqs.create_queue(QueueName="q-" + uuid.uuid4().hex[:8])["QueueUrl"]
    rev = callback_repo.commit("pipeline")
    arn = sfn.create_state_machine(
        name="m-" + uuid.uuid4().hex[:12], roleArn=ROLE,
        definition=json.dumps({"StartAt": "Build", "States": {"Build": {
            "Type": "Task", "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
            "HeartbeatSeconds": 30, "End": True,
            "Parameters": {"QueueUrl": queue_url, "MessageBody": {
                "TaskToken.$": "$$.Task.Token", "execution.$": "$$.Execution.Id",
                "rev": "tip", "tasks": ["Report"]}}}}}))["stateMachineArn"]
    ex = sfn.start_execution(stateMachineArn=arn, name="nightly")["executionArn"]
    # the one forged message next to it fails alone
    bad = sfn.start_execution(stateMachineArn=machine(sfn, queue_url, "root"))["executionArn"]
    proc = callback_repo("luigi-callback", "--queue", queue_url, "--once", "--wait", "2",
                         env=moto.env(), check=False)
    assert "2 requests answered, 1 failed" in proc.stdout
    assert wait_done(sfn, ex)["status"] == "SUCCEEDED"
    assert wait_done(sfn, bad)["error"] == "hgext_luigi.Abort"
    [rec] = callback_repo.json("luigi-lineage")
    assert rec["changeset"] == rev and rec["user"] == "stepfunctions:" + ex
