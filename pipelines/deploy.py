"""Example (a): build an artifact -> configure hosts with a playbook -> load data.

``BuildArtifact`` packs ``app/`` into a tarball stamped with the changeset;
``ConfigureHosts`` runs ``deploy/site.yml`` (as of that changeset) to install it
on the hosts of ``deploy/inventory``; ``LoadData`` then loads the sales report
into the installed release.  Run it with::

    hg --config luigi.module=pipelines.deploy luigi-run --task LoadData

The hosts' install directory is ``[deploy] root`` in the Luigi configuration.
"""

import json
import os
import tarfile

import luigi

from hgext_luigi import HgTask
from hgext_luigi.ansible import AnsiblePlaybookTask, unsafe
from pipelines.sales import SalesReport


class deploy(luigi.Config):
    root = luigi.Parameter(default="/tmp/hgext_luigi-hosts",
                           description="Where the playbook installs releases.")


class BuildArtifact(HgTask):
    """``app/`` as a reproducible tarball."""

    watches = ["app/**"]

    def output(self):
        return self.stamped_target("artifacts/app.tar.gz")

    def run(self):
        top = self.source_path("app")
        with self.output().temporary_path() as tmp:
            with tarfile.open(tmp, "w:gz") as tar:
                for dirpath, dirs, files in os.walk(top):
                    dirs.sort()
                    for name in sorted(files):
                        full = os.path.join(dirpath, name)
                        info = tar.gettarinfo(full, os.path.relpath(full, top))
                        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                        with open(full, "rb") as f:
                            tar.addfile(info, f)


class ConfigureHosts(AnsiblePlaybookTask):
    """Install the artifact on every host, recording the changeset it came from."""

    playbook = "deploy/site.yml"
    inventory = "deploy/inventory"

    def requires(self):
        return BuildArtifact()

    @property
    def extra_vars(self):
        # paths are data: never templated by Ansible, whatever the file is named
        return {"artifact": unsafe(self.input().path), "deploy_root": unsafe(deploy().root)}


class LoadData(HgTask):
    """Load the sales report into the release the hosts now run."""

    def requires(self):
        return {"hosts": ConfigureHosts(), "report": SalesReport()}

    def output(self):
        return self.stamped_target("loaded.json")

    def run(self):
        root = deploy().root
        with open(os.path.join(root, "current", "release.json")) as f:
            release = json.load(f)
        with self.input()["report"].open() as f:
            rows = f.read().splitlines()[1:]
        target = os.path.join(root, "current", "data", "sales-report.csv")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(self.input()["report"].path) as src, open(target + ".tmp", "w") as dst:
            dst.write(src.read())
        os.replace(target + ".tmp", target)
        with self.output().open("w") as f:
            json.dump({"release": release["changeset"], "rows": len(rows),
                       "loaded_into": target}, f, indent=2)
