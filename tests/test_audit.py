"""The audit log writes itself, and ``hg luigi-audit --verify`` proves it was
not edited: an auditor's checks, and an attacker who can write the database."""

import hashlib
import json
import os
import sqlite3

import pytest

from conftest import make_demo_repo

KEY_ENV = "HGLUIGI_AUDIT_KEY"
KEY = "audit-key-canary-4f1c9e2b7a"


@pytest.fixture
def audited(hg, tmp_path):
    repo = make_demo_repo(hg, str(tmp_path / "repo"))
    repo.config("[luigi]\naudit-key-env = %s\n" % KEY_ENV)
    repo.env = {KEY_ENV: KEY}
    proc = repo("luigi-run", env=repo.env)
    repo.first_run = proc
    return repo


def audit(repo, *args, check=True):
    return repo("luigi-audit", *args, env=repo.env, check=check)


def verify(repo, *args):
    return audit(repo, "--verify", *args, check=False)


def db(repo):
    return sqlite3.connect(os.path.join(repo.state, "lineage.db"), isolation_level=None)


def test_a_run_is_on_the_record_and_verifies(audited):
    records = json.loads(audit(audited, "-T", "json").stdout)
    kinds = [r["kind"] for r in records]
    assert kinds[:2] == ["audit-started", "run-started"] and kinds[-1] == "run-ended"
    assert records[0]["data"] == {"builds_before": 0}
    builds = [r for r in records if r["kind"] == "build" and r["data"]["status"] == "success"]
    assert len(builds) == 5
    for r in builds:  # each build: its changeset and outputs with their sha256
        assert len(r["changeset"]) == 40 and r["data"]["outputs"]
        assert all(len(o[2]) == 64 for o in r["data"]["outputs"])
    # a chain: each record names the hash of the one before
    assert all(b["prev"] == a["hash"] for a, b in zip(records, records[1:]))
    out = verify(audited)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "checked %d audit records, 5 lineage builds, 5 outputs" % len(records) in out.stdout
    assert "no problem" in out.stdout


def test_filters_and_export(audited):
    cleaned = json.loads(audit(audited, "-t", "CleanSales", "-T", "json").stdout)
    assert cleaned and all(r["task"].startswith("CleanSales(") for r in cleaned)
    rev = audited("log", "-r", ".", "-T", "{node}").stdout
    assert all(r["changeset"] == rev
               for r in json.loads(audit(audited, "-r", ".", "-T", "json").stdout))
    assert json.loads(audit(audited, "-u", "nobody-at-all", "-T", "json").stdout) == []
    assert json.loads(audit(audited, "--since", "2037-12-31", "-T", "json").stdout) == []
    lines = audit(audited, "--export").stdout.splitlines()
    exported = [json.loads(line) for line in lines]
    assert [e["id"] for e in exported] == list(range(1, len(exported) + 1))
    assert all({"prev", "hash", "kind", "data", "time"} <= set(e) for e in exported)


def test_verify_finds_an_edited_lineage_row(audited):
    with db(audited) as c:
        c.execute("UPDATE builds SET changeset = ? WHERE id = 1", ("f" * 40,))
    out = verify(audited)
    assert out.returncode == 1
    assert "lineage build 1 differs from audit record" in out.stdout
    assert "changeset edited" in out.stdout


def test_verify_finds_a_deleted_lineage_row(audited):
    with db(audited) as c:
        c.execute("DELETE FROM builds WHERE id = 2")
    out = verify(audited)
    assert out.returncode == 1
    assert "lineage build 2 described by audit record" in out.stdout and "is gone" in out.stdout


def test_verify_finds_a_deleted_audit_record(audited):
    with db(audited) as c:
        c.execute("DELETE FROM audit WHERE id = 3")
    out = verify(audited)
    assert out.returncode == 1
    assert "records 3 deleted before record 4" in out.stdout
    assert "broken link: record 4" in out.stdout


def test_an_attacker_without_the_key_cannot_recompute_the_chain(audited):
    """Edit a record and recompute its hash and every later one with plain
    SHA-256 (all the attacker knows): the keyed chain says so."""
    with db(audited) as c:
        c.row_factory = sqlite3.Row
        rows = [dict(r) for r in c.execute("SELECT * FROM audit ORDER BY id")]
        rows[1]["actor"] = "someone-else"
        prev = rows[0]["hash"]
        for r in rows[1:]:
            r["prev"] = prev
            body = {k: r[k] for k in r if k != "hash"}
            body["data"] = json.loads(body["data"])
            r["hash"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                                       .encode()).hexdigest()
            c.execute("UPDATE audit SET actor = ?, prev = ?, hash = ? WHERE id = ?",
                      (r["actor"], r["prev"], r["hash"], r["id"]))
            prev = r["hash"]
    out = verify(audited)
    assert out.returncode == 1
    assert "record 2 was edited" in out.stdout


def test_verify_finds_changed_and_missing_outputs(audited):
    rev = audited("log", "-r", ".", "-T", "{node}").stdout
    outdir = os.path.join(audited.state, "outputs", rev)
    with open(os.path.join(outdir, "reports", "sales-report.csv"), "a") as f:
        f.write("forged,1\n")
    os.unlink(os.path.join(outdir, "clean", "sales-north.csv"))
    out = verify(audited)
    assert out.returncode == 1
    assert "sales-report.csv of build" in out.stdout and "changed since it was built" in out.stdout
    assert "sales-north.csv of build" in out.stdout and "is missing" in out.stdout


def test_a_truncated_chain_is_found_against_the_head_kept_elsewhere(audited):
    head = audit(audited, "--head").stdout.strip()
    assert len(head) == 64
    with db(audited) as c:
        last = c.execute("SELECT MAX(id) FROM audit").fetchone()[0]
        c.execute("DELETE FROM audit WHERE id >= ?", (last - 1,))
    out = verify(audited, "--head", head)
    assert out.returncode == 1
    assert "does not reach the head %s" % head in out.stdout


def test_the_head_kept_elsewhere_still_verifies_after_more_runs(audited):
    head = audit(audited, "--head").stdout.strip()
    audited("luigi-run", "--all", env=audited.env)
    out = verify(audited, "--head", head)
    assert out.returncode == 0, out.stdout


def test_the_key_is_needed_and_never_written(audited):
    out = audited("luigi-audit", "--verify", check=False)  # without the variable
    assert out.returncode == 255
    assert "abort: the audit key variable %s is not set" % KEY_ENV in out.stderr
    out = audited("luigi-run", "--all", check=False)
    assert out.returncode == 255 and KEY_ENV in out.stderr
    for top, _dirs, files in os.walk(audited.path):
        for name in files:
            with open(os.path.join(top, name), "rb") as f:
                assert KEY.encode() not in f.read(), os.path.join(top, name)
    assert KEY not in audited.first_run.stdout + audited.first_run.stderr


def test_bad_head_argument(audited):
    out = audit(audited, "--verify", "--head", "nothex", check=False)
    assert out.returncode == 255 and "is not a head hash" in out.stderr
    out = audit(audited, "abc", check=False)
    assert out.returncode == 255 and "--verify --head HASH" in out.stderr


def _rehash(c, rows):
    """Rewrite ``rows`` as an attacker without the key would: plain SHA-256
    hashes, each linked to the one before."""
    prev = "0" * 64
    for r in rows:
        r["prev"], r["mac"] = prev, "sha256"
        body = {k: r[k] for k in r if k != "hash"}
        body["data"] = json.loads(body["data"])
        r["hash"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                                   .encode()).hexdigest()
        c.execute("INSERT INTO audit(%s) VALUES (%s)" % (", ".join(r), ", ".join("?" * len(r))),
                  list(r.values()))
        prev = r["hash"]


def test_a_chain_rewritten_without_the_key_is_found(audited):
    """The whole chain downgraded to plain SHA-256 (consistent, but unkeyed)
    with a record edited in the middle: with the key set, it does not pass."""
    with db(audited) as c:
        c.row_factory = sqlite3.Row
        rows = [dict(r) for r in c.execute("SELECT * FROM audit ORDER BY id")]
        c.execute("DELETE FROM audit")
        rows[3]["actor"] = "someone-else"
        _rehash(c, rows)
    out = verify(audited)
    assert out.returncode == 1
    assert "no record is keyed although a key is set" in out.stdout


def test_wiping_the_log_leaves_every_build_unaccounted_for(audited):
    with db(audited) as c:
        c.execute("DELETE FROM audit")
        c.execute("UPDATE builds SET user = 'someone-else'")
    out = verify(audited)
    assert out.returncode == 1
    assert "lineage build 1 has no audit record" in out.stdout
    assert "5 lineage builds" in out.stdout


def test_verify_covers_credentials_reasons_and_runs(audited):
    with db(audited) as c:
        c.execute("UPDATE builds SET reasons = '[]', extra = ? WHERE id = 1",
                  (json.dumps({"credentials": {"role": "arn:aws:iam::1:role/x"}}),))
        c.execute("UPDATE runs SET user = 'someone-else'")
    out = verify(audited)
    assert out.returncode == 1
    assert "lineage build 1 differs from audit record" in out.stdout
    assert "extra" in out.stdout and "reasons" in out.stdout
    assert "user edited" in out.stdout and "run " in out.stdout


def test_the_audit_key_cannot_be_a_variable_pipelines_see(audited):
    audited.config("[luigi]\naudit-key-env = LANG\n")
    out = audited("luigi-audit", check=False)
    assert out.returncode == 255
    assert "config error: luigi.audit-key-env: 'LANG' is not a variable [luigi] pass-env " \
           "keeps from pipelines" in out.stderr


def test_builds_before_the_audit_log_are_counted_not_checked(tmp_path):
    """A store written before the audit log existed: its old builds are named
    as such; the first build recorded with the chain is checked."""
    from hgext_luigi.core import audit as chain, lineage, verify as check

    path, root = str(tmp_path / "lineage.db"), str(tmp_path)
    old = lineage.open_store(path, root)
    old.finish_build(old.start_build("r1", "T_1", "T(i=1)", "T", {"i": "1"}, "a" * 40, None,
                                     [], "alice", "manual"), "success")
    old.close()
    store = lineage.open_store(path, root, chain.Chain(b"key"))
    store.finish_build(store.start_build("r2", "T_2", "T(i=2)", "T", {"i": "2"}, "b" * 40,
                                         None, [], "bob", "manual"), "success")
    result = check.verify(store, b"key")
    assert result["problems"] == [] and result["before_audit"] == 1 and result["builds"] == 1
    store.close()
