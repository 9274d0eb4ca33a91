"""What a pipeline subprocess knows about the run it belongs to.

The hg side writes a JSON file and points ``HGEXT_LUIGI_CONTEXT`` at it; the loader
and the runner read it here.  No Luigi and no Mercurial import at module level.
"""

import json
import os

from ..core import protocol

ENV = protocol.CONTEXT_ENV


class ContextError(Exception):
    pass


class Context:
    """The run as the hg side describes it (the JSON of its context file):
    revision, plan, stamps, output root, lineage store."""

    def __init__(self, data):
        self.data = data
        self.rev = data["rev"]
        self.tree = data.get("tree")
        self.output_root = data.get("output_root")
        self.store_path = data.get("store")
        self.stamps = data.get("stamps", {})
        self.force = set(data.get("force", []))
        self.run_id = data.get("run_id")
        self.user = data.get("user")
        self.branch = data.get("branch")
        self.state = data.get("state")
        self.changed_since = data.get("changed_since", {})
        self.plan = {row["key"]: row for row in data.get("plan", [])}
        self.trees = {self.rev: self.tree} if self.tree else {}
        self._store = None
        self._store_pid = None

    @classmethod
    def load(cls, path):
        with open(path, encoding="utf-8") as f:
            return cls(json.load(f))

    def stamp_for(self, key):
        """The changeset a task is (or will be) built at: the run's revision for an
        affected task, the reused build's changeset for an unaffected one."""
        return self.stamps.get(key, self.rev)

    @property
    def store(self):
        """The lineage store, read-only: the repository's SQLite file, or, for
        a shared store, the hg side answering requests (this process never
        holds the database's password)."""
        if self.data.get("lineage_by_request"):
            return _REQUESTED
        # a SQLite connection must not cross a fork: Luigi's workers reopen it
        if self.store_path and (self._store is None or self._store_pid != os.getpid()):
            from ..core import lineage

            self._store = lineage.open_store(self.store_path, self.output_root)
            self._store_pid = os.getpid()
        return self._store

    def is_built(self, task_id, changeset, key):
        store = self.store
        if store is None:
            return False
        # a task the plan says must be built counts only when built by this run: an
        # older success at the same changeset (its upstream since rebuilt, its output
        # since deleted) must not satisfy it
        row = self.plan.get(key)
        must_build = key in self.force or bool(row and row.get("affected"))
        if not must_build and row and row.get("changeset") == changeset:
            return True  # the plan reuses its build at that changeset (under the run lock)
        run_id = self.run_id if must_build else None
        return store.has_success(task_id, changeset, run_id=run_id)

    def changed_paths(self, key):
        """The repository paths changed between the task's last successful build
        (its plan's base) and the run's revision; for a task never built, the
        files the revision itself touched."""
        row = self.plan.get(key) or {}
        base = row.get("base")
        if base and base in self.changed_since:
            return list(self.changed_since[base])
        return list(self.changed_since.get("", []))

    def tree_for(self, changeset):
        """The directory holding the repository as of ``changeset``: the run's
        tree, or one the hg side materializes for a planned changeset (this
        process never opens the repository)."""
        if changeset not in self.trees:
            try:
                self.trees[changeset] = request(op="tree", changeset=changeset)["path"]
            except RequestError as e:
                raise ContextError("no tree for changeset %s: %s" % (changeset, e))
        return self.trees[changeset]


class RequestedLineage:
    """The few reads of lineage a run makes (``complete()``, the inputs of a
    build), asked of the hg side: the methods of ``LineageStore`` it needs."""

    def has_success(self, task_id, changeset, run_id=None):
        return request(op="built", task_id=task_id, changeset=changeset,
                       run_id=run_id)["built"]

    def success_for(self, task_id, changeset):
        answer = request(op="upstream", task_id=task_id, changeset=changeset)
        self._outputs = {answer["build"]: answer["outputs"]} if answer["build"] else {}
        return {"id": answer["build"]} if answer["build"] else None

    def outputs(self, build_id):
        """Of the build :meth:`success_for` just found (asked together)."""
        return self._outputs.get(build_id, [])


_REQUESTED = RequestedLineage()
_current = None
_events_fd = None
_reply_fd = None
_lock = None
_secrets = {}


def stash_secrets():
    """Read the secrets the hg side handed this run (a JSON object on the pipe
    ``HGEXT_LUIGI_SECRETS_FD`` names), before pipeline code is imported: they
    live in this process's memory only, never in an environment a child
    inherits or ``/proc`` shows.  Code of the run that asks by name
    (:func:`secret`) gets one: whoever may push can write such code."""
    fd = os.environ.pop(protocol.SECRETS_FD_ENV, None)
    if not fd:
        return
    fd = int(fd)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    _secrets.update(json.loads(b"".join(chunks).decode("utf-8")))


def secret(name):
    """A secret the hg side handed this run (see :func:`stash_secrets`), else
    the environment's value, else None."""
    if not name:
        return None
    return _secrets.get(name) or os.environ.get(name)


def set_events_fd(fd):
    """Where :func:`emit` writes (the runner's original standard output), and
    the pipe :func:`request` reads answers from (``HGEXT_LUIGI_REPLY_FD``).
    Call it before Luigi forks workers: they share the lock."""
    global _events_fd, _reply_fd, _lock
    import multiprocessing

    _events_fd = fd
    reply = os.environ.pop(protocol.REPLY_FD_ENV, None)
    _reply_fd = int(reply) if reply else None
    _lock = multiprocessing.Lock()


def _write_line(event):
    protocol.write_all(_events_fd, protocol.encode(event))


def emit(**event):
    """Send one event line to the hg process following the run (a no-op outside
    a run); the lock keeps lines of forked workers whole."""
    if _events_fd is None:
        return
    try:
        with _lock:
            _write_line(event)
    except OSError:
        pass


class RequestError(Exception):
    """The hg side refused a request or cannot be reached."""


def request(**event):
    """Ask the hg process following the run to do something only it may do (record
    a build, issue credentials) and wait for its answer, a dict.  One request at
    a time across forked workers, so every answer reaches who asked."""
    if _events_fd is None or _reply_fd is None:
        raise RequestError("not in a run started by hg luigi-run")
    with _lock:
        try:
            _write_line(dict(event, event="request"))
            data = b""
            while not data.endswith(b"\n"):
                chunk = os.read(_reply_fd, 65536)
                if not chunk:
                    raise RequestError("the hg process following the run went away")
                data += chunk
        except OSError as e:
            raise RequestError("cannot reach the hg process: %s" % e)
    answer = json.loads(data.decode("utf-8"))
    if answer.get("error"):
        raise RequestError(answer["error"])
    return answer


def current():
    """The context of this process, or None outside ``hg luigi-run``."""
    global _current
    if _current is None:
        path = os.environ.get(ENV)
        if path:
            _current = Context.load(path)
    return _current


def set_current(ctx):
    global _current
    _current = ctx
