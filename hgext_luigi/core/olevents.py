"""OpenLineage run events for task builds.

Plain Python (no Mercurial, no Luigi).  The hg process of :hg:`luigi-run` creates
one :class:`Emitter` per run and reports every task build to it; the emitter turns
each report into an OpenLineage ``RunEvent`` (START, COMPLETE, FAIL, ABORT) and
hands it to the ``openlineage-python`` client.

Configuration is the client's own: ``OpenLineageClient()`` without arguments
reads ``OPENLINEAGE_URL`` (+ ``OPENLINEAGE_ENDPOINT``, ``OPENLINEAGE_API_KEY``),
``OPENLINEAGE__TRANSPORT__...`` variables, the file named by
``OPENLINEAGE_CONFIG`` or ``openlineage.yml`` in the current directory or in
``~/.openlineage/``.  :meth:`Emitter.create` returns None, and nothing imports
openlineage (about half a second), unless one of those is present; it also
returns None when openlineage-python is not installed, when
``OPENLINEAGE_DISABLED=true``, when the configuration does not parse, and when
the client would fall back to its console transport for lack of a transport
(an explicitly configured ``console`` transport is honoured).

Events: the job is ``namespace``/task family; the run id is a UUID derived from
(``luigi-run`` id, build id), so all events of one build share it, and the
``parent`` facet names the ``luigi-run`` (job ``namespace``/``luigi-run``, run
id = the run's UUID).  Job facets ``sourceCodeLocation`` (type ``hg``, the
changeset as version) and ``jobType``; run facets ``parent``,
``processing_engine`` (Luigi), ``executionParameters`` (task parameters),
``hgext_luigi`` and, on FAIL, ``errorMessage``.  Inputs are the task's watch
patterns (dataset ``namespace``/pattern) and the upstream outputs it read
(``file``/absolute path); outputs are its files (``file``/absolute path), with
the ``version`` (sha256), ``outputStatistics`` (size) and custom
``hgext_luigi_output`` / ``hgext_luigi_input`` facets (sha256, size, stamping
changeset, upstream task key).  :data:`FACETS_SCHEMA` is the JSON schema of the
custom facets.

Never in the way of a build: every exception from building or sending an event
is logged at warning level on the ``hgext_luigi.openlineage`` logger and
swallowed.  Time is bounded too.  The client's HTTP transport uses a
``timeout`` of 5.0 seconds per request by default (``HttpConfig.timeout``; set
``transport.timeout`` in ``openlineage.yml`` or ``OPENLINEAGE__TRANSPORT__TIMEOUT``
to change it), but it also retries through urllib3 by default (``total=5``,
backoff 0.3 s, also on HTTP 500/502/503/504, POST included): one event to a
port nobody listens on takes about 9 s, to an endpoint that never answers about
6 x timeout + 9 s.  So events are sent in order by one background thread, and
each call waits for its own event at most the transport's timeout (5.0 s when
the transport has none); once a call has given up waiting, later calls do not
wait at all until the thread has caught up.  Events still queued when the
process exits are lost: call :meth:`Emitter.close` at the end of a run to give
them a last, bounded chance.
"""

import collections
import contextlib
import datetime
import logging
import os
import threading
import time
import traceback
import uuid
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("hgext_luigi.openlineage")

#: Where hgext_luigi lives; producer and custom facet schema URLs hang off it.
PROJECT_URL = "https://example.invalid/hgext_luigi"
#: Version part of the custom facets' schema URL; bump on incompatible changes.
FACETS_SCHEMA_VERSION = "1-0-0"
FACETS_SCHEMA_ID = "%s/spec/facets/%s/HgextLuigiFacets.json" % (PROJECT_URL, FACETS_SCHEMA_VERSION)

PARENT_JOB = "luigi-run"
INTEGRATION = "hgext_luigi"
FILE_NAMESPACE = "file"
#: Default of the client's ``HttpConfig.timeout``, for transports without one.
DEFAULT_TIMEOUT = 5.0
#: Events waiting for the sender thread beyond this are dropped (with a warning).
MAX_QUEUE = 1000

# uuid5 namespace of task-build run ids (a fixed random UUID: ids stay stable
# across versions of this module).
_RUN_NAMESPACE = uuid.UUID("8d3c5f0e-6b1a-4e4f-9a52-3f1c2b7d9e41")

_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_CHANGESET = {"type": "string", "pattern": "^[0-9a-f]{40}$"}
_BASE_REF = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/%s"

#: JSON schema (draft 2020-12) of the custom facets; their ``_schemaURL`` points
#: into it (``FACETS_SCHEMA_ID#/$defs/<name>``).
FACETS_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": FACETS_SCHEMA_ID,
    "$defs": {
        "HgextLuigiOutputDatasetFacet": {
            "description": "an output file of a task build, stamped with the changeset",
            "allOf": [
                {"$ref": _BASE_REF % "OutputDatasetFacet"},
                {
                    "type": "object",
                    "properties": {
                        "sha256": dict(_SHA256, description="sha256 of the file's content"),
                        "size": {"type": "integer", "minimum": 0, "description": "bytes"},
                        "changeset": dict(_CHANGESET, description="stamping changeset"),
                    },
                    "required": ["sha256", "size", "changeset"],
                },
            ],
            "type": "object",
        },
        "HgextLuigiInputDatasetFacet": {
            "description": "an upstream output a task build read",
            "allOf": [
                {"$ref": _BASE_REF % "InputDatasetFacet"},
                {
                    "type": "object",
                    "properties": {
                        "sha256": _SHA256,
                        "size": {"type": "integer", "minimum": 0},
                        "changeset": dict(_CHANGESET, description="changeset that produced it"),
                        "key": {"type": "string", "description": "key of the upstream task"},
                    },
                },
            ],
            "type": "object",
        },
        "HgextLuigiRunFacet": {
            "description": "the task build in hgext_luigi's lineage store",
            "allOf": [
                {"$ref": _BASE_REF % "RunFacet"},
                {
                    "type": "object",
                    "properties": {
                        "build": {"type": "integer", "description": "lineage build id"},
                        "key": {"type": "string", "description": "task key, e.g. Family(p=v)"},
                        "taskId": {"type": "string"},
                        "changeset": _CHANGESET,
                        "branch": {"type": "string"},
                        "luigiRunId": {"type": "string", "description": "id of the luigi-run"},
                        "rev": _CHANGESET,
                        "user": {"type": "string"},
                        "trigger": {"type": "string"},
                    },
                    "required": ["build", "key"],
                },
            ],
            "type": "object",
        },
    },
}

_ENV_PREFIX = "OPENLINEAGE"
_env_lock = threading.Lock()


def _version(dist):
    try:
        from importlib import metadata

        return metadata.version(dist)
    except Exception:
        return None


def _str(value):
    if isinstance(value, bytes):
        return os.fsdecode(value)
    return value


def _environ(environ):
    """``environ`` (str or bytes, e.g. Mercurial's ``encoding.environ``) as str."""
    if environ is None:
        environ = os.environ
    return {_str(k): _str(v) for k, v in environ.items()}


def _yaml_config_path(env):
    """The ``openlineage.yml`` the client would read, as its ``_find_yaml_config_path``."""
    candidates = (
        env.get("OPENLINEAGE_CONFIG"),
        os.path.join(os.getcwd(), "openlineage.yml"),
        os.path.join(os.path.expanduser("~/.openlineage"), "openlineage.yml"),
    )
    for path in candidates:
        try:
            if path and os.path.isfile(path) and os.access(path, os.R_OK):
                return path
        except Exception:
            pass
    return None


def configured(environ=None):
    """Whether the client has any configuration at all, without importing it."""
    env = _environ(environ)
    if env.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OPENLINEAGE_URL"):
        return True
    if any(k.startswith("OPENLINEAGE__TRANSPORT") for k in env):
        return True
    return _yaml_config_path(env) is not None


@contextlib.contextmanager
def _client_environ(env):
    """Let the client see ``env``'s OPENLINEAGE* variables, and leave no trace.

    The client reads ``os.environ`` itself and writes to it (it aliases
    ``OPENLINEAGE_URL`` into ``OPENLINEAGE__TRANSPORT__TRANSPORTS__...``); it
    only needs them while it is constructed.
    """
    with _env_lock:
        saved = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIX)}
        wanted = {k: v for k, v in env.items() if k.startswith(_ENV_PREFIX)}
        try:
            for k in saved:
                if k not in wanted:
                    del os.environ[k]
            os.environ.update(wanted)
            yield
        finally:
            for k in [k for k in os.environ if k.startswith(_ENV_PREFIX)]:
                if k not in saved:
                    del os.environ[k]
            os.environ.update(saved)


def _redact_url(url):
    """``url`` without a password in its user info."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        netloc = "%s@%s" % (parts.username, host) if parts.username else host
        return urlunsplit(parts._replace(netloc=netloc))
    except Exception:
        return url


def _as_uri(url):
    """A URI for ``url``: local repository paths become ``file://`` URIs."""
    if url and not urlsplit(url).scheme and os.path.isabs(url):
        try:
            import pathlib

            return pathlib.Path(url).as_uri()
        except Exception:
            pass
    return url


def _isotime(t=None):
    if t is None:
        t = time.time()
    return datetime.datetime.fromtimestamp(float(t), datetime.timezone.utc).isoformat()


def _run_uuid(run_id):
    """The UUID of a ``luigi-run`` id (a hex UUID; anything else is hashed)."""
    try:
        return str(uuid.UUID(str(run_id)))
    except ValueError:
        return str(uuid.uuid5(_RUN_NAMESPACE, "run:%s" % run_id))


def build_run_id(run_id, build_id):
    """The OpenLineage runId of a task build: the same for all its events."""
    return str(uuid.uuid5(_RUN_NAMESPACE, "build:%s:%s" % (run_id, build_id)))


_classes = None


def _facet_classes():
    """The custom facet classes (attrs, on the client's base facets), made once."""
    global _classes
    if _classes is None:
        import attr
        from openlineage.client.generated.base import (
            InputDatasetFacet,
            OutputDatasetFacet,
            RunFacet,
        )

        def schema(name):
            return staticmethod(lambda: "%s#/$defs/%s" % (FACETS_SCHEMA_ID, name))

        @attr.define
        class HgextLuigiOutputDatasetFacet(OutputDatasetFacet):
            sha256: "str | None" = attr.field(default=None)
            size: "int | None" = attr.field(default=None)
            changeset: "str | None" = attr.field(default=None)
            _get_schema = schema("HgextLuigiOutputDatasetFacet")

        @attr.define
        class HgextLuigiInputDatasetFacet(InputDatasetFacet):
            sha256: "str | None" = attr.field(default=None)
            size: "int | None" = attr.field(default=None)
            changeset: "str | None" = attr.field(default=None)
            key: "str | None" = attr.field(default=None)
            _get_schema = schema("HgextLuigiInputDatasetFacet")

        @attr.define
        class HgextLuigiRunFacet(RunFacet):
            build: int
            key: str
            taskId: "str | None" = attr.field(default=None)  # noqa: N815
            changeset: "str | None" = attr.field(default=None)
            branch: "str | None" = attr.field(default=None)
            luigiRunId: "str | None" = attr.field(default=None)  # noqa: N815
            rev: "str | None" = attr.field(default=None)
            user: "str | None" = attr.field(default=None)
            trigger: "str | None" = attr.field(default=None)
            _get_schema = schema("HgextLuigiRunFacet")

        _classes = (HgextLuigiOutputDatasetFacet, HgextLuigiInputDatasetFacet, HgextLuigiRunFacet)
    return _classes


class _Sender:
    """Sends events in order on one daemon thread; callers wait a bounded time."""

    def __init__(self, client, wait):
        self.client = client
        self.wait = wait
        self._queue = collections.deque()
        self._cond = threading.Condition()
        self._thread = None
        self._busy = False
        self._stalled = False
        self._closed = False

    def submit(self, event, label):
        done = threading.Event()
        with self._cond:
            if self._closed:
                log.warning("OpenLineage emitter closed; %s not sent", label)
                return
            if len(self._queue) >= MAX_QUEUE:
                log.warning("OpenLineage: %d events waiting to be sent; %s dropped",
                            len(self._queue), label)
                return
            stalled = self._stalled
            self._queue.append((event, label, done))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="hgext_luigi-openlineage",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()
        if stalled:
            return
        if not done.wait(self.wait):
            with self._cond:
                if not done.is_set():
                    self._stalled = True
                    log.warning("OpenLineage: %s not sent within %.1fs; going on, "
                                "it stays queued", label, self.wait)

    def _loop(self):
        while True:
            with self._cond:
                while not self._queue:
                    self._stalled = False
                    self._cond.notify_all()
                    self._cond.wait()
                event, label, done = self._queue.popleft()
                self._busy = True
            try:
                self.client.emit(event)
            except Exception as e:
                log.warning("OpenLineage: could not send %s: %s", label, e)
            finally:
                with self._cond:
                    self._busy = False
                    done.set()
                    self._cond.notify_all()

    def close(self, timeout):
        """Wait at most ``timeout`` s for queued events, then drop the rest."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            left_over = len(self._queue) + (1 if self._busy else 0)
            self._queue.clear()
            self._closed = True
        if left_over:
            log.warning("OpenLineage: %d event(s) not sent by the end of the run", left_over)
        return not left_over


class Emitter:
    """Reports task builds of one ``luigi-run`` as OpenLineage run events."""

    def __init__(self, client, namespace, repo_url):
        self.client = client
        self.namespace = _redact_url(namespace)
        self.repo_url = _as_uri(_redact_url(repo_url)) if repo_url else None
        self.version = _version("hgext_luigi") or "unknown"
        self.producer = "%s/tree/%s" % (PROJECT_URL, self.version)
        self.luigi_version = _version("luigi")
        timeout = getattr(getattr(client, "transport", None), "timeout", None)
        try:
            timeout = float(timeout)
        except (TypeError, ValueError):
            timeout = DEFAULT_TIMEOUT
        #: Longest a call waits for its event (the transport's timeout).
        self.timeout = timeout
        self._sender = _Sender(client, timeout)

    @classmethod
    def create(cls, namespace, repo_url, environ=None):
        """An emitter if OpenLineage is configured (see the module doc), else None.

        ``environ`` (default ``os.environ``; bytes keys and values are fine)
        supplies the ``OPENLINEAGE*`` variables; ``openlineage.yml`` is looked
        for where the client looks (``OPENLINEAGE_CONFIG``, current directory,
        ``~/.openlineage/``).
        """
        try:
            env = _environ(environ)
            if not configured(env):
                return None
            try:
                from openlineage.client import OpenLineageClient
            except ImportError as e:
                log.warning("OpenLineage is configured but openlineage-python is not "
                            "installed (%s); no lineage events", e)
                return None
            with _client_environ(env):
                client = OpenLineageClient()
            kind = getattr(client.transport, "kind", None)
            if kind == "noop":
                return None
            if kind == "console" and (client.config.transport or {}).get("type") != "console":
                return None
            return cls(client, namespace, repo_url)
        except Exception as e:
            log.warning("OpenLineage: cannot set up the client, no lineage events: %s", e)
            return None

    # -- events -------------------------------------------------------------

    def start(self, build, run):
        self._emit("START", build, run, lambda: self._event(
            "START", build, run, build.get("started"), inputs=self._inputs(build, ())))

    def complete(self, build, run, inputs, outputs):
        self._emit("COMPLETE", build, run, lambda: self._event(
            "COMPLETE", build, run, build.get("ended"),
            inputs=self._inputs(build, inputs), outputs=self._outputs(build, outputs)))

    def fail(self, build, run, error, inputs=(), outputs=()):
        def make():
            from openlineage.client.facet_v2 import error_message_run

            if isinstance(error, BaseException):
                message = "%s: %s" % (type(error).__name__, error)
                stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            else:
                message = str(error)
                stack = build.get("traceback")
            facet = error_message_run.ErrorMessageRunFacet(
                message=message, programmingLanguage="python", stackTrace=stack or None,
                producer=self.producer)
            return self._event("FAIL", build, run, build.get("ended"),
                               inputs=self._inputs(build, inputs),
                               outputs=self._outputs(build, outputs),
                               run_facets={"errorMessage": facet})

        self._emit("FAIL", build, run, make)

    def abort(self, build, run):
        self._emit("ABORT", build, run, lambda: self._event(
            "ABORT", build, run, build.get("ended"), inputs=self._inputs(build, ())))

    def close(self, timeout=None):
        """Give queued events ``timeout`` s (default: the transport's timeout);
        True when all were sent.  Later events are not sent."""
        try:
            ok = self._sender.close(self.timeout if timeout is None else timeout)
            if ok:
                self.client.close(0)
            return ok
        except Exception as e:
            log.warning("OpenLineage: closing the client: %s", e)
            return False

    # -- building -------------------------------------------------------------

    def _emit(self, state, build, run, make):
        try:
            label = "%s of %s" % (state, build.get("key"))
        except Exception:
            label = state
        try:
            event = make()
        except Exception as e:
            log.warning("OpenLineage: cannot build %s: %s", label, e)
            return
        try:
            self._sender.submit(event, label)
        except Exception as e:
            log.warning("OpenLineage: could not send %s: %s", label, e)

    def _event(self, state, build, run, when, inputs=(), outputs=(), run_facets=None):
        from openlineage.client.event_v2 import Job, Run, RunEvent, RunState

        facets = self._run_facets(build, run)
        facets.update(run_facets or {})
        return RunEvent(
            eventType=RunState[state],
            eventTime=_isotime(when),
            run=Run(runId=build_run_id(run["run_id"], build["build"]), facets=facets),
            job=Job(namespace=self.namespace, name=str(build.get("family") or build["key"]),
                    facets=self._job_facets(build)),
            inputs=list(inputs),
            outputs=list(outputs),
            producer=self.producer,
        )

    def _run_facets(self, build, run):
        from openlineage.client.facet_v2 import (
            execution_parameters_run,
            parent_run,
            processing_engine_run,
        )

        HgextLuigiRunFacet = _facet_classes()[2]
        parent_id = _run_uuid(run["run_id"])
        facets = {
            "parent": parent_run.ParentRunFacet(
                run=parent_run.Run(runId=parent_id),
                job=parent_run.Job(namespace=self.namespace, name=PARENT_JOB),
                root=parent_run.Root(
                    run=parent_run.RootRun(runId=parent_id),
                    job=parent_run.RootJob(namespace=self.namespace, name=PARENT_JOB)),
                producer=self.producer),
            "hgext_luigi": HgextLuigiRunFacet(
                build=int(build["build"]), key=str(build["key"]),
                taskId=build.get("task_id"), changeset=build.get("changeset"),
                branch=build.get("branch"), luigiRunId=str(run["run_id"]),
                rev=run.get("rev"), user=run.get("user"), trigger=run.get("trigger"),
                producer=self.producer),
        }
        params = build.get("params") or {}
        if params:
            facets["executionParameters"] = execution_parameters_run.ExecutionParametersRunFacet(
                parameters=[execution_parameters_run.ExecutionParameter(key=str(k), value=str(v))
                            for k, v in sorted(params.items())],
                producer=self.producer)
        if self.luigi_version:
            facets["processing_engine"] = processing_engine_run.ProcessingEngineRunFacet(
                version=self.luigi_version, name="luigi",
                openlineageAdapterVersion=self.version, producer=self.producer)
        return facets

    def _job_facets(self, build):
        from openlineage.client.facet_v2 import job_type_job, source_code_location_job

        code = list(build.get("code") or ())
        url = self.repo_url or self.namespace
        return {
            "sourceCodeLocation": source_code_location_job.SourceCodeLocationJobFacet(
                type="hg", url=url, repoUrl=url, path=code[0] if code else None,
                version=build.get("changeset"), branch=build.get("branch"),
                producer=self.producer),
            "jobType": job_type_job.JobTypeJobFacet(
                processingType="BATCH", integration=INTEGRATION, jobType="TASK",
                producer=self.producer),
        }

    def _inputs(self, build, inputs):
        from openlineage.client.event_v2 import InputDataset
        from openlineage.client.facet_v2 import dataset_version_dataset

        HgextLuigiInputDatasetFacet = _facet_classes()[1]
        datasets, seen = [], set()
        for pattern in build.get("watches") or ():
            if (self.namespace, pattern) not in seen:
                seen.add((self.namespace, pattern))
                datasets.append(InputDataset(namespace=self.namespace, name=str(pattern)))
        for item in inputs or ():
            path = str(item["path"])
            if (FILE_NAMESPACE, path) in seen:
                continue
            seen.add((FILE_NAMESPACE, path))
            facets = {}
            if item.get("sha256"):
                facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
                    datasetVersion=item["sha256"], producer=self.producer)
            input_facet = HgextLuigiInputDatasetFacet(
                sha256=item.get("sha256"), size=_int(item.get("size")),
                changeset=item.get("changeset"), key=item.get("key"), producer=self.producer)
            datasets.append(InputDataset(namespace=FILE_NAMESPACE, name=path, facets=facets,
                                         inputFacets={"hgext_luigi_input": input_facet}))
        return datasets

    def _outputs(self, build, outputs):
        from openlineage.client.event_v2 import OutputDataset
        from openlineage.client.facet_v2 import (
            dataset_version_dataset,
            output_statistics_output_dataset,
        )

        HgextLuigiOutputDatasetFacet = _facet_classes()[0]
        datasets = []
        for item in outputs or ():
            size = _int(item.get("size"))
            facets, output_facets = {}, {}
            if item.get("sha256"):
                facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
                    datasetVersion=item["sha256"], producer=self.producer)
            if size is not None:
                output_facets["outputStatistics"] = (
                    output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                        size=size, fileCount=1, producer=self.producer))
            output_facets["hgext_luigi_output"] = HgextLuigiOutputDatasetFacet(
                sha256=item.get("sha256"), size=size, changeset=build.get("changeset"),
                producer=self.producer)
            datasets.append(OutputDataset(namespace=FILE_NAMESPACE, name=str(item["path"]),
                                          facets=facets, outputFacets=output_facets))
        return datasets


def _int(value):
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None
