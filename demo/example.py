"""The example repository's files: the pipeline of ``pipelines/`` with the demo
data and documents, as ``make demo``, the feature benchmarks and the tests
commit them first."""

import os
import shutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def copy_example(path):
    """Copy the example's files into ``path`` (an empty repository)."""
    shutil.copytree(os.path.join(ROOT, "pipelines"), os.path.join(path, "pipelines"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    for d in ("data", "docs"):
        shutil.copytree(os.path.join(ROOT, "demo", d), os.path.join(path, d))
