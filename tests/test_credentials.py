"""Per-task short-lived credentials: ``[luigi.roles]`` and STS ``AssumeRole``.

Against a real ``moto_server``: the hg process assumes the role with the
server's own credentials, the task sees only the assumed role's, fresh for each
build, and lineage and the audit log record everything about them but the
secret parts.
"""

import json
import os

import pytest

from conftest import Repo, make_server_repo

ROLE = "arn:aws:iam::123456789012:role/who-role"
# the server's own long-lived credentials: never in a pipeline, a file or output
SERVER_KEY = "AKIACANARYSERVER0001"
SERVER_SECRET = "canary-server-secret-7d1e0b9a"

FLOWS = '''
import hashlib
import json
import os

import luigi

from hgext_luigi import HgTask

DUMP = %(dump)r


def aws_env():
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_")}


class Who(HgTask):
    name = luigi.Parameter()
    watches = ["data/{name}.txt"]

    def output(self):
        return self.stamped_target("who-%%s.json" %% self.name)

    def run(self):
        import boto3

        env = aws_env()
        me = boto3.client("sts").get_caller_identity()
        # the secret parts go to the test by a side door, to look for them later
        with open(os.path.join(DUMP, self.name + ".json"), "w") as f:
            json.dump({"secret": env.get("AWS_SECRET_ACCESS_KEY"),
                       "token": env.get("AWS_SESSION_TOKEN")}, f)
        with self.output().open("w") as f:
            json.dump({"arn": me["Arn"], "key": env.get("AWS_ACCESS_KEY_ID"),
                       "names": sorted(env)}, f)


class Both(HgTask):
    watches = ["data/both.txt"]

    def requires(self):
        return [Who(name="a"), Who(name="b")]

    def output(self):
        return self.stamped_target("both.json")

    def run(self):
        with self.output().open("w") as f:
            json.dump({"names": sorted(aws_env())}, f)
'''


@pytest.fixture
def roles_repo(hg, tmp_path, moto):
    dump = tmp_path / "dump"
    dump.mkdir()
    server = make_server_repo(hg, str(tmp_path / "server"), "")
    hg("clone", "-q", server.path, str(tmp_path / "work"))
    work = Repo(hg, str(tmp_path / "work"))
    work.write("flows/__init__.py", FLOWS % {"dump": str(dump)})
    for name in ("a", "b", "both"):
        work.write("data/%s.txt" % name, name + "\n")
    work.commit("flows")
    work("push", server.path)
    server.config("module = flows\naws-endpoint-url = %s\naws-region = us-east-1\n"
                  "[luigi.roles]\nWho = %s\n" % (moto.url, ROLE))
    server.env = dict(AWS_ACCESS_KEY_ID=SERVER_KEY, AWS_SECRET_ACCESS_KEY=SERVER_SECRET,
                      AWS_EC2_METADATA_DISABLED="true")
    server.dump = str(dump)
    return server


def run(server, *args, check=True):
    return server("luigi-run", "-r", "tip", *args, env=server.env, check=check)


def outputs(server, name):
    rev = server("log", "-r", "tip", "-T", "{node}").stdout
    with open(os.path.join(server.state, "outputs", rev, name)) as f:
        return json.load(f)


def everything_written(server, proc):
    """Every byte a user or an attacker could read afterwards: hg's output, the
    server repository's files (lineage, audit, logs, outputs, trees)."""
    chunks = [proc.stdout, proc.stderr]
    for top, _dirs, files in os.walk(server.path):
        for name in files:
            with open(os.path.join(top, name), "rb") as f:
                chunks.append(f.read().decode("latin-1"))
    return "\n".join(chunks)


def test_each_build_gets_its_own_session_of_the_role(roles_repo):
    server = roles_repo
    proc = run(server)
    rev = server("log", "-r", "tip", "-T", "{node}").stdout
    a, b = outputs(server, "who-a.json"), outputs(server, "who-b.json")
    session = "Who-%s" % rev[:12]
    assert a["arn"] == "arn:aws:sts::123456789012:assumed-role/who-role/%s" % session
    assert b["arn"] == a["arn"]
    # fresh credentials per build: two tasks of one run never share a key
    assert a["key"].startswith("ASIA") and b["key"].startswith("ASIA")
    assert a["key"] != b["key"]
    # the task that has no role sees no credential at all: the previous task's
    # are gone, the server's never came
    assert outputs(server, "both.json")["names"] == []
    # lineage: role, session, assumed role, key id and expiry; no secret
    builds = {b["key"]: b for b in server.json("luigi-lineage", "tip")}
    issued = builds["Who(name=a)"]["extra"]["credentials"]
    assert issued["role"] == ROLE and issued["session"] == session
    assert issued["assumed_role"] == a["arn"] and issued["access_key_id"] == a["key"]
    assert issued["expires"] and issued["source_identity"]
    assert "credentials" not in (builds["Both()"]["extra"] or {})
    # the audit log has one credentials record per build of Who
    audit = [r for r in server.json("luigi-audit") if r["kind"] == "credentials"]
    assert sorted(r["data"]["access_key_id"] for r in audit) == sorted([a["key"], b["key"]])
    # nothing secret anywhere: not the server's, not a session's
    text = everything_written(server, proc)
    assert SERVER_KEY not in text and SERVER_SECRET not in text
    for name in ("a", "b"):
        with open(os.path.join(server.dump, name + ".json")) as f:
            secrets = json.load(f)
        assert secrets["token"] and secrets["secret"]
        assert secrets["token"] not in text and secrets["secret"] not in text


def test_a_rebuild_gets_a_new_session(roles_repo):
    server = roles_repo
    run(server)
    first = outputs(server, "who-a.json")["key"]
    run(server, "--all")
    assert outputs(server, "who-a.json")["key"] != first


def test_a_role_that_cannot_be_assumed_fails_the_task_before_its_code(roles_repo,
                                                                     denying_sts):
    server = roles_repo
    server.config("[luigi]\naws-endpoint-url = %s\n" % denying_sts)
    proc = run(server, check=False)
    assert proc.returncode == 1
    assert "AccessDenied" in proc.stdout and "not authorized to perform" in proc.stdout
    assert os.listdir(server.dump) == []  # no line of Who.run ran
    builds = {b["key"]: b for b in server.json("luigi-lineage", "tip")}
    assert builds["Who(name=a)"]["status"] == "failed"
    assert "AccessDenied" in builds["Who(name=a)"]["error"]
    denied = [r for r in server.json("luigi-audit") if r["kind"] == "credentials"]
    assert denied and all("AccessDenied" in r["data"]["error"] for r in denied)


def test_forked_luigi_workers_get_their_own_sessions(roles_repo):
    """With several Luigi workers, each task runs in a process of its own: the
    requests of both reach hg and each gets its answer."""
    server = roles_repo
    run(server, "--workers", "2")
    a, b = outputs(server, "who-a.json"), outputs(server, "who-b.json")
    assert a["key"].startswith("ASIA") and b["key"].startswith("ASIA") and a["key"] != b["key"]
    assert outputs(server, "both.json")["names"] == []
    assert verify_ok(server)


def verify_ok(server):
    return server("luigi-audit", "--verify").returncode == 0


FORGER = '''

class Forger(HgTask):
    """Asks hg for a build of a task this run does not build (and so for its
    role), as any code of the run could."""
    watches = ["data/forger.txt"]

    def output(self):
        return self.stamped_target("forger.json")

    def run(self):
        from hgext_luigi.pipeline import context

        ctx = context.current()
        try:
            answer = context.request(op="start-build", key="Who(name=a)", family="Who",
                                     task_id="Who_x", params={"name": "a"},
                                     changeset=ctx.stamp_for("Who(name=a)"))
            got = {"build": answer.get("build"), "role": bool(answer.get("credentials"))}
        except context.RequestError as e:
            got = str(e)
        with self.output().open("w") as f:
            json.dump({"got": got}, f)
'''


def test_code_of_the_run_cannot_get_the_role_of_a_task_it_does_not_build(roles_repo,
                                                                        tmp_path):
    server = roles_repo
    run(server)  # Who(name=a) built: the next run reuses it
    from conftest import Repo

    work = Repo(server.hg, str(tmp_path / "work"))
    work("pull", "-u", server.path)
    work.write("flows/__init__.py", FORGER, "a")
    work.write("data/forger.txt", "x\n")
    work.commit("forger")
    work("push", server.path)
    run(server, "--task", "Forger")  # Who is not built by this run
    got = outputs(server, "forger.json")["got"]
    assert got["build"] and got["role"] is False  # recorded, without a role
    creds = [r for r in server.json("luigi-audit") if r["kind"] == "credentials"]
    assert len(creds) == 2  # the first run's two builds of Who, nothing since
