"""Ansible playbooks as Luigi tasks, run through ansible-runner.

:class:`AnsibleClient` is the plain client (no Luigi): it runs one playbook in a
fresh private data directory and returns an :class:`AnsibleResult`.
:class:`AnsiblePlaybookTask` is the thin ``HgTask`` over it: the playbook is a
repository path read as of the changeset being built, the run's identity
(changeset, branch, user, changed paths) reaches the playbook as variables that
Ansible never templates, and the stats per host and the artifact directory land
in the task's lineage record.

Settings shared by every playbook task live in the ``[ansible]`` section of the
Luigi configuration (``luigi.cfg`` in the repository, or ``LUIGI_CONFIG_PATH``)::

    [ansible]
    vault_password_env = DEPLOY_VAULT_PASSWORD   # or: vault_password_file = /etc/...
    artifact_root = /var/lib/builds/ansible      # default: .hg/luigi/ansible
    timeout = 1800
    pass_env = SSH_AUTH_SOCK, AWS_*              # more of the environment for Ansible

Values of ``extra_vars`` that come from the repository (paths, file names,
contents) go through :func:`unsafe`, so Ansible never templates them.
"""

import json
import os
import shlex
import shutil
import sys
import sysconfig
import tempfile
import time

import luigi

from .pipeline import context
from .core import sandbox
from .pipeline.task import HgTask, read_config

# the environment ansible-playbook gets (an allow-list: a credential can have any
# name, and what the child gets lands in the fact cache and the job events):
# the basics, Ansible's own settings, what ansible-runner sets for its callback,
# and the names (globs) in [ansible] pass_env
_ENV_ALLOWED = sandbox.DEFAULT_PASS_ENV + ("ANSIBLE_*",)
_ENV_RUNNER = ("AWX_ISOLATED_DATA_DIR", "RUNNER_OMIT_EVENTS", "RUNNER_ONLY_FAILED_EVENTS",
               "ORIGINAL_STDOUT_CALLBACK", "AD_HOC_COMMAND_ID", "PYTHONUNBUFFERED")
_VAULT_PROMPT = r"Vault password[^:\n]*:\s*?$"


class ansible(luigi.Config):
    """``[ansible]``: settings for every :class:`AnsiblePlaybookTask`."""

    ansible_playbook = luigi.Parameter(
        default="", description="Path of the ansible-playbook program (default: next "
        "to the Python running the pipeline, then PATH).")
    vault_password_env = luigi.Parameter(
        default="", description="Name of the variable holding the vault password "
        "(handed to the run by the hg side, else taken from the environment).  It is "
        "answered at Ansible's prompt, never written to a file.")
    vault_password_file = luigi.Parameter(
        default="", description="A vault password file (or executable script) of "
        "your own, passed as --vault-password-file.")
    artifact_root = luigi.Parameter(
        default="", description="Where each run's private data directory is made "
        "(default: ansible/ in the repository's .hg/luigi).")
    timeout = luigi.IntParameter(
        default=0, description="Seconds before a playbook run is stopped (0: none).")
    pass_env = luigi.Parameter(
        default="", description="Comma-separated names (globs allowed) of environment "
        "variables ansible-playbook gets on top of PATH, HOME, USER, LOGNAME, LANG, "
        "LC_*, TZ, TMPDIR, TERM and ANSIBLE_* (e.g. SSH_AUTH_SOCK).")


class AnsibleError(Exception):
    """Ansible could not be started, or the playbook failed (see ``result``)."""

    def __init__(self, message, result=None):
        super().__init__(message)
        self.result = result


class AnsiblePlaybookError(AnsibleError):
    """The playbook ran and failed on some hosts."""


def find_ansible_playbook(explicit=""):
    """The ``ansible-playbook`` program: ``explicit``, else the one installed with
    the running Python (its virtualenv's bin directory need not be on PATH), else
    PATH."""
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise AnsibleError("ansible-playbook not found at %s ([ansible] "
                               "ansible_playbook)" % explicit)
        return os.path.abspath(explicit)
    dirs = [os.path.dirname(sys.executable), sysconfig.get_path("scripts")]
    for d in dirs:
        cand = os.path.join(d, "ansible-playbook")
        if d and os.access(cand, os.X_OK):
            return cand
    found = shutil.which("ansible-playbook")
    if found:
        return found
    raise AnsibleError("ansible-playbook not found next to %s nor on PATH; install "
                       "ansible-core or set [ansible] ansible_playbook" % sys.executable)


class _Unsafe:
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def unsafe(value):
    """Mark a value of ``extra_vars`` to reach the playbook verbatim: every string
    in it (lists and dicts included) is written ``!unsafe``, so Ansible never
    templates it and a file named ``{{ lookup('pipe','id') }}`` runs nothing.  Use
    it for whatever comes from the repository: paths, file names, contents."""
    return _Unsafe(value)


def _yaml(value, unsafe=False):
    """``value`` as YAML (JSON syntax is valid YAML).  With ``unsafe``, and for
    whatever :func:`unsafe` wraps, every string carries ``!unsafe``: Ansible keeps
    it verbatim and never templates it; other values are templated as usual."""
    if isinstance(value, _Unsafe):
        return _yaml(value.value, True)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v, unsafe) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join("%s: %s" % (json.dumps(str(k)), _yaml(v, unsafe))
                               for k, v in value.items()) + "}"
    if not unsafe:
        return json.dumps(value)
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        return json.dumps(value)
    return "!unsafe " + json.dumps(value if isinstance(value, str) else str(value))


def _child_env(env, keep=(), drop=()):
    """The part of ``env`` ansible-playbook gets: the allowed names and the
    ``keep`` globs, never a ``drop`` name."""
    allowed = _ENV_ALLOWED + _ENV_RUNNER + tuple(keep)
    return {name: value for name, value in env.items()
            if name not in drop and sandbox.allowed(name, allowed)}


def _write_vars(path, data_vars, extra_vars):
    """The vars file of one run (mode 0600): the run's data ``!unsafe``, then the
    author's variables."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("# written by hgext_luigi: run data, never templated\n")
        for name, value in (data_vars or {}).items():
            f.write("%s: %s\n" % (name, _yaml(value, unsafe=True)))
        for name, value in (extra_vars or {}).items():
            f.write("%s: %s\n" % (json.dumps(str(name)), _yaml(value)))


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class AnsibleResult:
    """What one playbook run did."""

    def __init__(self, status, rc, stats, artifact_dir, failures, check):
        self.status = status            # successful / failed / timeout / canceled
        self.rc = rc
        self.stats = stats              # host -> {ok, changed, failed, unreachable, ...}
        self.artifact_dir = artifact_dir
        self.failures = failures        # [{host, task, message, unreachable}]
        self.check = check

    @property
    def ok(self):
        return self.status == "successful" and self.rc == 0 and not self.failures

    def describe_failure(self):
        if self.status == "timeout":
            return "the playbook was stopped after its timeout"
        if not self.failures:
            return "ansible-playbook exited with status %s (%s); see %s" % (
                self.rc, self.status, self.artifact_dir)
        hosts = sorted({f["host"] for f in self.failures if f["host"]})
        if not hosts:
            return "in play '%s': no hosts matched (check the inventory and limit)" % (
                self.failures[0]["task"])
        parts = ["task '%s' on %s%s: %s" % (f["task"], f["host"],
                                             " (unreachable)" if f["unreachable"] else "",
                                             f["message"]) for f in self.failures]
        return "failed on %s: %s" % (", ".join(hosts), "; ".join(parts))

    def summary(self):
        hosts = "; ".join(
            "%s ok=%d changed=%d failed=%d unreachable=%d" % (
                h, st["ok"], st["changed"], st["failed"], st["unreachable"])
            for h, st in sorted(self.stats.items()))
        return "%s%s: %s; artifacts %s" % (self.status, " (check mode)" if self.check else "",
                                           hosts or "no hosts", self.artifact_dir)

    def as_dict(self):
        return {"summary": self.summary(), "status": self.status, "rc": self.rc, "check": self.check,
                "stats": self.stats, "artifact_dir": self.artifact_dir,
                "failures": self.failures}


def _host_stats(raw):
    names = {"ok": "ok", "changed": "changed", "failures": "failed",
             "dark": "unreachable", "skipped": "skipped", "rescued": "rescued",
             "ignored": "ignored"}
    hosts = {}
    for src, dst in names.items():
        for host, n in (raw or {}).get(src, {}).items():
            hosts.setdefault(host, {v: 0 for v in names.values()})[dst] = n
    for host in (raw or {}).get("processed", {}):
        hosts.setdefault(host, {v: 0 for v in names.values()})
    return hosts


def _message(res):
    res = res or {}
    msg = res.get("msg") or res.get("stderr") or res.get("reason") or ""
    if not isinstance(msg, str):
        msg = json.dumps(msg)
    return " ".join(msg.split())[:300]


class AnsibleClient:
    """Runs playbooks through ansible-runner.  No Luigi and no Mercurial here."""

    def __init__(self, ansible_playbook="", vault_password_env="", vault_password_file="",
                 artifact_root=None, timeout=0, pass_env=()):
        self.ansible_playbook = ansible_playbook
        self.vault_password_env = vault_password_env
        self.vault_password_file = vault_password_file
        self.artifact_root = artifact_root or tempfile.gettempdir()
        self.timeout = timeout or None
        self.pass_env = tuple(pass_env)

    def _vault(self):
        """(command-line options, prompt answers) for the vault password."""
        if self.vault_password_env and self.vault_password_file:
            raise AnsibleError("set only one of [ansible] vault_password_env and "
                               "vault_password_file")
        if self.vault_password_env:
            secret = context.secret(self.vault_password_env)
            if not secret:
                raise AnsibleError("the vault password variable %s is not set in the "
                                   "environment" % self.vault_password_env)
            # answered at Ansible's prompt through the pty: never in a file, an
            # argument or the child's environment
            return ["--ask-vault-pass"], {_VAULT_PROMPT: secret}
        if self.vault_password_file:
            path = os.path.expanduser(self.vault_password_file)
            if not os.path.exists(path):
                raise AnsibleError("vault password file %s does not exist" % path)
            return ["--vault-password-file", os.path.abspath(path)], {}
        return [], {}

    def run(self, playbook, inventory=None, limit=None, tags=None, skip_tags=None,
            extra_vars=None, data_vars=None, forks=None, check=False, diff=None,
            on_event=None):
        """Run ``playbook`` (an absolute path) and return an :class:`AnsibleResult`.

        ``extra_vars``: the author's variables (templated as usual, except values
        wrapped in :func:`unsafe`); ``data_vars``: values passed verbatim, marked
        ``!unsafe``.  ``on_event`` receives every ansible-runner event dict.  The
        vars file holding both is removed when the run ends, however it ends."""
        if not os.path.isfile(playbook):
            raise AnsibleError("playbook %s does not exist" % playbook)
        binary = find_ansible_playbook(self.ansible_playbook)
        vault_args, passwords = self._vault()
        os.makedirs(self.artifact_root, mode=0o700, exist_ok=True)
        pdd = tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=self.artifact_root)
        varsfile = os.path.join(pdd, "hg-vars.yml")
        try:
            _write_vars(varsfile, data_vars, extra_vars)
            args = ["-e", "@" + varsfile] + self._options(
                inventory, limit, tags, skip_tags, forks, check, diff) + vault_args
            return self._run(pdd, playbook, binary, args, passwords, check, on_event)
        finally:
            _remove(varsfile)

    @staticmethod
    def _options(inventory, limit, tags, skip_tags, forks, check, diff):
        args = []
        if inventory:
            for inv in ([inventory] if isinstance(inventory, str) else inventory):
                args += ["-i", inv]
        if limit:
            args += ["--limit", limit]
        if tags:
            args += ["--tags", tags]
        if skip_tags:
            args += ["--skip-tags", skip_tags]
        if forks:
            args += ["--forks", str(int(forks))]
        if check:
            args.append("--check")
        if diff if diff is not None else check:
            args.append("--diff")
        return args

    def _run(self, pdd, playbook, binary, args, passwords, check, on_event):
        import ansible_runner
        from ansible_runner.config.runner import RunnerConfig

        failures = []

        def handler(event):
            data = event.get("event_data") or {}
            kind = event.get("event")
            if kind == "runner_on_unreachable" or (
                    kind == "runner_on_failed" and not data.get("ignore_errors")):
                failures.append({"host": data.get("host"), "task": data.get("task"),
                                 "message": _message(data.get("res")),
                                 "unreachable": kind == "runner_on_unreachable"})
            elif kind == "playbook_on_no_hosts_matched":
                failures.append({"host": None, "task": data.get("play") or data.get("name"),
                                 "message": "no hosts matched", "unreachable": False})
            if on_event is not None:
                on_event(event)
            return True  # keep the event: runner.stats is built from them

        bindir = os.path.dirname(binary)
        rc = RunnerConfig(
            private_data_dir=pdd, playbook=playbook,
            project_dir=os.path.dirname(playbook), binary=None,
            cmdline=shlex.join(args), passwords=passwords,
            envvars={"PATH": bindir + os.pathsep + os.environ.get("PATH", os.defpath),
                     "ANSIBLE_NOCOLOR": "1", "PYTHONUNBUFFERED": "1"},
            suppress_env_files=True, timeout=self.timeout, quiet=True)
        rc.prepare()
        from .core import credentials  # the task's own short-lived ones, if it has a role

        rc.env = _child_env(rc.env, keep=self.pass_env + credentials.active(),
                            drop=(self.vault_password_env,))
        rc.command[0] = binary
        runner = ansible_runner.Runner(config=rc, event_handler=handler)
        try:
            runner.run()
        finally:
            _scrub_command_file(rc.artifact_dir)
        stats = _host_stats(runner.stats)
        return AnsibleResult(runner.status, runner.rc, stats, rc.artifact_dir,
                             failures, bool(check))


def _scrub_command_file(artifact_dir):
    """ansible-runner records the child's environment in ``command``; keep only
    the variable names there."""
    path = os.path.join(artifact_dir, "command")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return
    data["env"] = sorted(data.get("env") or {})
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


class AnsiblePlaybookTask(HgTask):
    """Run an Ansible playbook from the repository, as of the task's changeset.

    Settings are class attributes (or properties, which may use the task's own
    Luigi parameters), as in Luigi's ``contrib`` task types:

    ``playbook``   repository path of the playbook (required)
    ``inventory``  a repository path, else passed to ``-i`` as given (``host1,host2,``)
    ``limit``, ``tags``, ``skip_tags``   as the ansible-playbook options
    ``extra_vars`` a dict of variables (templated by Ansible as usual)
    ``forks``      ``--forks`` (0: Ansible's default)
    ``check``      check mode with diff: reports what would change, changes nothing

    The playbook receives ``hg_changeset``, ``hg_branch``, ``hg_user``,
    ``hg_changed_paths``, ``hg_task`` and ``hg_run_id``, all marked unsafe: they
    reach it verbatim and are never templated.

    The output is a JSON report (status, per-host stats, artifact directory) in
    the changeset's output folder; the same goes into the lineage record.  By
    default the task watches the playbook's directory (roles, templates and vars
    next to it) and the inventory file."""

    playbook = None
    inventory = ""
    limit = ""
    tags = ""
    skip_tags = ""
    extra_vars = {}
    forks = 0
    check = False

    def _inventory_in_repo(self):
        """Whether ``inventory`` names a repository file (not a host list or an
        absolute path)."""
        inv = self.inventory
        return bool(inv) and "," not in inv and not os.path.isabs(inv)

    @property
    def watches(self):
        if not self.playbook:
            return []
        top = os.path.dirname(self.playbook)
        out = ["path:" + top] if top else ["path:" + self.playbook]
        if self._inventory_in_repo():
            out.append("path:" + self.inventory)
        return out

    def output(self):
        return self.stamped_target(os.path.join("ansible", self.task_id + ".json"))

    def client(self):
        """The :class:`AnsibleClient` this task uses (from ``[ansible]``)."""
        cfg = read_config(ansible, {"timeout": 0})
        ctx = context.current()
        root = cfg.artifact_root
        if not root:
            state = ctx.state if ctx and ctx.state else tempfile.gettempdir()
            root = os.path.join(state, "ansible")
        # the variable the server's hgrc names ([ansible] vault_password_env)
        server_vault = ctx.data.get("ansible_vault_env") if ctx else None
        return AnsibleClient(
            ansible_playbook=cfg.ansible_playbook,
            vault_password_env=cfg.vault_password_env or server_vault or "",
            vault_password_file=cfg.vault_password_file,
            artifact_root=root, timeout=cfg.timeout,
            pass_env=[n.strip() for n in cfg.pass_env.split(",") if n.strip()])

    def data_vars(self):
        """The run's identity, handed to the playbook as unsafe variables."""
        ctx = context.current()
        return {
            "hg_changeset": self.changeset,
            "hg_branch": self.run_branch or "",
            "hg_user": self.run_user or "",
            "hg_changed_paths": self.changed_paths,
            "hg_task": self.hg_key,
            "hg_run_id": (ctx.run_id if ctx else "") or "",
        }

    def _inventory(self):
        if self._inventory_in_repo():
            path = self.source_path(self.inventory)
            if os.path.exists(path):
                return path
        return self.inventory or None

    def _on_event(self, event, seen):
        data = event.get("event_data") or {}
        kind = event.get("event")
        if kind == "playbook_on_play_start":
            self.report("play %s" % (data.get("play") or data.get("name") or ""))
        elif kind == "playbook_on_task_start":
            seen["tasks"] += 1
            self.report("task %d: %s" % (seen["tasks"], data.get("task") or ""))
        elif kind in ("runner_on_failed", "runner_on_unreachable") and \
                not data.get("ignore_errors"):
            self.report("%s on %s: %s" % ("unreachable" if kind.endswith("unreachable")
                                          else "failed", data.get("host"), data.get("task")))
        elif kind == "playbook_on_stats":
            self.report("playbook finished", percent=100)

    def run(self):
        if not self.playbook:
            raise AnsibleError("%s sets no playbook" % self.get_task_family())
        playbook = self.source_path(self.playbook)
        seen = {"tasks": 0}  # task starts so far, for the status messages
        if not os.path.isfile(playbook):
            raise AnsibleError("playbook %s does not exist at changeset %s"
                               % (self.playbook, self.changeset[:12]))
        result = self.client().run(
            playbook, inventory=self._inventory(), limit=self.limit or None,
            tags=self.tags or None, skip_tags=self.skip_tags or None,
            extra_vars=dict(self.extra_vars), data_vars=self.data_vars(),
            forks=self.forks or None, check=bool(self.check),
            on_event=lambda event: self._on_event(event, seen))
        record = dict(result.as_dict(), playbook=self.playbook)
        record["summary"] = "%s %s" % (self.playbook, record["summary"])
        self.lineage_extra["ansible"] = record
        if not result.ok:
            raise AnsiblePlaybookError("playbook %s %s" % (self.playbook,
                                                           result.describe_failure()),
                                       result)
        with self.output().open("w") as f:
            json.dump(record, f, indent=2, sort_keys=True)
