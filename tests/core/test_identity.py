"""core.identity: the groups a verified token gave the user of this request."""

import threading

import pytest

from hgext_luigi.core import identity


@pytest.fixture(autouse=True)
def no_request():
    identity.clear()
    yield
    identity.clear()


def test_no_request_no_groups():
    assert identity.token_groups("alice") == ()


def test_the_token_user_gets_the_token_groups():
    identity.set_request("alice", ["data", "ops"])
    assert identity.token_groups("alice") == ("data", "ops")
    identity.set_request("alice", None)
    assert identity.token_groups("alice") == ()


def test_another_user_does_not_get_the_token_groups():
    """hgweb reports a REMOTE_USER; groups a token gave alice never reach a
    push that names bob."""
    identity.set_request("alice", ["admins"])
    assert identity.token_groups("bob") == ()
    assert identity.token_groups("Alice") == ()  # case matters
    assert identity.token_groups(None) == ()


def test_cleared_after_the_request():
    identity.set_request("alice", ["admins"])
    identity.clear()
    assert identity.token_groups("alice") == ()


def test_groups_cannot_be_changed_through_the_list_given():
    groups = ["data"]
    identity.set_request("alice", groups)
    groups.append("admins")
    assert identity.token_groups("alice") == ("data",)


def test_another_thread_does_not_see_this_request():
    identity.set_request("alice", ["admins"])
    seen = []

    def other():
        seen.append(identity.token_groups("alice"))
        identity.set_request("alice", ["other"])

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen == [()]
    assert identity.token_groups("alice") == ("admins",)
