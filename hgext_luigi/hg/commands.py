"""The ``hg luigi-*`` commands."""

import functools
import os
import re
import time

from mercurial import cmdutil, error, pycompat, registrar
from mercurial.i18n import _

from . import config, planning, runs, show, stores

cmdtable = {}
command = registrar.command(cmdtable)

_b = config.local


def _store_errors(fn):
    """A command that meets a database error (a shared store's server gone, a
    bad filter PostgreSQL refuses) says so as ``abort:``, not a traceback."""
    @functools.wraps(fn)
    def command(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TypeError as e:  # wrong arguments, as Mercurial's checksignature
            import traceback

            if len(traceback.extract_tb(e.__traceback__)) == 1:
                raise error.SignatureError
            raise
        except Exception as e:
            from ..core import database

            if not isinstance(e, database.ERRORS):
                raise
            raise error.Abort(_(b'the store failed: %s') % _b(str(e)),
                              hint=_(b'check [luigi] store and its database server; '
                                     b'see hg luigi-store'))
    return command


def _settings(ui, repo):
    return config.Settings.read(ui, repo)


def _formatter(ui, topic, opts):
    """``ui.formatter``; with a template (``-T json``) stdout holds the document
    alone, so every status, note and progress line goes to stderr."""
    fm = ui.formatter(topic, pycompat.byteskwargs(opts))
    if not fm.isplain():
        ui.setconfig(b'ui', b'message-output', b'stderr', b'hgext_luigi')
    return fm


@command(
    b'luigi-affected',
    [(b'r', b'rev', b'', _(b'revision to plan (default: ., or tip without a working '
                          b'directory)'), _(b'REV')),
     (b'', b'all', False, _(b'plan a rebuild of every task')),
     (b't', b'task', [], _(b'only these tasks (family or key) and what they need'),
      _(b'NAME'))] + cmdutil.formatteropts,
    _(b'[-r REV] [--all] [--task NAME]... [-T TEMPLATE]'),
    helpcategory=command.CATEGORY_CHANGE_NAVIGATION,
    intents={registrar.INTENT_READONLY},
)
@_store_errors
def luigi_affected(ui, repo, **opts):
    """show which Luigi tasks a revision affects, and why

    Every task reachable from the roots of the pipeline is compared with its own
    last successful build: it is ``affected`` when it was never built, when a file
    it watches or its pipeline code differs between that build's changeset and
    REV, or when the output of that build is gone; ``upstream`` when a task it
    needs is affected; ``unaffected`` when it reuses its last successful build,
    whose changeset is then its stamp.

    With ``-T json`` each task is an object with ``task`` (Luigi task id),
    ``key``, ``family``, ``affected``, ``status``, ``changeset`` (the stamp it has
    or will have), ``base`` (the build it is compared with, or null) and
    ``reasons``.
    """
    settings = _settings(ui, repo)
    ctx = planning.resolve_rev(repo, opts.get('rev'))
    names = [config.text(n) for n in opts.get('task') or []]
    fm = _formatter(ui, b'luigi-affected', opts)
    with planning.Workspace(ui, repo, ctx, settings) as ws:
        planned = planning.make(ui, repo, ctx, settings, ws, force=opts.get('all'),
                               names=names)
    show.plan(ui, planned, fm)
    fm.end()
    return 0


@command(
    b'luigi-run',
    [(b'r', b'rev', b'', _(b'revision to build (default: ., or tip without a working '
                          b'directory)'), _(b'REV')),
     (b'', b'all', False, _(b'rebuild every task at REV')),
     (b't', b'task', [], _(b'only these tasks (family or key) and what they need'),
      _(b'NAME')),
     (b'n', b'dry-run', False, _(b'print the plan and run nothing')),
     (b'w', b'workers', 0, _(b'Luigi worker processes (default: [luigi] workers)'),
      _(b'N')),
     (b'', b'scheduler', b'', _(b'central luigid URL (default: [luigi] scheduler, or '
                               b'the local scheduler)'), _(b'URL'))]
    + cmdutil.formatteropts,
    _(b'[-r REV] [--all] [--task NAME]... [--dry-run] [--workers N] [--scheduler URL] '
      b'[-T TEMPLATE]'),
    helpcategory=command.CATEGORY_MAINTENANCE,
)
@_store_errors
def luigi_run(ui, repo, **opts):
    """run the Luigi tasks a revision affects

    Plans REV as :hg:`luigi-affected` does, then hands exactly the affected
    subgraph to Luigi: unaffected tasks are satisfied by the stamped outputs of
    the build they reuse, so a second run of the same revision runs nothing.

    The pipeline code runs as of REV, from a tree materialized under
    ``.hg/luigi/trees`` (updated incrementally from an earlier one), in a
    subprocess; uncommitted changes in the working directory are not built
    (without -r, a dirty working directory gets a warning).

    Ends with one line per task (``ran``, ``reused``, ``failed``, ``not run``)
    and exits with status 1 when any task failed or could not run. Luigi's own
    log of the run is kept in ``.hg/luigi/logs/``.
    """
    settings = _settings(ui, repo)
    ctx = planning.resolve_rev(repo, opts.get('rev'))
    if opts.get('workers', 0) < 0:
        raise error.InputError(_(b'--workers must be a positive number'))
    fm = _formatter(ui, b'luigi-run', opts)
    request = runs.Request(
        trigger="manual", force=bool(opts.get('all')),
        tasks=tuple(config.text(n) for n in opts.get('task') or []),
        workers=opts.get('workers') or None,
        scheduler=config.text(opts.get('scheduler')) or None,
        dry_run=bool(opts.get('dry_run')), warn_dirty=not opts.get('rev'))
    return runs.run(ui, repo, ctx, settings, request, fm=fm).status


def _graph(ui, repo, store, settings, rev, opts):
    """``hg luigi-lineage -T dot`` and ``--svg FILE``."""
    from ..core import graph

    if opts.get('task'):
        raise error.InputError(_(b'-T dot and --svg show REV or --output PATH'),
                               hint=_(b'drop --task'))
    try:
        if opts.get('output'):
            text = graph.output_dot(store, _resolve_output(repo, settings, opts['output']))
        else:
            ctx = planning.resolve_rev(repo, rev)
            text = graph.lineage_dot(store, config.hexstr(ctx))
        if opts.get('svg'):
            svg = graph.render_svg(text)  # before the file: nothing written on error
            with open(pycompat.fsdecode(opts['svg']), 'wb') as f:
                f.write(svg)
            ui.status(_(b'wrote %s\n') % opts['svg'])
    except graph.GraphError as e:
        raise error.Abort(_b(str(e)), hint=_(b'-T dot prints the graph to render elsewhere')
                          if 'dot' in str(e) else None)
    if opts.get('template') == b'dot':
        ui.write(text.encode('utf-8'))  # UTF-8: the graph declares charset="UTF-8"
    return 0


def _when(ts):
    if ts is None:
        return b'-'
    return _b(time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ts)))


def _outputs_data(outputs):
    return [{b'path': _b(o['path']), b'size': o['size'], b'sha256': _b(o['sha256'])}
            for o in outputs]


def _inputs_data(inputs):
    return [{b'task': _b(i['task_id']), b'key': _b(i['key']),
             b'changeset': _b(i['changeset']),
             b'outputs': [_b(p) for p in i['outputs']]} for i in inputs]


def _write_build(fm, store, build):
    outputs = store.outputs(build['id'])
    inputs = store.inputs(build['id'])
    fm.data(task=_b(build['task_id']), family=_b(build['family']),
            params={_b(k): _b(v) for k, v in build['params'].items()},
            base=_b(build['base']) if build['base'] else None,
            reasons=[_b(r) for r in build['reasons']],
            started=_when(build['started']), ended=_when(build['ended']),
            outputs=_outputs_data(outputs), inputs=_inputs_data(inputs),
            run=_b(build['run_id']), error=_b(build['error']) if build['error'] else None,
            extra=config.local_data(build.get('extra')))
    for o in outputs:
        fm.plain(b'    output %s  %d bytes  sha256 %s\n'
                 % (_b(o['path']), o['size'] or 0, _b((o['sha256'] or '')[:12])))
    for i in inputs:
        fm.plain(b'    input  %s at %s\n' % (_b(i['key']), _b(i['changeset'][:12])))
    for kind, record in sorted((build.get('extra') or {}).items()):
        if isinstance(record, dict) and record.get('summary'):
            fm.plain(b'    %-6s %s\n' % (_b(kind), _b(record['summary'])))
    if build.get('error'):
        fm.plain(b'    error  %s\n' % _b(build['error']))


def _nothing(ui, fm):
    fm.end()
    if fm.isplain():
        ui.status(_(b'no lineage recorded yet (run hg luigi-run first)\n'))
    return 1


@command(
    b'luigi-lineage',
    [(b't', b'task', b'', _(b"a task's builds across revisions (family or key)"),
      _(b'NAME')),
     (b'o', b'output', b'', _(b'which task and changeset produced this file'),
      _(b'PATH')),
     (b'', b'svg', b'', _(b'write the lineage graph as SVG to FILE (needs graphviz)'),
      _(b'FILE'))] + cmdutil.formatteropts,
    _(b'[REV] [--task NAME] [--output PATH] [-T TEMPLATE|-T dot] [--svg FILE]'),
    helpcategory=command.CATEGORY_CHANGE_NAVIGATION,
    intents={registrar.INTENT_READONLY},
)
@_store_errors
def luigi_lineage(ui, repo, rev=None, **opts):
    """show where the outputs of Luigi tasks come from

    With REV (default: ., or tip without a working directory): for every task of
    the latest run at REV, the changeset its current output comes from (REV
    itself, or the older build it reused), its status, outputs (path, size,
    sha256), inputs, when and by whom it was built and how (manual, commit,
    push).

    With ``--output PATH``: the task and changeset that produced that file, and
    the chain of upstream outputs back to the sources, each with its changeset.

    With ``--task NAME``: every build of that task across revisions.

    ``-T json`` gives the fields ``task``, ``key``, ``family``, ``changeset``,
    ``status``, ``outputs``, ``inputs``, ``user``, ``trigger``, ``built``. A
    task's ``status`` is that of its build (``success``, ``failed``), ``missing``
    when no build is recorded, or ``external`` for a ``luigi.ExternalTask``,
    whose output another system provides.

    ``-T dot`` prints the lineage as a Graphviz graph instead (REV, or
    ``--output PATH``): tasks coloured by outcome (ran, reused, failed, not
    run), arrows to their upstream tasks labelled with the changeset each
    output comes from; ``--svg FILE`` renders it with graphviz's ``dot``.

    Output paths are recorded relative to the output root, so a repository moved
    or restored elsewhere keeps its lineage.
    """
    settings = _settings(ui, repo)
    fm = _formatter(ui, b'luigi-lineage', opts)
    if not stores.recorded(settings):
        return _nothing(ui, fm)

    store = stores.open_store(settings, write=False)
    try:
        if not store.has_records():
            return _nothing(ui, fm)
        if opts.get('template') == b'dot' or opts.get('svg'):
            return _graph(ui, repo, store, settings, rev, opts)
        if opts.get('output'):
            return _by_output(ui, repo, store, settings, fm, opts['output'])
        if opts.get('task'):
            return _by_task(ui, store, fm, config.text(opts['task']))
        return _by_rev(ui, repo, store, fm, _lineage_node(repo, settings, rev))
    finally:
        store.close()


_FULL_HASH = re.compile(br'^[0-9a-f]{40}$')


def _lineage_node(repo, settings, rev):
    """The full hash (str) of ``rev``; on a shared store, a full hash this
    clone lacks is taken as is (another host built it)."""
    try:
        return config.hexstr(planning.resolve_rev(repo, rev))
    except error.RepoLookupError:
        if rev and _FULL_HASH.match(rev) and stores.is_shared(settings):
            return config.text(rev)
        raise


def _by_rev(ui, repo, store, fm, node):
    short = _b(node[:12])
    run = store.latest_run(node)
    if run is None:
        fm.end()
        raise error.Abort(_(b'no luigi run recorded at %s') % short,
                          hint=_(b'run hg luigi-run -r %s') % short)
    rows = store.run_tasks(run['id'])
    width = max([len(r['key']) for r in rows] + [4])
    fm.plain(_(b'run %s at %s: %s, by %s (%s)\n')
             % (_b(run['id'][:12]), short, _b(run['status']), _b(run['user']),
                _b(run['trigger'])))
    for r in rows:
        build = None
        if r['outcome'] == 'failed':
            build = store.last_build_in_run(run['id'], r['key'])
        if build is None and r['changeset']:
            build = store.success_for_key(r['key'], r['changeset'])
        external = build is None and _is_external(r)
        fm.startitem()
        fm.write(b'key', b'%%-%ds  ' % width, _b(r['key']))
        source = build['changeset'] if build else r['changeset']
        fm.plain(b'%-12s ' % (_b(source[:12]) if source else b'-'))
        fm.data(changeset=_b(source) if source else None)
        fm.condwrite(ui.verbose, b'outcome', b'%s ', _b(r['outcome']))
        fm.plain(b'%-16s ' % _provenance(source, node, external))
        fm.data(reused=bool(source and source != node), revision=_b(node))
        status = build['status'] if build else ('external' if external else 'missing')
        fm.write(b'status', b'%-8s ', _b(status))
        if build:
            fm.write(b'built user trigger', b'%s by %s (%s)',
                     _when(build['ended'] or build['started']), _b(build['user']),
                     _b(build['trigger']))
            fm.plain(b'\n')
            _write_build(fm, store, build)
        else:
            fm.data(task=_b(r['task_id']) if r['task_id'] else None, family=_b(r['family']))
            fm.plain(b'\n')
    fm.end()
    return 0


def _is_external(row):
    """A ``luigi.ExternalTask`` in a run's plan: never built by us, its output
    exists by design.  Runs recorded before the plan's status was kept tell it
    by its outcome, or by having no stamp although unaffected."""
    if row.get('status'):
        return row['status'] == 'external'
    return row['outcome'] == 'external' or not (row['affected'] or row['changeset'])


def _provenance(source, node, external):
    if external:
        return b'(external)'
    return b'(this revision)' if source == node else b'(reused)'


def _by_task(ui, store, fm, name):
    builds = store.history(name)
    if not builds:
        fm.end()
        raise error.Abort(_(b'no builds recorded for task %s') % _b(name),
                          hint=_(b'name a task family or key as shown by hg luigi-affected'))
    for b in builds:
        fm.startitem()
        fm.write(b'changeset', b'%s  ', _b(b['changeset']), label=b'log.changeset')
        fm.write(b'key', b'%s  ', _b(b['key']))
        fm.write(b'status', b'%-8s ', _b(b['status']))
        fm.write(b'built user trigger', b'%s by %s (%s)\n', _when(b['ended'] or b['started']),
                 _b(b['user']), _b(b['trigger']))
        _write_build(fm, store, b)
    fm.end()
    return 0


def _resolve_output(repo, settings, path):
    from ..core import objects

    path = pycompat.fsdecode(path)
    if objects.is_url(path):  # an object: its URL is its only name
        return [path]
    candidates = [os.path.abspath(path), os.path.join(settings.output_root, path),
                  os.path.join(pycompat.fsdecode(repo.root), path)]
    # under an S3 output root, CHANGESET/PATH is a key: joined, not normalized
    return [c if objects.is_url(c) else os.path.normpath(c) for c in candidates]


def _by_output(ui, repo, store, settings, fm, path):
    build = None
    for candidate in _resolve_output(repo, settings, path):
        found = store.builds_producing(candidate)
        if found:
            build = found[0]
            break
    if build is None:
        fm.end()
        raise error.Abort(_(b'no recorded build produced %s') % path,
                          hint=_(b'give the path shown by hg luigi-lineage REV'))
    seen = set()

    def show(b, depth):
        fm.startitem()
        indent = b'  ' * depth
        fm.data(depth=depth)
        fm.plain(indent)
        fm.write(b'key', b'%s', _b(b['key']))
        fm.write(b'changeset', b' at %s', _b(b['changeset']))
        fm.write(b'built user trigger', b', built %s by %s (%s)\n',
                 _when(b['ended']), _b(b['user']), _b(b['trigger']))
        outputs = store.outputs(b['id'])
        inputs = store.inputs(b['id'])
        fm.data(task=_b(b['task_id']), family=_b(b['family']), status=_b(b['status']),
                outputs=_outputs_data(outputs), inputs=_inputs_data(inputs))
        for o in outputs:
            fm.plain(b'%s  output %s\n' % (indent, _b(o['path'])))
        if b['id'] in seen:
            return
        seen.add(b['id'])
        if not inputs:
            fm.plain(b'%s  source: repository at %s\n' % (indent, _b(b['changeset'][:12])))
        for i in inputs:
            up = store.success_for(i['task_id'], i['changeset'])
            if up is None:
                fm.plain(b'%s  input %s at %s (no build recorded)\n'
                         % (indent, _b(i['key']), _b(i['changeset'][:12])))
                continue
            show(up, depth + 1)

    show(build, 0)
    fm.end()
    return 0


@command(
    b'debugluigitree',
    [(b'r', b'rev', b'', _(b'revision (default: ., or tip without a working directory)'),
      _(b'REV'))],
    _(b'[-r REV]'),
    helpcategory=command.CATEGORY_MAINTENANCE,
    intents={registrar.INTENT_READONLY},
)
@_store_errors
def debugluigitree(ui, repo, **opts):
    """materialize the tree of a revision the way luigi-run does, print its path

    Reuses the cached tree of an earlier revision when there is one (only the
    files that differ are written) and reports how many files were written.
    """
    settings = _settings(ui, repo)
    ctx = planning.resolve_rev(repo, opts.get('rev'))
    with planning.Workspace(ui, repo, ctx, settings) as ws:
        path = ws.path()
        ui.write(b'%s\n' % pycompat.fsencode(path))
        ui.status(_(b'%d files written\n') % ws.trees[config.hexstr(ctx)].written)
    return 0


@command(
    b'luigi-worker',
    [(b'', b'once', False, _(b'process the pending entries, then exit')),
     (b'w', b'workers', 0, _(b'Luigi worker processes per build (default: [luigi] '
                            b'workers)'), _(b'N'))],
    _(b'[--once] [--workers N]'),
    helpcategory=command.CATEGORY_MAINTENANCE,
)
@_store_errors
def luigi_worker(ui, repo, **opts):
    """build the pushes queued in this repository

    Runs until stopped (Ctrl-C or SIGTERM give the current entry back to the
    queue), taking entries recorded by pushes with ``[luigi] on-push = queue`` and
    building each head as :hg:`luigi-run` would, recorded in lineage with trigger
    ``push`` and the pusher as user. Several workers may run: an entry is held by
    one worker at a time under a lease (``[luigi] lease`` seconds, renewed while
    it builds); the entry of a worker that died is taken again when its lease runs
    out, up to ``[luigi] max-attempts`` times. Pending entries of one branch whose
    heads are ancestors of a newer pending head are built once, at that head, and
    recorded as covered by it (``[luigi] coalesce``).

    With ``--once``, processes what is pending and exits: status 1 if a build
    failed, 0 otherwise.
    """
    from . import worker

    if opts.get('workers', 0) < 0:
        raise error.InputError(_(b'--workers must be a positive number'))
    settings = _settings(ui, repo)
    return _serve(ui, opts.get('once'), _(b'luigi worker stopped\n'),
                  _(b'%d queue entries processed, %d failed\n'),
                  lambda: worker.serve(ui, repo, settings, once=opts.get('once'),
                                       workers=opts.get('workers') or None))


def _serve(ui, once, stopped, counts, serve):
    """The end of a long-running command (the worker, the callback receiver):
    Ctrl-C or SIGTERM stops it cleanly; ``--once`` says what it did and exits
    1 when something failed."""
    try:
        done, failed = serve()
    except KeyboardInterrupt:
        ui.status(stopped)
        return 0
    if once:
        ui.status(counts % (done, failed))
    return 1 if failed else 0


@command(
    b'luigi-callback',
    [(b'', b'queue', b'', _(b'SQS queue URL to receive from (default: [luigi] '
                           b'callback-queue)'), _(b'URL')),
     (b'', b'once', False, _(b'answer the waiting requests, then exit')),
     (b'', b'wait', 20, _(b'seconds one receive waits for a message (long poll)'),
      _(b'SECONDS'))],
    _(b'[--queue URL] [--once] [--wait SECONDS]'),
    helpcategory=command.CATEGORY_MAINTENANCE,
)
@_store_errors
def luigi_callback(ui, repo, **opts):
    """build what AWS Step Functions executions wait for, and answer them

    Receives the messages a ``.waitForTaskToken`` state sends to an SQS queue
    (``arn:aws:states:::sqs:sendMessage.waitForTaskToken``), each a JSON object
    with ``TaskToken`` (from ``$$.Task.Token``), ``rev`` (a hash, branch,
    bookmark or tag, never a revset; default ``tip``),
    ``tasks`` (families or keys; default: every root task), ``all`` (rebuild
    everything) and optionally ``execution`` (``$$.Execution.Id``, recorded as the
    run's user). Each request is built as :hg:`luigi-run` would, with trigger
    ``stepfunctions``; the execution then gets task success with the changeset,
    run and stamped outputs of the tasks, or task failure with the error. A
    heartbeat goes out every ``[luigi] callback-heartbeat`` seconds while it
    builds. A message is deleted only once answered.

    AWS credentials, region and endpoint come from boto3's standard chain
    (``AWS_REGION``, ``AWS_ENDPOINT_URL``, profiles, instance roles);
    ``[luigi] aws-region``, ``aws-endpoint-url`` and ``aws-profile`` override
    them. With ``--once``, exits when the queue is empty: status 1 if a request
    failed.
    """
    from . import callback

    settings = _settings(ui, repo)
    queue = config.text(opts.get('queue')) or settings.callback_queue
    if not queue:
        raise error.InputError(_(b'no queue to receive from'),
                               hint=_(b'pass --queue URL or set [luigi] callback-queue'))
    if opts.get('wait') < 0 or opts.get('wait') > 20:
        raise error.InputError(_(b'--wait must be between 0 and 20 seconds'))
    return _serve(ui, opts.get('once'), _(b'luigi callback receiver stopped\n'),
                  _(b'%d requests answered, %d failed\n'),
                  lambda: callback.serve(ui, repo, settings, queue,
                                         once=opts.get('once'), wait=opts.get('wait')))


@command(
    b'luigi-queue',
    [(b'', b'retry', 0, _(b'requeue this failed entry'), _(b'ID')),
     (b'', b'state', [], _(b'only entries in this state (repeatable)'), _(b'STATE')),
     (b'l', b'limit', 0, _(b'only the last N entries'), _(b'N'))]
    + cmdutil.formatteropts,
    _(b'[--retry ID] [--state STATE]... [--limit N] [-T TEMPLATE]'),
    helpcategory=command.CATEGORY_MAINTENANCE,
)
@_store_errors
def luigi_queue(ui, repo, **opts):
    """list the pushes queued for building, or requeue a failed one

    One line per entry: id, state (``incoming``, ``pending``, ``running``,
    ``done``, ``failed``, ``skipped``), head, branch, pusher, time, attempts and
    the run's summary or error. ``-T json`` gives the fields ``id``, ``head``,
    ``branch``, ``pusher``, ``author`` (the head's committer), ``source``,
    ``time``, ``state``, ``attempts``, ``force``, ``run``, ``covered_by``,
    ``summary`` and ``error``.

    ``--retry ID`` puts a failed entry back as pending, with its attempts reset.
    """
    from ..core import pushqueue

    settings = _settings(ui, repo)
    states = [config.text(s) for s in opts.get('state') or []]
    for s in states:
        if s not in pushqueue.STATES:
            raise error.InputError(_(b'unknown state %s') % _b(s),
                                   hint=_(b'use one of %s') % b', '.join(
                                       _b(x) for x in pushqueue.STATES))
    if not stores.recorded(settings):
        if opts.get('retry'):
            raise error.Abort(_(b'no queue entry %d') % opts['retry'])
        fm = _formatter(ui, b'luigi-queue', opts)
        fm.end()
        if fm.isplain():
            ui.status(_(b'the queue is empty (pushes are queued with [luigi] on-push = '
                        b'queue)\n'))
        return 0

    q = stores.open_queue(settings, write=bool(opts.get('retry')))
    try:
        if opts.get('retry'):
            return _retry(ui, q, opts['retry'])
        entries = q.entries(states or None, limit=opts.get('limit') or None)
    finally:
        q.close()
    fm = _formatter(ui, b'luigi-queue', opts)
    _write_entries(fm, entries)
    fm.end()
    return 0


def _retry(ui, q, entry_id):
    from ..core import pushqueue
    from . import trigger

    try:
        entry = q.retry(entry_id, actor=trigger.os_account())
    except pushqueue.QueueError as e:
        raise error.Abort(_b(str(e)), hint=_(b'see hg luigi-queue'))
    ui.status(_(b'queue entry %d (%s on %s) is pending again\n')
              % (entry['id'], _b(entry['head'][:12]), _b(entry['branch'])))
    return 0


def _write_entries(fm, entries):
    if entries:
        fm.plain(b'%4s %-8s %-12s %-10s %-20s %-19s %s\n' % (
            b'ID', b'STATE', b'HEAD', b'BRANCH', b'PUSHER', b'TIME', b'TRIES'))
    for e in entries:
        fm.startitem()
        fm.write(b'id', b'%4d ', e['id'])
        fm.write(b'state', b'%-8s ', _b(e['state']), label=b'luigi.queue.%s' % _b(e['state']))
        fm.write(b'head', b'%s ', _b(e['head']) if not fm.isplain() else _b(e['head'][:12]))
        fm.write(b'branch', b'%-10s ', _b(e['branch']))
        fm.write(b'pusher', b'%-20s ', _b(e['pusher']))
        fm.write(b'time', b'%s ', _when(e['created']))
        fm.write(b'attempts', b'x%d', e['attempts'])
        fm.data(source=_b(e['source']), author=_b(e['author']), force=bool(e['force']),
                run=_b(e['run_id']) if e['run_id'] else None, covered_by=e['covered_by'])
        fm.condwrite(bool(e['summary']), b'summary', b'  %s', _b(e['summary']))
        fm.condwrite(bool(e['error']), b'error', b'  error: %s', _b(e['error']))
        fm.plain(b'\n')


@command(
    b'luigi-audit',
    [(b'', b'since', b'', _(b'records from this date on (see hg help dates)'), _(b'DATE')),
     (b'u', b'user', b'', _(b'records of this user (pusher, run user)'), _(b'USER')),
     (b't', b'task', b'', _(b'records of this task (family, key or glob)'), _(b'NAME')),
     (b'r', b'rev', b'', _(b'records about this revision'), _(b'REV')),
     (b'', b'verify', False, _(b'check the chain, lineage and outputs; exit 1 if broken')),
     (b'', b'head', False, _(b'print the chain head; with --verify HASH, check the chain '
                            b'reaches that head')),
     (b'', b'export', False, _(b'write JSON lines (for a SIEM)'))] + cmdutil.formatteropts,
    _(b'[--since DATE] [-u USER] [-t NAME] [-r REV] [--export] [-T TEMPLATE] | --head | '
      b'--verify [--head HASH]'),
    helpcategory=command.CATEGORY_MAINTENANCE,
    intents={registrar.INTENT_READONLY},
    optionalrepo=False,
)
@_store_errors
def luigi_audit(ui, repo, *expected, **opts):
    """list, export or verify the audit log

    Every decision and action is one record, written in the same SQLite
    transaction as the state it describes: pushes accepted and rejected, gate
    and access verdicts, queue entries taken, finished and retried, runs
    started and ended, each task build (its changeset and outputs with their
    sha256), credentials issued (role, session, access key id, expiry; never a
    secret) and callbacks answered. Each record holds the hash of the record
    before it and of its own content: a chain (HMAC-SHA256 keyed by the
    variable ``[luigi] audit-key-env`` names, when set).

    Without options, lists the records (``-T json`` for every field).

    ``--verify`` recomputes the chain, checks every lineage build against the
    audit record that describes it and every recorded output on disk against
    its sha256, and reports each broken link, edited or deleted record and
    changed or missing output by id, with exit status 1. ``--head`` prints the
    hash of the last record: keep it elsewhere (a ticket, a WORM bucket), and
    ``--verify --head HASH`` also detects records deleted from the end.

    ``--export`` writes the selected records as JSON lines, one per record,
    with ``prev`` and ``hash`` so a SIEM can check the chain itself.
    """
    from ..core import audit, verify

    settings = _settings(ui, repo)
    if not stores.recorded(settings):  # nothing recorded: do not create it
        ui.status(_(b'no audit records yet\n'))
        return 0
    store = stores.open_store(settings, write=False)  # --verify reads the key itself
    try:
        db = store._db
        if expected and not (opts.get('verify') and opts.get('head')):
            raise error.InputError(_(b'a head hash is given with --verify --head HASH'))
        if len(expected) > 1:
            raise error.InputError(_(b'give one head hash'))
        if opts.get('verify'):
            return _audit_verify(ui, store, settings, opts, verify,
                                 expected[0] if expected else None)
        if opts.get('head'):
            fm = _formatter(ui, b'luigi-audit', opts)
            fm.startitem()
            fm.write(b'head', b'%s\n', _b(audit.head(db) or ''))
            fm.end()
            return 0
        return _audit_list(ui, repo, db, opts, audit)
    finally:
        store.close()


def _audit_filters(repo, opts):
    from mercurial.utils import dateutil

    since = None
    if opts.get('since'):
        since = dateutil.parsedate(opts['since'])[0]
    rev = None
    if opts.get('rev'):
        rev = config.hexstr(planning.resolve_rev(repo.unfiltered(), opts['rev']))
    return {"since": since, "user": config.text(opts['user']) if opts.get('user') else None,
            "task": config.text(opts['task']) if opts.get('task') else None,
            "changeset": rev}


def _audit_list(ui, repo, db, opts, audit):
    import json

    records = audit.records(db, **_audit_filters(repo, opts))
    if opts.get('export'):
        for rec in records:
            ui.write(_b(json.dumps(rec, sort_keys=True, ensure_ascii=False)) + b'\n')
        return 0
    fm = _formatter(ui, b'luigi-audit', opts)
    for rec in records:
        fm.startitem()
        fm.write(b'id', b'%6d ', rec['id'])
        fm.write(b'time', b'%s ', _b(_when(rec['time'])))
        fm.write(b'kind', b'%-16s ', _b(rec['kind']), label=b'luigi.audit.%s' % _b(rec['kind']))
        fm.write(b'actor', b'%-16s ', _b(rec['actor'] or '-'))
        fm.plain(b'%-12s ' % (_b(rec['changeset'][:12]) if rec['changeset'] else b'-'))
        fm.plain(b'%s' % _b(_audit_summary(rec)))
        fm.data(changeset=_b(rec['changeset']) if rec['changeset'] else None,
                task=_b(rec['task']) if rec['task'] else None,
                run=_b(rec['run_id']) if rec['run_id'] else None,
                data=config.local_data(rec['data']), prev=_b(rec['prev']), hash=_b(rec['hash']))
        fm.plain(b'\n')
    fm.end()
    return 0


def _audit_summary(rec):
    d = rec['data']
    kind = rec['kind']
    if kind == 'build':
        return "%s %s%s" % (d.get('key'), d.get('status'),
                            " (%d outputs)" % len(d.get('outputs') or []))
    if kind == 'credentials':
        return "%s %s as %s, key %s, expires %s" % (
            rec['task'], d.get('role'), d.get('session'), d.get('access_key_id'),
            d.get('expires')) if not d.get('error') else "%s %s" % (rec['task'], d['error'])
    if kind == 'acl':
        denied = [x['task'] for x in d.get('denied', [])]
        return ("%s allowed" % d.get('mode') if d.get('allowed') else
                "%s denied: %s" % (d.get('mode'), ", ".join(denied) or "rebuild all"))
    if kind in ('push-accepted', 'push-rejected'):
        return "%s %s" % (d.get('source'), d.get('reason') or
                          ", ".join(h[:12] for h in d.get('heads', [])))
    if kind == 'run-ended':
        return d.get('status') or ''
    fields = [k for k in ('status', 'state', 'verdict', 'outcome', 'trigger') if d.get(k)]
    return " ".join(str(d[k]) for k in fields)


def _audit_verify(ui, store, settings, opts, verify, head):
    import time as _time

    from ..core import audit

    key = stores.chain(settings).key
    head = config.text(head) if head else None
    if head is not None and not re.match(r'[0-9a-f]{64}\Z', head):
        raise error.InputError(_(b'%s is not a head hash (64 hex digits from hg '
                                 b'luigi-audit --head)') % _b(head[:80]))
    started = _time.time()
    result = verify.verify(store, key, head, s3=settings.s3_client_kwargs())
    fm = _formatter(ui, b'luigi-audit', opts)
    for p in result['problems']:
        fm.startitem()
        fm.write(b'kind', b'%-8s ', _b(p['kind']))
        fm.write(b'id', b'%s ', _b(str(p['id'])))
        fm.write(b'problem', b'%s\n', _b(p['problem']))
    fm.end()
    ui.status(_(b'checked %d audit records, %d lineage builds, %d outputs in %.2fs%s: '
                b'%s\n') % (result['records'], result['builds'], result['outputs'],
                            _time.time() - started,
                            (b' (%d builds predate the audit log)' % result['before_audit'])
                            if result['before_audit'] else b'',
                            b'%d problems' % len(result['problems'])
                            if result['problems'] else b'no problem'))
    if not result['problems'] and not head:
        ui.note(_(b'head %s\n') % _b(audit.head(store._db) or '-'))
    return 1 if result['problems'] else 0


@command(
    b'luigi-why',
    [(b'r', b'rev', b'', _(b'the build REV uses (default: tip)'), _(b'REV')),
     (b'', b'against', b'', _(b'compare with the build REV uses'), _(b'REV')),
     (b'', b'previous', False, _(b'compare with the previous build whose output differs '
                                b'(the default)')),
     (b'', b'upstream', False, _(b'explain each upstream task whose output changed, '
                                b'in turn'))] + cmdutil.formatteropts,
    _(b'TASK|OUTPUT [-r REV] [--against REV|--previous] [--upstream] [-T TEMPLATE]'),
    helpcategory=command.CATEGORY_CHANGE_NAVIGATION,
    intents={registrar.INTENT_READONLY},
)
@_store_errors
def luigi_why(ui, repo, target, **opts):
    """say what changed between two builds of a task: data, logic or runtime

    Compares the build of TASK (a task key or family) at REV, or of the task
    that produced OUTPUT, with another build of it: by default the previous
    successful build whose output differs, or the one ``--against REV`` uses.
    Prints, grouped:

    - data: watched files added, removed or modified (``+added -removed``
      lines for text, sizes for binary files), and upstream outputs whose
      content changed (which task, between which changesets);
    - logic: pipeline source files changed (with the changesets between the two
      builds that touched them), parameters, Luigi configuration sections;
    - runtime: Python, Luigi and hgext_luigi versions;
    - a verdict: ``data drift``, ``logic change``, ``data drift and logic
      change``, ``runtime change``, or ``nothing recorded changed: output
      differs anyway (non-deterministic task?)``.

    ``--upstream`` explains in turn each upstream task whose output changed,
    down to the changed input. Builds recorded by older versions show what they
    did not record as unknown.
    """
    from . import explain, stores

    if opts.get('against') and opts.get('previous'):
        raise error.InputError(_(b'--against and --previous are exclusive'))
    settings = _settings(ui, repo)
    if not stores.recorded(settings):
        raise error.Abort(_(b'no lineage recorded yet'), hint=_(b'run hg luigi-run first'))
    store = stores.open_store(settings, write=False)
    try:
        new, old = explain.resolve(ui, repo, store, settings, target, opts.get('rev'),
                                   opts.get('against'), _resolve_output)
        results = explain.explain(store, repo, new, old, upstream=opts.get('upstream'))
        fm = _formatter(ui, b'luigi-why', opts)
        for result in results:
            explain.show(ui, fm, result)
        fm.end()
    finally:
        store.close()
    return 0


@command(
    b'luigi-store',
    [(b'', b'upgrade', False, _(b'create or bring up to date the tables of the shared '
                                b'store')),
     (b'', b'import', False, _(b'move a SQLite store (default: this repository\'s) into '
                               b'the shared store'))] + cmdutil.formatteropts,
    _(b'[--upgrade] [--import [FILE]] [-T TEMPLATE]'),
    helpcategory=command.CATEGORY_MAINTENANCE,
)
@_store_errors
def luigi_store(ui, repo, *files, **opts):
    """show, create or fill the store of lineage, queue and audit log

    Without options, says where the store is (the SQLite file
    ``.hg/luigi/lineage.db``, or the PostgreSQL database of ``[luigi] store``,
    shown without a password), its version, and how many runs, builds, queue
    entries and audit records it holds. ``-T json`` gives ``store``, ``kind``,
    ``version``, ``runs``, ``builds``, ``entries`` and ``audit``.

    ``--upgrade`` creates the tables of a shared store, or brings them up to
    this version; run it once, from one host, before the others use it (a
    SQLite file is brought up to date whenever it is opened).

    ``--import [FILE]`` creates the tables if needed, then copies every run,
    build, queue entry and audit record of a SQLite store (default: this
    repository's ``.hg/luigi/lineage.db``) into the shared store, which must
    be empty, in one transaction: ids and the audit chain stay as they were,
    and the chain is verified afterwards (with ``[luigi] audit-key-env`` when
    set). The file is left as it was.

    The password of a shared store comes from ``PGPASSWORD`` or ``PGPASSFILE``
    in the environment of hg, as libpq reads them; ``[luigi] store`` refuses a
    URL that holds one.
    """
    settings = _settings(ui, repo)
    shared = stores.is_shared(settings)
    if (opts.get('upgrade') or opts.get('import')) and not shared:
        raise error.InputError(_(b'--upgrade and --import need a shared store'),
                               hint=_(b'set [luigi] store = postgresql://HOST/DATABASE'))
    if files and not opts.get('import'):
        raise error.InputError(_(b'a FILE is given only with --import'))
    if opts.get('upgrade') or opts.get('import'):
        before, after = stores.upgrade(settings)
        if before != after:
            ui.status(_(b'store upgraded from version %s to %d\n')
                      % (_b(str(before)) if before is not None else b'none', after))
    if opts.get('import'):
        _import(ui, repo, settings, files)
    return _describe(ui, settings, shared, opts)


def _import(ui, repo, settings, files):
    if len(files) > 1:
        raise error.InputError(_(b'--import takes one FILE'))
    path = os.path.abspath(pycompat.fsdecode(files[0])) if files else config.store_path(repo)
    counts, records, head = stores.import_sqlite(settings, path)
    ui.status(_(b'imported %d runs, %d builds, %d queue entries and %d audit records '
                b'from %s\n') % (counts.get('runs', 0), counts.get('builds', 0),
                                 counts.get('entries', 0), counts.get('audit', 0), _b(path)))
    ui.status(_(b'audit chain verified: %d records, head %s\n')
              % (records, _b(head or '-')))


def _describe(ui, settings, shared, opts):
    from ..core import database, pgdb

    fm = _formatter(ui, b'luigi-store', opts)
    fm.startitem()
    where = pgdb.redact(settings.store) if shared else settings.store
    fm.write(b'store', b'store: %s', _b(where))
    fm.write(b'kind', b' (%s', b'postgresql' if shared else b'sqlite')
    counts = stores.counts(settings) if stores.recorded(settings) else {}
    fm.condwrite(shared, b'version', b', version %d', database.STORE_VERSION)
    fm.plain(b')\n')
    for name in ('runs', 'builds', 'entries', 'audit'):
        fm.write(pycompat.sysbytes(name), b'%s: %%d\n' % pycompat.sysbytes(name),
                 counts.get(name, 0))
    fm.end()
    return 0
