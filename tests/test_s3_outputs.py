"""Stamped outputs in S3: ``[luigi] output-root = s3://bucket/prefix``.

Against a real ``moto_server`` over HTTP: the pipeline writes through Luigi's
``S3Target``, lineage records each object's URL, size and sha256, and a user
finds an object's build, verifies it, and sees it tampered with, as with files
on disk.
"""

import hashlib
import json
import os

import pytest

from conftest import Repo, make_server_repo
from hgext_luigi.core import lineage, objects

FLOWS = '''
import json

import luigi
from luigi.contrib.s3 import S3Target

from hgext_luigi import HgTask


class Clean(HgTask):
    watches = ["data/raw.txt"]

    def output(self):
        return self.stamped_target("clean/raw.txt")

    def run(self):
        with open(self.source_path("data/raw.txt")) as f:
            text = f.read()
        with self.output().open("w") as f:
            f.write(text.upper())


class Parts(HgTask):
    """A directory output: the objects under a prefix."""
    watches = ["data/raw.txt"]

    def output(self):
        return self.stamped_target("parts")

    def run(self):
        root = self.output()
        for name in ("b.txt", "a/z.txt", "a/b/c.txt", "a/a.txt"):
            with S3Target(root.path + "/" + name, client=root.fs).open("w") as f:
                f.write("part " + name)


class Report(HgTask):
    watches = ["data/report.cfg"]

    def requires(self):
        return {"clean": Clean(), "parts": Parts()}

    def output(self):
        return self.stamped_target("report.json")

    def run(self):
        with self.input()["clean"].open("r") as f:  # read back from S3
            lines = f.read().splitlines()
        with self.output().open("w") as f:
            json.dump({"lines": len(lines), "first": lines[0]}, f)
'''


def node(repo, rev="tip"):
    return repo("log", "-r", rev, "-T", "{node}").stdout


def aws_env(moto, tmp_path):
    """What hg gets: moto's endpoint and dummy keys, none of the host's AWS files."""
    return dict(moto.env(), AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
                AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def s3repo(empty_repo, moto, tmp_path):
    repo = empty_repo
    repo.bucket = "outputs-%s" % os.path.basename(str(tmp_path)).lower().replace("_", "-")[:40]
    repo.s3 = moto.client("s3")
    repo.s3.create_bucket(Bucket=repo.bucket)
    repo.write("flows/__init__.py", FLOWS)
    repo.write("data/raw.txt", "hello\nworld\n")
    repo.write("data/report.cfg", "v1\n")
    repo.commit("pipeline")
    # the pipeline reaches S3 through the AWS_* variables the server passes it
    repo.config("[luigi]\nmodule = flows\noutput-root = s3://%s/builds/\n"
                "pass-env = PATH HOME LANG AWS_*\n" % repo.bucket)
    repo.env = aws_env(moto, tmp_path)
    return repo


def run(repo, *args, check=True):
    return repo("luigi-run", *args, env=repo.env, check=check)


def body(repo, key):
    return repo.s3.get_object(Bucket=repo.bucket, Key=key)["Body"].read()


def test_outputs_go_to_s3_and_lineage_finds_them(s3repo):
    repo = s3repo
    run(repo)
    rev = node(repo)
    key = "builds/%s/clean/raw.txt" % rev
    assert body(repo, key) == b"HELLO\nWORLD\n"
    report = json.loads(body(repo, "builds/%s/report.json" % rev))
    assert report == {"lines": 2, "first": "HELLO"}  # Report read Clean's object
    assert not os.path.exists(os.path.join(repo.state, "outputs", rev))  # nothing local

    url = "s3://%s/%s" % (repo.bucket, key)
    chain = repo.json("luigi-lineage", "--output", url)
    assert chain[0]["key"] == "Clean()" and chain[0]["changeset"] == rev
    [recorded] = chain[0]["outputs"]
    data = body(repo, key)
    assert recorded == {"path": url, "size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest()}
    text = repo("luigi-lineage", "--output", url, env=repo.env).stdout
    assert "Clean() at %s" % rev in text and "output %s" % url in text
    # CHANGESET/PATH under the output root names the same object
    assert repo.json("luigi-lineage", "--output", "%s/clean/raw.txt" % rev)[0][
        "outputs"] == [recorded]

    # the report's lineage goes back through both inputs, by their URLs
    chain = repo.json("luigi-lineage", "--output",
                      "s3://%s/builds/%s/report.json" % (repo.bucket, rev))
    assert [c["key"] for c in chain] == ["Report()", "Clean()", "Parts()"]
    inputs = {i["key"]: i["outputs"] for i in chain[0]["inputs"]}
    assert inputs["Clean()"] == [url]

    verified = repo("luigi-audit", "--verify", env=repo.env)
    assert "3 outputs" in verified.stdout and "no problem" in verified.stdout

    repo.s3.put_object(Bucket=repo.bucket, Key=key, Body=b"HELLO\nMALLORY\n")
    repo.s3.delete_object(Bucket=repo.bucket, Key="builds/%s/report.json" % rev)
    proc = repo("luigi-audit", "--verify", env=repo.env, check=False)
    assert proc.returncode == 1
    assert "output %s of build" % url in proc.stdout
    assert "changed since it was built" in proc.stdout
    assert "report.json of build" in proc.stdout and "is missing" in proc.stdout


def test_a_directory_output_has_the_digest_of_the_same_files_on_disk(s3repo, tmp_path):
    repo = s3repo
    run(repo)
    rev = node(repo)
    [parts] = [b for b in repo.json("luigi-lineage") if b["key"] == "Parts()"]
    [recorded] = parts["outputs"]
    assert recorded["path"] == "s3://%s/builds/%s/parts" % (repo.bucket, rev)
    local = tmp_path / "parts"
    for name in ("b.txt", "a/z.txt", "a/b/c.txt", "a/a.txt"):
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_text("part " + name)
    assert (recorded["size"], recorded["sha256"]) == lineage.file_digest(str(local))
    e = repo.env
    reach = {"endpoint_url": e["AWS_ENDPOINT_URL"], "region_name": e["AWS_REGION"],
             "aws_access_key_id": e["AWS_ACCESS_KEY_ID"],
             "aws_secret_access_key": e["AWS_SECRET_ACCESS_KEY"]}
    assert objects.digest(recorded["path"], reach) == lineage.file_digest(str(local))
    assert objects.digest(recorded["path"] + "/a/z.txt", reach) == (
        len("part a/z.txt"), hashlib.sha256(b"part a/z.txt").hexdigest())
    assert objects.digest(recorded["path"] + "-none", reach) is None


def plan(repo, env=None):
    proc = repo("luigi-affected", "-T", "json", env=repo.env if env is None else env)
    return {t["key"]: t for t in json.loads(proc.stdout)}, proc.stderr


def test_what_is_built_stays_built_and_a_deleted_object_is_rebuilt(s3repo):
    repo = s3repo
    run(repo)
    first = node(repo)
    repo.write("data/report.cfg", "v2\n")
    second = repo.commit("report settings")
    affected, warned = plan(repo)
    assert warned == ""
    assert affected["Clean()"]["affected"] is False  # its object was found in S3
    assert affected["Report()"]["affected"] is True
    run(repo)
    builds = {b["key"]: b for b in repo.json("luigi-lineage")}
    assert builds["Clean()"]["changeset"] == first and builds["Clean()"]["reused"]
    assert builds["Report()"]["changeset"] == second
    repo.s3.delete_object(Bucket=repo.bucket, Key="builds/%s/clean/raw.txt" % first)
    clean = plan(repo)[0]["Clean()"]
    assert clean["affected"] is True
    assert clean["reasons"] == ["output s3://%s/builds/%s/clean/raw.txt of the build at %s "
                                "is missing" % (repo.bucket, first, first[:12])]
    # hg without access to the bucket cannot tell: it says so, and trusts lineage
    blind = dict(repo.env, AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="")
    tasks, warned = plan(repo, blind)
    assert tasks["Clean()"]["affected"] is False
    assert warned.startswith("warning: cannot check outputs in S3 (NoCredentialsError")
    assert warned.count("warning") == 1
    run(repo)
    assert body(repo, "builds/%s/clean/raw.txt" % second) == b"HELLO\nWORLD\n"


@pytest.mark.parametrize("value, why", [
    ("s3://", "no bucket name"),
    ("s3:///prefix", "no bucket name"),
    ("s3://bucket/../x", "'..' segment"),
    ("s3://Bad_Bucket/x", "3-63 lowercase"),
    ("gs://bucket/x", "not an s3:// URL"),
])
def test_a_bad_output_root_is_refused(empty_repo, value, why):
    empty_repo.config("[luigi]\noutput-root = %s\n" % value)
    proc = empty_repo("luigi-affected", check=False)
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("abort: config error: luigi.output-root: %r is not "
                               "s3://BUCKET/PREFIX or a directory (" % value), proc.stderr
    assert why in lines[0]
    assert lines[1] == "(fix it in the configuration; see hg help hgext_luigi)"


def test_plain_outputs_stay_on_disk(empty_repo):
    empty_repo.config("[luigi]\noutput-root = s3://bucket/x\nplain-output-root = s3://b/p\n")
    proc = empty_repo("luigi-affected", check=False)
    assert proc.returncode != 0
    assert "abort: config error: luigi.plain-output-root: 's3://b/p' is not a directory" \
        in proc.stderr


ROLE = "arn:aws:iam::123456789012:role/writer"

WRITER = '''
import os

from hgext_luigi import HgTask


class Write(HgTask):
    watches = ["data/raw.txt"]

    def output(self):
        return self.stamped_target("written-by.txt")

    def run(self):
        with self.output().open("w") as f:
            f.write(os.environ.get("AWS_ACCESS_KEY_ID", "-"))
'''


def test_a_task_writes_with_its_own_role(hg, tmp_path, moto):
    """The pipeline has no AWS credentials of its own: the object can only be
    written (and read back to hash) with the credentials issued to the build."""
    server = make_server_repo(hg, str(tmp_path / "server"), "")
    work = tmp_path / "work"
    hg("clone", "-q", server.path, str(work))
    work = Repo(hg, str(work))
    work.write("flows/__init__.py", WRITER)
    work.write("data/raw.txt", "x\n")
    work.commit("writer")
    work("push", server.path)
    bucket = "role-outputs"
    moto.client("s3").create_bucket(Bucket=bucket)
    server.config("module = flows\noutput-root = s3://%s/p\naws-endpoint-url = %s\n"
                  "aws-region = %s\npass-env = PATH HOME LANG\n[luigi.roles]\nWrite = %s\n"
                  % (bucket, moto.url, moto.region, ROLE))
    env = aws_env(moto, tmp_path)
    server("luigi-run", "-r", "tip", env=env)
    rev = node(server)
    data = moto.client("s3").get_object(Bucket=bucket, Key="p/%s/written-by.txt" % rev
                                        )["Body"].read().decode()
    [build] = server.json("luigi-lineage", "tip")
    issued = build["extra"]["credentials"]
    assert issued["role"] == ROLE and data == issued["access_key_id"]
    assert data.startswith("ASIA") and data != env["AWS_ACCESS_KEY_ID"]
    assert build["outputs"][0]["sha256"] == hashlib.sha256(data.encode()).hexdigest()
    assert "no problem" in server("luigi-audit", "--verify", env=env).stdout
