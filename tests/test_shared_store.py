"""Beyond one machine: lineage, queue and audit log in a real PostgreSQL server
(``[luigi] store``), build hosts that are clones of the server repository, and
the command that creates and fills the shared store."""

import os

import pytest

from conftest import Repo, make_demo_repo, make_server_repo, seeded_clone


def node(repo, rev="."):
    return repo("log", "-r", rev, "-T", "{node}").stdout


@pytest.fixture
def shared(hg, pg_server, pg_url):
    """hg with the password in its environment, as a service unit would set it;
    ``shared.config`` is the hgrc text that puts a repository on the store."""
    hg.env.update(pg_server.env())
    hg.store_config = "store = %s\n" % pg_url
    return pg_url


def on_store(hg, repo, extra=""):
    repo.config("[luigi]\n" + hg.store_config + extra)
    return repo


def test_a_new_store_asks_for_its_tables_then_holds_a_run(hg, shared, tmp_path):
    repo = on_store(hg, make_demo_repo(hg, str(tmp_path / "repo")))
    out = repo("luigi-run", check=False)
    assert out.returncode != 0
    assert "has no tables" in out.stderr and "hg luigi-store --upgrade" in out.stderr
    assert "store upgraded from version none to 1" in repo("luigi-store", "--upgrade").stdout
    repo("luigi-run")
    assert not os.path.exists(os.path.join(repo.state, "lineage.db"))  # nothing local
    [info] = repo.json("luigi-store")
    assert info["kind"] == "postgresql" and info["store"] == shared
    assert info["runs"] == 1 and info["builds"] == 5 and info["audit"] > 5
    rows = repo.json("luigi-lineage")
    assert {r["status"] for r in rows} == {"success"} and len(rows) == 5
    assert "no problem" in repo("luigi-audit", "--verify").stdout


def test_the_password_never_sits_in_hgrc_nor_reaches_pipelines(hg, shared, tmp_path,
                                                               pg_server):
    repo = make_demo_repo(hg, str(tmp_path / "repo"))
    secret_url = shared.replace("hgluigi@", "hgluigi:%s@" % pg_server.password)
    repo.config("[luigi]\nstore = %s\n" % secret_url)
    out = repo("luigi-run", check=False)
    assert out.returncode != 0 and "without a password" in out.stderr
    assert pg_server.password not in out.stdout + out.stderr
    leaky = Repo(hg, repo.path)
    with open(os.path.join(repo.path, ".hg", "hgrc"), "w") as f:
        f.write("[luigi]\n%spass-env = PATH HOME PG*\n" % hg.store_config)
    out = leaky("luigi-run", check=False)
    assert out.returncode != 0 and "PGPASSWORD" in out.stderr and "pass-env" in out.stderr


def test_pushed_code_cannot_read_the_store_password(hg, shared, tmp_path, pg_server):
    repo = on_store(hg, make_demo_repo(hg, str(tmp_path / "repo")))
    repo("luigi-store", "--upgrade")
    repo.write("pipelines/__init__.py", PEEK)
    repo.commit("a task that looks for the password")
    repo("luigi-run")
    [row] = [r for r in repo.json("luigi-lineage") if r["key"] == "Peek()"]
    with open(row["outputs"][0]["path"]) as f:
        seen = f.read()
    assert seen == "PGPASSWORD=None PGPASSFILE=None"
    assert pg_server.password not in seen


PEEK = '''
import os
import luigi
from hgext_luigi import HgTask


class Peek(HgTask):
    def output(self):
        return self.stamped_target("peek.txt")

    def run(self):
        with self.output().open("w") as f:
            f.write("PGPASSWORD=%s PGPASSFILE=%s" % (os.environ.get("PGPASSWORD"),
                                                     os.environ.get("PGPASSFILE")))
'''


def test_an_existing_repository_moves_its_lineage_in_with_its_audit_chain(hg, shared,
                                                                           tmp_path):
    repo = make_demo_repo(hg, str(tmp_path / "repo"))
    repo("luigi-run")
    before = repo.json("luigi-lineage")
    head = repo("luigi-audit", "--head").stdout.strip()
    on_store(hg, repo)
    out = repo("luigi-store", "--import").stdout
    assert "imported 1 runs, 5 builds" in out and "audit chain verified" in out
    assert head in out
    assert repo.json("luigi-lineage") == before
    assert "no problem" in repo("luigi-audit", "--verify", "--head", head).stdout
    again = repo("luigi-store", "--import", check=False)
    assert again.returncode != 0 and "empty store" in again.stderr
    assert os.path.exists(os.path.join(repo.state, "lineage.db"))  # left as it was


def test_two_build_hosts_share_one_queue_and_one_lineage(hg, shared, tmp_path):
    # outputs on a folder every host mounts (NFS, say; or an s3:// output root)
    hg.store_config += "output-root = %s\n" % (tmp_path / "outputs")
    server = make_server_repo(hg, str(tmp_path / "server"),
                              hg.store_config + "on-push = queue\n")
    server("luigi-store", "--upgrade")
    hosts = []
    for name in ("host1", "host2"):
        hg("clone", "-q", "-U", server.path, str(tmp_path / name))
        hosts.append(on_store(hg, Repo(hg, str(tmp_path / name))))
    dev = seeded_clone(hg, server, str(tmp_path / "dev"))
    heads = []
    for host, branch in zip(hosts, ("default", "feature")):
        if heads:
            dev("branch", "-q", branch)
            dev.write("docs/%s.md" % branch, "# %s\n" % branch)
            dev.commit("%s docs" % branch)
        dev("push", "--new-branch", server.path)
        heads.append(node(dev))
        # the host lacks the head: it pulls it from paths.default, then builds it
        proc = host("luigi-worker", "--once")
        out = proc.stdout + proc.stderr
        assert "luigi: pulling from %s" % server.path in out, out
        assert "1 queue entries processed, 0 failed" in out, out
        assert node(host, "tip") == heads[-1]
    entries = server.json("luigi-queue")
    assert [e["state"] for e in entries] == ["done", "done"]
    assert len({e["run"] for e in entries}) == 2
    for repo in [server] + hosts:  # one lineage, read from every host
        for head in heads:
            rows = repo.json("luigi-lineage", head)
            assert {r["status"] for r in rows} == {"success"} and len(rows) == 5
    assert "no problem" in hosts[0]("luigi-audit", "--verify").stdout


def test_bad_store_settings_and_misuse_are_clear_errors(hg, tmp_path):
    repo = make_demo_repo(hg, str(tmp_path / "repo"))
    out = repo("luigi-store", "--upgrade", check=False)
    assert out.returncode != 0 and "need a shared store" in out.stderr
    assert "[luigi] store = postgresql://" in out.stderr
    [info] = repo.json("luigi-store")  # the default: the repository's SQLite file
    assert info["kind"] == "sqlite" and info["store"].endswith("lineage.db")
    repo.config("[luigi]\nstore = mysql://db/lineage\n")
    out = repo("luigi-store", check=False)
    assert out.returncode != 0
    assert "config error: luigi.store" in out.stderr and "postgresql://" in out.stderr


def test_a_build_host_that_cannot_pull_fails_the_entry_and_says_why(hg, shared, tmp_path):
    server = make_server_repo(hg, str(tmp_path / "server"),
                              hg.store_config + "on-push = queue\n")
    server("luigi-store", "--upgrade")
    hg("clone", "-q", "-U", server.path, str(tmp_path / "host"))
    host = on_store(hg, Repo(hg, str(tmp_path / "host")),
                    "source = %s\n" % (tmp_path / "nowhere"))
    seeded_clone(hg, server, str(tmp_path / "dev"))("push", server.path)
    out = host("luigi-worker", "--once", check=False)
    assert out.returncode == 1
    assert "1 queue entries processed, 1 failed" in out.stdout
    [entry] = server.json("luigi-queue")
    assert entry["state"] == "failed" and "nowhere" in entry["error"]
    server("luigi-queue", "--retry", str(entry["id"]))  # nothing lost: it can be retried
    assert server.json("luigi-queue")[0]["state"] == "pending"


WATCHER = '''
import luigi
from hgext_luigi import HgTask


class Watcher(HgTask):
    watches = ["x.txt"]

    def output(self):
        return self.stamped_target("x.out")

    def run(self):
        with self.output().open("w") as f:
            f.write(open(self.source_path("x.txt")).read())
'''


def test_builds_at_other_branches_heads_do_not_hide_the_base_build(hg, tmp_path):
    """A queue of several branches builds their heads one after another: a
    new branch from the base that leaves the task's input alone reuses the
    base's build, however many other heads built the task since."""
    repo = Repo(hg, str(tmp_path / "repo"))
    hg("init", repo.path)
    repo.write("pipelines/__init__.py", WATCHER)
    repo.write("x.txt", "base\n")
    base = repo.commit("base")
    repo("luigi-run")
    for i in range(5):  # five branches from the base, each changing the input
        repo("update", "-q", base)
        repo("branch", "-q", "-f", "b%d" % i)
        repo.write("x.txt", "branch %d\n" % i)
        repo.commit("b%d" % i)
        repo("luigi-run")
    repo("update", "-q", base)
    repo("branch", "-q", "-f", "quiet")
    repo.write("other.txt", "nothing the task reads\n")
    repo.commit("quiet")
    [row] = repo.json("luigi-affected")
    assert not row["affected"] and row["changeset"] == base
