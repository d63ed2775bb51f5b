"""Throwaway local servers for the team-setup tests and the tracking load benchmark: a PostgreSQL
cluster made by ``initdb`` in a temporary folder and an ``mlflow server`` on it, each on a
loopback port, started in the foreground and stopped by process id.

PostgreSQL is Debian's (``apt-get install postgresql``: binaries under
``/usr/lib/postgresql/<version>/bin``); it refuses to run as root, so as root the cluster runs as
the ``postgres`` user. The MLflow server needs the ``team`` extra (``psycopg2-binary``).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PG_USER = "postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin() -> Path | None:
    """The folder of Debian's PostgreSQL binaries (the newest version), else None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


def missing() -> str | None:
    """Why the servers cannot start here (for a test's skip reason), else None."""
    if pg_bin() is None:
        return "PostgreSQL not installed (apt-get install postgresql; .ci/run installs it)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam(PG_USER)
        except KeyError:
            return f"no {PG_USER!r} user to run PostgreSQL as (root may not)"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 not installed (pip install -e '.[team]')"
    return None


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, group: bool = False) -> None:
    if proc.poll() is None:
        try:
            (os.killpg if group else os.kill)(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        (os.killpg if group else os.kill)(proc.pid, signal.SIGKILL)
        proc.wait()


#: How long a server may take to come up: generous, as the limits only bound a failure (a
#: loaded 2-core CI machine took minutes for what takes seconds on a quiet one).
START_S = 300


def _wait(ok, what: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not ok():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}): "
                               + log.read_text(errors="replace")[-2000:])
        if time.monotonic() > end:
            raise RuntimeError(f"{what} did not come up in {timeout:.0f} s: "
                               + log.read_text(errors="replace")[-2000:])
        time.sleep(0.2)


class Postgres:
    """A PostgreSQL cluster in a temporary folder, on ``127.0.0.1:port``, with one database.
    Use as a context manager; ``uri`` is the SQLAlchemy URI MLflow takes."""

    def __init__(self, database: str = "mlflow") -> None:
        self.database = database
        self.port = free_port()
        # Under /tmp, not a pytest folder: the postgres user must be able to traverse it.
        self.dir = Path(tempfile.mkdtemp(prefix="scalenas-pg-"))
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{self.database}"

    def _as_owner(self, *cmd: str) -> list[str]:
        if os.geteuid() != 0:
            return list(cmd)
        # setpriv execs the command (no forked helper in between): the pid is the server's.
        return ["setpriv", f"--reuid={PG_USER}", f"--regid={PG_USER}", "--init-groups", *cmd]

    def __enter__(self) -> "Postgres":
        b = pg_bin()
        data = self.dir / "data"
        self.dir.chmod(0o755)
        if os.geteuid() == 0:
            shutil.chown(self.dir, PG_USER, PG_USER)
        try:
            subprocess.run(self._as_owner(str(b / "initdb"), "-D", str(data), "-U", PG_USER,
                                          "-A", "trust", "--no-sync", "-E", "UTF8"),
                           check=True, capture_output=True, timeout=START_S)
            log = self.dir / "postgres.log"
            with open(log, "wb") as out:
                self.proc = subprocess.Popen(
                    self._as_owner(str(b / "postgres"), "-D", str(data), "-p", str(self.port),
                                   "-k", str(self.dir), "-c", "listen_addresses=127.0.0.1",
                                   "-c", "fsync=off", "-c", "max_connections=200"),
                    stdout=out, stderr=subprocess.STDOUT)

            def ready() -> bool:
                try:
                    return subprocess.run([str(b / "pg_isready"), "-q", "-h", "127.0.0.1", "-p",
                                           str(self.port)], timeout=30).returncode == 0
                except subprocess.TimeoutExpired:
                    return False

            _wait(ready, "postgres", self.proc, log, START_S)
            subprocess.run([str(b / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
                            PG_USER, self.database], check=True, capture_output=True,
                           timeout=START_S)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            _stop(self.proc, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


class MlflowServer:
    """``mlflow server`` on a backend store with a local artifacts destination, on
    ``127.0.0.1:port``, as a user starts it (``--workers 1``, no job execution). Stop and start
    again (same port, same stores) with :meth:`stop` / :meth:`start`."""

    def __init__(self, backend_uri: str, artifacts: Path, port: int | None = None,
                 workers: int = 1) -> None:
        self.backend_uri = backend_uri
        self.artifacts = Path(artifacts)
        self.port = port or free_port()
        self.workers = workers
        self.log = self.artifacts.parent / f"mlflow-server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = START_S) -> "MlflowServer":
        self.artifacts.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
               "MLFLOW_DISABLE_TELEMETRY": "true"}
        with open(self.log, "ab") as out:
            # Its own process group: the server's workers go with it.
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
                 self.backend_uri, "--artifacts-destination", str(self.artifacts), "--host",
                 "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers)],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

        def ready() -> bool:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2)
                return True
            except OSError:
                return False

        try:
            _wait(ready, "mlflow server", self.proc, self.log, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            _stop(self.proc, sig, group=True)
            self.proc = None

    def __enter__(self) -> "MlflowServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def webdav_missing() -> str | None:
    """Why the WebDAV server or DVC's WebDAV remote cannot run here, else None."""
    import importlib.util

    gone = [m for m in ("wsgidav", "cheroot", "dvc_webdav") if importlib.util.find_spec(m) is None]
    return (f"{', '.join(gone)} not installed (pip install -e '.[team]')" if gone else None)


class WebDav:
    """A WebDAV server (wsgidav on cheroot, anonymous access) serving ``root`` on
    ``127.0.0.1:port``: a DVC remote ``webdav://127.0.0.1:<port>/<folder>``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "WebDav":
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.root.parent / f"webdav-{self.port}.log"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "wsgidav"), "--host", "127.0.0.1", "--port",
                 str(self.port), "--root", str(self.root), "--auth", "anonymous",
                 "--no-config"], stdout=out, stderr=subprocess.STDOUT)

        def ready() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False

        try:
            _wait(ready, "wsgidav", self.proc, log, START_S)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None
