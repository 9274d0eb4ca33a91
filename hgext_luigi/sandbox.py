"""What a pipeline subprocess may see of the server: an allow-listed environment
and an import path holding nothing but this package.  Plain Python (no
Mercurial, no Luigi), shared by every subprocess that imports pipeline code.

Whoever may push may run code on a server repository: the import of the pipeline
module, ``requires()``, ``run()``.  That code gets the variables ``[luigi]
pass-env`` lists (globs allowed), the secrets a server setting names for the
code that needs them (moved out of the environment before pipeline code is
imported, see ``context.stash_secrets``), and what the extension sets itself.
"""

import fnmatch
import hashlib
import os

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

# set by the extension for its own subprocesses, never taken from the server
OWN = ("HGEXT_LUIGI_CONTEXT", "HGEXT_LUIGI_SECRETS", "PYTHONPATH",
       "PYTHONDONTWRITEBYTECODE", "PYTHONNOUSERSITE", "PYTHONSAFEPATH")


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


def pipeline_env(environ, patterns, state, secrets=(), extra=None):
    """The environment of a subprocess that imports or runs pipeline code."""
    env = filter_env(environ, patterns)
    env["PYTHONPATH"] = lib_dir(state)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # nothing written into the trees
    env["PYTHONNOUSERSITE"] = "1"  # ~/.local of the server's account: not the pipeline
    handed = [n for n in secrets if n in environ]
    if handed:
        env.update((n, environ[n]) for n in handed)
        env["HGEXT_LUIGI_SECRETS"] = ",".join(handed)
    env.update(extra or {})
    return env


def env_digest(env):
    """A digest of what the pipeline sees of the environment (it may shape the
    graph: parameters read from variables), for the graph cache key."""
    h = hashlib.sha256()
    for k in sorted(env):
        if k in OWN:
            continue
        h.update(("%s=%s\0" % (k, env[k])).encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]
