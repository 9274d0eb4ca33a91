"""AnsiblePlaybookTask: real ansible-playbook runs against localhost."""

import json
import os
import subprocess

import pytest

from conftest import BIN, tool

VAULT_PASSWORD = "correct horse battery staple"
SECRET = "db-password-4711"
INJECTION = "{{ lookup('pipe','id') }}"
# credentials the server's environment holds, under names that look like nothing
CANARIES = {"DB_PASS": "canary-db-pass-5150", "PGPASSWORD": "canary-pgpassword-8086",
            "DATABASE_URL": "postgres://app:canary-url-secret-1337@db/app"}
# what the pipeline sees of the environment ([luigi] pass-env); ansible-playbook
# gets less ([ansible] pass_env in luigi.cfg)
PIPELINE_ENV = ("PATH HOME USER LOGNAME LANG LC_* TZ TMPDIR TERM RECORD_FILE DEPLOY_* "
                + " ".join(CANARIES))
ANSIBLE_CFG = "[ansible]\npass_env = RECORD_FILE\n"

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
    repo.write("luigi.cfg", ANSIBLE_CFG)
    repo.config("[luigi]\npass-env = %s\n" % PIPELINE_ENV)
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
    assert ("AnsiblePlaybookError: playbook deploy/site.yml failed on localhost: task "
            "'break on purpose' on localhost: the disk is full") in proc.stdout + proc.stderr
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
    site.write("luigi.cfg", ANSIBLE_CFG + "vault_password_env = DEPLOY_VAULT_PASSWORD\n")
    site.config("[ansible]\nvault_password_env = DEPLOY_VAULT_PASSWORD\n")
    site.commit("vaulted variable")
    proc = site("luigi-run", env=site.env, check=False)
    assert proc.returncode == 1
    assert ("the vault password variable DEPLOY_VAULT_PASSWORD is not set"
            in proc.stdout + proc.stderr)

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
    assert ("AnsibleError: playbook deploy/nope.yml does not exist at changeset %s"
            % rev[:12]) in proc.stdout + proc.stderr
    assert lineage(site)["Configure()"]["status"] == "failed"


def files_under(*tops):
    for top in tops:
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                yield os.path.join(dirpath, name)


def vars_files(site):
    return [p for p in files_under(site.state) if os.path.basename(p) == "hg-vars.yml"]


def test_vars_file_removed_after_success_failure_and_error(site):
    site.commit("pipeline")
    site("luigi-run", env=site.env)
    assert json.load(open(site.record))["task"] == "Configure()"
    assert vars_files(site) == []

    site.write("deploy/site.yml", SITE + "    - fail:\n        msg: broken on purpose\n")
    site.commit("failing playbook")
    proc = site("luigi-run", env=site.env, check=False)
    assert proc.returncode == 1 and "broken on purpose" in proc.stdout + proc.stderr
    assert vars_files(site) == []

    # an author's variable that cannot be written: the run stops while writing
    site.write("pipelines/__init__.py", PIPELINE.replace(
        'inventory = "deploy/hosts"', 'inventory = "deploy/hosts"\n    extra_vars = '
        '{"first": "written", "second": object()}'))
    site.commit("unwritable variable")
    proc = site("luigi-run", env=site.env, check=False)
    assert proc.returncode == 1 and "TypeError" in proc.stdout + proc.stderr
    assert lineage(site)["Configure()"]["status"] == "failed"
    assert vars_files(site) == []
    assert len(os.listdir(os.path.join(site.state, "ansible"))) == 3  # one per run


ENV_SITE = """- hosts: all
  gather_facts: true
  gather_subset: [min]
  tasks:
    - name: record what ansible sees of the environment
      copy:
        dest: "{{ lookup('env', 'RECORD_FILE') }}"
        content: "{{ {'db_pass': lookup('env', 'DB_PASS'),
                     'pgpassword': lookup('env', 'PGPASSWORD'),
                     'database_url': lookup('env', 'DATABASE_URL'),
                     'region': lookup('env', 'DEPLOY_REGION'),
                     'remote_env': ansible_env | list} | to_json }}"
"""

ENV_CHECK = '''    inventory = "deploy/hosts"

    def run(self):
        # the server's variables do reach the pipeline: ansible must not get them
        missing = [n for n in ("DB_PASS", "PGPASSWORD", "DATABASE_URL")
                   if not os.environ.get(n)]
        assert not missing, "not in the pipeline: %s" % missing
        super().run()
'''
ENV_PIPELINE = PIPELINE.replace('    inventory = "deploy/hosts"\n', ENV_CHECK).replace(
    "import luigi\n", "import os\n\nimport luigi\n")


def test_only_allow_listed_environment_reaches_ansible(site, tmp_path):
    site.write("pipelines/__init__.py", ENV_PIPELINE)
    site.write("deploy/site.yml", ENV_SITE)
    site.write("luigi.cfg", "[ansible]\npass_env = RECORD_FILE, DEPLOY_*\n")
    site.commit("playbook gathering facts")
    env = dict(site.env, DEPLOY_REGION="eu-west-1", **CANARIES)
    proc = site("luigi-run", env=env)
    assert "ran      Configure()" in proc.stdout

    got = json.load(open(site.record))
    assert got["region"] == "eu-west-1"  # named in [ansible] pass_env (a glob)
    assert got["db_pass"] == got["pgpassword"] == got["database_url"] == ""
    assert "PATH" in got["remote_env"] and "DEPLOY_REGION" in got["remote_env"]
    assert not set(CANARIES) & set(got["remote_env"])

    ans = lineage(site)["Configure()"]["extra"]["ansible"]
    assert os.listdir(os.path.join(ans["artifact_dir"], "fact_cache"))  # checked below
    with open(os.path.join(ans["artifact_dir"], "command")) as f:
        command = json.load(f)
    assert "DEPLOY_REGION" in command["env"] and not set(CANARIES) & set(command["env"])
    # nowhere on disk: artifacts, fact cache, job events, lineage, logs, outputs
    for path in files_under(site.state, str(tmp_path / "home")):
        with open(path, "rb") as f:
            data = f.read()
        for value in CANARIES.values():
            assert value.encode() not in data, (path, value)
    assert not any(v in proc.stdout + proc.stderr for v in CANARIES.values())


UNSAFE_VARS = '''    inventory = "deploy/hosts"

    @property
    def extra_vars(self):
        names = sorted(os.listdir(self.source_path("data")))
        return {"data_files": unsafe(names), "first": unsafe({"name": names[0]}),
                "greeting": "on {{ hg_branch }}"}
'''
UNSAFE_PIPELINE = PIPELINE.replace('    inventory = "deploy/hosts"\n', UNSAFE_VARS).replace(
    "import luigi\n", "import os\n\nimport luigi\n").replace(
    "import AnsiblePlaybookTask", "import AnsiblePlaybookTask, unsafe")

UNSAFE_SITE = """- hosts: all
  gather_facts: false
  tasks:
    - name: record the variables
      copy:
        dest: "{{ lookup('env', 'RECORD_FILE') }}"
        content: "{{ {'files': data_files, 'first': first.name,
                     'greeting': greeting} | to_json }}"
"""


def test_unsafe_extra_vars_reach_the_playbook_verbatim(site):
    """A data file named like a Jinja lookup, handed to the playbook by the
    author through ``unsafe``: it arrives verbatim and runs nothing."""
    site.write("pipelines/__init__.py", UNSAFE_PIPELINE)
    site.write("deploy/site.yml", UNSAFE_SITE)
    site.write("data/" + INJECTION, "x\n")
    site.commit("data file named like a lookup")
    proc = site("luigi-run", env=site.env)
    assert "ran      Configure()" in proc.stdout
    got = json.load(open(site.record))
    assert got["files"] == sorted(["a.csv", INJECTION]) and got["first"] == sorted(
        ["a.csv", INJECTION])[0]
    assert got["greeting"] == "on default"  # the author's own templating still works
    assert "uid=" not in proc.stdout + proc.stderr
    for path in files_under(site.state):
        with open(path, "rb") as f:
            assert b"uid=" not in f.read(), path
