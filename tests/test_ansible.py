"""AnsiblePlaybookTask: real ansible-playbook runs against localhost."""

import json
import os
import subprocess

import pytest

from conftest import BIN, tool

VAULT_PASSWORD = "correct horse battery staple"
SECRET = "db-password-4711"
INJECTION = "{{ lookup('pipe','id') }}"

PIPELINE = '''import luigi
from hgext_luigi import HgTask
from hgext_luigi.ansible import AnsiblePlaybookTask


class Configure(AnsiblePlaybookTask):
    playbook = "deploy/site.yml"
    inventory = "deploy/hosts"


class Load(HgTask):
    watches = ["data/**"]

    def requires(self):
        return Configure()

    def output(self):
        return self.stamped_target("loaded.txt")

    def run(self):
        with self.output().open("w") as f:
            f.write("loaded after %s\\n" % self.input().path)
'''

INVENTORY = "localhost ansible_connection=local ansible_python_interpreter=\"{{ansible_playbook_python}}\"\n"

SITE = '''- hosts: all
  gather_facts: false
  tasks:
    - name: record what the run passed
      copy:
        dest: "{{ lookup('env', 'RECORD_FILE') }}"
        content: "{{ {'changeset': hg_changeset, 'branch': hg_branch, 'user': hg_user,
                     'paths': hg_changed_paths, 'task': hg_task, 'run': hg_run_id,
                     'greeting': greeting | default('')} | to_json }}"
'''


@pytest.fixture
def site(hg, tmp_path):
    path = str(tmp_path / "site")
    hg("init", path)
    from conftest import Repo

    repo = Repo(hg, path)
    repo.write("pipelines/__init__.py", PIPELINE)
    repo.write("deploy/hosts", INVENTORY)
    repo.write("deploy/site.yml", SITE)
    repo.write("data/a.csv", "1\n")
    repo.record = str(tmp_path / "record.json")
    repo.env = {"RECORD_FILE": repo.record, "PATH": "/usr/bin:/bin"}
    return repo


def lineage(repo):
    return {r["key"]: r for r in repo.json("luigi-lineage")}


def test_playbook_runs_with_changeset_vars_and_lands_in_lineage(site):
    """Success; the venv's bin directory is not on PATH; a file named like a Jinja
    lookup reaches the playbook verbatim and runs nothing."""
    site.write("data/" + INJECTION, "x\n")
    rev = site.commit("pipeline, playbook and data")
    assert BIN not in site.env["PATH"].split(os.pathsep)
    proc = site("luigi-run", "-v", env=site.env)
    assert "ran      Configure()" in proc.stdout and "ran      Load()" in proc.stdout
    assert "Configure(): task 1: record what the run passed" in proc.stdout
    assert "Configure(): playbook finished" in proc.stdout

    with open(site.record) as f:
        got = json.load(f)
    assert got["changeset"] == rev and got["branch"] == "default"
    assert got["user"] == "Alice <alice@example.com>" and got["task"] == "Configure()"
    assert "data/" + INJECTION in got["paths"]
    assert "deploy/site.yml" in got["paths"]
    assert "uid=" not in json.dumps(got)

    rows = lineage(site)
    rec = rows["Configure()"]
    assert rec["status"] == "success" and rec["changeset"] == rev
    ans = rec["extra"]["ansible"]
    assert ans["status"] == "successful" and ans["check"] is False
    assert ans["playbook"] == "deploy/site.yml"
    assert ans["stats"]["localhost"]["ok"] == 1
    assert ans["stats"]["localhost"]["changed"] == 1
    assert ans["stats"]["localhost"]["failed"] == 0
    assert os.path.isdir(os.path.join(ans["artifact_dir"], "job_events"))
    assert ans["artifact_dir"].startswith(os.path.join(site.state, "ansible"))
    # the output is the stamped JSON report; Load consumed it
    out = rec["outputs"][0]["path"]
    assert rev in out and json.load(open(out))["stats"] == ans["stats"]
    assert rows["Load()"]["inputs"][0]["key"] == "Configure()"
    text = site("luigi-lineage").stdout
    assert "ansible deploy/site.yml successful: localhost ok=1 changed=1 failed=0" in text

    # a change to data only: the playbook does not run again
    site.write("data/a.csv", "2\n")
    site.commit("more data")
    out = site("luigi-run", env=site.env).stdout
    assert "reused   Configure()" in out and "ran      Load()" in out
    # a change next to the playbook runs it again, with that path as changed
    site.write("deploy/vars.yml", "x: 1\n")
    rev3 = site.commit("deploy vars")
    out = site("luigi-run", env=site.env).stdout
    assert "ran      Configure()" in out
    got = json.load(open(site.record))
    assert got["changeset"] == rev3 and got["paths"] == ["data/a.csv", "deploy/vars.yml"]


def test_failing_task_names_hosts_and_tasks(site):
    site.write("deploy/site.yml", SITE + '''    - name: break on purpose
      fail:
        msg: the disk is full
''')
    site.commit("failing playbook")
    proc = site("luigi-run", env=site.env, check=False)
    assert proc.returncode == 1
    assert ("failed Configure(): AnsiblePlaybookError: playbook deploy/site.yml failed on "
            "localhost: task 'break on purpose' on localhost: the disk is full") in proc.stderr
    assert "not run  Load()" in proc.stdout
    rows = lineage(site)
    rec = rows["Configure()"]
    assert rec["status"] == "failed" and rec["outputs"] == []
    st = rec["extra"]["ansible"]["stats"]["localhost"]
    assert st["failed"] == 1 and st["ok"] == 1
    assert rec["extra"]["ansible"]["failures"] == [
        {"host": "localhost", "task": "break on purpose", "message": "the disk is full",
         "unreachable": False}]


def test_check_mode_reports_and_changes_nothing(site):
    site.write("pipelines/__init__.py", PIPELINE.replace(
        'inventory = "deploy/hosts"', 'inventory = "deploy/hosts"\n    check = True'))
    site.commit("check mode")
    site("luigi-run", "--task", "Configure", env=site.env)
    assert not os.path.exists(site.record)
    ans = lineage(site)["Configure()"]["extra"]["ansible"]
    assert ans["check"] is True and ans["stats"]["localhost"]["changed"] == 1
    assert "(check mode)" in site("luigi-lineage").stdout


def test_vault_password_from_environment_never_on_disk(site, tmp_path):
    pwfile = tmp_path / "pw"
    pwfile.write_text(VAULT_PASSWORD)
    enc = subprocess.run(
        [tool("ansible-vault"), "encrypt_string", "--vault-password-file", str(pwfile),
         SECRET, "--name", "greeting"], capture_output=True, text=True, check=True).stdout
    pwfile.unlink()
    site.write("deploy/group_vars/all.yml", enc)
    site.write("luigi.cfg", "[ansible]\nvault_password_env = DEPLOY_VAULT_PASSWORD\n")
    site.commit("vaulted variable")
    proc = site("luigi-run", env=site.env, check=False)
    assert proc.returncode == 1
    assert "the vault password variable DEPLOY_VAULT_PASSWORD is not set" in proc.stderr

    env = dict(site.env, DEPLOY_VAULT_PASSWORD=VAULT_PASSWORD)
    site("luigi-run", env=env)
    assert json.load(open(site.record))["greeting"] == SECRET
    # neither ansible-runner's env files nor its artifacts nor our logs hold it
    for top in (site.state, str(tmp_path / "home")):
        for dirpath, _dirs, files in os.walk(top):
            assert os.path.basename(dirpath) != "env" or not files
            for name in files:
                with open(os.path.join(dirpath, name), "rb") as f:
                    assert VAULT_PASSWORD.encode() not in f.read(), name


def test_missing_playbook(site):
    site.write("pipelines/__init__.py", PIPELINE.replace("deploy/site.yml", "deploy/nope.yml"))
    rev = site.commit("wrong playbook path")
    proc = site("luigi-run", env=site.env, check=False)
    assert proc.returncode == 1
    assert ("failed Configure(): AnsibleError: playbook deploy/nope.yml does not exist at "
            "changeset %s" % rev[:12]) in proc.stderr
    assert lineage(site)["Configure()"]["status"] == "failed"
