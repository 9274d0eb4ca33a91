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

# the graph, written once: in both pipelines below and, for the oracle, here
GRAPH = '''

def needs(idx, tasks=TASKS):
    """Task ``idx`` needs two tasks of the layer before (fan-in), and each task
    is needed by about two of the next (fan-out)."""
    per = tasks // LAYERS
    layer = idx // per
    if layer == 0:
        return []
    base = (layer - 1) * per
    return sorted({base + (idx * 7) % per, base + (idx * 13 + 1) % per})


def last_layer(tasks=TASKS):
    return list(range((LAYERS - 1) * (tasks // LAYERS), tasks))


def group_of(idx):
    return "g%02d/t%05d" % (idx % 97, idx)
'''

PIPELINE = '''"""A synthetic pipeline: %(tasks)d tasks in %(layers)d layers."""

import time

import luigi

from hgext_luigi import HgTask

TASKS = %(tasks)d
LAYERS = %(layers)d
%(graph)s

class Node(HgTask):
    """Task ``idx`` watches its directory."""

    idx = luigi.IntParameter()
    group = luigi.Parameter()
    watches = ["data/{group}/**"]

    def requires(self):
        return [node(i) for i in needs(self.idx)]

    def output(self):
        return self.stamped_target("node-%%05d.txt" %% self.idx)

    def run(self):
        time.sleep(0.02)
        with self.output().open("w") as f:
            f.write("%%d\\n" %% self.idx)


def node(idx):
    return Node(idx=idx, group=group_of(idx))


class All(HgTask):
    def requires(self):
        return [node(i) for i in last_layer()]

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

TASKS = %(tasks)d
LAYERS = %(layers)d
OUT = os.environ["BARE_OUT"]
%(graph)s

class Node(luigi.Task):
    idx = luigi.IntParameter()
    group = luigi.Parameter()

    def requires(self):
        return [node(i) for i in needs(self.idx)]

    def output(self):
        return luigi.LocalTarget(os.path.join(OUT, "node-%%05d.txt" %% self.idx))

    def run(self):
        time.sleep(0.02)
        with self.output().open("w") as f:
            f.write("%%d\\n" %% self.idx)


def node(idx):
    return Node(idx=idx, group=group_of(idx))


class All(luigi.Task):
    def requires(self):
        return [node(i) for i in last_layer()]

    def output(self):
        return luigi.LocalTarget(os.path.join(OUT, "all.txt"))

    def run(self):
        with self.output().open("w") as f:
            f.write("done\\n")
'''

_graph = {"TASKS": 0, "LAYERS": LAYERS}
exec(GRAPH, _graph)  # noqa: S102 - our own constant, as the pipelines run it
requires_of, last_layer, group_of = _graph["needs"], _graph["last_layer"], _graph["group_of"]


def source(template, tasks):
    return template % {"tasks": tasks, "layers": LAYERS, "graph": GRAPH}


def key_of(idx):
    return "Node(idx=%d, group=%s)" % (idx, group_of(idx))


def task_of_path(path):
    """The task index whose directory holds ``path``, or None."""
    parts = path.split("/")
    if len(parts) >= 4 and parts[0] == "data" and parts[2].startswith("t"):
        return int(parts[2][1:])
    return None


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
          source(PIPELINE, tasks))
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
        f.write(source(BARE, tasks))
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
