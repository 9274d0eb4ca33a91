"""Synthetic repositories for the scale benchmarks (``python benchmarks/gen.py
SIZE PATH``): F files in nested directories, T tasks in a layered DAG with fan-in
and fan-out, each watching a glob of its own directory and doing ~20 ms of
work, and a history that includes a large commit no task watches.

Sizes (files / tasks): small 1,000 / 100, medium 10,000 / 1,000, large
100,000 / 10,000.  Plain Python; runs the real ``hg``.
"""

import argparse
import os
import subprocess
import sys

SIZES = {"small": (1000, 100), "medium": (10000, 1000), "large": (100000, 10000)}
LAYERS = 5

PIPELINE = '''"""A synthetic pipeline: {tasks} tasks in {layers} layers."""

import time

import luigi

from hgext_luigi import HgTask

TASKS = {tasks}
LAYERS = {layers}
PER_LAYER = TASKS // LAYERS


def layer_of(idx):
    return idx // PER_LAYER


class Node(HgTask):
    """Task ``idx`` watches its directory; tasks of a layer need two of the
    layer before (fan-in), and each is needed by about two of the next (fan-out)."""

    idx = luigi.IntParameter()
    group = luigi.Parameter()
    watches = ["data/{{group}}/**"]

    def requires(self):
        layer = layer_of(self.idx)
        if layer == 0:
            return []
        base = (layer - 1) * PER_LAYER
        first = base + (self.idx * 7) % PER_LAYER
        second = base + (self.idx * 13 + 1) % PER_LAYER
        return [node(i) for i in sorted({{first, second}})]

    def output(self):
        return self.stamped_target("node-%05d.txt" % self.idx)

    def run(self):
        time.sleep(0.02)
        with self.output().open("w") as f:
            f.write("%d\\n" % self.idx)


def node(idx):
    return Node(idx=idx, group=group_of(idx))


def group_of(idx):
    return "g%02d/t%05d" % (idx % 97, idx)


class All(HgTask):
    def requires(self):
        last = (LAYERS - 1) * PER_LAYER
        return [node(i) for i in range(last, TASKS)]

    def output(self):
        return self.stamped_target("all.txt")

    def run(self):
        with self.output().open("w") as f:
            f.write("done\\n")
'''


def hg(path, *args):
    subprocess.run(["hg", "-R", path] + list(args), check=True, stdout=subprocess.DEVNULL)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def generate(size, path):
    """The repository: the pipeline and F files (a share under each task's
    directory, the rest elsewhere), then a large commit no task watches, then a
    1-file change to one task's data.  Returns the revisions of interest."""
    files, tasks = SIZES[size]
    subprocess.run(["hg", "init", path], check=True)
    write(os.path.join(path, "pipelines", "__init__.py"),
          PIPELINE.format(tasks=tasks, layers=LAYERS))
    write(os.path.join(path, ".hg", "hgrc"), "[luigi]\nroots = All\n")
    watched = files // 2
    for i in range(watched):
        task = i % tasks
        write(os.path.join(path, "data", "g%02d" % (task % 97), "t%05d" % task,
                           "f%06d.csv" % i), "%d,%d\n" % (i, task))
    hg(path, "commit", "-A", "-q", "-m", "pipeline and watched data", "-u", "gen")
    others = max(0, files - watched - 1000)
    for i in range(others):
        write(os.path.join(path, "docs", "d%03d" % (i % 500), "p%06d.md" % i), "page %d\n" % i)
    if others:
        hg(path, "commit", "-A", "-q", "-m", "unwatched documents", "-u", "gen")
    for i in range(1000):  # the large unrelated commit
        write(os.path.join(path, "vendor", "v%02d" % (i % 50), "x%05d.txt" % i), "%d\n" % i)
    hg(path, "commit", "-A", "-q", "-m", "a large commit no task watches", "-u", "gen")
    target = os.path.join(path, "data", "g%02d" % (3 % 97), "t%05d" % 3, "f%06d.csv" % 3)
    with open(target, "a") as f:
        f.write("3,3,changed\n")
    hg(path, "commit", "-q", "-m", "one data file of task 3", "-u", "gen")
    return {"files": files, "tasks": tasks}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("size", choices=sorted(SIZES))
    ap.add_argument("path")
    args = ap.parse_args()
    if os.path.exists(args.path):
        sys.exit("%s exists" % args.path)
    print(generate(args.size, args.path))


if __name__ == "__main__":
    main()
