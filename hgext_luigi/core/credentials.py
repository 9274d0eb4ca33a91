"""Short-lived credentials per task build: STS ``AssumeRole`` on the hg side,
the environment of the task on the runner side.  Plain Python; boto3 is
imported only when a role is configured.

The hg process (hooks, worker, ``hg luigi-run``) holds the server's own
credentials (boto3's chain: instance role, ``AWS_WEB_IDENTITY_TOKEN_FILE``...);
pipeline code never sees them (``[luigi] pass-env``).  For each build of a task
whose family ``[luigi.roles]`` maps to a role, the hg side assumes the role —
session name ``<Family>-<changeset[:12]>``, ``SourceIdentity`` the triggering
identity, session tags changeset/task/run/trigger — and hands the temporary
credentials to the runner through its answer pipe.  The runner puts them in the
task's environment (and boto3's default session) while the task runs, and
removes them when it ends.  Lineage and the audit log record the role, the
session, the assumed-role ARN, the access key id and the expiry: never the
secret key or the session token.
"""

import fnmatch
import os
import re
import sys

ENV_NAMES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
             "AWS_CREDENTIAL_EXPIRATION")
# where the credentials are for; AWS_ENDPOINT_URL only when the server sets one
SCOPE_NAMES = ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
# what boto3 would read instead of the environment's keys
_SHADOWING = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SHARED_CREDENTIALS_FILE",
              "AWS_CONFIG_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN")


class CredentialError(Exception):
    """The role cannot be assumed (STS's own message)."""


def role_for(roles, family):
    """The role ARN of the first ``[luigi.roles]`` glob matching ``family``."""
    for pattern, arn in roles:
        if fnmatch.fnmatchcase(family, pattern):
            return arn
    return None


_NAME_CHARS = re.compile(r"[^\w+=,.@-]", re.ASCII)
_TAG_CHARS = re.compile(r"[^\w .:/=+@-]", re.ASCII)


def session_name(family, changeset):
    """``<Family>-<changeset[:12]>`` in what STS accepts (2-64 of [\\w+=,.@-]),
    the family trimmed so that the changeset always shows."""
    suffix = "-" + (changeset or "none")[:12]
    family = _NAME_CHARS.sub("-", family)[:64 - len(suffix)]
    return (family or "task") + suffix


def source_identity(user):
    """The triggering identity as STS accepts a ``SourceIdentity`` (2-64 of
    [\\w+=,.@-]; it cannot be changed by the session afterwards)."""
    name = _NAME_CHARS.sub("-", user or "unknown")[:64]
    return name if len(name) >= 2 else (name + "--")[:2]


def _tag(value):
    return _TAG_CHARS.sub("-", value or "-")[:256]


class Issuer:
    """Assumes roles with the hg process's own credentials (one STS client per
    process).  ``region``, ``endpoint_url``, ``profile``: ``[luigi] aws-*``."""

    def __init__(self, region=None, endpoint_url=None, profile=None, duration=900):
        self.region, self.endpoint_url, self.profile = region, endpoint_url, profile
        self.duration = duration
        self._sts = self._session = None

    def _client(self, **creds):
        """An STS client: the server's (boto3's chain), or one for ``creds``.
        One session for both, so the service model is loaded once."""
        import boto3

        if self._session is None:
            self._session = boto3.session.Session(profile_name=self.profile,
                                                  region_name=self.region or _env_region())
        return self._session.client("sts", endpoint_url=self.endpoint_url, **creds)

    def issue(self, role, family, changeset, key, run_id, trigger, user):
        """``(record, secret)``: what lineage and the audit log keep, and what the
        task gets.  Raises :class:`CredentialError` with STS's message."""
        from botocore.exceptions import BotoCoreError, ClientError

        name = session_name(family, changeset)
        try:
            if self._sts is None:
                self._sts = self._client()
            got = self._sts.assume_role(
                RoleArn=role, RoleSessionName=name, DurationSeconds=self.duration,
                SourceIdentity=source_identity(user),
                Tags=[{"Key": k, "Value": _tag(v)} for k, v in (
                    ("changeset", changeset), ("task", key), ("run", run_id),
                    ("trigger", trigger))])
            c = got["Credentials"]
            me = self._client(aws_access_key_id=c["AccessKeyId"],
                              aws_secret_access_key=c["SecretAccessKey"],
                              aws_session_token=c["SessionToken"]).get_caller_identity()
        except (ClientError, BotoCoreError) as e:
            raise CredentialError("cannot assume role %s for %s: %s" % (role, family, e))
        expires = c["Expiration"].isoformat() if hasattr(c["Expiration"], "isoformat") \
            else str(c["Expiration"])
        record = {"role": role, "session": name, "assumed_role": me["Arn"],
                  "access_key_id": c["AccessKeyId"], "expires": expires,
                  "source_identity": source_identity(user)}
        secret = {"AWS_ACCESS_KEY_ID": c["AccessKeyId"],
                  "AWS_SECRET_ACCESS_KEY": c["SecretAccessKey"],
                  "AWS_SESSION_TOKEN": c["SessionToken"],
                  "AWS_CREDENTIAL_EXPIRATION": expires}
        region = self.region or _env_region()
        if region:
            secret.update(AWS_REGION=region, AWS_DEFAULT_REGION=region)
        if self.endpoint_url:
            secret["AWS_ENDPOINT_URL"] = self.endpoint_url
        return record, secret


def _env_region():
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


# -- the runner side ----------------------------------------------------------

_saved = None


def activate(secret):
    """Put a task's credentials in this process's environment for the task's
    run: boto3's default chain finds them first, AnsiblePlaybookTask hands them
    on.  Whatever else could make boto3 look elsewhere is set aside."""
    global _saved
    deactivate()
    if not secret:
        return
    names = ENV_NAMES + SCOPE_NAMES + _SHADOWING
    _saved = {n: os.environ.get(n) for n in names}
    for n in _SHADOWING + SCOPE_NAMES:
        os.environ.pop(n, None)
    os.environ.update({k: v for k, v in secret.items() if k in ENV_NAMES + SCOPE_NAMES})
    _reset_boto3()


def deactivate():
    """Remove the task's credentials (when it ends, whatever the outcome)."""
    global _saved
    if _saved is None:
        return
    for name, value in _saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _saved = None
    _reset_boto3()


def active():
    """The names of the credential variables a task has now (for child
    processes it starts), () outside a task with a role."""
    if _saved is None:
        return ()
    return tuple(n for n in ENV_NAMES + SCOPE_NAMES if n in os.environ)


def _reset_boto3():
    boto3 = sys.modules.get("boto3")
    if boto3 is not None:
        boto3.DEFAULT_SESSION = None  # clients made from now on read the new values
