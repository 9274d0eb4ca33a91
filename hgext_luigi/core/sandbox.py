"""What a pipeline subprocess may see of the server: an allow-listed environment
and an import path holding nothing but this package.  Plain Python (no
Mercurial, no Luigi), shared by every subprocess that imports pipeline code.

Whoever may push may run code on a server repository: the import of the pipeline
module, ``requires()``, ``run()``.  That code gets the variables ``[luigi]
pass-env`` lists (globs allowed) and what the extension sets itself.  The
secrets a server setting names reach the run through a pipe, never an
environment (see ``context.stash_secrets``), and the hg process makes itself
non-dumpable so that its own environment cannot be read through /proc by the
code it starts.
"""

import fnmatch
import hashlib
import json
import os

from . import protocol

# hgext_luigi/, this module being hgext_luigi/core/sandbox.py
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# what pipeline code sees of the server's environment unless [luigi] pass-env says
DEFAULT_PASS_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_*", "TZ", "TMPDIR",
                    "TERM")

# set by the extension for its own subprocesses, never taken from the server
OWN = protocol.ENV_NAMES + ("PYTHONPATH",
       "PYTHONDONTWRITEBYTECODE",
       "PYTHONNOUSERSITE", "PYTHONSAFEPATH")


def allowed(name, patterns):
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def filter_env(environ, patterns):
    """The variables of ``environ`` whose names match one of ``patterns``."""
    return {k: v for k, v in environ.items() if k not in OWN and allowed(k, patterns)}


def lib_dir(state):
    """A folder whose only entry is this package (a symlink), for PYTHONPATH:
    the pipeline's interpreter finds ``hgext_luigi`` and nothing else of ours
    (the project's own example ``pipelines/`` must never shadow a repository's)."""
    lib = os.path.join(state, "lib")
    link = os.path.join(lib, "hgext_luigi")
    if os.path.realpath(link) != os.path.realpath(PACKAGE_DIR):
        os.makedirs(lib, exist_ok=True)
        tmp = "%s.%d.tmp" % (link, os.getpid())
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(PACKAGE_DIR, tmp)
        os.replace(tmp, link)
    return lib


def pipeline_env(environ, patterns, state, extra=None):
    """The environment of a subprocess that imports or runs pipeline code."""
    env = filter_env(environ, patterns)
    env["PYTHONPATH"] = lib_dir(state)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # nothing written into the trees
    env["PYTHONNOUSERSITE"] = "1"  # ~/.local of the server's account: not the pipeline
    # the subprocess starts in the tree: without this (Python >= 3.11), a pushed
    # json.py at its top would be imported by our own code before it has set
    # anything up; the loader and the runner add the tree to sys.path themselves
    env["PYTHONSAFEPATH"] = "1"
    env.update(extra or {})
    return env


def secrets_pipe(environ, names):
    """``(read fd, env)`` handing the variables ``names`` of ``environ`` to a
    child through a pipe (pass the fd with ``pass_fds``; close it after the
    start), or ``(None, {})`` when there is none to hand.  A secret in a child's
    environment could be read from ``/proc/<pid>/environ`` by any process of the
    account for as long as the child lives; a pipe is read once."""
    handed = {n: environ[n] for n in names if n in environ}
    if not handed:
        return None, {}
    data = json.dumps(handed).encode("utf-8")
    if len(data) > 60000:  # written before the child starts: must fit the pipe
        raise ValueError("secrets too large for a pipe")
    r, w = os.pipe()
    try:
        os.write(w, data)
    finally:
        os.close(w)
    return r, {protocol.SECRETS_FD_ENV: str(r)}


def deny_inspection():
    """Make this process non-dumpable (Linux): processes of the same account, the
    pipeline code it starts among them, can no longer read its memory or
    ``/proc/<pid>/environ``, which holds the server's whole environment."""
    import ctypes  # only when a pipeline subprocess is about to start

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0
    except (OSError, AttributeError):
        pass


def env_digest(env):
    """A digest of what the pipeline sees of the environment (it may shape the
    graph: parameters read from variables), for the graph cache key."""
    h = hashlib.sha256()
    for k in sorted(env):
        if k in OWN:
            continue
        h.update(("%s=%s\0" % (k, env[k])).encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]
