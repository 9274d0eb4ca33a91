"""Step Functions -> Luigi: answer ``.waitForTaskToken`` states with builds.

A state machine hands work to this repository with a state such as::

    "Build": {
      "Type": "Task",
      "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
      "Parameters": {
        "QueueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/luigi",
        "MessageBody": {"TaskToken.$": "$$.Task.Token",
                        "execution.$": "$$.Execution.Id",
                        "rev": "default", "tasks": ["SalesReport"]}},
      "HeartbeatSeconds": 300, "Next": "..."}

``hg luigi-callback`` receives the message, builds the named tasks at ``rev``
exactly as :hg:`luigi-run` would (trigger ``stepfunctions``), and answers: task
success with the stamped outputs, or task failure with the error.  While the
build runs it sends heartbeats and keeps the message hidden from other
receivers; the message is deleted only once answered, so a receiver that dies
leaves it to be delivered again (the rerun reuses what was already built).
"""

import json

from mercurial import error, scmutil
from mercurial.i18n import _

from ..core import acl, heartbeat, sfnclient
from . import config, runs, planning, stores

# who a callback is for [luigi] acl: an owner principal, or a member of a
# [luigi.groups] group (the execution itself is recorded as the run's user)
ACL_USER = "stepfunctions"

_b = config.local


def client_for(settings):
    """boto3's standard chain, with ``[luigi] aws-*`` overriding it."""
    return sfnclient.StepFunctionsClient(region=settings.aws_region,
                                         endpoint_url=settings.aws_endpoint_url,
                                         profile=settings.aws_profile)


def _keeper(settings, token, queue, receipt, every, visibility):
    """A heartbeat for the waiting state, which also keeps the message hidden;
    an error (the state gave up, AWS is away) is noted and beating goes on."""
    client = client_for(settings)

    def beat():
        client.heartbeat(token)
        client.keep_invisible(queue, receipt, visibility)

    return heartbeat.Heartbeat("hgext_luigi-sfn-heartbeat", every, beat, keep_going=True)


def _outputs(store, run_id, keys):
    rows = {r["key"]: r for r in store.run_tasks(run_id)}
    tasks = []
    for key in keys:
        row = rows.get(key)
        build = store.success_for_key(key, row["changeset"]) if row and row["changeset"] else None
        if build is None:
            continue
        tasks.append({"key": key, "task_id": build["task_id"],
                      "changeset": build["changeset"], "run": build["run_id"],
                      "outputs": store.outputs(build["id"])})
    return tasks


def _failure_cause(store, run_id, keys, summary):
    parts = []
    for key in keys:
        build = store.last_build_in_run(run_id, key)
        if build and build.get("error"):
            parts.append("%s: %s" % (key, build["error"]))
        else:
            parts.append("%s: not run" % key)
    return "; ".join(parts + ([summary] if summary else []))


def _parse(body):
    try:
        msg = json.loads(body)
    except ValueError:
        return None, "message body is not JSON"
    if not isinstance(msg, dict):
        return None, "message body is not a JSON object"
    token = msg.get("TaskToken") or msg.get("taskToken")
    if not token or not isinstance(token, str):
        return None, "message has no TaskToken"
    tasks = msg.get("tasks") or []
    if isinstance(tasks, str):
        tasks = [tasks]
    refused = None
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        tasks, refused = [], "tasks is not a list of task names"
    return {"token": token, "rev": str(msg.get("rev") or "tip"), "tasks": tasks,
            "all": bool(msg.get("all")), "execution": msg.get("execution"),
            "refused": refused or _bad_execution(msg.get("execution"))}, None


def _bad_execution(value):
    """Why the message's ``execution`` (the run's user in lineage) is refused, or
    None: absent, or a Step Functions execution ARN."""
    if value is None or sfnclient.is_execution_arn(value):
        return None
    # the value itself is shown escaped and cut short: it is the sender's text
    return ("execution %s is not a Step Functions execution ARN "
            "(arn:aws:states:REGION:ACCOUNT:execution:MACHINE:NAME)"
            % json.dumps(value)[:120])


def handle(ui, repo, settings, client, queue, message, every, visibility):
    """Build one request and answer it; returns ``'success'``, ``'failure'`` or
    ``'dropped'`` (a message nobody waits on)."""
    req, problem = _parse(message.get("Body", ""))
    receipt = message["ReceiptHandle"]
    if req is None:
        ui.warn(_(b'luigi: dropping message %s: %s\n')
                % (_b(message.get("MessageId")), _b(problem)))
        client.delete(queue, receipt)
        return "dropped"
    token = req["token"]
    execution = None if req["refused"] else req["execution"]
    who = "stepfunctions:%s" % (execution or "token-" + sfnclient.token_digest(token))
    ui.status(_(b'luigi: callback %s from %s: %s at %s\n')
              % (_b(sfnclient.token_digest(token)), _b(execution or "?"),
                 _b(", ".join(req["tasks"]) or "all root tasks"), _b(req["rev"])))
    with _keeper(settings, token, queue, receipt, every, visibility) as beat:
        ctx, result, failure = _build(ui, repo, settings, req, who)
    if beat.lost:
        ui.warn(_(b'luigi: heartbeat for %s failed: %s\n')
                % (_b(sfnclient.token_digest(token)), _b(beat.lost)))
    outcome, failure = _answer(ui, settings, client, req, who, ctx, result, failure)
    client.delete(queue, receipt)
    detail = " (%s: %s)" % failure if outcome != "success" and failure else ""
    ui.status(_(b'luigi: answered %s: %s%s\n') % (_b(sfnclient.token_digest(token)),
                                                   _b(outcome), _b(detail)))
    return outcome


def _revision(repo, rev):
    """The changeset a message names: one symbol (a hash or its prefix, a
    branch, bookmark or tag, ``tip``) among the changesets the repository
    serves.  Never a revset: the sender is not a user of this server, and
    ``remote()`` would make it contact another one."""
    try:
        ctx = scmutil.revsymbol(repo.filtered(b'served'), _b(rev))
    except (error.RepoLookupError, error.LookupError, error.ParseError):  # unknown, hidden
        raise error.Abort(_(b'unknown revision %s') % _b(rev),
                          hint=_(b'name a changeset by hash, branch, bookmark or tag'))
    return planning.resolve_rev(repo, ctx.hex())


def _build(ui, repo, settings, req, who):
    """(ctx, :class:`runs.Result`, failure) of the build a request asks for;
    ``failure`` is (error name, cause) when it could not be built at all."""
    ctx, result = None, runs.Result()
    try:
        if req["refused"]:  # answered as a failure, nothing built
            raise error.Abort(_b(req["refused"]))
        ctx = _revision(repo, req["rev"])
        request = runs.Request(trigger="stepfunctions", tasks=tuple(req["tasks"]),
                               force=req["all"], user=who, identity=acl.Identity(ACL_USER))
        return ctx, runs.run(ui, repo, ctx, settings, request), None
    except error.Abort as e:
        return ctx, result, ("hgext_luigi.Abort", config.abort_text(e, "; %s"))
    except Exception as e:
        return ctx, result, ("hgext_luigi.Error", "%s: %s" % (type(e).__name__, e))


def _answer(ui, settings, client, req, who, ctx, result, failure):
    """Send the state its result and record that it was answered; (outcome,
    failure)."""
    store = stores.open_store(settings)
    try:
        try:
            if failure is None and result.status == 0:
                client.send_success(req["token"], {
                    "changeset": config.hexstr(ctx), "run": result.run_id,
                    "summary": result.summary,
                    "tasks": _outputs(store, result.run_id, result.targets)})
                outcome = "success"
            else:
                failure = failure or ("hgext_luigi.TaskFailed", _failure_cause(
                    store, result.run_id, result.failed, result.summary))
                client.send_failure(req["token"], failure[0], failure[1])
                outcome = "failure"
        except sfnclient.StepFunctionsError as e:
            if e.code not in ("TaskTimedOut", "InvalidToken", "TaskDoesNotExist"):
                raise  # AWS unreachable: keep the message; it is delivered again
            ui.warn(_(b'luigi: the state no longer waits (%s); the result is not sent\n')
                    % _b(e.code))
            outcome = "expired"
        store.record("callback-answered", {
            "token": sfnclient.token_digest(req["token"]), "outcome": outcome,
            "tasks": req["tasks"], "rev": req["rev"], "all": req["all"],
            "error": failure[1] if failure and outcome != "success" else None},
            actor=who, run_id=result.run_id,
            changeset=config.hexstr(ctx) if ctx is not None else None)
    finally:
        store.close()
    return outcome, failure


def serve(ui, repo, settings, queue, once=False, wait=20):
    """Receive and answer callbacks until interrupted (or, with ``once``, until
    the queue is empty).  Returns ``(answered, failed)``."""
    every = settings.callback_heartbeat
    visibility = max(every * 2, settings.callback_visibility)
    client = client_for(settings)
    answered = failed = 0
    try:
        while True:
            messages = client.receive(queue, wait=wait, visibility=visibility)
            if not messages and once:
                break
            for m in messages:
                outcome = handle(ui, repo, settings, client, queue, m, every, visibility)
                answered += outcome != "dropped"
                failed += outcome != "success"
    except sfnclient.StepFunctionsError as e:
        raise error.Abort(_b(str(e)), hint=_(b'check the AWS region, endpoint and '
                                               b'credentials, and [luigi] callback-queue'))
    return answered, failed
