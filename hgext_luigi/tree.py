"""Materialize the repository as of a changeset, for pipeline code to run from.

Trees live in ``.hg/luigi/trees/<full hex>/``.  A new tree is made by taking the
least recently used idle tree and applying ``status(old, new)`` to it: only the
changed files are written, so a run one changeset later costs in proportion to
what changed, not to the size of the repository.  With no idle tree to recycle,
the whole manifest is written.

Each tree has a lock file; a run holds it shared while it uses the tree, and a
tree is only recycled or pruned under an exclusive lock, so a concurrent run never
sees its tree change.  A tree is only used once its ``.ready`` marker exists: a
materialization that was killed midway is thrown away.
"""

import errno
import fcntl
import os
import shutil

from mercurial import error, hg, ui as uimod


class Tree:
    """A materialized tree, held (shared lock) until :meth:`release`."""

    def __init__(self, path, lockfd, changeset, written):
        self.path = path
        self._lockfd = lockfd
        self.changeset = changeset
        self.written = written  # files written to make it

    def release(self):
        if self._lockfd is not None:
            os.close(self._lockfd)
            self._lockfd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _lock(path, exclusive, blocking=True):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    flags = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    if not blocking:
        flags |= fcntl.LOCK_NB
    try:
        fcntl.flock(fd, flags)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    return fd


def _write(root, ctx, path):
    fctx = ctx[path]
    dest = os.path.join(root, path)
    _remove(dest)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    flags = fctx.flags()
    data = fctx.data()
    if b'l' in flags:
        os.symlink(data, dest)
        return
    with open(dest, 'wb') as f:
        f.write(data)
    os.chmod(dest, 0o755 if b'x' in flags else 0o644)


def _write_all(root, ctx, files, progress):
    prog = progress(len(files)) if progress else None
    for f in files:
        _write(root, ctx, f)
        if prog:
            prog.increment()
    if prog:
        prog.complete()
    return len(files)


def _remove(dest):
    try:
        if os.path.isdir(dest) and not os.path.islink(dest):
            shutil.rmtree(dest)
        else:
            os.unlink(dest)
    except FileNotFoundError:
        pass


def _prune_empty_dirs(root, path):
    d = os.path.dirname(path)
    while d:
        try:
            os.rmdir(os.path.join(root, d))
        except OSError:
            return
        d = os.path.dirname(d)


def materialize(repo, ctx, keep=3, progress=None):
    """A held :class:`Tree` with the files of ``ctx`` (a changectx)."""
    base = os.path.join(repo.vfs.join(b'luigi'), b'trees')
    os.makedirs(base, exist_ok=True)
    node = ctx.hex()
    path = os.path.join(base, node)
    ready = path + b'.ready'
    glock = _lock(os.path.join(base, b'.lock'), exclusive=True)
    try:
        if os.path.exists(ready):
            fd = _lock(path + b'.lock', exclusive=False)
            os.utime(ready)
            return Tree(path, fd, node.decode('ascii'), 0)

        # discard leftovers of a materialization that was killed midway
        for name in os.listdir(base):
            if name.endswith(b'.tmp'):
                shutil.rmtree(os.path.join(base, name), ignore_errors=True)

        work = path + b'.tmp'
        fd = None
        written = 0
        idle = []
        for name in os.listdir(base):
            if name.endswith(b'.ready'):
                other = name[: -len(b'.ready')]
                idle.append((os.stat(os.path.join(base, name)).st_mtime, other))
        idle.sort()
        recycled = None
        for _mtime, other in idle:
            if other not in repo.unfiltered():
                continue
            ofd = _lock(os.path.join(base, other + b'.lock'), exclusive=True, blocking=False)
            if ofd is None:
                continue
            os.unlink(os.path.join(base, other + b'.ready'))
            os.rename(os.path.join(base, other), work)
            recycled = (other, ofd)
            break

        if recycled is not None:
            other, ofd = recycled
            status = repo.unfiltered().status(repo.unfiltered()[other].node(), ctx.node())
            for f in status.removed:
                _remove(os.path.join(work, f))
                _prune_empty_dirs(work, f)
            written = _write_all(work, ctx, list(status.modified) + list(status.added),
                                 progress)
            os.close(ofd)
            try:
                os.unlink(os.path.join(base, other + b'.lock'))
            except FileNotFoundError:
                pass
        else:
            os.makedirs(work)
            written = _write_all(work, ctx, list(ctx.manifest()), progress)
        os.rename(work, path)
        with open(ready, 'wb') as f:
            f.write(b'%d\n' % written)
        fd = _lock(path + b'.lock', exclusive=False)
        _prune(base, keep, node)
        return Tree(path, fd, node.decode('ascii'), written)
    finally:
        os.close(glock)


def _prune(base, keep, current):
    ready = []
    for name in os.listdir(base):
        if name.endswith(b'.ready'):
            other = name[: -len(b'.ready')]
            ready.append((os.stat(os.path.join(base, name)).st_mtime, other))
    ready.sort(reverse=True)
    for _mtime, other in ready[keep:]:
        if other == current:
            continue
        fd = _lock(os.path.join(base, other + b'.lock'), exclusive=True, blocking=False)
        if fd is None:
            continue
        try:
            os.unlink(os.path.join(base, other + b'.ready'))
            shutil.rmtree(os.path.join(base, other), ignore_errors=True)
        finally:
            os.close(fd)


_held = []


def materialize_path(repo_root, changeset):
    """For a pipeline subprocess: the tree of ``changeset``, held until exit."""
    ui = uimod.ui.load()
    repo = hg.repository(ui, os.fsencode(repo_root))
    try:
        ctx = repo.unfiltered()[changeset.encode('ascii')]
    except error.RepoLookupError:
        raise LookupError('unknown changeset %s' % changeset)
    tree = materialize(repo, ctx)
    _held.append(tree)
    return os.fsdecode(tree.path)
