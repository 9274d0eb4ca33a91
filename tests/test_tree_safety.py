"""Hostile changesets cannot make a tree write outside itself.

History can hold what ``hg update`` refuses to write: a symlink ``out`` next to
a file ``out/x``, paths with ``..`` or under ``.hg``.  ``hg import --bypass``
commits such patches without a working directory, which is what the tests below
do; a tree of such a changeset is refused, naming the path, and nothing is
written anywhere.  Legitimate links, files replacing links and directories
replacing files are written as ``hg update`` writes them.
"""

import os
import shutil
import stat

import pytest

from conftest import Repo, make_server_repo, seeded_clone


def node(repo, rev="."):
    return repo("log", "-r", rev, "-T", "{node}").stdout


def count(repo):
    return len(repo("log", "-T", "x").stdout)


def git_patch(message, files):
    """A git-style patch adding ``files``: (path, data, mode) with mode 100644,
    100755 or 120000 (a symlink whose target is ``data``)."""
    out = ["# HG changeset patch", "# User Mallory <mallory@example.com>", message, ""]
    for path, data, mode in files:
        out += ["diff --git a/%s b/%s" % (path, path), "new file mode %s" % mode,
                "--- /dev/null", "+++ b/%s" % path, "@@ -0,0 +1,1 @@", "+" + data]
        if mode == "120000":
            out.append("\\ No newline at end of file")
    return "\n".join(out) + "\n"


def import_bypass(repo, message, files, rev=None):
    """Commit ``files`` on top of ``rev`` (default: the working directory's
    parent) without writing them to the working directory, the way a crafted
    changeset reaches history; returns its node."""
    if rev is not None:
        repo("update", "-q", "-r", rev)
    patch = os.path.join(os.path.dirname(repo.path), "crafted.patch")
    with open(patch, "w") as f:
        f.write(git_patch(message, files))
    repo("import", "--bypass", "-q", patch)
    return node(repo, "tip")


def trees(repo):
    """The entries of the tree cache (trees, their locks and markers)."""
    path = os.path.join(repo.state, "trees")
    names = os.listdir(path) if os.path.isdir(path) else []
    return sorted(n for n in names if n != ".lock")


def snapshot(root):
    """What a user sees of a directory: per path, its kind, link target or
    content and exec bit (``.hg`` left out)."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not (dirpath == root and d == ".hg")]
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                seen[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                seen[rel] = ("dir",)
            else:
                with open(full, "rb") as f:
                    seen[rel] = ("file", f.read(), bool(st.st_mode & 0o100))
    return seen


def tree_of(repo, rev):
    """``hg debugluigitree -r REV``: (tree path, files written)."""
    out = repo("debugluigitree", "-r", rev).stdout.splitlines()
    return out[0], int(out[1].split()[0])


@pytest.fixture
def outside(tmp_path):
    path = tmp_path / "outside"
    path.mkdir()
    return str(path)


@pytest.fixture
def base(empty_repo):
    empty_repo.write("README", "hello\n")
    empty_repo.commit("base")
    return empty_repo


def assert_refused(proc, path, why):
    assert proc.returncode == 255, proc.stderr
    assert "abort: refusing to write %s: %s" % (path, why) in proc.stderr


@pytest.mark.parametrize("cached_tree", [False, True], ids=["from-scratch", "recycled"])
def test_file_under_a_symlink_is_refused(base, outside, cached_tree):
    if cached_tree:
        tree_of(base, "0")  # an idle tree the next one would be made from
    before = trees(base)
    head = import_bypass(base, "escape", [("out", outside, "120000"),
                                          ("out/x", "pwned", "100644")])
    proc = base("debugluigitree", "-r", head, check=False)
    assert_refused(proc, "out/x", "path 'out/x' traverses symbolic link 'out'")
    assert os.listdir(outside) == []
    assert trees(base) == before  # no tree, no leftover, the idle tree kept
    # planning and running need the tree too: refused alike
    for cmd in ("luigi-affected", "luigi-run"):
        proc = base(cmd, "-r", head, check=False)
        assert_refused(proc, "out/x", "path 'out/x' traverses symbolic link 'out'")
    assert os.listdir(outside) == []
    # nothing left locked: the next tree is made as usual
    assert tree_of(base, "0")[1] == (0 if cached_tree else 1)


@pytest.mark.parametrize("path, why", [
    ("../escaped", "path contains illegal component: ../escaped"),
    ("a/../../escaped", "path contains illegal component: a/../../escaped"),
    ("../../../hgrc", "path contains illegal component: ../../../hgrc"),
    (".hg/hgrc", "path contains illegal component: .hg/hgrc"),
    (".HG/hgrc", "path contains illegal component: .HG/hgrc"),
    ("sub/.hg/hgrc", "path 'sub/.hg/hgrc' is inside nested repo 'sub'"),
])
def test_dotdot_and_dot_hg_paths_are_refused(base, path, why):
    hgrc = os.path.join(base.path, ".hg", "hgrc")
    assert not os.path.exists(hgrc)
    tree_of(base, "0")
    before = trees(base)
    state = snapshot(base.state)
    head = import_bypass(base, "sneaky", [(path, "[hooks]\npre-log = false", "100644")])
    proc = base("debugluigitree", "-r", head, check=False)
    assert_refused(proc, path, why)
    assert not os.path.exists(hgrc)  # "../../../hgrc" would land there
    assert trees(base) == before and snapshot(base.state) == state
    assert not os.path.exists(os.path.join(os.path.dirname(base.path), "escaped"))
    # from scratch too
    shutil.rmtree(os.path.join(base.state, "trees"))
    assert_refused(base("debugluigitree", "-r", head, check=False), path, why)
    assert trees(base) == [] and not os.path.exists(hgrc)


def test_incremental_trees_write_what_hg_update_writes(base, outside, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("victim\n")
    checkout = Repo(base.hg, str(tmp_path / "checkout"))
    base("clone", "-q", base.path, checkout.path)

    def same_as_update(rev):
        """The tree of REV, made from the previous one, equals the working
        directory ``hg update -r REV`` writes."""
        tree, written = tree_of(base, rev)
        checkout("pull", "-q")
        checkout("update", "-q", "-C", "-r", rev)
        assert snapshot(tree) == snapshot(checkout.path)
        return tree, written

    # rev 1: a regular directory out/ with a file, and an executable
    base.write("out/a", "a\n")
    base.write("run.sh", "#!/bin/sh\n")
    os.chmod(os.path.join(base.path, "run.sh"), 0o755)
    rev1 = base.commit("out is a directory")
    tree, _ = same_as_update(rev1)
    assert os.access(os.path.join(tree, "run.sh"), os.X_OK)

    # rev 2: out becomes a link out of the repository, lnk a link to a file outside
    base("remove", "-q", "out/a")
    os.symlink(outside, os.path.join(base.path, "out"))
    os.symlink(str(victim), os.path.join(base.path, "lnk"))
    rev2 = base.commit("out is a link")
    tree, written = same_as_update(rev2)
    assert written == 2  # only what changed (out/a removed)
    assert os.readlink(os.path.join(tree, "out")) == outside
    assert os.readlink(os.path.join(tree, "lnk")) == str(victim)

    # rev 3 (crafted): a file under the link; the recycled tree of rev 2 would
    # write it into `outside`
    rev3 = import_bypass(base, "escape", [("out/y", "pwned", "100644")], rev=rev2)
    proc = base("debugluigitree", "-r", rev3, check=False)
    assert_refused(proc, "out/y", "path 'out/y' traverses symbolic link 'out'")
    assert os.listdir(outside) == []

    # rev 4: a regular file replaces the link lnk; the link's target is untouched
    base("update", "-q", "-r", rev2)
    os.unlink(os.path.join(base.path, "lnk"))
    base.write("lnk", "mine\n")
    rev4 = base.commit("lnk is a file")
    tree, written = same_as_update(rev4)
    assert written == 1
    assert not os.path.islink(os.path.join(tree, "lnk"))
    assert victim.read_text() == "victim\n"

    # rev 5: a directory replaces the link out, a directory replaces the file lnk
    os.unlink(os.path.join(base.path, "out"))
    os.unlink(os.path.join(base.path, "lnk"))
    base.write("out/b", "b\n")
    base.write("lnk/c", "c\n")
    rev5 = base.commit("out and lnk are directories")
    tree, _ = same_as_update(rev5)
    assert os.listdir(outside) == [] and victim.read_text() == "victim\n"

    # rev 6: files replace those directories again
    base("remove", "-q", "out/b", "lnk/c")
    base.write("out", "file\n")
    base.write("lnk", "file\n")
    same_as_update(base.commit("files again"))
    assert os.listdir(outside) == [] and victim.read_text() == "victim\n"


def test_link_and_file_added_in_separate_changesets_refused_when_both_present(
        base, outside):
    # the link alone is fine; the file under it, added by a later changeset
    # whose parent is the link, is refused wherever the tree is made from
    link = import_bypass(base, "link", [("out", outside, "120000")])
    path, _ = tree_of(base, link)
    assert os.readlink(os.path.join(path, "out")) == outside
    head = import_bypass(base, "file under it", [("out/x", "pwned", "100644")], rev=link)
    for extra in ([], ["--config", "luigi.tree-cache=1"]):
        proc = base("debugluigitree", "-r", head, *extra, check=False)
        assert_refused(proc, "out/x", "path 'out/x' traverses symbolic link 'out'")
    assert os.listdir(outside) == []


# -- pushes ---------------------------------------------------------------------

ESCAPE = "refusing to write data/out/x: path 'data/out/x' traverses symbolic link 'data/out'"


@pytest.mark.parametrize("over", ["path", "http"])
def test_gate_refuses_a_push_with_a_file_under_a_symlink(hg, serve, tmp_path, outside, over):
    server = make_server_repo(hg, str(tmp_path / "server"), "gate = true\n")
    url = serve(server).url if over == "http" else server.path
    clone = seeded_clone(hg, server, str(tmp_path / "mallory"), url)
    clone("push", url)  # the pipeline passes the gate (its task graph is now cached)
    before = count(server)
    # the changeset leaves the pipeline alone: the gate must not rely on loading it
    import_bypass(clone, "data", [("data/out", outside, "120000"),
                                  ("data/out/x", "pwned", "100644")])
    proc = clone("push", url, check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "luigi gate:" in text and ESCAPE in text
    assert count(server) == before
    assert os.listdir(outside) == []


def test_worker_build_of_a_hostile_head_fails_and_writes_nothing(hg, tmp_path, outside):
    server = make_server_repo(hg, str(tmp_path / "server"),
                              "on-push = queue\ncoalesce = false\n")
    clone = seeded_clone(hg, server, str(tmp_path / "mallory"))
    clone("push", server.path)
    server("luigi-worker", "--once")  # a tree of the good head, to be recycled
    hostile = import_bypass(clone, "data", [("data/out", outside, "120000"),
                                            ("data/out/x", "pwned", "100644")])
    clone("push", server.path)
    # and a good head beside it, built by the same worker process after the failure
    clone.write("data/raw/sales-east.csv", "2026-11-21,Gadget,1,15.50\n", "a")
    fixed = clone.commit("east")
    clone("push", "-f", server.path)

    work = server("luigi-worker", "--once", check=False)
    assert "2 queue entries processed, 1 failed" in work.stdout
    assert ESCAPE in work.stderr
    entries = {e["head"]: e for e in server.json("luigi-queue")}
    assert entries[hostile]["state"] == "failed" and ESCAPE in entries[hostile]["error"]
    assert entries[fixed]["state"] == "done"
    assert os.listdir(outside) == []
