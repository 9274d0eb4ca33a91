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


BARE = '''"""The same graph in plain Luigi, outside any repository: the floor that
``hg luigi-run`` is compared with."""

import os
import time

import luigi

TASKS = {tasks}
LAYERS = {layers}
PER_LAYER = TASKS // LAYERS
OUT = os.environ["BARE_OUT"]


def layer_of(idx):
    return idx // PER_LAYER


class Node(luigi.Task):
    idx = luigi.IntParameter()
    group = luigi.Parameter()

    def requires(self):
        layer = layer_of(self.idx)
        if layer == 0:
            return []
        base = (layer - 1) * PER_LAYER
        first = base + (self.idx * 7) % PER_LAYER
        second = base + (self.idx * 13 + 1) % PER_LAYER
        return [node(i) for i in sorted({{first, second}})]

    def output(self):
        return luigi.LocalTarget(os.path.join(OUT, "node-%05d.txt" % self.idx))

    def run(self):
        time.sleep(0.02)
        with self.output().open("w") as f:
            f.write("%d\\n" % self.idx)


def node(idx):
    return Node(idx=idx, group=group_of(idx))


def group_of(idx):
    return "g%02d/t%05d" % (idx % 97, idx)


class All(luigi.Task):
    def requires(self):
        last = (LAYERS - 1) * PER_LAYER
        return [node(i) for i in range(last, TASKS)]

    def output(self):
        return luigi.LocalTarget(os.path.join(OUT, "all.txt"))

    def run(self):
        with self.output().open("w") as f:
            f.write("done\\n")
'''


# -- the graph, as the pipelines above build it (for the oracle) ---------------

def per_layer(tasks):
    return tasks // LAYERS


def requires_of(idx, tasks):
    n = per_layer(tasks)
    layer = idx // n
    if layer == 0:
        return []
    base = (layer - 1) * n
    return sorted({base + (idx * 7) % n, base + (idx * 13 + 1) % n})


def group_of(idx):
    return "g%02d/t%05d" % (idx % 97, idx)


def key_of(idx):
    return "Node(idx=%d, group=%s)" % (idx, group_of(idx))


def task_of_path(path):
    """The task index whose directory holds ``path``, or None."""
    parts = path.split("/")
    if len(parts) >= 4 and parts[0] == "data" and parts[2].startswith("t"):
        return int(parts[2][1:])
    return None


def last_layer(tasks):
    return list(range((LAYERS - 1) * per_layer(tasks), tasks))


def data_file(i, tasks):
    """The i-th watched data file, in the directory of task ``i % tasks``."""
    task = i % tasks
    return os.path.join("data", "g%02d" % (task % 97), "t%05d" % task, "f%06d.csv" % i)


def hg(path, *args):
    subprocess.run(["hg", "-R", path] + list(args), check=True, stdout=subprocess.DEVNULL)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def generate(size, path):
    """The repository: the pipeline and F files (a share under each task's
    directory, the rest elsewhere), then a large commit no task watches, then a
    1-file change to one task's data; ``.hg/bare.py`` is the same graph in plain
    Luigi.  Returns the sizes."""
    files, tasks = SIZES[size]
    subprocess.run(["hg", "init", path], check=True)
    write(os.path.join(path, "pipelines", "__init__.py"),
          PIPELINE.format(tasks=tasks, layers=LAYERS))
    write(os.path.join(path, ".hg", "hgrc"), "[luigi]\nroots = All\n")
    watched = files // 2
    for i in range(watched):
        write(os.path.join(path, data_file(i, tasks)), "%d,%d\n" % (i, i % tasks))
    hg(path, "commit", "-A", "-q", "-m", "pipeline and watched data", "-u", "gen")
    revs = {"data": tip(path)}
    others = max(0, files - watched - 1000)
    for i in range(others):
        write(os.path.join(path, "docs", "d%03d" % (i % 500), "p%06d.md" % i), "page %d\n" % i)
    if others:
        hg(path, "commit", "-A", "-q", "-m", "unwatched documents", "-u", "gen")
        revs["docs"] = tip(path)
    for i in range(1000):  # the large unrelated commit
        write(os.path.join(path, "vendor", "v%02d" % (i % 50), "x%05d.txt" % i), "%d\n" % i)
    hg(path, "commit", "-A", "-q", "-m", "a large commit no task watches", "-u", "gen")
    revs["vendor"] = tip(path)
    touch(path, [data_file(3, tasks)], "one data file of task 3")
    revs["one-file"] = tip(path)
    with open(os.path.join(path, ".hg", "bare.py"), "w") as f:
        f.write(BARE.format(tasks=tasks, layers=LAYERS))
    return {"files": files, "tasks": tasks, "watched": watched, "revs": revs}


def tip(path):
    return subprocess.run(["hg", "-R", path, "log", "-r", ".", "-T", "{node}"], check=True,
                          capture_output=True, text=True).stdout


def touch(path, files, message, tag="changed"):
    """Commit a line appended to each of ``files``."""
    for rel in files:
        with open(os.path.join(path, rel), "a") as f:
            f.write("%s\n" % tag)
    hg(path, "commit", "-q", "-m", message, "-u", "gen")


def files_of_tasks(tasks, watched, chosen, count):
    """Up to ``count`` watched data files of the tasks ``chosen``."""
    out = []
    for i in range(watched):
        if i % tasks in chosen:
            out.append(data_file(i, tasks))
            if len(out) == count:
                break
    return out


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
