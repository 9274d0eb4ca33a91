"""A plain AWS Step Functions (and SQS) client: no Luigi, no Mercurial.

Credentials, region and endpoint come from boto3's standard chain (environment,
shared config and credentials files, SSO, container or instance roles), with an
optional explicit region, endpoint URL and profile on top.  Nothing here accepts
or stores a secret.  boto3 is imported on first use only.
"""

import hashlib
import json
import re
import time

RUNNING = ("RUNNING", "PENDING_REDRIVE")
FAILED = ("FAILED", "TIMED_OUT", "ABORTED")

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")


class StepFunctionsError(Exception):
    """A Step Functions call failed, or an execution did not succeed."""

    def __init__(self, message, execution=None, code=None):
        super().__init__(message)
        self.execution = execution or {}
        self.code = code  # the AWS error code, when AWS answered with one


class WaitTimeout(StepFunctionsError):
    """The execution was still running when the wait's timeout passed."""


def execution_name(family, changeset, identity):
    """A deterministic execution name (at most 80 characters of ``[A-Za-z0-9_-]``):
    the task family, the changeset and a digest of ``identity``, so every attempt
    to build the same task at the same changeset from the same inputs asks for
    the same execution."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()
    return "%s-%s-%s" % (_NAME_CHARS.sub("_", family)[:40], changeset[:12], digest[:16])


def execution_arn(state_machine_arn, name):
    """The ARN an execution named ``name`` of a standard state machine has."""
    parts = state_machine_arn.split(":")
    if len(parts) < 7 or parts[5] != "stateMachine":
        raise StepFunctionsError("not a state machine ARN: %s" % state_machine_arn)
    return ":".join(parts[:5] + ["execution", parts[6], name])


# an execution's ARN, standard or express, also a Distributed Map child's
# (``<state machine>/<map run label>``); names restricted to the characters
# logs and terminals show as they are
_NAME = r"[A-Za-z0-9_.+=@-]{1,80}"
_MACHINE = _NAME + "(?:/" + _NAME + ")?"
_EXECUTION_ARN = re.compile(
    r"arn:aws(?:-[a-z]+)*:states:[a-z0-9-]{1,32}:[0-9]{12}:"
    r"(?:execution:%s:%s|express:%s:%s:%s)" % (_MACHINE, _NAME, _MACHINE, _NAME, _NAME))


def is_execution_arn(value):
    """Whether ``value`` is a Step Functions execution ARN
    (``arn:aws:states:REGION:ACCOUNT:execution:MACHINE:NAME``, or the express
    form ``...:express:MACHINE:NAME:ID``)."""
    return isinstance(value, str) and _EXECUTION_ARN.fullmatch(value) is not None


def token_digest(token):
    """What logs and lineage keep of a task token (the token itself is a secret)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]


class StepFunctionsClient:
    """Start and follow executions; answer ``.waitForTaskToken`` callbacks."""

    def __init__(self, region=None, endpoint_url=None, profile=None):
        self.region = region or None
        self.endpoint_url = endpoint_url or None
        self.profile = profile or None
        self._clients = {}

    def _client(self, service):
        if service not in self._clients:
            import boto3
            import botocore.config
            import botocore.exceptions

            try:
                session = boto3.session.Session(profile_name=self.profile,
                                                region_name=self.region)
                self._clients[service] = session.client(
                    service, endpoint_url=self.endpoint_url,
                    config=botocore.config.Config(retries={"mode": "standard"}))
            except botocore.exceptions.NoRegionError:
                raise StepFunctionsError(
                    "no AWS region configured: set AWS_REGION (or AWS_DEFAULT_REGION), a "
                    "region in the AWS profile, or the region setting")
            except botocore.exceptions.ProfileNotFound as e:
                raise StepFunctionsError(str(e))
        return self._clients[service]

    def _call(self, service, op, **kwargs):
        import botocore.exceptions

        try:
            return getattr(self._client(service), op)(**kwargs)
        except botocore.exceptions.NoCredentialsError:
            raise StepFunctionsError(
                "no AWS credentials found (boto3's standard chain: environment, shared "
                "credentials file, SSO, container or instance role)")
        except botocore.exceptions.EndpointConnectionError as e:
            raise StepFunctionsError("cannot reach %s: %s" % (service, e))
        except botocore.exceptions.ClientError as e:
            raise StepFunctionsError("%s %s: %s" % (service, op, e),
                                     code=e.response.get("Error", {}).get("Code"))

    # -- Luigi -> Step Functions -------------------------------------------

    def describe(self, arn):
        out = self._call("stepfunctions", "describe_execution", executionArn=arn)
        out.pop("ResponseMetadata", None)
        return out

    def start(self, state_machine_arn, name, payload, rerun_failed=True, max_reruns=20):
        """Start execution ``name`` (or find it): returns ``(arn, name, how, request_id)``
        with ``how`` one of ``started``, ``attached`` (it already ran or runs) and
        ``rerun`` (the earlier one failed; this is ``name-rN``)."""
        body = json.dumps(payload, sort_keys=True)
        how = "started"
        for attempt in range(1, max_reruns + 2):
            this = name if attempt == 1 else "%s-r%d" % (name, attempt)
            try:
                r = self._call("stepfunctions", "start_execution",
                               stateMachineArn=state_machine_arn, name=this, input=body)
                return r["executionArn"], this, how, r["ResponseMetadata"].get("RequestId")
            except StepFunctionsError as e:
                if e.code != "ExecutionAlreadyExists":
                    raise
            arn = execution_arn(state_machine_arn, this)
            status = self.describe(arn)["status"]
            if status not in FAILED:
                return arn, this, "attached", None
            if not rerun_failed:
                raise StepFunctionsError("execution %s already ended %s; a new one is not "
                                         "started (rerun_failed is off)" % (arn, status))
            how = "rerun"
        raise StepFunctionsError("execution %s failed %d times; not starting another"
                                 % (name, max_reruns + 1))

    def wait(self, arn, timeout=3600, poll=2.0, max_poll=30.0, on_poll=None):
        """Poll until the execution ends, with exponential backoff.  Returns the
        final description; raises :class:`WaitTimeout` past ``timeout`` seconds."""
        deadline = time.monotonic() + timeout if timeout else None
        delay = poll
        while True:
            desc = self.describe(arn)
            if desc["status"] not in RUNNING:
                return desc
            if on_poll is not None:
                on_poll(desc)
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout("execution %s still %s after %ds"
                                  % (arn, desc["status"], timeout), desc)
            pause = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
            time.sleep(max(pause, 0.05))
            delay = min(delay * 1.5, max_poll)

    def stop(self, arn, error, cause):
        self._call("stepfunctions", "stop_execution", executionArn=arn,
                   error=error[:256], cause=cause[:32768])

    # -- Step Functions -> Luigi (callbacks) --------------------------------

    def send_success(self, token, output):
        r = self._call("stepfunctions", "send_task_success", taskToken=token,
                       output=json.dumps(output, sort_keys=True))
        return r["ResponseMetadata"].get("RequestId")

    def send_failure(self, token, error, cause):
        r = self._call("stepfunctions", "send_task_failure", taskToken=token,
                       error=error[:256], cause=cause[:32768])
        return r["ResponseMetadata"].get("RequestId")

    def heartbeat(self, token):
        self._call("stepfunctions", "send_task_heartbeat", taskToken=token)

    def receive(self, queue_url, wait=20, visibility=300, count=1):
        r = self._call("sqs", "receive_message", QueueUrl=queue_url,
                       MaxNumberOfMessages=count, WaitTimeSeconds=wait,
                       VisibilityTimeout=visibility)
        return r.get("Messages", [])

    def keep_invisible(self, queue_url, receipt, visibility):
        self._call("sqs", "change_message_visibility", QueueUrl=queue_url,
                   ReceiptHandle=receipt, VisibilityTimeout=visibility)

    def delete(self, queue_url, receipt):
        self._call("sqs", "delete_message", QueueUrl=queue_url, ReceiptHandle=receipt)
