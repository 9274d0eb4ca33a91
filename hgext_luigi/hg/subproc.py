"""Starting a pipeline subprocess: the one place that does.

The loader and the runner (see ``core.protocol``) run pushed code: they get
the allow-listed environment of ``core.sandbox``, start in the tree of the
revision, and this process makes itself non-dumpable first, so they cannot
read the server's environment through ``/proc``.
"""

import contextlib
import json
import os
import subprocess
import tempfile

from mercurial import error, pycompat
from mercurial.i18n import _

from ..core import sandbox
from . import config


class CannotStart(error.Abort):
    """The interpreter of ``[luigi] python`` could not be started."""


def environment(settings, extra=None):
    """The environment of a pipeline subprocess: the variables ``[luigi]
    pass-env`` lets through, this package importable, and ``extra``."""
    sandbox.deny_inspection()
    return sandbox.pipeline_env(os.environ, settings.pass_env, settings.state, extra)


@contextlib.contextmanager
def json_file(data, prefix, dir=None):
    """The path of a temporary JSON file holding ``data``, removed on exit."""
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=".json", dir=dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        yield path
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


def start(settings, module, tree, args=(), env=None, pass_fds=(), stderr=subprocess.PIPE):
    """``python -m module args`` in ``tree``, its standard output a pipe; the
    descriptors of ``pass_fds`` are closed here once the child has them."""
    try:
        return subprocess.Popen(
            [settings.python, "-m", module] + list(args), cwd=tree,
            env=environment(settings, env), pass_fds=pass_fds,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr)
    except OSError as e:
        raise CannotStart(_(b'cannot start %s: %s')
                          % (pycompat.fsencode(settings.python), config.local(e.strerror)),
                          hint=_(b'set [luigi] python to an interpreter with luigi'))
    finally:
        for fd in pass_fds:
            os.close(fd)
