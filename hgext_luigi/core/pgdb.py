"""A PostgreSQL database shared by every host that builds (``[luigi] store =
postgresql://...``), through psycopg 3: libpq itself, so the password comes from
``PGPASSWORD`` or ``PGPASSFILE`` (and TLS, service files and every other libpq
convention work as documented), never from the URL.

The stores write their SQL once, in SQLite's spelling with ``?`` placeholders;
:func:`translate` turns it into psycopg's and :func:`schema` turns SQLite DDL into
PostgreSQL's, so the two databases cannot drift apart.  Plain Python: psycopg is
imported only when a PostgreSQL store is opened.

Concurrency.  Reads and writes run at READ COMMITTED.  Every state change
appends to the one audit chain in its transaction; the chain must stay linear, so
those appends are deferred to the end of the transaction
(:meth:`Postgres.before_commit`) and taken under one transaction-scoped advisory
lock: writers queue only for the instant of the append and the commit, and a
transaction holding that lock never waits for a row lock (no deadlock).  The queue
claims its entry with ``SELECT ... FOR UPDATE SKIP LOCKED``.
"""

import contextlib
import functools
import re
import urllib.parse

from .database import Error

# pg_advisory_xact_lock key of the audit chain ("hgluigi\0" as an int64)
CHAIN_LOCK = 0x68676C7569676900

SCHEMES = ("postgresql", "postgres")


def check_url(url):
    """Refuse a URL that carries a password (``hg config`` would print it):
    libpq reads it from ``PGPASSWORD`` or ``PGPASSFILE``.  Returns the URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise Error("not a PostgreSQL URL: %s" % redact(url))
    if parts.password is not None or any(
            _secret(k) for k, _v in urllib.parse.parse_qsl(parts.query, True)):
        raise Error("the store URL must not hold a password: %s (set PGPASSWORD or "
                    "PGPASSFILE in the environment of hg instead)" % redact(url))
    return url


def _secret(name):
    """A connection parameter that holds a secret (password, sslpassword...)."""
    return "password" in name.lower()


def redact(url):
    """``url`` with every password replaced by ``***`` (for messages): the
    user part's, and the value of any parameter named like one (decoded, so
    ``pass%77ord`` too)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc and ":" in netloc.rsplit("@", 1)[0]:
        user = netloc.rsplit("@", 1)[0].split(":", 1)[0]
        netloc = "%s:***@%s" % (user, netloc.rsplit("@", 1)[1])
    query = urllib.parse.urlencode(
        [(k, "***" if _secret(k) else v)
         for k, v in urllib.parse.parse_qsl(parts.query, True)], safe="*:/")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


@functools.lru_cache(maxsize=512)
def translate(sql):
    """SQLite's ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled),
    leaving quoted text alone."""
    out, quoted = [], False
    for ch in sql:
        if ch == "'":
            quoted = not quoted
        if ch == "%":
            out.append("%%")
        elif ch == "?" and not quoted:
            out.append("%s")
        else:
            out.append(ch)
    return "".join(out)


_TYPES = ((re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"), "BIGSERIAL PRIMARY KEY"),
          (re.compile(r"\bINTEGER PRIMARY KEY\b"), "BIGINT PRIMARY KEY"),
          (re.compile(r"\bINTEGER\b"), "BIGINT"),
          # REAL is 4 bytes in PostgreSQL: times would lose their seconds
          (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"))
_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)\(")
_ID_KEY = re.compile(r"\(\s*id \w+ PRIMARY KEY")


def schema(ddl):
    """PostgreSQL statements for SQLite ``ddl``: its types, and a ``rowid``
    column in each table without an ``id`` key, as SQLite has one implicitly
    (the stores order rows by it)."""
    statements = []
    for stmt in ddl.split(";"):
        stmt = stmt.strip()
        if not stmt:
            continue
        for pattern, replacement in _TYPES:
            stmt = pattern.sub(replacement, stmt)
        if _TABLE.match(stmt) and not _ID_KEY.search(stmt):
            stmt = _TABLE.sub(r"CREATE TABLE IF NOT EXISTS \1(rowid BIGSERIAL, ", stmt, 1)
        statements.append(stmt)
    return statements


class Row:
    """A row read by name or position, and ``dict(row)``, as ``sqlite3.Row``.
    ``rowid`` (the column :func:`schema` adds) is readable but not among the
    keys, so ``SELECT *`` gives the same dicts on both databases."""

    __slots__ = ("_values", "_index")

    def __init__(self, values, index):
        self._values = values
        self._index = index

    def __getitem__(self, k):
        return self._values[k if isinstance(k, int) else self._index[k]]

    def keys(self):
        return [k for k in self._index if k != "rowid"]

    def __iter__(self):
        return iter(self._values)

    def __len__(self):
        return len(self._values)


def _row_factory(cursor):
    desc = cursor.description
    index = {c.name: i for i, c in enumerate(desc or ())}
    return lambda values: Row(values, index)


def _clean(args):
    """Parameters PostgreSQL accepts: text cannot hold NUL (SQLite's can), so a
    NUL from hostile input becomes U+FFFD instead of failing the write."""
    return [a.replace("\0", "\ufffd") if isinstance(a, str) and "\0" in a else a
            for a in args]


# a session that stalls inside a transaction (its host paused, partitioned, or
# its hg stopped by a signal) is ended by the server after 20 s (no transaction
# of the stores waits on anything but the database), so it cannot hold the
# audit chain's lock, and with it every writer, for longer;
# keepalives find a dead peer; connecting gives up after 30 s
_SESSION = {"connect_timeout": 30, "keepalives": 1, "keepalives_idle": 30,
            "keepalives_interval": 10, "keepalives_count": 3,
            "options": "-c idle_in_transaction_session_timeout=20000"}


class Postgres:
    """A connection with the methods of :class:`core.sqlitedb.SQLite`."""

    dialect = "postgresql"

    def __init__(self, url):
        import psycopg

        self._psycopg = psycopg
        self.url = check_url(url)
        self._pending = None
        try:
            self.conn = psycopg.connect(url, autocommit=True, row_factory=_row_factory,
                                        application_name="hgext_luigi", **_SESSION)
        except psycopg.Error as e:
            raise Error("cannot connect to %s: %s" % (redact(url), _message(e)))

    @property
    def in_transaction(self):
        return self._pending is not None

    def execute(self, sql, args=()):
        try:
            return self.conn.execute(translate(sql), _clean(args))
        except self._psycopg.Error as e:
            raise Error(_message(e)) from e

    def executemany(self, sql, rows):
        try:
            with self.conn.cursor() as cur:
                cur.executemany(translate(sql), [_clean(r) for r in rows])
        except self._psycopg.Error as e:
            raise Error(_message(e)) from e

    @contextlib.contextmanager
    def transaction(self):
        """One transaction; the deferred audit appends run last, under the
        chain's lock."""
        self._pending = []
        try:
            with self.conn.transaction():
                yield self
                if self._pending:
                    self.execute("SELECT pg_advisory_xact_lock(?)", (CHAIN_LOCK,))
                    for fn in self._pending:
                        fn()
        except self._psycopg.Error as e:
            raise Error(_message(e)) from e
        finally:
            self._pending = None

    @staticmethod
    def clean(value):
        """A value as PostgreSQL stores it (text without NUL): what the audit
        chain hashes, so a record verifies as it was stored."""
        return _clean([value])[0]

    def now(self):
        """The database server's clock: leases and queue ages of every host are
        measured by it, so a host whose clock is off neither takes a live
        host's lease nor lets a dead one's linger."""
        return float(self.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())"
                                  ).fetchone()[0])

    def before_commit(self, fn):
        if self._pending is None:
            raise RuntimeError("before_commit outside a transaction")
        self._pending.append(fn)

    def close(self):
        self.conn.close()


def _message(e):
    """psycopg's message in one line (without the server's context lines)."""
    text = str(e).strip().splitlines()
    return text[0] if text else e.__class__.__name__
