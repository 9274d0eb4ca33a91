"""How plans and runs look: the plan's table (:hg:`luigi-affected`, ``--dry-run``),
one line per task of a run, and the labels ``hg`` colors (``[color]`` may
restyle them, as for core commands)."""

from mercurial.i18n import _

from . import config, planning

_b = config.local

colortable = {
    b'luigi.task': b'bold',
    b'luigi.status.affected': b'yellow',
    b'luigi.status.upstream': b'yellow',
    b'luigi.status.unaffected': b'green',
    b'luigi.status.external': b'cyan',
    b'luigi.outcome.ran': b'green',
    b'luigi.outcome.reused': b'none',
    b'luigi.outcome.failed': b'red bold',
    b'luigi.outcome.not-run': b'yellow',
    b'luigi.queue.pending': b'yellow',
    b'luigi.queue.running': b'cyan',
    b'luigi.queue.done': b'green',
    b'luigi.queue.failed': b'red',
    b'luigi.audit.push-rejected': b'red',
    b'luigi.audit.acl': b'magenta',
    b'luigi.audit.credentials': b'cyan',
}


def _why(ui, reasons):
    """The first reason and how many more; every reason with ``-v``."""
    if ui.verbose:
        return '; '.join(reasons)
    why = reasons[0] if reasons else ''
    if len(reasons) > 1:
        why += ' (+%d more)' % (len(reasons) - 1)
    return why


def plan(ui, planned, fm):
    """The plan as a table (text) or one object per task (``-T json``)."""
    decisions = planned.in_scope()
    width = max([len(d.key) for d in decisions] + [4])
    fm.plain(b'%-*s  %-10s  %-12s  %s\n' % (width, b'TASK', b'STATUS', b'STAMP', b'WHY'))
    if fm.isplain():
        _show_text(ui, decisions, width)
    else:
        _show_items(ui, planned, decisions, fm, width)
    n = sum(1 for d in decisions if d.affected)
    fm.plain(_(b'%d of %d tasks affected at %s\n')
             % (n, len(decisions), planned.ctx.hex()[:12]))


def _show_text(ui, decisions, width):
    """The table as one write: a formatter item per row costs more than the
    plan itself at 10,000 tasks."""
    status = {}
    rows = []
    for d in decisions:
        if d.status not in status:
            status[d.status] = ui.label(b'%-10s' % _b(d.status),
                                        b'luigi.status.%s' % _b(d.status))
        rows.append(b'%s  %s  %-12s  %s\n' % (
            ui.label(b'%-*s' % (width, _b(d.key)), b'luigi.task'), status[d.status],
            d.changeset[:12].encode('ascii') if d.changeset else b'-',
            _b(_why(ui, d.reasons))))
    ui.write(b''.join(rows))


def _show_items(ui, planned, decisions, fm, width):
    for d in decisions:
        fm.startitem()
        fm.data(task=_b(planning.task_id(planned, d)))
        fm.write(b'key', b'%%-%ds  ' % width, _b(d.key), label=b'luigi.task')
        fm.write(b'status', b'%-10s  ', _b(d.status), label=b'luigi.status.%s' % _b(d.status))
        fm.plain(b'%-12s  ' % (_b(d.changeset[:12]) if d.changeset else b'-'))
        fm.data(family=_b(d.family), affected=d.affected,
                changeset=_b(d.changeset) if d.changeset else None,
                base=_b(d.base) if d.base else None,
                reasons=[_b(r) for r in d.reasons])
        fm.plain(b'%s\n' % _b(_why(ui, d.reasons)))



# why Luigi left a task unrun (names from luigi.execution_summary)
_NOT_RUN = {
    "not_run": "not granted run permission by the scheduler (a central luigid refuses "
               "to rerun a task it marked done in the last stable_done_cooldown_secs)",
    "upstream_failure": "an upstream task failed",
    "upstream_missing_dependency": "an upstream dependency is missing",
    "still_pending_ext": "an external dependency is missing",
    "still_pending_not_ext": "an input it needs is missing",
    "run_by_other_worker": "being run by another worker",
    "upstream_run_by_other_worker": "an upstream task is being run by another worker",
    "scheduling_error": "failed scheduling",
    "upstream_scheduling_error": "an upstream task failed scheduling",
}


class TaskLines:
    """One line (one formatter item) per task of the run, written once: as the
    task finishes for the tasks Luigi ran, at the end for the others.  Outcomes
    are ``ran``, ``reused``, ``failed`` and ``not run``."""

    def __init__(self, ui, fm, planned, decisions):
        self.ui, self.fm, self.planned = ui, fm, planned
        self.decisions = decisions
        self.width = max([len(d.key) for d in decisions] + [4])
        self.events = {}
        self.outcomes = {}  # key -> (outcome, task id, seconds)

    def started(self, ev):
        self.events.setdefault(ev["key"], {})["task_id"] = ev["task_id"]

    def finished(self, ev):
        info = self.events.setdefault(ev["key"], {})
        info.update(ev)
        d = self.planned.by_key.get(ev["key"])
        if d is None or ev["key"] in self.outcomes:
            return
        if ev["event"] == "success":
            self._write(d, "ran", ev.get("task_id"), ev.get("seconds"), None)
        else:
            self._write(d, "failed", ev.get("task_id"), ev.get("seconds"), ev.get("error"))

    def finish(self, final):
        """The lines of the tasks that did not finish while we watched."""
        luigi_outcome = final.get("luigi", {})
        ids = final.get("ids", {})
        for d in self.decisions:
            if d.key in self.outcomes:
                continue
            ev = self.events.get(d.key, {})
            task_id = ev.get("task_id") or ids.get(d.key)
            error_msg = None
            if ev:
                outcome, error_msg = "failed", "interrupted"
            elif d.external and luigi_outcome.get(d.key) == "still_pending_ext":
                outcome = "not run"
                error_msg = "its output is missing (an external input: produce it, then run again)"
            elif d.external or not d.affected or luigi_outcome.get(d.key) == "already_done":
                outcome = "reused"
            else:
                outcome = "not run"
                why = luigi_outcome.get(d.key)
                error_msg = _NOT_RUN.get(why, why.replace("_", " ") if why else None)
            if task_id is None and not self.fm.isplain():  # ids need Luigi: for -T only
                task_id = planning.task_id(self.planned, d)
            self._write(d, outcome, task_id, None, error_msg)

    def _write(self, d, outcome, task_id, seconds, error_msg):
        self.outcomes[d.key] = (outcome, task_id, seconds)
        fm = self.fm
        if fm.isplain() and self.ui.quiet:
            return  # -q: the summary line alone
        fm.startitem()
        fm.write(b'outcome', b'%-8s ', _b(outcome),
                 label=b'luigi.outcome.%s' % _b(outcome.replace(' ', '-')))
        fm.write(b'key', b'%%-%ds  ' % self.width, _b(d.key))
        fm.plain(b'%-12s' % (_b(d.changeset[:12]) if d.changeset else b'-'))
        fm.data(changeset=_b(d.changeset) if d.changeset else None, family=_b(d.family),
                affected=d.affected, task=_b(task_id) if task_id else None)
        fm.condwrite(seconds is not None, b'seconds', b'  %.2fs', seconds or 0.0)
        fm.condwrite(bool(error_msg), b'error', b'  %s', _b(error_msg))
        fm.plain(b'\n')

    def counts(self):
        out = {"ran": 0, "reused": 0, "failed": 0, "not run": 0}
        for outcome, _id, _s in self.outcomes.values():
            out[outcome] += 1
        return out

    def keys(self, outcome):
        return [d.key for d in self.decisions if self.outcomes[d.key][0] == outcome]
