"""``[luigi] acl``: who may push, run and rebuild which task.

Ownership is ``.hgluigi [owners]`` as the server had it before the push; the
groups are the server's ``[luigi.groups]`` and the groups claim of an OIDC
token.  Pushes by path and over HTTP (``hgext_luigi.wsgi`` with a real token)."""

import os
import subprocess

import pytest

from conftest import make_server_repo, seeded_clone
from oidcserver import App, Provider

OWNERS = """[owners]
CleanSales = @sales
SalesReport = bob
* = @platform
"""


def account():
    return subprocess.run(["id", "-un"], capture_output=True, text=True,
                          check=True).stdout.strip()


def tip(repo):
    return repo("log", "-r", "tip", "-T", "{node}").stdout


@pytest.fixture
def owned(hg, tmp_path):
    """A server holding the example pipeline and its owners, then ``acl =
    enforce``; a clone to push from."""
    server = make_server_repo(hg, str(tmp_path / "server"), "acl = warn\n")
    work = seeded_clone(hg, server, str(tmp_path / "work"))
    work.write(".hgluigi", OWNERS)
    work.commit("owners")
    work("push", server.path)
    server.config("[luigi]\nacl = enforce\n")
    return server, work


def audit(repo, kind):
    return [r for r in repo.json("luigi-audit") if r["kind"] == kind]


def test_a_non_owner_push_is_rejected_naming_task_owners_and_paths(owned):
    server, work = owned
    before = tip(server)
    work.write("data/raw/sales-north.csv", "2026-11-09,Widget,1,1.00\n", "a")
    work.commit("north")
    out = work("push", server.path, check=False)
    assert out.returncode != 0
    err = out.stdout + out.stderr
    assert "luigi acl rejected the push: %s does not own what" % account() in err
    assert "CleanSales: CleanSales is owned by @sales; %s is not one of them" % account() in err
    assert "changed: data/raw/sales-north.csv" in err
    assert tip(server) == before  # the repository is unchanged
    # the refusal is on the record, although the push's transaction rolled back
    rejected = audit(server, "push-rejected")
    assert rejected and rejected[-1]["actor"] == account()
    decision = audit(server, "acl")[-1]["data"]
    assert decision["allowed"] is False and decision["denied"][0]["task"] == "CleanSales"


def test_an_owner_push_is_accepted(owned):
    server, work = owned
    server.config("[luigi.groups]\nsales = someone, %s\n" % account())
    work.write("data/raw/sales-north.csv", "2026-11-09,Widget,1,1.00\n", "a")
    node = work.commit("north")
    work("push", server.path)
    assert tip(server) == node
    assert audit(server, "acl")[-1]["data"]["allowed"] is True


def test_a_push_cannot_grant_itself_ownership(owned):
    server, work = owned
    before = tip(server)
    work.write(".hgluigi", OWNERS.replace("@sales", "@sales %s" % account()))
    work.write("data/raw/sales-north.csv", "2026-11-09,Widget,1,1.00\n", "a")
    work.commit("make me an owner, and change north")
    out = work("push", server.path, check=False)
    assert out.returncode != 0 and "does not own" in out.stdout + out.stderr
    assert tip(server) == before
    # even split in two changesets of one push: owners come from before the push
    work("strip", "-r", ".", "--config", "extensions.strip=")
    work.write(".hgluigi", OWNERS.replace("@sales", "@sales %s" % account()))
    work.commit("make me an owner")
    work.write("data/raw/sales-north.csv", "2026-11-09,Widget,1,1.00\n", "a")
    work.commit("change north")
    out = work("push", server.path, check=False)
    assert out.returncode != 0 and "CleanSales is owned by @sales;" in out.stdout + out.stderr


def test_server_deny_rules_come_first(owned):
    server, work = owned
    server.config("[luigi.groups]\nsales = %s\n[luigi.acl.deny]\nClean* = %s\n"
                  % (account(), account()))
    work.write("data/raw/sales-north.csv", "2026-11-09,Widget,1,1.00\n", "a")
    work.commit("north")
    out = work("push", server.path, check=False)
    assert out.returncode != 0
    assert "is denied Clean* by the server's [luigi.acl.deny]" in out.stdout + out.stderr


def test_rebuild_all_needs_allow_force(owned):
    server, work = owned
    server.config("[luigi.groups]\nplatform = %s\n" % account())
    work.write("README", "not watched\n")
    work.commit("readme [luigi all]")
    out = work("push", server.path, check=False)
    assert out.returncode != 0
    assert "[luigi all] / --all: %s may not rebuild every task" % account() in out.stderr
    server.config("[luigi.acl]\nallow-force = @platform\n")
    work("push", server.path)


def test_warn_records_and_lets_through(owned):
    server, work = owned
    server.config("[luigi]\nacl = warn\n")
    work.write("data/raw/sales-north.csv", "2026-11-09,Widget,1,1.00\n", "a")
    node = work.commit("north")
    work("push", server.path)
    assert tip(server) == node
    decision = audit(server, "acl")[-1]
    assert decision["data"]["mode"] == "warn" and decision["data"]["allowed"] is False


def test_no_owners_before_means_nobody_owns(hg, tmp_path):
    server = make_server_repo(hg, str(tmp_path / "server"), "acl = enforce\n")
    work = seeded_clone(hg, server, str(tmp_path / "work"))
    out = work("push", server.path, check=False)
    assert out.returncode != 0
    assert "the revision has no [owners] section in .hgluigi" in out.stdout + out.stderr


def test_luigi_run_refuses_what_the_account_does_not_own(owned):
    server, work = owned
    server.config("[luigi]\nacl = warn\n")  # let the change in
    work.write("data/raw/sales-north.csv", "2026-11-09,Widget,1,1.00\n", "a")
    work.commit("north")
    work("push", server.path)
    server.config("[luigi]\nacl = enforce\n")
    out = server("luigi-run", "-r", "tip", check=False)
    assert out.returncode == 255
    assert "abort: luigi acl: %s does not own what" % account() in out.stderr
    assert "CleanSales: CleanSales is owned by @sales" in out.stderr
    assert [r for r in audit(server, "build")] == []  # nothing was built
    server.config("[luigi.groups]\nsales = %s\n" % account())
    server("luigi-run", "-r", "tip")


# -- over HTTP, with the identity provider's groups ---------------------------

@pytest.fixture(scope="module")
def idp():
    provider = Provider()
    yield provider
    provider.stop()


def test_http_push_uses_the_token_groups(owned, idp, hg):
    server, work = owned
    server.config("[luigi.oidc]\nissuer = %s\naudience = hg-test\n" % idp.url)
    app = App(hg, server)
    try:
        work.write("data/raw/sales-north.csv", "2026-11-09,Widget,1,1.00\n", "a")
        node = work.commit("north")
        no_group = idp.token(preferred_username="carol")
        out = work("push", app.with_token(no_group), check=False)
        assert out.returncode != 0
        assert "carol does not own" in out.stdout + out.stderr
        assert tip(server) != node
        sales = idp.token(preferred_username="dave", groups=["sales"])
        work("push", app.with_token(sales))
        assert tip(server) == node
        decision = audit(server, "acl")[-1]
        assert decision["actor"] == "dave" and decision["data"]["groups"] == ["sales"]
    finally:
        app.stop()


def test_the_worker_checks_again_with_the_groups_of_the_push(owned, idp, hg):
    server, work = owned
    server.config("[luigi]\non-push = queue\n[luigi.oidc]\nissuer = %s\naudience = hg-test\n"
                  % idp.url)
    app = App(hg, server)
    try:
        work.write("data/raw/sales-north.csv", "2026-11-09,Widget,1,1.00\n", "a")
        work.commit("north")
        work("push", app.with_token(idp.token(preferred_username="dave", groups=["sales"])))
    finally:
        app.stop()
    entry = server.json("luigi-queue")[-1]
    assert entry["pusher"] == "dave"
    out = server("luigi-worker", "--once")
    assert "1 queue entries processed, 0 failed" in out.stdout
    builds = [r for r in audit(server, "build") if r["data"]["status"] == "success"]
    assert builds and all(r["actor"] == "dave" for r in builds)
    taken = audit(server, "queue-taken")
    assert taken and taken[-1]["data"]["entry"] == entry["id"]
    assert audit(server, "queue-finished")[-1]["data"]["state"] == "done"


def test_the_worker_refuses_what_the_pusher_does_not_own(owned):
    """A push let in by acl = warn, built after the server switched to enforce:
    the worker checks again, for the pusher, and builds nothing."""
    server, work = owned
    server.config("[luigi]\nacl = warn\non-push = queue\n")
    work.write("data/raw/sales-north.csv", "2026-11-09,Widget,1,1.00\n", "a")
    work.commit("north")
    work("push", server.path)
    server.config("[luigi]\nacl = enforce\n")
    out = server("luigi-worker", "--once", check=False)
    assert out.returncode == 1
    assert "luigi acl: %s does not own what" % account() in out.stderr
    entry = server.json("luigi-queue")[-1]
    assert entry["state"] == "failed" and "does not own" in entry["error"]
    assert audit(server, "build") == []


def test_ssh_gateway_user_is_the_identity_without_the_client_address(owned, tmp_path):
    """An ssh gateway's REMOTE_USER is who owns; the client address that the
    recorded pusher carries plays no part."""
    server, work = owned
    server.config("[luigi.groups]\nsales = dave\n")
    helpers = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers")
    with open(os.path.join(helpers, "dummyssh")) as f:
        script = f.read()
    ssh = str(tmp_path / "gateway-ssh")
    with open(ssh, "w") as f:
        f.write(script.replace('export SSH_CLIENT\n',
                               'export SSH_CLIENT\nREMOTE_USER=dave\nexport REMOTE_USER\n'))
    os.chmod(ssh, 0o755)
    work.write("data/raw/sales-north.csv", "2026-11-09,Widget,1,1.00\n", "a")
    node = work.commit("north")
    work("push", "--config", "ui.ssh=%s" % ssh, "ssh://hg@localhost/%s" % server.path)
    assert tip(server) == node
    decision = audit(server, "acl")[-1]
    assert decision["actor"] == "dave" and decision["data"]["allowed"] is True


# -- what an attacker tried (each passed before it was fixed) -----------------

MARKER = '''
import os as _os
open(%r, "w").write("pushed code ran")
'''


def test_a_refused_push_never_ran_its_code(owned, tmp_path):
    """Access is decided from accepted code alone: module-level code of a
    refused push (which could rewrite the server's hgrc) never runs."""
    server, work = owned
    server.config("[luigi]\ngate = true\n")
    marker = str(tmp_path / "ran")
    work.write("pipelines/sales.py", MARKER % marker, "a")
    work.commit("payload")
    out = work("push", server.path, check=False)
    assert out.returncode != 0 and "luigi acl rejected the push" in out.stderr
    assert not os.path.exists(marker)


def test_pipeline_code_touches_every_task(owned):
    """Modules share one process, where code can change any task: the owner of
    one task changing its module needs every owner (and the `*` one)."""
    server, work = owned
    server.config("[luigi.groups]\nsales = %s\n" % account())
    work.write("pipelines/sales.py", "\n# harmless?\n", "a")
    work.commit("edit the module of CleanSales")
    out = work("push", server.path, check=False)
    assert out.returncode != 0
    err = out.stderr
    assert "SalesReport: SalesReport is owned by bob" in err
    assert "DocsIndex: DocsIndex is owned by @platform" in err
    assert "*: * is owned by @platform" in err


def test_owners_and_luigi_cfg_are_pipeline_code(owned):
    """Granting oneself everything in a push of .hgluigi alone needs the `*`
    owners (who administer ownership); configuring other teams' tasks through
    luigi.cfg touches every task."""
    server, work = owned
    server.config("[luigi.groups]\nsales = %s\n" % account())
    before = tip(server)
    work.write(".hgluigi", "[owners]\n* = %s\n" % account())
    work.commit("make me the owner of everything")
    out = work("push", server.path, check=False)
    assert out.returncode != 0 and "*: * is owned by @platform" in out.stderr
    assert "changed: .hgluigi" in out.stderr
    work("strip", "-r", ".", "--config", "extensions.strip=")
    work.write("luigi.cfg", "[core]\nparallel_scheduling = true\n")
    work.commit("configure")
    out = work("push", server.path, check=False)
    assert out.returncode != 0 and "changed: luigi.cfg" in out.stderr
    assert tip(server) == before


def test_a_merge_brings_in_what_its_other_parent_changed(owned):
    """A branch [luigi] branches does not build is checked too, and a clean
    merge is judged by what it changes against the base, not ctx.files()."""
    server, work = owned
    server.config("[luigi]\nbranches = default\n")
    work("branch", "scratch")
    work.write("data/raw/sales-north.csv", "2026-11-09,Widget,1,1.00\n", "a")
    work.commit("scratch work")
    out = work("push", "--new-branch", server.path, check=False)
    assert out.returncode != 0 and "CleanSales is owned by @sales" in out.stderr
    # allowed on scratch by a server that lets it in (warn), then merged
    server.config("[luigi]\nacl = warn\n")
    work("push", "--new-branch", server.path)
    server.config("[luigi]\nacl = enforce\n")
    work("update", "default")
    work("merge", "scratch")
    work.commit("merge scratch")
    out = work("push", server.path, check=False)
    assert out.returncode != 0 and "changed: data/raw/sales-north.csv" in out.stderr


def test_ownership_revoked_on_the_branch_stays_revoked(owned):
    """Owners are read at the bases and at the branch's newer heads: building on
    an older revision does not bring back ownership taken away since."""
    server, work = owned
    server.config("[luigi.groups]\nplatform = %s\n" % account())
    work.write(".hgluigi", OWNERS.replace("CleanSales = @sales",
                                          "CleanSales = %s" % account()))
    work.commit("CleanSales to me")
    work("push", server.path)
    work.write(".hgluigi", OWNERS)
    work.commit("CleanSales back to @sales")
    work("push", server.path)
    server.config("[luigi.groups]\nplatform = \n")  # the account is no admin any more
    work("update", "-r", "2")  # the revision where the account owned CleanSales
    assert "CleanSales = %s" % account() in work("cat", ".hgluigi").stdout
    work.write("data/raw/sales-north.csv", "2026-11-09,Widget,1,1.00\n", "a")
    work.commit("north, on an old revision")
    out = work("push", "-f", server.path, check=False)
    assert out.returncode != 0 and "CleanSales is owned by @sales" in out.stderr
