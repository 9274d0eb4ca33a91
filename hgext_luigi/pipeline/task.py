"""``HgTask``: a Luigi task built at a Mercurial changeset.

Pipeline authors subclass :class:`HgTask`, list the repository paths it reads in
``watches`` and read and write through :meth:`HgTask.source_path` and
:meth:`HgTask.stamped_target`.  The ``changeset`` parameter is filled in by
``hg luigi-run``: the revision being built for an affected task, the changeset of
the build being reused for an unaffected one.
"""

import os
import re

import luigi
from luigi.task import flatten

from . import context
from ..core import objects

_PENDING = "0" * 40


def format_key(family, pairs):
    """``Family(name=value, ...)``: a task's identity across revisions."""
    return "%s(%s)" % (family, ", ".join("%s=%s" % (n, v) for n, v in pairs))


def _key_from_values(family, params, values):
    objs = dict(params)
    pairs = []
    for name, value in values:
        p = objs[name]
        if name == "changeset" or not p.significant or not getattr(p, "visibility", 0) == 0:
            continue
        pairs.append((name, p.serialize(value)))
    return format_key(family, pairs)


_PARAMS = {}
_VALUES = {}  # (run context, class, args, kwargs) -> parameter values


def _params_of(cls):
    """``cls.get_params()``, read once per class: Luigi looks through ``dir(cls)``
    on every call, and a key is asked for many times per task."""
    params = _PARAMS.get(cls)
    if params is None:
        params = _PARAMS[cls] = cls.get_params()
    return params


def task_key(task):
    """The key of a task instance (an ``HgTask`` or a plain ``luigi.Task``)."""
    params = _params_of(type(task))
    values = [(n, getattr(task, n)) for n, _p in params]
    return _key_from_values(task.get_task_family(), params, values)


def str_params(task):
    """The task's significant parameters as strings, without ``changeset``."""
    out = task.to_str_params(only_significant=True, only_public=True)
    out.pop("changeset", None)
    return out


def output_digests(task):
    """``(outputs, missing)`` of a task: path, size and sha256 of each output that
    exists, and the paths of those that do not."""
    from ..core.lineage import file_digest

    out = []
    missing = []
    for target in flatten(task.output()):
        path = getattr(target, "path", None)
        if path is None:
            continue
        if objects.is_url(path):  # read back with the client the target wrote with
            got = objects.digest(path, s3=_boto3_client_of(target))
            if got is None:
                missing.append(path)
            else:
                out.append({"path": path, "size": got[0], "sha256": got[1]})
            continue
        path = os.path.abspath(path)
        if not os.path.exists(path):
            missing.append(path)
            continue
        size, digest = file_digest(path)
        out.append({"path": path, "size": size, "sha256": digest})
    return out, missing


def _boto3_client_of(target):
    """The boto3 client of a ``luigi.contrib.s3.S3Target`` (its client's
    resource, with the credentials it was made with), else None: a default one."""
    resource = getattr(getattr(target, "fs", None), "s3", None)
    return getattr(getattr(resource, "meta", None), "client", None)


_S3_CLIENT = {}  # process -> its S3Client over boto3's chain


def s3_client():
    """A ``luigi.contrib.s3.S3Client`` for a stamped target.  During a build
    the hg side issued credentials for (``[luigi.roles]``), those: given
    explicitly, so the client keeps them even if Luigi made it earlier than it
    uses it.  Else boto3's chain, over what ``[luigi] pass-env`` lets through
    (and Luigi's ``[s3]`` section).  boto3 itself reads the endpoint from
    ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, and the region.  The
    latter is made once per process (~10 ms each, and Luigi asks for outputs
    many times while it schedules); a forked worker makes its own."""
    from luigi.contrib.s3 import S3Client

    from ..core import credentials

    if credentials.active():
        return S3Client(**{name.lower(): os.environ.get(name) for name in
                           ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                            "AWS_SESSION_TOKEN")})
    pid = os.getpid()
    if pid not in _S3_CLIENT:
        _S3_CLIENT[pid] = S3Client()
    return _S3_CLIENT[pid]


def recorded_extra(task):
    """What the task put in :attr:`HgTask.lineage_extra` (None if nothing; plain
    Luigi tasks have none)."""
    return task.__dict__.get("_hgluigi_lineage") or None


class ConfigError(ValueError):
    """A bad value in a Luigi configuration section the extension reads."""


_BAD = object()


def _kind(param, minimum):
    kinds = {luigi.IntParameter: "an integer", luigi.FloatParameter: "a number",
             luigi.BoolParameter: "a boolean (true or false)"}
    what = next((v for k, v in kinds.items() if isinstance(param, k)), "valid")
    return what + (" >= %s" % minimum if minimum is not None else "")


def read_config(cls, minimum=None):
    """An instance of the ``luigi.Config`` class ``cls`` whose options were all
    checked first: a bad value is a :class:`ConfigError` naming
    ``section.option`` and what it accepts (Luigi alone would fail later, with a
    bare ``ValueError`` from deep inside a task)."""
    import math

    from luigi.configuration import get_config

    minimum = minimum or {}
    section = cls.get_task_family()
    conf = get_config()
    for name, param in cls.get_params():
        for option in (name, name.replace("_", "-")):
            if not conf.has_option(section, option):
                continue
            raw = conf.get(section, option)
            try:
                value = param.parse(raw)
            except Exception:
                value = _BAD
            bad = value is _BAD or (isinstance(value, float) and not math.isfinite(value))
            low = minimum.get(name)
            if bad or (low is not None and value < low):
                raise ConfigError("config error: %s.%s: %r is not %s"
                                  % (section, option, raw, _kind(param, low)))
    return cls()


class UnsafePath(ValueError):
    """A task asked for a path outside its root (``..``, absolute), or for a
    changeset that is not a full hex node id."""


_HEX40 = re.compile(r"^[0-9a-f]{40}$")


def _safe_relpath(task, relpath, where):
    rel = os.path.normpath(os.fspath(relpath))
    if os.path.isabs(rel) or rel == ".." or rel.startswith(".." + os.sep) or rel == ".":
        raise UnsafePath("%s: path %r must be relative and stay under %s"
                         % (task.get_task_family(), relpath, where))
    return rel


def check_changeset(task, changeset):
    if not isinstance(changeset, str) or not _HEX40.match(changeset):
        raise UnsafePath("%s: changeset %r is not a full 40-hex changeset id"
                         % (task.get_task_family(), changeset))
    return changeset


class HgTask(luigi.Task):
    """A Luigi task whose outputs are stamped with the changeset it was built at.

    ``watches``: Mercurial patterns (default kind ``glob:``, relative to the
    repository root; ``path:``, ``re:`` and ``set:`` filesets work too) of the files
    the task reads.  ``{name}`` in a pattern is replaced by the task's parameter
    ``name`` (escaped, so parameter values are plain data).  Changes to the module
    that defines the class, and the repository modules it imports, affect the
    task without being listed.
    """

    watches = []

    changeset = luigi.Parameter(
        positional=False,
        description="Full hex of the Mercurial changeset this task is built at "
        "(filled in by hg luigi-run).",
    )

    @classmethod
    def get_param_values(cls, params, args, kwargs):
        if "changeset" in kwargs:
            return super().get_param_values(params, args, kwargs)
        ctx = context.current()
        if ctx is None:
            raise luigi.parameter.MissingParameterException(
                "%s: the changeset parameter is filled in by 'hg luigi-run'; pass "
                "changeset=<full hex> when instantiating it elsewhere" % cls.get_task_family())
        # Luigi asks twice per instance, and requires() makes the same tasks
        # again and again (10,000 times a run for a task needing 2,000): the
        # values of the same arguments are the same for the whole run
        try:
            memo = (ctx, cls, args, tuple(sorted(kwargs.items())))
            hash(memo)
        except TypeError:  # a list or dict argument: not worth keying
            memo = None
        values = _VALUES.get(memo) if memo is not None else None
        if values is None:
            values = super().get_param_values(params, args, dict(kwargs, changeset=_PENDING))
            key = _key_from_values(cls.get_task_family(), params, values)
            stamp = ctx.stamp_for(key)
            values = [(n, stamp if n == "changeset" else v) for n, v in values]
            if memo is not None:
                _VALUES[memo] = values
        return list(values)

    @property
    def hg_key(self):
        return task_key(self)

    def stamped_target(self, relpath, **kwargs):
        """A ``luigi.LocalTarget`` under the output root, in a folder named after the
        full changeset hash.  ``target.open('w')`` writes atomically.  With an
        ``s3://`` output root, a ``luigi.contrib.s3.S3Target`` at
        ``<output-root>/<changeset>/<relpath>`` (written to a local temporary
        file, uploaded on close), reading and writing with the build's own
        credentials (see :func:`s3_client`)."""
        ctx = context.current()
        if ctx is None or not ctx.output_root:
            raise RuntimeError("stamped_target() needs a run started by 'hg luigi-run'")
        rel = _safe_relpath(self, relpath, "the output root")
        changeset = check_changeset(self, self.changeset)
        if objects.is_url(ctx.output_root):
            from luigi.contrib.s3 import S3Target

            if "client" not in kwargs:
                kwargs["client"] = s3_client()
            return S3Target(objects.join(ctx.output_root, changeset, rel), **kwargs)
        path = os.path.join(ctx.output_root, changeset, rel)
        return luigi.LocalTarget(path, **kwargs)

    def source_path(self, relpath):
        """The path of repository file ``relpath`` as of this task's changeset."""
        ctx = context.current()
        if ctx is None:
            raise RuntimeError("source_path() needs a run started by 'hg luigi-run'")
        rel = _safe_relpath(self, relpath, "the repository")
        return os.path.join(ctx.tree_for(check_changeset(self, self.changeset)), rel)

    @property
    def lineage_extra(self):
        """A dict recorded with this task's build in the lineage store (the
        ``extra`` of ``hg luigi-lineage -T json``): fill it in ``run()``.  JSON
        data only; it is kept on success and on failure."""
        extra = self.__dict__.get("_hgluigi_lineage")
        if extra is None:
            extra = self.__dict__["_hgluigi_lineage"] = {}
        return extra

    def report(self, message, percent=None):
        """Show progress: a Luigi status message (and percentage) in the
        scheduler, and a line in ``hg luigi-run -v``."""
        if self.set_status_message:
            self.set_status_message(message)
        if percent is not None and self.set_progress_percentage:
            self.set_progress_percentage(int(percent))
        context.emit(event="status", key=self.hg_key, message=message)

    @property
    def run_user(self):
        """Who triggered the run (the pusher for a push, the hg user otherwise)."""
        ctx = context.current()
        return ctx.user if ctx else None

    @property
    def run_branch(self):
        """The Mercurial branch of the revision being built."""
        ctx = context.current()
        return ctx.branch if ctx else None

    @property
    def changed_paths(self):
        """Repository paths changed since this task's last successful build (for a
        task never built: the files the revision touched)."""
        ctx = context.current()
        return ctx.changed_paths(self.hg_key) if ctx else []

    def complete(self):
        """Complete when every output exists and the lineage store holds a successful
        build of this task at its changeset.  A task without outputs (a deployment)
        is complete by its lineage record alone."""
        outputs = flatten(self.output())
        ctx = context.current()
        if ctx is None or ctx.store is None:
            return bool(outputs) and all(o.exists() for o in outputs)
        # lineage first: a task this run must build is not complete, and no
        # output is looked for (with outputs in S3, a request each)
        return (ctx.is_built(self.task_id, self.changeset, self.hg_key)
                and all(o.exists() for o in outputs))
