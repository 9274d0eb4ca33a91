"""A server runs code that anyone who may push wrote: what that code may see and
where it may write.  Canary secrets in the server's environment must appear
nowhere: not to the pusher, not in a file, a log or the lineage store."""

import os

from conftest import Repo, make_server_repo

CANARY = "canary-5ecret-7a1f"

# prints the whole environment at import time and when it runs
SNOOP = '''import json
import os

import luigi
from hgext_luigi import HgTask

print("ENV AT IMPORT", json.dumps(dict(os.environ)))


class Snoop(HgTask):
    watches = ["data/**"]

    def output(self):
        return self.stamped_target("env.json")

    def run(self):
        print("ENV AT RUN", json.dumps(dict(os.environ)))
        with self.output().open("w") as f:
            json.dump(dict(os.environ), f)
'''


def grep_tree(root, needle):
    """Files under ``root`` whose bytes contain ``needle``."""
    hits = []
    for top, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(top, name)
            try:
                with open(path, "rb") as f:
                    if needle.encode() in f.read():
                        hits.append(path)
            except OSError:
                pass
    return hits


def snoop_clone(hg, server, path):
    hg("clone", "-q", server.path, path)
    clone = Repo(hg, path)
    clone.write("pipelines/__init__.py", SNOOP)
    clone.write("data/a.csv", "1\n")
    clone.commit("snoop")
    return clone


def test_pushed_pipeline_never_sees_the_servers_secrets(hg, tmp_path):
    server = make_server_repo(hg, str(tmp_path / "server"), "gate = true\non-push = run\n")
    clone = snoop_clone(hg, server, str(tmp_path / "mallory"))
    secrets = {"AWS_SECRET_ACCESS_KEY": CANARY, "DATABASE_URL": "postgres://u:%s@db" % CANARY,
               "PYTHONPATH": "/opt/" + CANARY}
    # the server side (the push to a path runs the server's hooks in this process)
    out = clone("push", server.path, env=secrets)
    shown = out.stdout + out.stderr
    assert "1 ran" in shown
    assert CANARY not in shown
    assert "AWS_SECRET_ACCESS_KEY" not in shown
    assert grep_tree(server.state, CANARY) == []
    [row] = server.json("luigi-lineage")
    with open(row["outputs"][0]["path"]) as f:
        seen = f.read()
    assert "PATH" in seen and "HOME" in seen  # the allow-listed ones pass
    assert CANARY not in seen and "AWS_SECRET_ACCESS_KEY" not in seen


def test_pass_env_lets_a_named_variable_through(hg, tmp_path):
    server = make_server_repo(hg, str(tmp_path / "server"),
                              "on-push = run\npass-env = PATH HOME SHARED_*\n")
    clone = snoop_clone(hg, server, str(tmp_path / "bob"))
    clone("push", server.path, env={"SHARED_BUCKET": "reports", "LANG": "C.UTF-8",
                                    "AWS_SECRET_ACCESS_KEY": CANARY})
    [row] = server.json("luigi-lineage")
    with open(row["outputs"][0]["path"]) as f:
        seen = f.read()
    assert '"SHARED_BUCKET": "reports"' in seen
    assert "LANG" not in seen  # pass-env replaces the default list
    assert CANARY not in seen


def test_the_gate_shows_no_secret_when_it_rejects(hg, tmp_path):
    server = make_server_repo(hg, str(tmp_path / "server"), "gate = true\n")
    hg("clone", "-q", server.path, str(tmp_path / "eve"))
    clone = Repo(hg, str(tmp_path / "eve"))
    clone.write("pipelines/__init__.py",
                "import os\nraise RuntimeError(repr(dict(os.environ)))\n")
    clone.commit("leak through the error")
    out = clone("push", server.path, check=False, env={"AWS_SECRET_ACCESS_KEY": CANARY})
    assert out.returncode != 0
    assert "luigi gate rejected the push" in out.stderr
    assert "RuntimeError" in out.stdout + out.stderr
    assert CANARY not in out.stdout + out.stderr
    assert grep_tree(server.state, CANARY) == []


def test_the_working_directory_is_not_built(demo):
    for cmd in ("luigi-run", "luigi-affected"):
        proc = demo(cmd, "-r", "wdir()", check=False)
        assert proc.returncode == 255
        assert "abort: the working directory is not a changeset" in proc.stderr
        assert "(commit first, then run hg luigi-run -r .)" in proc.stderr
    assert not os.path.exists(os.path.join(demo.state, "lineage.db"))


OUTSIDE = '''import luigi
from hgext_luigi import HgTask


class Escape(HgTask):
    def output(self):
        return self.stamped_target({path!r})

    def run(self):
        with self.output().open("w") as f:
            f.write("escaped\\n")
'''


def test_outputs_stay_under_the_output_root(empty_repo, tmp_path):
    target = str(tmp_path / "escaped.txt")
    for path in ("../../../../../../../../" + target, target):
        empty_repo.write("pipelines/__init__.py", OUTSIDE.format(path=path))
        empty_repo.commit("escape via %s" % path[:8])
        proc = empty_repo("luigi-run", check=False)
        assert proc.returncode == 1
        assert "Escape" in proc.stdout
        assert "must be relative and stay under the output root" in proc.stdout
        assert not os.path.exists(target)


HANDMADE = '''import luigi
from hgext_luigi import HgTask


class Leaf(HgTask):
    def output(self):
        return self.stamped_target("leaf.txt")

    def run(self):
        with self.output().open("w") as f:
            f.write("leaf\\n")


class Root(HgTask):
    def requires(self):
        return Leaf(changeset="../../../../../../../../{outside}")

    def output(self):
        return self.stamped_target("root.txt")

    def run(self):
        pass
'''


def test_a_changeset_parameter_passed_by_hand_must_be_a_changeset(empty_repo, tmp_path):
    outside = str(tmp_path / "outside")
    empty_repo.write("pipelines/__init__.py", HANDMADE.format(outside=outside.lstrip("/")))
    empty_repo.commit("hand-made changeset")
    proc = empty_repo("luigi-run", check=False)
    assert proc.returncode != 0
    assert "is not a full 40-hex changeset id" in proc.stdout + proc.stderr
    assert not os.path.exists(outside)
