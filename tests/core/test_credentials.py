"""core.credentials: roles by family, STS sessions against the real
``moto_server`` (the ``moto`` fixture), and a task's environment on the
runner side."""

import os
import re

import pytest

from hgext_luigi.core import credentials

ROLE = "arn:aws:iam::123456789012:role/clean-role"
CS = "0123456789abcdef" * 2 + "01234567"
STS_NAME = re.compile(r"[\w+=,.@-]{2,64}\Z", re.ASCII)


# -- decisions ------------------------------------------------------------------------

def test_the_first_matching_glob_names_the_role():
    roles = [("Clean", "arn:1"), ("Clean*", "arn:2"), ("*", "arn:3")]
    assert credentials.role_for(roles, "Clean") == "arn:1"
    assert credentials.role_for(roles, "CleanSales") == "arn:2"
    assert credentials.role_for(roles, "Report") == "arn:3"
    assert credentials.role_for(roles[:2], "Report") is None
    assert credentials.role_for(roles[:2], "clean") is None  # case-sensitive
    assert credentials.role_for([], "Clean") is None


def test_session_name_shows_family_and_changeset():
    assert credentials.session_name("CleanSales", CS) == "CleanSales-0123456789ab"
    assert credentials.session_name("X", None) == "X-none"


@pytest.mark.parametrize("family", [
    "A" * 200, "Évil Family\n(with spaces)", "", "../../etc", "a;rm -rf /", "名前",
])
def test_session_name_is_what_sts_accepts_whatever_the_family(family):
    name = credentials.session_name(family, CS)
    assert STS_NAME.match(name), name
    assert name.endswith("-" + CS[:12])  # the changeset always shows


@pytest.mark.parametrize("user, expected", [
    ("alice", "alice"), ("Alice <alice@example.com>", "Alice--alice@example.com-"),
    ("a", "a-"), ("", "unknown"), (None, "unknown"), ("x" * 100, "x" * 64),
    ("é", "--"),
])
def test_source_identity_is_what_sts_accepts(user, expected):
    got = credentials.source_identity(user)
    assert got == expected
    assert STS_NAME.match(got)


# -- the hg side: STS ---------------------------------------------------------------------

def test_a_session_of_the_role_for_one_build(moto, server_credentials):
    issuer = credentials.Issuer("us-east-1", moto.url, duration=900)
    record, secret = issuer.issue(ROLE, "CleanSales", CS, "CleanSales(region=n)", "run1",
                                  "push", "Alice <alice@example.com>")
    assert record["role"] == ROLE
    assert record["session"] == "CleanSales-0123456789ab"
    assert record["assumed_role"] == \
        "arn:aws:sts::123456789012:assumed-role/clean-role/CleanSales-0123456789ab"
    assert record["source_identity"] == "Alice--alice@example.com-"
    assert record["access_key_id"] == secret["AWS_ACCESS_KEY_ID"] != "AKIASERVERKEY0000001"
    assert record["expires"] == secret["AWS_CREDENTIAL_EXPIRATION"]
    # the record lineage keeps holds no secret part
    assert secret["AWS_SECRET_ACCESS_KEY"] not in repr(record)
    assert secret["AWS_SESSION_TOKEN"] not in repr(record)
    assert set(secret) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                           "AWS_CREDENTIAL_EXPIRATION", "AWS_REGION", "AWS_DEFAULT_REGION",
                           "AWS_ENDPOINT_URL"}
    assert secret["AWS_ENDPOINT_URL"] == moto.url and secret["AWS_REGION"] == "us-east-1"
    # the task gets the role's, working, credentials
    import boto3

    me = boto3.client("sts", endpoint_url=moto.url, region_name="us-east-1",
                      aws_access_key_id=secret["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=secret["AWS_SECRET_ACCESS_KEY"],
                      aws_session_token=secret["AWS_SESSION_TOKEN"]).get_caller_identity()
    assert me["Arn"] == record["assumed_role"]


def test_each_build_gets_its_own_session(moto, server_credentials):
    issuer = credentials.Issuer("us-east-1", moto.url)
    one, _ = issuer.issue(ROLE, "Clean", CS, "Clean()", "run1", "push", "alice")
    two, _ = issuer.issue(ROLE, "Clean", CS, "Clean()", "run2", "push", "alice")
    assert one["access_key_id"] != two["access_key_id"]


def test_hostile_names_still_make_a_valid_request(moto, server_credentials):
    issuer = credentials.Issuer("us-east-1", moto.url)
    record, _ = issuer.issue(ROLE, "Évil\nFamily" * 10, CS, "K(x='\n')" * 50,
                             "run\x00" * 100, "push;", "<script>@example.com")
    assert STS_NAME.match(record["session"]) and STS_NAME.match(record["source_identity"])


def test_a_role_that_cannot_be_assumed_raises_sts_s_message(moto, server_credentials):
    issuer = credentials.Issuer("us-east-1", moto.url)
    with pytest.raises(credentials.CredentialError) as e:
        issuer.issue("not-a-role", "Clean", CS, "Clean()", "run1", "push", "alice")
    assert str(e.value).startswith("cannot assume role not-a-role for Clean: ")
    assert "RoleArn" in str(e.value)


def test_no_server_credentials_is_a_credential_error(moto, server_credentials, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    issuer = credentials.Issuer("us-east-1", moto.url)
    with pytest.raises(credentials.CredentialError, match="cannot assume role"):
        issuer.issue(ROLE, "Clean", CS, "Clean()", "run1", "push", "alice")


# -- the runner side: the task's environment --------------------------------------------------

@pytest.fixture
def clean_env(monkeypatch):
    for name in credentials.ENV_NAMES + credentials.SCOPE_NAMES + credentials._SHADOWING:
        monkeypatch.delenv(name, raising=False)
    yield
    credentials.deactivate()


SECRET = {"AWS_ACCESS_KEY_ID": "ASIATASK", "AWS_SECRET_ACCESS_KEY": "task-secret",
          "AWS_SESSION_TOKEN": "task-token", "AWS_CREDENTIAL_EXPIRATION": "2030-01-01T00:00:00+00:00",
          "AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-1"}


def test_a_task_has_its_credentials_while_it_runs_only(clean_env, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "server-profile")  # would make boto3 look elsewhere
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    assert credentials.active() == ()
    credentials.activate(SECRET)
    assert {k: os.environ.get(k) for k in SECRET} == SECRET
    assert "AWS_PROFILE" not in os.environ
    assert set(credentials.active()) == set(SECRET)
    credentials.deactivate()
    assert os.environ["AWS_PROFILE"] == "server-profile"
    assert os.environ["AWS_REGION"] == "us-east-1"
    assert "AWS_SECRET_ACCESS_KEY" not in os.environ and "AWS_SESSION_TOKEN" not in os.environ
    assert credentials.active() == ()
    credentials.deactivate()  # twice: nothing more happens
    assert os.environ["AWS_PROFILE"] == "server-profile"


def test_the_next_task_does_not_inherit_the_last_ones(clean_env):
    credentials.activate(SECRET)
    credentials.activate({"AWS_ACCESS_KEY_ID": "ASIANEXT", "AWS_SECRET_ACCESS_KEY": "s2"})
    assert os.environ["AWS_ACCESS_KEY_ID"] == "ASIANEXT"
    assert "AWS_SESSION_TOKEN" not in os.environ  # the last task's token is gone
    credentials.activate(None)  # a task without a role
    assert "AWS_ACCESS_KEY_ID" not in os.environ and credentials.active() == ()


def test_only_credential_names_reach_the_environment(clean_env, monkeypatch):
    """An answer on the pipe naming other variables sets none of them."""
    path = os.environ.get("PATH")
    credentials.activate(dict(SECRET, PATH="/evil", LD_PRELOAD="/evil.so",
                              AWS_PROFILE="evil", PYTHONPATH="/evil"))
    assert os.environ.get("PATH") == path
    assert "LD_PRELOAD" not in os.environ and "AWS_PROFILE" not in os.environ
    assert os.environ.get("PYTHONPATH") != "/evil"
    credentials.deactivate()


def test_boto3_clients_made_afterwards_see_the_task_s_credentials(clean_env):
    import boto3

    boto3.setup_default_session(region_name="us-east-1")
    credentials.activate(SECRET)
    assert boto3.DEFAULT_SESSION is None
    assert boto3.session.Session().get_credentials().access_key == "ASIATASK"
    credentials.deactivate()
    assert boto3.DEFAULT_SESSION is None
