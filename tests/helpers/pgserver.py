"""A real, throwaway PostgreSQL server on a free loopback port.

For the tests of the PostgreSQL store (lineage, push queue, audit log): a fresh
cluster in a temporary directory, password (SCRAM) authentication over TCP,
gone after ``stop()``.  ``url`` holds no password; a process gets it through
``env()`` (libpq's ``PGPASSWORD``), a psycopg connection through
``password=server.password``.

PostgreSQL refuses to run as root, so as root the server runs as the
``postgres`` user (``nobody`` where there is none) in a directory it owns.
``.ci/ensure-postgres`` installs the binaries on a machine that lacks them.
"""

import atexit
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse

ROLE = "hgluigi"
# what a bin directory must hold: initdb makes the cluster, postgres runs it,
# pg_isready tells when it accepts connections
NEEDED = ("initdb", "postgres", "pg_isready")
SEARCHED = "PATH and /usr/lib/postgresql/*/bin"
# fast and throwaway: nothing needs to survive a crash of a test server
SETTINGS = {
    "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
    "shared_buffers": "32MB", "max_connections": "100",
}


def _complete(bindir):
    return all(os.access(os.path.join(bindir, n), os.X_OK) for n in NEEDED)


def _version(bindir):
    """Sort key of /usr/lib/postgresql/<major>/bin: newest major wins."""
    m = re.search(r"/(\d+)(?:\.(\d+))?/bin$", bindir)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else (0, 0)


def find_binaries():
    """The directory holding initdb, postgres and pg_isready, or None.

    PATH first (the symlink resolved: Debian's /usr/bin wrappers and
    /usr/local/bin links point into the real bin directory, which holds the rest),
    then the newest /usr/lib/postgresql/<major>/bin.
    """
    exe = shutil.which("initdb")
    if exe:
        bindir = os.path.dirname(os.path.realpath(exe))
        if _complete(bindir):
            return bindir
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    return next((d for d in dirs if _complete(d)), None)


def _server_user():
    """The account the server runs as when we are root (PostgreSQL refuses
    root), or None when we are not root and run it ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    return None


def why_unavailable():
    """Why no server can start here, or None when one can."""
    if not find_binaries():
        return ("no %s in %s (install them with .ci/ensure-postgres, or the "
                "Debian package postgresql-15)" % (", ".join(NEEDED), SEARCHED))
    if os.geteuid() == 0 and not _server_user():
        return "running as root, and no 'postgres' or 'nobody' user to run the server as"
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """A running cluster; ``stop()`` shuts it down and removes its files."""

    def __init__(self, timeout=60):
        reason = why_unavailable()
        if reason:
            raise RuntimeError("cannot start PostgreSQL: " + reason)
        self.bindir = find_binaries()
        self.user = _server_user()
        self.password = secrets.token_urlsafe(24)
        self.proc = None
        self.tmp = self._make_tmp()
        self.data = os.path.join(self.tmp, "data")
        self.log = os.path.join(self.tmp, "server.log")
        atexit.register(self.stop)  # a server left by a crashed caller
        try:
            self._initdb()
            self._start(timeout)
            self._create(ROLE)  # libpq's default database is the user's name
        except BaseException:
            self.stop()
            raise
        self.url = self.url_of(ROLE)

    def _make_tmp(self):
        """A private directory the server user owns; under /tmp as root, where
        that user can reach it (TMPDIR may lie inside root's home)."""
        tmp = tempfile.mkdtemp(prefix="hgluigi-pg-", dir="/tmp" if self.user else None)
        if self.user:
            os.chown(tmp, self.user.pw_uid, self.user.pw_gid)
        return tmp

    def _run_as(self):
        """subprocess arguments that drop root for the server's own commands."""
        if not self.user:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def _env(self):
        # the caller's PG* variables (a PGPASSWORD, a PGDATA) must not leak in
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return env

    def _initdb(self):
        pwfile = os.path.join(self.tmp, "pwfile")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        if self.user:
            os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
        # -A scram-sha-256: every connection, socket or TCP, needs the password
        cmd = [os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", ROLE,
               "--pwfile", pwfile, "-A", "scram-sha-256", "-E", "UTF8",
               "--locale", "C", "--no-sync"]
        proc = subprocess.run(cmd, cwd=self.tmp, env=self._env(), capture_output=True,
                              text=True, **self._run_as())
        os.unlink(pwfile)
        if proc.returncode:
            raise RuntimeError("initdb failed (%d):\n%s%s"
                               % (proc.returncode, proc.stdout, proc.stderr))

    def _start(self, timeout):
        """Start on a free port, retrying a few times: another process may take
        the port between choosing and binding it."""
        for _ in range(5):
            self.port = _free_port()
            if self._launch(timeout):
                return
        raise RuntimeError("PostgreSQL found no free port:\n" + self.read_log())

    def _launch(self, timeout):
        """True once the server accepts connections, False if its port was taken."""
        opts = dict(SETTINGS, listen_addresses="127.0.0.1", port=str(self.port),
                    unix_socket_directories=self.tmp)
        cmd = [os.path.join(self.bindir, "postgres"), "-D", self.data]
        for k, v in opts.items():
            cmd += ["-c", "%s=%s" % (k, v)]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.tmp, env=self._env(), stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         **self._run_as())
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.proc.poll() is not None:
                if "already in use" in self.read_log():
                    return False
                raise RuntimeError("PostgreSQL exited (%d):\n%s"
                                   % (self.proc.returncode, self.read_log()))
            if time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL not ready after %ds:\n%s"
                                   % (timeout, self.read_log()))
            time.sleep(0.1)
        return True

    def _ready(self):
        # pg_isready answers without authenticating: 0 means accepting connections
        cmd = [os.path.join(self.bindir, "pg_isready"), "-q", "-h", "127.0.0.1",
               "-p", str(self.port), "-t", "2"]
        return subprocess.run(cmd, env=self._env()).returncode == 0

    def read_log(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return "(no server log)"

    def url_of(self, dbname):
        return "postgresql://%s@127.0.0.1:%d/%s" % (ROLE, self.port,
                                                   urllib.parse.quote(dbname, safe=""))

    def env(self):
        """What a process's libpq needs besides ``url``: the password."""
        return {"PGPASSWORD": self.password}

    def connect(self, dbname="postgres", **kw):
        """A psycopg 3 connection as the superuser (autocommit for DDL)."""
        import psycopg  # only the callers need it, not find_binaries/why_unavailable

        return psycopg.connect(self.url_of(dbname), password=self.password, **kw)

    def _create(self, name):
        from psycopg import sql

        with self.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def create_database(self, name):
        """A new, empty database; its URL (no password: see ``env()``)."""
        self._create(name)
        return self.url_of(name)

    def drop_database(self, name):
        """Drop ``name``, ending any connections a test left open to it."""
        from psycopg import sql

        with self.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                         .format(sql.Identifier(name)))

    def stop(self):
        """Fast shutdown (SIGINT: sessions are ended, no waiting for clients),
        then remove the cluster.  Safe to call twice."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
