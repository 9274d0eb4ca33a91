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

Changesets are hostile (anyone may push): a tree is written as ``hg update``
writes a working directory, through a ``vfs`` whose path auditor refuses ``..``,
``.hg`` and anything through a symbolic link, links are made as links, and a
changeset holding such a path is refused before anything is written.
"""

import errno
import fcntl
import hashlib
import os
import shutil
import stat

from mercurial import error, pathutil, pycompat, vfs as vfsmod
from mercurial.i18n import _


class Tree:
    """A materialized tree, held (shared lock) until :meth:`release`."""

    def __init__(self, path, lockfd, written):
        self.path = path
        self._lockfd = lockfd
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


# -- what may be written ------------------------------------------------------
#
# A pushed changeset is hostile: its manifest may hold ``../x``, ``.hg/hgrc`` or a
# link ``out -> /elsewhere`` next to a file ``out/x``, which ``hg update`` refuses
# but history can hold (``hg import --bypass``).  Every path is checked against
# the manifest before anything is written, then written through a vfs whose
# auditor looks at the disk, the way ``hg update`` writes a working directory.

def _refuse(path, why):
    raise error.Abort(_(b'refusing to write %s: %s') % (path, why),
                      hint=_(b'hg update would refuse it too; no tree of this '
                             b'changeset was written'))


def _check_path(audit, mf, path):
    """Refuse ``path`` of manifest ``mf`` when it could not be written inside the
    tree: an illegal component, or a parent that is itself a file or a link."""
    try:
        audit(path)
    except error.Abort as e:
        _refuse(path, e.message)
    if b'//' in path:
        _refuse(path, _(b'found invalid consecutive slashes in path'))
    for parent in pathutil.finddirs_rev_noroot(path):
        if parent in mf:
            _refuse_under(mf, path, parent)


def _refuse_under(mf, path, parent):
    if b'l' in mf.flags(parent):
        # Mercurial's own words for it (pathutil.pathauditor)
        _refuse(path, _(b'path %r traverses symbolic link %r')
                % (pycompat.bytestr(path), pycompat.bytestr(parent)))
    _refuse(path, _(b'%s is both a file and a directory') % parent)


def _check_not_a_dir(mf, path):
    """Refuse ``path`` when files of the manifest live under it (a link or a file
    that unchanged files would have to be written through)."""
    try:
        isdir = mf.hasdir(path)
    except ValueError as e:  # Mercurial's directory map refuses "a//b"
        _refuse(path, pycompat.bytestr(str(e)))
    if isdir:
        prefix = path + b'/'
        child = next(f for f in mf if f.startswith(prefix))
        _refuse_under(mf, child, path)


def check_paths(ctx, files=None, removed=()):
    """Abort, naming the path, unless every file of ``ctx`` in ``files`` (default:
    all of them) can be written inside a tree without leaving it, and every path
    in ``removed`` can be removed inside it.  Reads the manifest only: cheap, and
    a refused changeset writes nothing at all."""
    mf = ctx.manifest()
    audit = pathutil.pathauditor(b'', realfs=False)  # components only, not the disk
    for f in removed:
        try:
            audit(f)
        except error.Abort as e:
            _refuse(f, e.message)
    whole = files is None
    for f in mf if whole else files:
        _check_path(audit, mf, f)
        if not whole:  # with every file checked, the files under f were already
            _check_not_a_dir(mf, f)


def _tree_vfs(root):
    # a fresh, uncached auditor: each write lstat()s every parent on disk, so a
    # link made earlier in the same materialization is never written through
    return vfsmod.vfs(root, audit=True, cacheaudited=False)


def _audited(path, func, *args):
    try:
        return func(*args)
    except error.Abort as e:
        _refuse(path, e.message)


def _clear(wvfs, path):
    """Make room for ``path`` as ``hg update`` does (workingfilectx.clearunknown):
    a directory in its place goes, a file or link in place of a parent goes."""
    _audited(path, wvfs.audit, path)
    if wvfs.isdir(path) and not wvfs.islink(path):
        wvfs.rmtree(path, forcibly=True)
    for parent in reversed(list(pathutil.finddirs(path))):
        if wvfs.isfileorlink(parent):
            wvfs.unlink(parent)
            break


def _write(wvfs, ctx, path, fresh):
    """Write one file as localrepo.wwrite does: a link as a link (never followed),
    a file after unlinking whatever entry was there."""
    fctx = ctx[path]
    if not fresh:  # an empty tree has nothing in the way (the manifest was checked)
        _clear(wvfs, path)
    flags = fctx.flags()
    data = fctx.data()
    if b'l' in flags:
        _audited(path, wvfs.symlink, data, path)
        return
    _audited(path, wvfs.write, path, data)
    wvfs.setflags(path, False, b'x' in flags)


def _write_all(wvfs, ctx, files, progress, fresh=False):
    prog = progress(len(files)) if progress else None
    for f in files:
        _write(wvfs, ctx, f, fresh)
        if prog:
            prog.increment()
    if prog:
        prog.complete()
    return len(files)


def _remove(wvfs, path):
    _audited(path, wvfs.audit, path)
    if wvfs.isdir(path) and not wvfs.islink(path):
        wvfs.rmtree(path, forcibly=True)
    else:
        wvfs.tryunlink(path)
    _prune_empty_dirs(wvfs, path)


def _prune_empty_dirs(wvfs, path):
    # not vfs.unlinkpath(rmdir=True): it would remove an emptied tree root too
    for d in pathutil.finddirs(path):
        if not d:
            return
        try:
            wvfs.rmdir(d)
        except OSError:
            return


# -- trees --------------------------------------------------------------------

def _ready_trees(base):
    """(mtime, node) of every complete tree, least recently used first."""
    ready = []
    for name in os.listdir(base):
        if name.endswith(b'.ready'):
            ready.append((os.stat(os.path.join(base, name)).st_mtime,
                          name[: -len(b'.ready')]))
    ready.sort()
    return ready


def snapshot(path):
    """A digest of every entry under ``path`` as it is on disk (name, type,
    size, mode, mtime): pipeline code runs with its tree as current directory
    and may write into it, and what it wrote must never reach the build of
    another changeset (another pusher's) that recycles or reuses the tree.
    One ``lstat`` per entry (from ``scandir``), nothing else per file: this is
    paid twice per run on trees of 100,000 files."""
    h = hashlib.sha256()
    st = os.lstat(path)
    h.update(b'.\0%o\0%d\0%d\n' % (st.st_mode, st.st_size, st.st_mtime_ns))
    _snapshot_dir(path, b'', h)
    return h.hexdigest().encode('ascii')


def _snapshot_dir(top, rel, h):
    with os.scandir(top) as it:
        entries = sorted(it, key=lambda e: e.name)
    subdirs = []
    for e in entries:
        st = e.stat(follow_symlinks=False)
        h.update(b'%s%s\0%o\0%d\0%d\n' % (rel, e.name, st.st_mode, st.st_size,
                                            st.st_mtime_ns))
        if stat.S_ISDIR(st.st_mode):
            subdirs.append(e)
    for e in subdirs:
        _snapshot_dir(e.path, rel + e.name + b'/', h)


def _mark_ready(base, node, written):
    with open(os.path.join(base, node + b'.ready'), 'wb') as f:
        f.write(b'%d\n%s\n' % (written, snapshot(os.path.join(base, node))))


def _intact(base, node):
    """Whether the tree of ``node`` is exactly as it was written."""
    try:
        with open(os.path.join(base, node + b'.ready'), 'rb') as f:
            lines = f.read().split(b'\n')
    except FileNotFoundError:
        return False
    return len(lines) > 1 and lines[1] == snapshot(os.path.join(base, node))


def _discard(base, node):
    """Throw a tree away (its ``.ready`` first, so no one takes it meanwhile);
    call it holding the tree's exclusive lock."""
    try:
        os.unlink(os.path.join(base, node + b'.ready'))
    except FileNotFoundError:
        pass
    shutil.rmtree(os.path.join(base, node), ignore_errors=True)


def _take_idle(repo, base):
    """The least recently used tree no run holds and nothing changed since it was
    written, locked exclusively: (node, fd), or None.  A tree found changed is
    thrown away."""
    unfi = repo.unfiltered()
    for _mtime, other in _ready_trees(base):
        if other not in unfi:
            continue
        fd = _lock(os.path.join(base, other + b'.lock'), exclusive=True, blocking=False)
        if fd is None:
            continue
        if _intact(base, other):
            return other, fd
        _discard(base, other)
        os.close(fd)
    return None


def _build(repo, ctx, base, work, progress):
    """Write the tree of ``ctx`` at ``work``; the number of files written.  Every
    path is checked before anything is written: a refused changeset leaves the
    idle tree it would have recycled as it was."""
    taken = _take_idle(repo, base)
    if taken is None:
        files = list(ctx.manifest())
        check_paths(ctx)
        os.makedirs(work)
        return _write_all(_tree_vfs(work), ctx, files, progress, fresh=True)
    other, ofd = taken
    try:
        unfi = repo.unfiltered()
        status = unfi.status(unfi[other].node(), ctx.node())
        changed = list(status.modified) + list(status.added)
        check_paths(ctx, changed, status.removed)
        os.unlink(os.path.join(base, other + b'.ready'))
        os.rename(os.path.join(base, other), work)
        try:
            os.unlink(os.path.join(base, other + b'.lock'))
        except FileNotFoundError:
            pass
        wvfs = _tree_vfs(work)
        for f in status.removed:
            _remove(wvfs, f)
        return _write_all(wvfs, ctx, changed, progress)
    finally:
        os.close(ofd)


def materialize(repo, ctx, keep=3, progress=None):
    """A held :class:`Tree` with the files of ``ctx`` (a changectx).  Aborts,
    writing nothing, when ``ctx`` holds a path that cannot be written inside the
    tree (see :func:`check_paths`)."""
    base = os.path.join(repo.vfs.join(b'luigi'), b'trees')
    os.makedirs(base, exist_ok=True)
    node = ctx.hex()
    path = os.path.join(base, node)
    ready = path + b'.ready'
    glock = _lock(os.path.join(base, b'.lock'), exclusive=True)
    try:
        if os.path.exists(ready):
            fd = _reuse(base, node)
            if fd is not None:
                return Tree(path, fd, 0)

        # discard leftovers of a materialization that was killed midway
        for name in os.listdir(base):
            if name.endswith(b'.tmp'):
                shutil.rmtree(os.path.join(base, name), ignore_errors=True)

        work = path + b'.tmp'
        try:
            written = _build(repo, ctx, base, work, progress)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)  # a half-written tree is never used
            raise
        os.rename(work, path)
        _mark_ready(base, node, written)
        fd = _lock(path + b'.lock', exclusive=False)
        _prune(base, keep, node)
        return Tree(path, fd, written)
    finally:
        os.close(glock)


def _reuse(base, node):
    """The shared lock of the ready tree of ``node`` when it is intact; else the
    tree is thrown away (when no run holds it) and None returned."""
    path = os.path.join(base, node)
    xfd = _lock(path + b'.lock', exclusive=True, blocking=False)
    if xfd is None:  # in use by a run: checked when it is next taken idle
        fd = _lock(path + b'.lock', exclusive=False)
        os.utime(path + b'.ready')
        return fd
    try:
        if not _intact(base, node):
            _discard(base, node)
            return None
        os.utime(path + b'.ready')
    finally:
        os.close(xfd)
    return _lock(path + b'.lock', exclusive=False)


def _prune(base, keep, current):
    for _mtime, other in list(reversed(_ready_trees(base)))[keep:]:
        if other == current:
            continue
        fd = _lock(os.path.join(base, other + b'.lock'), exclusive=True, blocking=False)
        if fd is None:
            continue
        try:
            _discard(base, other)
        finally:
            os.close(fd)
