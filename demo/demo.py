"""End-to-end demo of hgext_luigi on the example pipeline (run by ``make demo``).

Builds a repository in ``demo-out/`` from ``pipelines/`` and the demo data,
commits, runs the pipeline, changes one data file, runs again (only the affected
tasks run) and prints the lineage.  Uses the real ``hg`` next to this
interpreter with an isolated configuration; exits non-zero if anything is not as
it should be.  Then a server repository: a push over HTTP (``hg serve``) and one
by path, each queued and built by ``hg luigi-worker``, lineage with the pusher.
"""

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

from example import ROOT, copy_example  # noqa: E402 (this folder is on the path)
OUT = os.path.join(ROOT, "demo-out")
BIN = os.path.dirname(sys.executable)
HG = os.path.join(BIN, "hg") if os.path.exists(os.path.join(BIN, "hg")) else shutil.which("hg")


def environment():
    hgrc = os.path.join(OUT, "hgrc")
    with open(hgrc, "w") as f:
        f.write("[extensions]\nhgext_luigi =\n"
                "[ui]\nusername = Demo User <demo@example.com>\n"
                "[luigi]\non-commit = plan\n"
                # pipeline code sees only these variables; the demo's examples read
                # LUIGI_CONFIG_PATH, and reach the local moto_server through AWS_*
                "pass-env = PATH HOME USER LOGNAME LANG LC_* TZ TMPDIR TERM "
                "LUIGI_CONFIG_PATH AWS_*\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HG")}
    env.update(HGRCPATH=hgrc, HGPLAIN="1", HGENCODING="utf-8",
               PATH=BIN + os.pathsep + env.get("PATH", ""))
    return env


def hg(env, repo, *args, show=True, check=True):
    if show:
        print("\n$ hg " + " ".join(shlex.quote(a) for a in args), flush=True)
    proc = subprocess.run([HG] + list(args), cwd=repo, env=env, text=True,
                          capture_output=True)
    if show:
        sys.stdout.write(proc.stdout)
        sys.stdout.write(proc.stderr)
    if check and proc.returncode != 0:
        if not show:
            sys.stdout.write(proc.stdout + proc.stderr)
        sys.exit("demo failed: hg %s exited %d" % (" ".join(args), proc.returncode))
    return proc.stdout


def ran(out):
    return sorted(line.split(None, 1)[1].split("  ")[0] for line in out.splitlines()
                  if line.startswith("ran "))


def main():
    if HG is None:
        sys.exit("demo failed: hg not found (run it through 'make demo')")
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    env = environment()
    repo = os.path.join(OUT, "repo")
    print("== A repository holding the example pipeline and its data: %s" % repo)
    subprocess.run([HG, "init", repo], env=env, check=True)
    copy_example(repo)
    hg(env, repo, "commit", "-A", "-q", "-m", "example pipeline and data")

    print("\n== 1. Which tasks does the first changeset affect?")
    hg(env, repo, "luigi-affected")
    print("\n== 2. Run them")
    first = hg(env, repo, "luigi-run")
    if len(ran(first)) != 5:
        sys.exit("demo failed: expected 5 tasks to run, got %s" % ran(first))
    again = hg(env, repo, "luigi-run", show=False)
    if ran(again):
        sys.exit("demo failed: a second run rebuilt %s" % ran(again))
    print("(a second run of the same changeset builds nothing: all 5 reused)")

    print("\n== 3. Change one data file and commit (on-commit = plan prints the plan)")
    with open(os.path.join(repo, "data", "raw", "sales-north.csv"), "a") as f:
        f.write("2026-11-20,Widget,4,39.96\n")
    hg(env, repo, "commit", "-m", "north: sales of 20 November")
    hg(env, repo, "luigi-affected")
    print("\n== 4. Run again: only the affected tasks run")
    second = hg(env, repo, "luigi-run")
    expected = ["CleanSales(region=north)", "SalesReport()"]
    if ran(second) != expected:
        sys.exit("demo failed: expected %s to run, got %s" % (expected, ran(second)))

    print("\n== 5. Lineage: where every output at this changeset comes from")
    hg(env, repo, "luigi-lineage")
    rows = json.loads(hg(env, repo, "luigi-lineage", "-T", "json", show=False))
    report = [r for r in rows if r["key"] == "SalesReport()"][0]["outputs"][0]["path"]
    print("\n== 6. The report, back to its sources")
    hg(env, repo, "luigi-lineage", "--output", report)
    print("\n== The report itself (%s)" % os.path.relpath(report, repo))
    with open(report) as f:
        sys.stdout.write(f.read())
    server_flow(env, repo)
    deploy_flow(env, repo)
    cloud = cloud_flow(env, repo)
    print("\ndemo OK: 5 tasks built, then 2 of 5 rebuilt after one file changed; the "
          "server built each push with its pusher on record, in an audit log that "
          "verifies; a playbook installed the "
          "artifact of the changeset%s. Repositories left in %s"
          % ("; a Step Functions workflow ran both ways" if cloud else "", OUT))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_flow(env, repo):
    server = os.path.join(OUT, "server")
    print("\n== 7. A server repository: pushes are gated and queued, a worker builds them")
    subprocess.run([HG, "init", server], env=env, check=True)
    with open(os.path.join(server, ".hg", "hgrc"), "w") as f:
        f.write("[web]\nallow-push = *\npush_ssl = false\n"
                "[luigi]\ngate = true\non-push = queue\n"
                # the audit chain is keyed by a variable of the server's environment
                "audit-key-env = DEMO_AUDIT_KEY\n")
    env = dict(env, DEMO_AUDIT_KEY=os.urandom(16).hex())
    port = free_port()
    url = "http://127.0.0.1:%d/" % port
    serve = subprocess.Popen([HG, "serve", "-R", server, "-a", "127.0.0.1", "-p", str(port)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).read()
                break
            except OSError:
                if time.time() > deadline or serve.poll() is not None:
                    sys.exit("demo failed: hg serve did not start")
                time.sleep(0.1)
        print("(hg serve -R %s on %s)" % (os.path.relpath(server, OUT), url))
        hg(env, repo, "push", url)
        hg(env, server, "luigi-queue")
        out = hg(env, server, "luigi-worker", "--once")
        if "5 ran" not in out:
            sys.exit("demo failed: the worker did not build the first push")
    finally:
        serve.terminate()
        serve.wait()
    with open(os.path.join(repo, "data", "raw", "sales-east.csv"), "a") as f:
        f.write("2026-11-21,Gadget,2,31.00\n")
    hg(env, repo, "commit", "-q", "-m", "east: sales of 21 November")
    print("\n== 8. A push by path, by another user: the worker builds what it affects")
    hg(env, repo, "push", server, "--config", "ui.username=Erin Ops <erin@example.com>")
    out = hg(env, server, "luigi-worker", "--once")
    if "2 ran, 3 reused" not in out:
        sys.exit("demo failed: expected 2 tasks rebuilt on the server")
    hg(env, server, "luigi-queue")
    print("\n== 9. Lineage on the server, with the pusher")
    hg(env, server, "luigi-lineage")
    print("\n== 10. The audit log: every push, queue entry, run and build, in a keyed "
          "hash chain an auditor verifies")
    hg(env, server, "luigi-audit", "-t", "SalesReport")
    hg(env, server, "luigi-audit", "--head")
    out = hg(env, server, "luigi-audit", "--verify")
    if "no problem" not in out:
        sys.exit("demo failed: the audit log does not verify")


def deploy_flow(env, repo):
    print("\n== 11. Artifact -> playbook -> load data (pipelines/deploy.py, Ansible on "
          "localhost)")
    for d in ("app", "deploy", "workflows"):
        shutil.copytree(os.path.join(ROOT, "demo", d), os.path.join(repo, d))
    hg(env, repo, "commit", "-A", "-q", "-m", "app, playbook and workflow definition")
    cfg = os.path.join(OUT, "luigi.cfg")
    hosts = os.path.join(OUT, "hosts")
    with open(cfg, "w") as f:
        f.write("[deploy]\nroot = %s\n[stepfunctions]\npoll_interval = 0.5\n" % hosts)
    env["LUIGI_CONFIG_PATH"] = cfg
    hg(env, repo, "--config", "luigi.module=pipelines.deploy", "luigi-run", "-v",
       "--task", "LoadData")
    with open(os.path.join(hosts, "current", "release.json")) as f:
        release = json.load(f)
    print("(installed on the host: %s/current -> release of %s)"
          % (os.path.relpath(hosts, OUT), release["changeset"][:12]))
    out = hg(env, repo, "--config", "luigi.module=pipelines.deploy", "luigi-lineage",
             show=False)
    print("".join(line + "\n" for line in out.splitlines() if "ansible" in line))


ROLE = "arn:aws:iam::123456789012:role/demo"  # moto checks the form, not the role


def cloud_flow(env, repo):
    print("\n== 12. Dataset -> Step Functions workflow -> consumer (pipelines/cloud.py), "
          "against a local moto_server")
    sys.path.insert(0, os.path.join(ROOT, "tests", "helpers"))
    from motoserver import MotoServer, find_moto_server

    if not find_moto_server():
        print("(skipped: moto_server is not installed; pip install 'moto[server]')")
        return False
    moto = MotoServer()
    try:
        env = dict(env, **moto.env())
        sfn = moto.client("stepfunctions")
        with open(os.path.join(repo, "workflows", "score.asl.json")) as f:
            arn = sfn.create_state_machine(name="score", definition=f.read(),
                                           roleArn=ROLE)["stateMachineArn"]
        with open(env["LUIGI_CONFIG_PATH"], "a") as f:
            f.write("[cloud]\nstate_machine_arn = %s\n" % arn)
        print("(moto_server on %s; state machine %s)" % (moto.url, arn))
        hg(env, repo, "--config", "luigi.module=pipelines.cloud", "luigi-run",
           "--task", "PublishScores")
        rows = json.loads(hg(env, repo, "--config", "luigi.module=pipelines.cloud",
                             "luigi-lineage", "-T", "json", show=False))
        rec = [r for r in rows if r["key"] == "ScoreRegions()"][0]["extra"]["stepfunctions"]
        print("execution %s: %s, output %s" % (rec["name"], rec["status"],
                                                json.dumps(rec["output"], sort_keys=True)))

        print("\n== 13. And back: a workflow state waits (.waitForTaskToken) on a Luigi "
              "build")
        sqs = moto.client("sqs")
        queue = sqs.create_queue(QueueName="luigi-callbacks")["QueueUrl"]
        waiter = sfn.create_state_machine(name="nightly", roleArn=ROLE, definition=json.dumps({
            "StartAt": "Build", "States": {"Build": {
                "Type": "Task", "HeartbeatSeconds": 60, "End": True,
                "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                "Parameters": {"QueueUrl": queue, "MessageBody": {
                    "TaskToken.$": "$$.Task.Token", "execution.$": "$$.Execution.Id",
                    "rev": "tip", "tasks": ["SalesReport"]}}}}}))["stateMachineArn"]
        ex = sfn.start_execution(stateMachineArn=waiter, name="nightly-1")["executionArn"]
        hg(env, repo, "luigi-callback", "--queue", queue, "--once", "--wait", "5")
        deadline = time.time() + 20
        while True:
            d = sfn.describe_execution(executionArn=ex)
            if d["status"] != "RUNNING" or time.time() > deadline:
                break
            time.sleep(0.2)
        if d["status"] != "SUCCEEDED":
            sys.exit("demo failed: the waiting execution ended %s" % d["status"])
        result = json.loads(d["output"])
        print("execution nightly-1 SUCCEEDED with the stamped outputs of %s at %s"
              % (", ".join(t["key"] for t in result["tasks"]), result["changeset"][:12]))
    finally:
        moto.stop()
    return True


if __name__ == "__main__":
    main()
