"""Configuration items of the ``[luigi]`` section, and their values as ``str``.

Every option the extension reads is registered here with its default, so
``hg config luigi`` and ``hg help hgext_luigi`` stay complete.
"""

import dataclasses
import math
import os
import re
import sys

from mercurial import encoding, error, pycompat, registrar
from mercurial.i18n import _
from mercurial.utils import stringutil

from ..core import objects, sandbox


# terminal control characters (escape sequences, carriage returns...) but newline
# and tab: task keys, errors and file names come from anyone who may push
_CONTROL = re.compile('[\x00-\x08\x0b-\x1f\x7f-\x9f]')


def _escape_control(m):
    return '\\x%02x' % ord(m.group(0))


def local(s):
    """A ``str`` (task keys, paths, messages: UTF-8 data) as bytes in the local
    encoding, the way Mercurial writes to the terminal and formatters; control
    characters are escaped, so pushed data cannot drive the terminal."""
    if s is None:
        return b''
    if isinstance(s, bytes):
        return s
    if isinstance(s, str) and s.isascii() and s.isprintable():  # nothing to escape
        return s.encode('ascii')
    text = _CONTROL.sub(_escape_control, str(s))
    return encoding.tolocal(text.encode('utf-8', 'surrogateescape'))


def local_data(obj):
    """JSON data (str keys and values) as the bytes a formatter wants, each
    string through :func:`local`."""
    if isinstance(obj, str):
        return local(obj)
    if isinstance(obj, dict):
        return {local(str(k)): local_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [local_data(v) for v in obj]
    return obj


def text(b, errors='surrogateescape'):
    """Bytes from Mercurial (options, arguments, config values: the local
    encoding) as the ``str`` Luigi speaks; the inverse of :func:`local`."""
    if b is None:
        return None
    if isinstance(b, str):
        return b
    return encoding.fromlocal(b).decode('utf-8', errors)


def hexstr(ctx):
    """The full hash of a changectx as ``str`` (lineage, the queue, Luigi)."""
    return ctx.hex().decode('ascii')


def node(changeset):
    """A full hash from lineage or the queue (``str``) as the bytes ``repo[...]``
    looks up."""
    return changeset.encode('ascii')


def abort_text(e, hint_format=" (%s)"):
    """An ``error.Abort`` as the ``str`` a record keeps (a queue entry's error,
    a Step Functions failure cause): its message and hint."""
    msg = text(e.message, errors='replace')
    return msg + (hint_format % text(e.hint, errors='replace') if e.hint else "")


configtable = {}
configitem = registrar.configitem(configtable)

configitem(b'luigi', b'module', default=b'pipelines')
configitem(b'luigi', b'roots', default=list)
configitem(b'luigi', b'output-root', default=None)
configitem(b'luigi', b'plain-output-root', default=None)
configitem(b'luigi', b'scheduler', default=None)
configitem(b'luigi', b'workers', default=1)
configitem(b'luigi', b'block-size', default=1000)
configitem(b'luigi', b'on-commit', default=b'off')
configitem(b'luigi', b'watches-file', default=b'.hgluigi')
configitem(b'luigi', b'python', default=None)
configitem(b'luigi', b'pass-env', default=None)
configitem(b'luigi', b'tree-cache', default=3)
configitem(b'luigi', b'lock-timeout', default=0)
configitem(b'luigi', b'gate', default=False)
configitem(b'luigi', b'on-push', default=b'off')
configitem(b'luigi', b'branches', default=list)
configitem(b'luigi', b'lease', default=60)
configitem(b'luigi', b'max-attempts', default=3)
configitem(b'luigi', b'poll-interval', default=2.0)
configitem(b'luigi', b'coalesce', default=True)
configitem(b'luigi', b'auto-hooks', default=True)
configitem(b'luigi', b'callback-queue', default=None)
configitem(b'luigi', b'callback-heartbeat', default=60)
configitem(b'luigi', b'callback-visibility', default=300)
configitem(b'luigi', b'aws-region', default=None)
configitem(b'luigi', b'aws-endpoint-url', default=None)
configitem(b'luigi', b'aws-profile', default=None)
# beyond one machine: a shared store, and where build hosts pull heads from
configitem(b'luigi', b'store', default=None)
configitem(b'luigi', b'source', default=None)
# secrets the server hands to the task types that need them, by variable name
configitem(b'ansible', b'vault_password_env', default=None)
# identity, access and audit: server-side only (a pushed changeset cannot set them)
configitem(b'luigi', b'acl', default=b'off')
configitem(b'luigi', b'credential-duration', default=900)
configitem(b'luigi', b'openlineage-namespace', default=None)
configitem(b'luigi', b'audit-key-env', default=None)
configitem(b'luigi.acl', b'allow-force', default=list)
configitem(b'luigi.acl.deny', b'.*', default=None, generic=True)
configitem(b'luigi.groups', b'.*', default=None, generic=True)
configitem(b'luigi.roles', b'.*', default=None, generic=True)
configitem(b'luigi.oidc', b'issuer', default=None)
configitem(b'luigi.oidc', b'audience', default=None)
configitem(b'luigi.oidc', b'user-claim', default=list)
configitem(b'luigi.oidc', b'groups-claim', default=b'groups')
configitem(b'luigi.oidc', b'algorithms', default=list)
configitem(b'luigi.oidc', b'leeway', default=30)
configitem(b'luigi.oidc', b'anonymous-read', default=False)
configitem(b'luigi.oidc', b'realm', default=b'hgext_luigi')

ON_COMMIT = (b'off', b'plan', b'run')
ON_PUSH = (b'off', b'queue', b'run')
ACL = (b'off', b'warn', b'enforce')
_ROLE_ARN = br'^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]+$'

DEFAULT_PASS_ENV = sandbox.DEFAULT_PASS_ENV


def state_dir(repo):
    """``.hg/luigi``: lineage store, tree cache, index cache, logs."""
    return repo.vfs.join(b'luigi')


def store_path(repo):
    return pycompat.fsdecode(os.path.join(state_dir(repo), b'lineage.db'))


class SettingError(error.ConfigError):
    """A bad value in the configuration: ``abort: config error: SECTION.NAME: ...``
    naming the option and what it accepts."""

    def __init__(self, section, name, value, allowed):
        msg = _(b'config error: %s.%s: %s is not %s') % (
            section, name, pycompat.bytestr(stringutil.pprint(value)), allowed)
        super().__init__(msg, hint=_(b'fix it in the configuration; see hg help '
                                     b'hgext_luigi'))

    def format(self):
        return _(b'abort: %s\n(%s)\n') % (self.message, self.hint)


class Reader:
    """Reads and checks options of one section; every bad value is a
    :class:`SettingError`, never a traceback or a silently odd hook."""

    def __init__(self, ui, section=b'luigi'):
        self.ui = ui
        self.section = section

    def raw(self, name):
        return self.ui.config(self.section, name)

    def _bad(self, name, allowed):
        raise SettingError(self.section, name, self.raw(name), allowed)

    def choice(self, name, choices):
        value = self.raw(name)
        if value not in choices:
            self._bad(name, b'one of ' + b', '.join(choices))
        return value

    def bool(self, name):
        value = self.ui.config(self.section, name)
        if isinstance(value, bool):
            return value
        parsed = stringutil.parsebool(value or b'')
        if parsed is None:
            self._bad(name, b'a boolean (true or false)')
        return parsed

    def number(self, name, kind=int, minimum=None):
        value = self.raw(name)
        try:
            number = kind(value)
        except (TypeError, ValueError):
            number = None
        if number is None or not math.isfinite(number) or (
                minimum is not None and number < minimum):
            what = b'an integer' if kind is int else b'a number'
            if minimum is not None:
                what += b' >= %s' % pycompat.bytestr(minimum)
            self._bad(name, what)
        return number

    def text(self, name, pattern, allowed):
        value = self.raw(name)
        if value is None or value == b'':
            return None
        if not re.match(pattern, value):
            self._bad(name, allowed)
        return text(value)

    def names(self, name, pattern, allowed):
        values = self.ui.configlist(self.section, name)
        for v in values:
            if not re.match(pattern, v):
                raise SettingError(self.section, name, v, allowed)
        return tuple(text(v) for v in values)


_MODULE = br'^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$'
_ENV_NAME = br'^[A-Za-z_*?][A-Za-z0-9_*?]*$'
_VAR = br'^[A-Za-z_][A-Za-z0-9_]*$'
_URL = br'^https?://[^\s/]+(/\S*)?$'


def _repo_relative(reader, name):
    value = reader.raw(name) or b''
    norm = os.path.normpath(value) if value else value
    if value and (os.path.isabs(value) or norm == b'..' or norm.startswith(b'../')
                  or norm.split(b'/')[0] == b'.hg'):
        reader._bad(name, b'a path inside the repository')
    return text(value)


def _output_root(repo, value, default, reader=None, name=b'output-root'):
    if value and objects.has_scheme(text(value)):  # object storage: the URL as is
        return _object_root(reader or Reader(repo.ui), name, text(value))
    if value:
        root = os.path.join(repo.root, os.path.expanduser(value))
    else:
        root = default
    return os.path.normpath(pycompat.fsdecode(root))


def _object_root(reader, name, url):
    """``s3://bucket/prefix``, checked (bucket name rules, no ``..`` or empty
    segment) and kept as is: never joined to the repository root."""
    try:
        return objects.check_root(url)
    except ValueError as e:
        reader._bad(name, b's3://BUCKET/PREFIX or a directory (%s)' % local(str(e)))


def _plain_output_root(reader, repo, output_root):
    """``[luigi] plain-output-root``: a local directory, as plain tasks write
    ``luigi.LocalTarget`` files there.  Its default beside an S3 output root
    is ``.hg/luigi/outputs/plain``, not ``<output-root>/plain``: a relative
    LocalTarget path cannot become an object, and the local default keeps
    adopted tasks working unchanged when only stamped outputs move to S3."""
    plain = reader.raw(b'plain-output-root')
    if plain and objects.has_scheme(text(plain)):
        reader._bad(b'plain-output-root', b'a directory (plain Luigi tasks write '
                    b'luigi.LocalTarget files there)')
    if plain:
        return _output_root(repo, plain, None)
    if objects.is_url(output_root):
        return pycompat.fsdecode(os.path.join(state_dir(repo), b'outputs', b'plain'))
    return os.path.join(output_root, 'plain')


@dataclasses.dataclass(frozen=True)
class Settings:
    """The options of one repository, read and checked once, as ``str`` for the
    Luigi side; frozen."""

    module: str
    roots: tuple
    output_root: str
    plain_output_root: str
    scheduler: str
    workers: int
    block_size: int
    on_commit: bytes
    on_push: bytes
    gate: bool
    watches_file: str
    python: str
    pass_env: tuple
    secret_env: tuple
    branches: tuple
    tree_cache: int
    lock_timeout: float
    lease: int
    max_attempts: int
    poll_interval: float
    coalesce: bool
    auto_hooks: bool
    callback_queue: str
    callback_heartbeat: int
    callback_visibility: int
    aws_region: str
    aws_endpoint_url: str
    aws_profile: str
    acl: bytes
    allow_force: tuple
    acl_deny: tuple
    groups: tuple
    roles: tuple
    credential_duration: int
    audit_key_env: str
    openlineage_namespace: str
    repository_url: str  # paths.default, else the root: how lineage events name it
    source: str  # where a build host pulls a head it lacks: [luigi] source, paths.default
    store: str  # the SQLite file, or a postgresql:// URL ([luigi] store)
    queue: str
    state: str

    @classmethod
    def read(cls, ui, repo):
        r = Reader(ui)
        output_root = _output_root(repo, r.raw(b'output-root'),
                                   os.path.join(state_dir(repo), b'outputs'), r)
        python = r.raw(b'python')
        pass_env = r.raw(b'pass-env')
        vault = Reader(ui, b'ansible').text(b'vault_password_env', _VAR,
                                            b'an environment variable name')
        # one database holds lineage, the queue and the audit log: an audit record
        # shares the transaction of the change it describes
        store = _store(r, repo, pass_env)
        return cls(
            module=r.text(b'module', _MODULE, b'a Python module name'),
            roots=r.names(b'roots', br'^[^\s=]+$', b'a task family'),
            output_root=output_root,
            plain_output_root=_plain_output_root(r, repo, output_root),
            scheduler=r.text(b'scheduler', _URL, b'a URL like http://host:8082'),
            workers=r.number(b'workers', int, 1),
            block_size=r.number(b'block-size', int, 1),
            on_commit=r.choice(b'on-commit', ON_COMMIT),
            on_push=r.choice(b'on-push', ON_PUSH),
            gate=r.bool(b'gate'),
            watches_file=_repo_relative(r, b'watches-file'),
            python=pycompat.fsdecode(python) if python else sys.executable,
            pass_env=(r.names(b'pass-env', _ENV_NAME, b'an environment variable name '
                              b'(globs * and ? allowed)')
                      if pass_env is not None else DEFAULT_PASS_ENV),
            secret_env=(vault,) if vault else (),
            branches=r.names(b'branches', br'^\S+$', b'a branch name'),
            tree_cache=r.number(b'tree-cache', int, 1),
            lock_timeout=r.number(b'lock-timeout', float, 0),
            lease=r.number(b'lease', int, 1),
            max_attempts=r.number(b'max-attempts', int, 1),
            poll_interval=r.number(b'poll-interval', float, 0.05),
            coalesce=r.bool(b'coalesce'),
            auto_hooks=r.bool(b'auto-hooks'),
            callback_queue=r.text(b'callback-queue', _URL, b'an SQS queue URL'),
            callback_heartbeat=r.number(b'callback-heartbeat', int, 1),
            callback_visibility=r.number(b'callback-visibility', int, 1),
            aws_region=r.text(b'aws-region', br'^[a-z0-9-]+$', b'an AWS region name'),
            aws_endpoint_url=r.text(b'aws-endpoint-url', _URL, b'a URL'),
            aws_profile=r.text(b'aws-profile', br'^[^\s]+$', b'a profile name'),
            acl=r.choice(b'acl', ACL),
            allow_force=Reader(ui, b'luigi.acl').names(b'allow-force', br'^\S+$', b'a name'),
            acl_deny=_rules(ui, b'luigi.acl.deny', br'^[^=]+$', b'users and @groups'),
            groups=_rules(ui, b'luigi.groups', br'^[^=]+$', b'user names'),
            roles=_rules(ui, b'luigi.roles', _ROLE_ARN, b'an IAM role ARN '
                         b'(arn:aws:iam::123456789012:role/name)', single=True),
            credential_duration=_duration(r),
            audit_key_env=_audit_key_env(r, pass_env),
            openlineage_namespace=r.text(b'openlineage-namespace', br'^\S+$',
                                         b'a namespace without spaces'),
            repository_url=text(ui.config(b'paths', b'default') or repo.root),
            source=_source(ui),
            store=store,
            queue=store,
            state=pycompat.fsdecode(state_dir(repo)),
        )

    def s3_client_kwargs(self):
        """How the hg process reads outputs in S3 (a plan's reuse checks,
        ``--verify``): boto3's chain with ``[luigi] aws-profile`` and
        ``aws-region``.  Not ``aws-endpoint-url``, which may name another
        service's endpoint (Step Functions, STS); boto3 reads
        ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` itself."""
        return {"profile_name": self.aws_profile, "region_name": self.aws_region}

    def index_settings(self):
        """What the task graph depends on besides the repository's files."""
        return {"module": self.module, "roots": list(self.roots),
                "watches_file": self.watches_file, "python": self.python}


def _rules(ui, section, pattern, allowed, single=False):
    """The items of a section in file order, as ``(name, values)``: ``values``
    a tuple of names (separated by commas or spaces), or one value with
    ``single``."""
    out = []
    for name, value in ui.configitems(section):
        values = [value.strip()] if single else ui.configlist(section, name)
        for v in values:
            if not re.match(pattern, v):
                raise SettingError(section, name, v, allowed)
        out.append((text(name), text(values[0]) if single else
                    tuple(text(v) for v in values)))
    return tuple(out)


def _passed_env(reader, pass_env):
    """The names ``[luigi] pass-env`` lets through to pipelines (its default
    when unset): what a secret's variable must not be among."""
    if pass_env is None:
        return DEFAULT_PASS_ENV
    return reader.names(b'pass-env', _ENV_NAME, b'a name')


def _audit_key_env(reader, pass_env):
    """``[luigi] audit-key-env``: a variable pipeline code never sees (not one
    ``pass-env`` lets through)."""
    name = reader.text(b'audit-key-env', _VAR, b'an environment variable name')
    passed = _passed_env(reader, pass_env)
    if name and sandbox.allowed(name, passed):
        reader._bad(b'audit-key-env', b'a variable [luigi] pass-env keeps from pipelines')
    return name


def _store(reader, repo, pass_env):
    """``[luigi] store``: empty for the repository's SQLite file, else a
    PostgreSQL URL without a password (libpq reads it from ``PGPASSWORD`` or
    ``PGPASSFILE``, which ``pass-env`` must keep from pipelines)."""
    value = reader.raw(b'store')
    if not value:
        return store_path(repo)
    from ..core import database, pgdb

    url = text(value)
    try:
        if not database.is_url(url):
            raise database.Error("not a URL")
        pgdb.check_url(url)
    except database.Error:  # shown without the password it may hold
        raise SettingError(b'luigi', b'store', pycompat.sysbytes(pgdb.redact(url)),
                           b'a postgresql:// URL without a password (set PGPASSWORD '
                           b'or PGPASSFILE in the environment of hg)')
    passed = _passed_env(reader, pass_env)
    for name in ("PGPASSWORD", "PGPASSFILE"):
        if sandbox.allowed(name, passed):
            raise SettingError(b'luigi', b'pass-env', pycompat.sysbytes(name),
                               b'variables other than PGPASSWORD and PGPASSFILE '
                               b'(with [luigi] store, pipelines must not see them)')
    return url


def _source(ui):
    """``[luigi] source`` as written (a path name, path or URL of the server
    repository); None for ``paths.default``.  ``worker`` resolves it as ``hg
    pull`` would."""
    value = ui.config(b'luigi', b'source')
    return text(value) if value else None


def _duration(reader):
    """``[luigi] credential-duration``: what STS accepts (15 minutes to 12 hours;
    a role's own maximum may be lower, and STS says so)."""
    value = reader.number(b'credential-duration', int, 900)
    if value > 43200:
        reader._bad(b'credential-duration', b'a number of seconds from 900 to 43200')
    return value


def auto_hooks(ui):
    """``[luigi] auto-hooks``, checked (read by every registered hook)."""
    return Reader(ui).bool(b'auto-hooks')
