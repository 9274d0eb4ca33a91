"""plan, run and trace Luigi pipelines from Mercurial changesets

Luigi tasks declare the repository files they read (``watches``).  For a
revision, :hg:`luigi-affected` tells which tasks it affects and why,
:hg:`luigi-run` runs exactly those through Luigi with the pipeline code as of
that revision and stamps every output with the changeset, and
:hg:`luigi-lineage` tells which changeset, run, user and inputs produced each
output.

Enable it with::

  [extensions]
  hgext_luigi =

Pipeline code subclasses ``hgext_luigi.HgTask`` (see the README).

Configuration (all in the ``[luigi]`` section):

``module``
  Python module (package) of the pipeline, imported from the repository as of
  the revision being built. Default: ``pipelines``.

``roots``
  Task families to build. Default: every task without required parameters that
  no other task requires.

``output-root``
  Where stamped outputs go, relative to the repository root unless absolute.
  Default: ``.hg/luigi/outputs`` (also works without a working directory).
  ``s3://bucket/prefix`` puts them in S3: ``stamped_target`` is then a
  ``luigi.contrib.s3.S3Target`` at ``<prefix>/<changeset>/<path>``, written to
  a temporary file and uploaded on close. A task with a ``[luigi.roles]`` role
  writes with that role's credentials, others with boto3's chain (what
  ``pass-env`` passes, ``AWS_ENDPOINT_URL``). hg itself reads the objects
  (reuse checks, ``luigi-audit --verify``) with its own boto3 chain and
  ``aws-region``/``aws-profile``.

``plain-output-root``
  Where relative ``LocalTarget`` paths of plain (adopted) Luigi tasks resolve:
  the same folder for every revision, so a second run reuses them. A local
  directory. Default: ``<output-root>/plain``; ``.hg/luigi/outputs/plain``
  when ``output-root`` is in S3.

``scheduler``
  URL of a central ``luigid`` (``http://host:8082``). Default: Luigi's local
  scheduler.

``workers``
  Luigi worker processes. Default: 1.

``block-size``
  Affected tasks handed to one ``luigi.build`` call: a run of more goes in
  blocks, upstream first (Luigi's scheduler slows down with every task it
  holds). Default: 1000.

``on-commit``
  ``off``, ``plan`` (print the affected tasks after each commit) or ``run``
  (build them after each commit). Default: ``off``.

``watches-file``
  Versioned file declaring watched paths of plain ``luigi.Task`` classes, in a
  ``[watches]`` section: ``Family = pattern`` (more patterns on indented
  lines). Default: ``.hgluigi``.

``python``
  Interpreter that runs pipeline code (needs luigi; hgext_luigi is put on its
  path). Default: the one running
  Mercurial.

``pass-env``
  Environment variables pipeline code may see (names; ``*`` and ``?`` globs).
  Setting it replaces the default ``PATH HOME USER LOGNAME LANG LC_* TZ TMPDIR
  TERM``; nothing else of the server's environment reaches pushed code.

``tree-cache``
  How many materialized trees to keep under ``.hg/luigi/trees``. Default: 3.

``lock-timeout``
  Seconds a run waits for another run of the same repository to finish before
  giving up. Default: 0 (give up at once).

``gate``
  Check the pipeline at each new head of a push (imports, task graph, patterns,
  in a subprocess) and reject the push when it is broken. Default: false.

``on-push``
  ``off``, ``queue`` (record one durable queue entry per new head of a push, for
  :hg:`luigi-worker`) or ``run`` (build each new head before the push returns,
  streaming to the pusher). Default: ``off``.

``branches``
  Named branches whose pushes trigger builds. Default: all.

``lease``
  Seconds a worker holds a queue entry without renewing it; an entry whose worker
  died is taken again after that. Runs hold their task builds in the store the
  same way (a run of another host waits for a task it is building). Default: 60.

``max-attempts``
  Times an entry is taken again after its worker died before it is marked
  failed. Default: 3.

``poll-interval``
  Seconds :hg:`luigi-worker` waits between looks at an empty queue. Default: 2.

``coalesce``
  Build pending entries of one branch once, at the newest head that descends
  from them. Default: true.

``auto-hooks``
  Register the hooks below automatically. Set it to false to list them in
  ``[hooks]`` yourself as ``python:hgext_luigi.hooks.commit_hook``,
  ``...pretxnchangegroup_hook``, ``...txnabort_hook`` and
  ``...changegroup_hook``. Default: true.

``callback-queue``
  URL of the SQS queue :hg:`luigi-callback` receives Step Functions
  ``.waitForTaskToken`` requests from. Default: none (pass ``--queue``).

``callback-heartbeat``
  Seconds between task heartbeats (and renewals of the message's visibility)
  while :hg:`luigi-callback` builds a request. Default: 60.

``callback-visibility``
  Seconds a received request stays hidden from other receivers; renewed by each
  heartbeat. Default: 300.

``aws-region``, ``aws-endpoint-url``, ``aws-profile``
  Override boto3's standard configuration (``AWS_REGION``,
  ``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, shared config files) for
  :hg:`luigi-callback` and the ``AssumeRole`` of ``[luigi.roles]``. Credentials
  are never read from hg configuration: they
  come from boto3's standard chain. Default: none.

``store``
  Where lineage, the push queue and the audit log live: empty for the
  repository's SQLite file ``.hg/luigi/lineage.db``, or a PostgreSQL URL
  (``postgresql://user@host:5432/database``) that several build hosts share.
  The URL may not hold a password: libpq reads it from ``PGPASSWORD`` in hg's
  environment, which ``pass-env`` may not hand to pipelines (or from
  ``PGPASSFILE``; hg warns when that file is one pipeline code, running as the
  same account, could read). Create its tables with :hg:`luigi-store`
  ``--upgrade``. Leases and queue ages follow the database server's clock.
  Default: empty.

``source``
  Where :hg:`luigi-worker` on a build host (a clone of the server repository on
  a shared ``store``) pulls the heads it lacks: a path name, path or URL.
  Default: ``paths.default``.

``openlineage-namespace``
  Namespace of the OpenLineage jobs of task builds (sent when the
  openlineage-python client is configured its own way: ``OPENLINEAGE_URL``,
  ``OPENLINEAGE_CONFIG``, ``openlineage.yml``). Default: ``paths.default``, else
  the repository root.

``acl``
  ``off``, ``warn`` or ``enforce``: task ownership for pushes and runs. Owners
  are the ``[owners]`` section of the watches file (``Family-glob = user
  @group ...``, the first match wins) as the server had it before the push; a
  push touching a task its pusher does not own is rejected with ``enforce``,
  recorded only with ``warn``. Default: ``off``.

``credential-duration``
  Seconds each task's STS session lasts (``[luigi.roles]``), 900 to 43200.
  Default: 900.

``audit-key-env``
  Name of the environment variable holding the HMAC key of the audit chain
  (never written down). Default: none (a plain SHA-256 chain).

Server sections: ``[luigi.groups]`` (``name = users``), ``[luigi.acl]
allow-force`` (who may push ``[luigi all]``), ``[luigi.acl.deny]``
(``Family-glob = principals``, checked first), ``[luigi.roles]``
(``Family-glob = role ARN``: each build assumes it through STS) and
``[luigi.oidc]`` for ``hgext_luigi.wsgi`` (OIDC tokens for pushes over HTTP):
``anonymous-read``, ``issuer``, ``audience``, ``user-claim``, ``groups-claim``,
``algorithms``, ``leeway``, ``realm``. :hg:`luigi-audit` lists, exports and verifies the
hash-chained audit log.

In the server's hgrc, ``[ansible] vault_password_env`` names the variable
holding the Ansible vault password: it is handed to the run alone (not to the
gate or the graph loader), moved out of the environment before the pipeline is
imported, and read only by ``AnsiblePlaybookTask``.

Every value is checked where it is read; a bad one is ``abort: config error:
luigi.NAME: ...`` naming what the option accepts.

Whoever may push to a server repository runs code there: trees are written the
way :hg:`update` writes a working directory (audited paths, symlinks never
followed), pipeline code sees only ``pass-env``, outputs stay under the output
root, and the pusher is the server's account or the authenticated user, never
the committer name. See the README's trust model.

Task types for pipelines: ``hgext_luigi.ansible.AnsiblePlaybookTask`` (an
Ansible playbook from the repository, through ansible-runner; settings in the
Luigi configuration's ``[ansible]`` section) and
``hgext_luigi.stepfunctions.StepFunctionsTask`` (an AWS Step Functions
execution; ``[stepfunctions]``). Both record what they did in lineage.

Pushes (not pulls) are recognised by the hooks the extension registers itself:
``pretxnchangegroup`` (the gate, then the queue entries, written inside the
push's transaction), ``txnabort`` and ``changegroup`` (after the transaction and
the lock: the entries become pending, or are built with ``on-push = run``).
``[luigi skip]`` in the message of a pushed head builds nothing for it;
``[luigi all]`` in any pushed changeset of a head rebuilds everything at it.

State lives in ``.hg/luigi/``: ``lineage.db`` (SQLite: lineage, push queue and
audit log, unless ``[luigi] store`` names a shared database), ``trees/``, ``index/`` (cached task graphs),
``logs/`` (Luigi's log per run), ``outputs/`` (default output root), ``lib/``
(the import path of pipeline subprocesses), ``run.lock``.
"""

testedwith = b'6.9 7.0 7.1 7.2'
minimumhgversion = b'6.5'
buglink = b'https://example.invalid/hgext_luigi/issues'

# Mercurial reads these attributes when it loads the extension; Pipeline code
# only wants HgTask.  Both are resolved lazily, so neither side pays for the
# other's imports (Luigi is never imported by hg for a commit; Mercurial is
# never imported by a pipeline).
_LAZY = {
    'cmdtable': ('hg.commands', 'cmdtable'),
    'configtable': ('hg.config', 'configtable'),
    'colortable': ('hg.show', 'colortable'),
    'uipopulate': ('hg.hooks', 'uipopulate'),
    'extsetup': ('hg.web', 'extsetup'),  # hgweb's /luigi/REV page
    'HgTask': ('pipeline.task', 'HgTask'),
}


def __getattr__(name):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module('.' + module, __name__), attr)


__all__ = ['HgTask']
