"""The example pipelines of README: deploy (Ansible) and cloud (Step Functions)."""

import json
import os
import shutil

from conftest import ROOT, make_demo_repo


def example_repo(hg, tmp_path):
    repo = make_demo_repo(hg, str(tmp_path / "repo"))
    # the examples read LUIGI_CONFIG_PATH, and the cloud one reaches moto via AWS_*
    repo.config("[luigi]\npass-env = PATH HOME LANG LUIGI_CONFIG_PATH AWS_*\n")
    for d in ("app", "deploy", "workflows"):
        shutil.copytree(os.path.join(ROOT, "demo", d), os.path.join(repo.path, d))
    repo.commit("deploy and workflow definitions")
    return repo


def test_artifact_playbook_load(hg, tmp_path):
    repo = example_repo(hg, tmp_path)
    hosts = tmp_path / "hosts"
    cfg = tmp_path / "luigi.cfg"
    cfg.write_text("[deploy]\nroot = %s\n" % hosts)
    env = {"LUIGI_CONFIG_PATH": str(cfg)}
    rev = repo("log", "-r", ".", "-T", "{node}").stdout
    out = repo("--config", "luigi.module=pipelines.deploy", "luigi-run", "--task", "LoadData",
               env=env).stdout
    for key in ("BuildArtifact()", "ConfigureHosts()", "LoadData()", "SalesReport()"):
        assert "ran      " + key in out
    release = json.load(open(hosts / "current" / "release.json"))
    assert release["changeset"] == rev and release["by"] == "Alice <alice@example.com>"
    assert (hosts / "current" / "app.cfg").read_text().startswith("# configuration")
    assert os.path.realpath(hosts / "current") == str(hosts / "releases" / rev)
    rows = {r["key"]: r for r in repo.json("--config", "luigi.module=pipelines.deploy",
                                           "luigi-lineage")}
    loaded = json.load(open(rows["LoadData()"]["outputs"][0]["path"]))
    assert loaded["release"] == rev and loaded["rows"] > 0
    assert rows["ConfigureHosts()"]["extra"]["ansible"]["stats"]["localhost"]["changed"] >= 3

    # an app change: new artifact, playbook reruns, data reloaded; the report is reused
    repo.write("app/app.cfg", "# configuration v2\n")
    rev2 = repo.commit("app v2")
    out = repo("--config", "luigi.module=pipelines.deploy", "luigi-run", "--task", "LoadData",
               env=env).stdout
    assert "ran      ConfigureHosts()" in out and "reused   SalesReport()" in out
    assert json.load(open(hosts / "current" / "release.json"))["changeset"] == rev2
    assert json.load(open(hosts / "current" / "release.json"))["changed"] == ["app/app.cfg"]


def test_dataset_workflow_consumer(hg, tmp_path, moto):
    repo = example_repo(hg, tmp_path)
    sfn = moto.client("stepfunctions")
    with open(os.path.join(repo.path, "workflows", "score.asl.json")) as f:
        arn = sfn.create_state_machine(name="score", definition=f.read(),
                                       roleArn="arn:aws:iam::123456789012:role/r")[
                                           "stateMachineArn"]
    cfg = tmp_path / "luigi.cfg"
    cfg.write_text("[cloud]\nstate_machine_arn = %s\n[stepfunctions]\npoll_interval = 0.2\n"
                   % arn)
    env = dict(moto.env(), LUIGI_CONFIG_PATH=str(cfg))
    rev = repo("log", "-r", ".", "-T", "{node}").stdout
    out = repo("--config", "luigi.module=pipelines.cloud", "luigi-run", "--task",
               "PublishScores", env=env).stdout
    assert "ran      ScoreRegions()" in out and "ran      PublishScores()" in out
    rows = {r["key"]: r for r in repo.json("--config", "luigi.module=pipelines.cloud",
                                           "luigi-lineage")}
    published = json.load(open(rows["PublishScores()"]["outputs"][0]["path"]))
    assert published["changeset"] == rev
    assert published["scores"]["regions"] == ["east", "north", "south"]
    assert published["scores"]["region_count"] == 3 and published["scores"]["changeset"] == rev
    assert published["execution"] == rows["ScoreRegions()"]["extra"]["stepfunctions"][
        "execution_arn"]
