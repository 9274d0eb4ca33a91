"""A run's builds as the hg process records them: the runner's requests
(``core.protocol``), checked and answered.

The runner process runs pushed code, so it writes nothing that proves anything:
it asks (``context.request``) and this process records.  ``start-build``
records a build in lineage and the audit log, after issuing the task's
credentials when ``[luigi.roles]`` names a role for its family;
``finish-build`` closes it.  Each request is checked first: a build id must be
one this run started and not yet finished, the changeset the one planned, the
family the planned task's; one build of a task per run (run again after its
dynamic dependencies, it goes on with a new session); credentials only for
a task the plan builds (any code of the run can send requests: it cannot get
the role of a task it does not build).
"""

import re

from . import credentials, protocol

_LEASE_POLL = 0.5  # seconds between looks at a lease another run holds
_HEX40 = re.compile(r"[0-9a-f]{40}\Z")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


class Refused(ValueError):
    pass


def _str(ev, name, optional=False):
    value = ev.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise Refused("%s is not a string" % name)
    return value


def _outputs(value):
    if not isinstance(value, list):
        raise Refused("outputs is not a list")
    for o in value:
        if not (isinstance(o, dict) and isinstance(o.get("path"), str)
                and type(o.get("size")) is int and 0 <= o["size"] < 2 ** 63
                and isinstance(o.get("sha256"), str)
                and _HEX64.match(o["sha256"])):
            raise Refused("an output is not {path, size, sha256}")
    return value


def _inputs(value):
    if not isinstance(value, list):
        raise Refused("inputs is not a list")
    for i in value:
        if not (isinstance(i, dict) and all(isinstance(i.get(f), (str, type(None)))
                                            for f in ("task_id", "key", "changeset"))
                and isinstance(i.get("outputs", []), list)
                and all(isinstance(p, str) for p in i.get("outputs", []))):
            raise Refused("an input is not {task_id, key, changeset, outputs}")
    return value


class Builds:
    """Answers the requests of one run's runner.  ``data``: the run's context
    (run id, revision, stamps, user, trigger, and ``identity``: who triggered
    the run as access control knows them, the credentials' SourceIdentity)."""

    def __init__(self, store, settings, data, files_of=None, lineage_events=None,
                 tree_of=None):
        """``files_of(key, changeset)``: ``{"watched": {path: node}, "source":
        {path: node}}`` of a task, read from the repository (None: not
        recorded); ``lineage_events``: an ``olevents.Emitter`` (or None) told
        of every build; ``tree_of(changeset)``: the directory of a
        changeset's files, for the ``tree`` request."""
        self.store, self.settings, self.data = store, settings, data
        self.files_of = files_of
        self.tree_of = tree_of
        self.events = lineage_events
        self.run = {k: data.get(k) for k in ("run_id", "rev", "user", "trigger")}
        self.open = {}  # builds started by this run and not finished -> key
        self.plan = {r["key"]: r for r in data["plan"]}
        self.force = bool(data.get("force"))
        self._issuer = None
        self.waited = {}  # key -> the run that held its lease when first asked
        self.taken_over = set()  # (task id, changeset) another run built for this one

    def handle(self, ev):
        """The answer to one request event (a dict; ``error`` when refused)."""
        try:
            if not protocol.is_text(ev):
                raise Refused("the request holds text that is not UTF-8")
            if ev.get("op") == "start-build":
                return self.start(ev)
            if ev.get("op") == "finish-build":
                return self.finish(ev)
            if ev.get("op") == "tree":
                return self.tree(ev)
            if ev.get("op") in ("built", "upstream"):
                return self.lineage(ev)
            raise Refused("unknown request %r" % ev.get("op"))
        except Refused as e:
            return {"error": "refused: %s" % e}
        except Exception as e:  # a request this side cannot carry out: the task fails
            return {"error": "failed: %s: %s" % (type(e).__name__, e)}

    def tree(self, ev):
        """The tree of a changeset the plan stamps a task with (a task reading
        the sources of a reused upstream): no other revision."""
        changeset = _str(ev, "changeset")
        planned = set(self.data["stamps"].values()) | {self.data["rev"]}
        if changeset not in planned or self.tree_of is None:
            raise Refused("changeset %s is not one this run builds or reuses"
                          % changeset[:40])
        return {"path": self.tree_of(changeset)}

    def lineage(self, ev):
        """What the runner reads of lineage when the store is shared (it holds
        no connection): whether a task was built at a changeset (in a run),
        and the outputs of its successful build there.  Reading only."""
        task_id, changeset = _str(ev, "task_id"), _str(ev, "changeset")
        if ev["op"] == "built":
            run_id = _str(ev, "run_id", True)
            if run_id == self.data["run_id"] and (task_id, changeset) in self.taken_over:
                return {"built": True}  # by the run it waited for: this run's too
            return {"built": self.store.has_success(task_id, changeset, run_id=run_id)}
        built = self.store.success_for(task_id, changeset)
        if built is None:
            return {"build": None, "outputs": []}
        return {"build": built["id"], "outputs": self.store.outputs(built["id"])}

    def _planned(self, key):
        return self.data["stamps"].get(key, self.data["rev"])

    def start(self, ev):
        key, family = _str(ev, "key"), _str(ev, "family")
        task_id, changeset = _str(ev, "task_id"), _str(ev, "changeset")
        params = ev.get("params")
        if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
            raise Refused("params is not a mapping of strings")
        if not _HEX40.match(changeset) or changeset != self._planned(key):
            raise Refused("%s: changeset %s is not the one planned (%s)"
                          % (key, changeset[:40], self._planned(key)))
        row = self.plan.get(key, {})
        if row and row["family"] != family:
            raise Refused("%s is a task of family %s, not %s" % (key, row["family"], family))
        again = next((b for b, k in self.open.items() if k == key), None)
        if again is None:  # waited for before credentials are issued: they would expire
            held = self._lease(key, family, changeset)
            if held is not None:  # wait, or built meanwhile by the run it waited for
                return held
        builds = bool(row) and (bool(row.get("affected")) or self.force)
        issued, secret, refused = self._credentials(family, changeset, key) if builds \
            else (None, None, None)
        if again is not None:  # run() again after its dynamic dependencies: same build
            self.store.resume_build(again, issued)
            build = again
        else:
            build = self.store.start_build(
                self.data["run_id"], task_id, key, family, params, changeset,
                row.get("base"), row.get("reasons"), self.data["user"],
                self.data["trigger"], credentials=issued,
                facts=self._facts(ev.get("facts"), key, changeset))
            self._event("start", build)
        self.open[build] = key
        if refused:
            return {"build": build, "refused": refused}
        return {"build": build, "credentials": secret}

    def _lease(self, key, family, changeset):
        """Hold the planned task at its changeset while this run builds it, so
        two runs (two build hosts) never build it at once: None when held now;
        ``{"wait": seconds}`` while another run holds it (the runner asks
        again: this side keeps answering its other requests meanwhile); or
        ``{"done": build}``, that run's successful build of the same task."""
        if not self.store.shared:
            return None
        run_id = self.data["run_id"]
        if not self.store.take_lease(key, changeset, run_id, self.settings.lease):
            holder = self.store.lease_holder(key, changeset)
            self.waited.setdefault(key, holder[0] if holder else None)
            return {"wait": _LEASE_POLL}
        holder = self.waited.pop(key, None)
        built = self.store.success_for_key(key, changeset) if holder else None
        if built is None or built["run_id"] != holder or built["family"] != family \
                or not self.store.planned_build(holder, key, changeset):
            return None
        self.store.drop_leases(run_id, key, changeset)
        self.taken_over.add((built["task_id"], changeset))
        return {"done": built["id"]}

    def _facts(self, sent, key, changeset):
        """What the build depends on: the files from the repository (the hg
        side reads them), configuration digests and versions from the runner."""
        facts = {}
        if isinstance(sent, dict):
            for kind in ("config", "runtime"):
                values = sent.get(kind)
                if isinstance(values, dict) and all(
                        isinstance(k, str) and isinstance(v, str) and len(v) < 4096
                        for k, v in values.items()):
                    facts[kind] = values
        if self.files_of is not None:
            facts.update(self.files_of(key, changeset))
        return facts

    def _credentials(self, family, changeset, key):
        """(record, secret, refusal) for a build of ``family``."""
        role = credentials.role_for(self.settings.roles, family)
        if role is None:
            return None, None, None
        if self._issuer is None:
            s = self.settings
            self._issuer = credentials.Issuer(s.aws_region, s.aws_endpoint_url,
                                              s.aws_profile, s.credential_duration)
        try:
            record, secret = self._issuer.issue(role, family, changeset, key,
                                                self.data["run_id"], self.data["trigger"],
                                                self.data["identity"])
        except credentials.CredentialError as e:
            return {"role": role, "error": str(e)}, None, str(e)
        return record, secret, None

    def close_open(self):
        """Builds of this run still open when its runner ended: failed (ABORT
        for OpenLineage); then the events still queued get their last chance."""
        for build in list(self.open):
            self.store.finish_build(build, "failed",
                                    error="the run ended before this build finished")
            del self.open[build]
            self._event("abort", build)
        if self.events is not None:
            self.events.close()

    def _event(self, kind, build_id, error=None):
        """Tell OpenLineage about a build as lineage now holds it."""
        if self.events is None:
            return
        row = self.store.build(build_id)
        facts = self.store.facts(build_id)
        build = {"build": build_id, "key": row["key"], "family": row["family"],
                 "task_id": row["task_id"], "changeset": row["changeset"],
                 "branch": self.data.get("branch"), "params": row["params"],
                 "code": sorted(facts.get("source", {})),
                 "watches": sorted(facts.get("watched", {})),
                 "started": row["started"], "ended": row["ended"],
                 "traceback": row.get("traceback")}
        if kind == "start":
            return self.events.start(build, self.run)
        if kind == "abort":
            return self.events.abort(build, self.run)
        inputs = [{"path": p, "sha256": d, "size": None, "changeset": i["changeset"],
                   "key": i["key"]} for i in self.store.inputs(build_id)
                  for p, d in zip(i["outputs"], i["digests"] or [None] * len(i["outputs"]))]
        outputs = self.store.outputs(build_id)
        if kind == "complete":
            return self.events.complete(build, self.run, inputs, outputs)
        return self.events.fail(build, self.run, error or row["error"], inputs, outputs)

    def finish(self, ev):
        build = ev.get("build")
        if not isinstance(build, int) or build not in self.open:
            raise Refused("build %r is not one this run has open" % (build,))
        status = ev.get("status")
        if status not in ("success", "failed"):
            raise Refused("status %r" % (status,))
        extra = ev.get("extra")
        if extra is not None and not isinstance(extra, dict):
            raise Refused("extra is not a mapping")
        closed = self.store.finish_build(build, status, error=_str(ev, "error", True),
                                         traceback=_str(ev, "traceback", True),
                                         outputs=_outputs(ev.get("outputs", [])),
                                         inputs=_inputs(ev.get("inputs", [])), extra=extra)
        del self.open[build]
        if not closed:
            raise Refused("build %d is no longer running: its run lost its lease (another "
                          "host may have taken the task)" % build)
        if self.store.shared:
            row = self.store.build(build)
            self.store.drop_leases(self.data["run_id"], row["key"], row["changeset"])
        self._event("complete" if status == "success" else "fail", build)
        return {"ok": True}
