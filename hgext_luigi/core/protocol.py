"""The protocol between the hg process and a pipeline subprocess: the only
thing the two worlds share besides ``core``.

The hg side starts ``python -m hgext_luigi.pipeline.loader ARGS.json`` (stdout:
one JSON object, the task graph or an error) or ``python -m
hgext_luigi.pipeline.runner`` in the tree of the revision, with:

``HGEXT_LUIGI_CONTEXT``
  the path of a JSON file: the run (revision, plan, stamps, targets, store...);
``HGEXT_LUIGI_REPLY_FD``
  a pipe the runner reads the answers to its requests from;
``HGEXT_LUIGI_SECRETS_FD``
  a pipe holding a JSON object of the secrets server settings hand the run
  (read once, before pipeline code is imported; see ``sandbox``).

The runner writes one JSON object per line (an *event*) on its original
standard output; pipeline code's own prints go to the run's log.  Events:

``start``/``success``/``failure``
  a task build began or ended (``key``, ``task_id``; ``error``, ``seconds``);
``status``
  a task's progress message (``key``, ``message``);
``error``
  the run could not go on (``message``);
``done``
  the last event: Luigi's outcome per task key (``luigi``), task ids (``ids``),
  the summary;
``request``
  something only the hg side may do, by ``op``; answered with one JSON line on
  the reply pipe (``error`` when refused):

  - ``start-build``: record a build in lineage and the audit log, issue its
    credentials (``key``, ``task_id``, ``family``, ``params``, ``changeset``,
    ``facts``) -> ``build`` id, ``credentials`` or ``refused``; or ``done``,
    the build of another run (host) that held the task's lease meanwhile;
  - ``finish-build``: close it (``build``, ``status``, ``outputs``,
    ``inputs``, ``extra``, ``error``, ``traceback``) -> ``ok``;
  - ``tree``: the directory of a planned changeset's files (``changeset``)
    -> ``path``;
  - ``built`` and ``upstream``: what a shared store holds, for a runner that
    has no connection to it (``task_id``, ``changeset``, ``run_id``) ->
    ``built``; -> ``build`` id and its ``outputs``.

The channel is shared with pipeline code, which may write anything to it: the
hg side parses each line with :func:`parse_event` and trusts nothing else.
"""

import json
import os

CONTEXT_ENV = "HGEXT_LUIGI_CONTEXT"
REPLY_FD_ENV = "HGEXT_LUIGI_REPLY_FD"
SECRETS_FD_ENV = "HGEXT_LUIGI_SECRETS_FD"
ENV_NAMES = (CONTEXT_ENV, REPLY_FD_ENV, SECRETS_FD_ENV)

LOADER = "hgext_luigi.pipeline.loader"
RUNNER = "hgext_luigi.pipeline.runner"

# the string fields each event must carry
EVENT_FIELDS = {"start": ("key", "task_id"), "success": ("key", "task_id"),
                "failure": ("key", "task_id", "error"), "status": ("key", "message"),
                "error": ("message",), "done": (), "request": ("op",)}

# the longest event line read (a build's outputs and inputs, listed); longer is
# pipeline code writing on the channel, not the runner
MAX_EVENT = 16 << 20


def encode(obj):
    """One line of the protocol (an event, a request, an answer)."""
    return (json.dumps(obj) + "\n").encode("utf-8")


def write_all(fd, data):
    """Write ``data`` whole to ``fd`` (a pipe may take it in parts)."""
    while data:
        data = data[os.write(fd, data):]


def is_text(obj):
    """Whether every string of ``obj`` is valid Unicode text (JSON's ``\\udcff``
    decodes to a lone surrogate, which SQLite and UTF-8 files refuse)."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, ValueError, RecursionError):
        return False
    return True


def _seconds(value):
    """A duration the runner measured: a finite number, not absurd."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return 0 <= float(value) < 1e9
    except OverflowError:  # an int beyond any float
        return False


def parse_event(line):
    """One event line as a dict, or None when it is not an event the runner
    sends, with the fields it must carry."""
    try:
        ev = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(ev, dict) or not isinstance(ev.get("event"), str) \
            or ev["event"] not in EVENT_FIELDS:
        return None
    if not all(isinstance(ev.get(f), str) for f in EVENT_FIELDS[ev["event"]]):
        return None
    if not _seconds(ev.get("seconds", 0.0)):
        return None
    if ev["event"] == "done" and not all(
            isinstance(ev.get(f, {}), dict)
            and all(isinstance(v, str) for v in ev.get(f, {}).values())
            for f in ("luigi", "ids")):
        return None
    return ev
