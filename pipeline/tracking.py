"""MLflow tracking: one store, one parent run per pipeline invocation, child runs per stage and
per candidate.

The store is a real MLflow tracking store: by default a SQLite file at an absolute path
(``<workdir>/results/mlflow.db``, artifacts under ``<workdir>/results/mlartifacts``); set
``tracking.uri`` in the parameters or ``MLFLOW_TRACKING_URI`` for a server. Concurrent *first* use
of a fresh SQLite store corrupts it (schema migrations race), so :func:`init_store` builds the
store under a lock at a temporary path and renames it into place; the workflow calls it once in
Snakemake's ``onstart`` before jobs start, and every stage calls it too (then a no-op).

Environment variables that tie a pipeline invocation together (set by the workflow, inherited by
the jobs): ``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME`` and :data:`PARENT_ENV`. A stage run
outside Snakemake has no parent and simply creates a top-level run.

Logging is batched: :meth:`StageRun.log_metrics` buffers points and :meth:`StageRun.flush` sends
them with ``MlflowClient.log_batch`` (one ``log_metric`` call costs ~12 ms on SQLite);
:func:`log_candidates` records many candidates as child runs with one batch call each.
"""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from pipeline import diskfull
from pipeline.errors import InputError

# Telemetry off before mlflow is ever imported (it reads these at import time).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
# A tracking server that is down must not stall a stage for minutes (MLflow's defaults: 7 retries
# with exponential back-off, 120 s per request).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
# A server store prints two "View run ... at" lines per terminated run: one per candidate.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

PARENT_ENV = "SCALENAS_PARENT_RUN_ID"
URI_ENV = "MLFLOW_TRACKING_URI"
EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"
DISABLE_ENV = "SCALENAS_TRACKING_DISABLED"
DEFAULT_EXPERIMENT = "scalenas"
DB_NAME = "mlflow.db"
ARTIFACTS_NAME = "mlartifacts"

# log_batch limits of the MLflow REST API (and the SQL store).
_MAX_PARAMS = 100
_MAX_METRICS = 1000
_MAX_PARAM_LEN = 6000

TAG_COMMIT = "scalenas.git_commit"
TAG_PARAMS_HASH = "scalenas.params_hash"
TAG_DATA_HASH = "scalenas.data_hash"
TAG_ARCH_ID = "scalenas.arch_id"
TAG_PHASE = "scalenas.phase"
TAG_TASK = "scalenas.task"
TAG_KIND = "scalenas.kind"
TAG_STAGE = "scalenas.stage"
TAG_GENERATION = "scalenas.generation"
#: MLflow 3's UI opens an experiment with this tag on its runs (a model-training experiment),
#: not on the GenAI overview.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
PARENT_TAG = "mlflow.parentRunId"

#: ``host:pid:start`` of the process that opened a run: a RUNNING run whose process is gone was
#: killed (kill -9, power loss) and is marked KILLED when the next pipeline starts.
TAG_OWNER = "scalenas.owner"
#: Where `make ui` serves a SQLite store, and the README's candidate filter.
UI_BASE = "http://127.0.0.1:5000"
CANDIDATE_FILTER = 'tags.scalenas.kind = "candidate"'
#: A saved view of the runs table (MLflow's "share view": an experiment tag
#: ``mlflow.sharedViewState.<key>`` that the page ``...runs?viewStateShareKey=<key>`` opens): the
#: README's candidate filter, sorted by GFLOPs, with the GFLOPs, score, depth and fusion columns
#: shown (a fresh browser shows no metric or parameter column otherwise).
VIEW_KEY = "candidates"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
VIEW_STATE = {"searchFilter": CANDIDATE_FILTER, "orderByKey": "metrics.`gflops`",
              "orderByAsc": True,
              "selectedColumns": ["metrics.`gflops`", "metrics.`score`", "params.`depth.blocks`",
                                  "params.`fusion.edges`"]}


def experiment_tags() -> dict[str, str]:
    """The tags the pipeline keeps on its experiment: its kind (a model-training experiment, so
    the UI opens it on its runs) and the candidates' view."""
    return {**EXPERIMENT_KIND, VIEW_TAG: json.dumps(VIEW_STATE, sort_keys=True)}


class TrackingError(InputError):
    """The tracking store named by ``tracking.uri`` cannot be used (unreachable, or from another
    version): the user's to fix, so a stage reports it in one line with exit status 2."""


class StoreFileError(TrackingError):
    """The store file itself is unusable (empty, not a regular file): the user's to fix, so a
    stage reports it as bad input (one line, exit 2)."""


# -- store ---------------------------------------------------------------------------------------

def default_uri(workdir: str | Path = ".") -> str:
    """``sqlite:///<abs workdir>/results/mlflow.db``."""
    return f"sqlite:///{(Path(workdir).resolve() / 'results' / DB_NAME)}"


def resolve_uri(configured: str = "", workdir: str | Path = ".") -> str:
    """The tracking URI: ``MLFLOW_TRACKING_URI`` > the parameter ``tracking.uri`` > the default.
    Relative SQLite paths are made absolute (MLflow would resolve them against each job's cwd)."""
    uri = os.environ.get(URI_ENV) or configured or default_uri(workdir)
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        uri = prefix + str((Path(workdir) / uri[len(prefix):]).resolve())
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix):]) if uri.startswith(prefix) else None


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps artifacts: next to a SQLite file, else the server's choice."""
    db = sqlite_path(uri)
    return (db.parent / ARTIFACTS_NAME).resolve().as_uri() if db is not None else None


@contextmanager
def _full_disk_named(uri: str) -> Iterator[None]:
    """A full disk under the store (SQLite's "database or disk is full" deep in SQLAlchemy's
    traceback) as one :class:`pipeline.diskfull.DiskFullError` naming the database."""
    try:
        yield
    except Exception as e:
        full = diskfull.find(e, sqlite_path(uri))
        if full is not None:
            raise full from None
        raise


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _get_or_create_experiment(client: Any, name: str, uri: str) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        for k, v in experiment_tags().items():  # created before these tags were set
            if k == "mlflow.experimentKind" and exp.tags.get(k):
                continue  # a kind the user chose in the UI stays
            if exp.tags.get(k) != v:
                client.set_experiment_tag(exp.experiment_id, k, v)
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(uri),
                                        tags=experiment_tags())
    except MlflowException:
        # Another process created it between our lookup and create.
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def check_store_file(uri: str) -> None:
    """A SQLite store file that exists must be a non-empty regular file.

    MLflow would silently build a fresh store over a 0-byte file (a truncated copy, a full disk),
    and all run history would be gone with only an INFO line."""
    db = sqlite_path(uri)
    if db is None or not db.exists():
        return
    if not db.is_file():
        raise StoreFileError(f"{db}: MLflow store is not a regular file")
    if db.stat().st_size == 0:
        raise StoreFileError(f"{db}: MLflow store is an empty file (0 bytes); restore it from a "
                            "backup, or delete it to start a new store")


def init_store(uri: str, experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Create the store (and the experiment) if needed; return the experiment id.

    A fresh SQLite store is built at a temporary path under a file lock and renamed into place,
    so a database file that exists is always fully migrated and concurrent callers never race.
    """
    db = sqlite_path(uri)
    check_store_file(uri)
    _check_reachable(uri)
    try:
        if db is not None and not db.exists():
            with _file_lock(db.with_name(db.name + ".lock")):
                if not db.exists():
                    tmp = db.with_name(f".{db.name}.{os.getpid()}.tmp")
                    tmp.unlink(missing_ok=True)
                    tmp_uri = f"sqlite:///{tmp}"
                    try:
                        client = _client(tmp_uri)
                        _get_or_create_experiment_at(client, experiment, artifact_location(uri))
                        _dispose(client)
                        os.replace(tmp, db)
                    except BaseException:  # e.g. a full disk: no half-built store left behind
                        tmp.unlink(missing_ok=True)
                        raise
        line = repoint_artifacts(uri, experiment)
        if line:
            print(line, file=sys.stderr)
        return _get_or_create_experiment(_client(uri), experiment, uri)
    except TrackingError:
        raise
    except Exception as e:  # mlflow raises many types; name the store in one line
        full = diskfull.find(e, db)
        if full is not None:
            raise full from None
        raise TrackingError(f"tracking.uri {uri}: unusable MLflow store: "
                            f"{' '.join(str(e).split())[:300]}") from e


def repoint_artifacts(uri: str, experiment: str = DEFAULT_EXPERIMENT) -> str | None:
    """A workspace that was copied or moved: point its experiment's artifacts at its own folder.

    MLflow stores an experiment's artifact root, and each run's artifact URI, as absolute paths
    and has no call to change them: a store moved with its workspace (``cp -a``, ``mv``) would
    keep writing artifacts into the old place. When the SQLite store's experiment keeps them in a
    ``mlartifacts`` folder other than the one next to the store (the layout this module creates),
    the experiment and its runs are re-pointed at that folder, which the copy or move brought
    along. Returns the one line saying so, else None (nothing to do, another store kind, or an
    artifact root the user chose)."""
    import sqlite3

    db = sqlite_path(uri)
    new = artifact_location(uri)
    if db is None or new is None or not db.is_file():
        return None
    with _file_lock(db.with_name(db.name + ".lock")):
        con = sqlite3.connect(db, timeout=60)
        try:
            row = con.execute("SELECT experiment_id, artifact_location FROM experiments "
                              "WHERE name = ?", (experiment,)).fetchone()
            if row is None or row[1] == new:
                return None
            exp_id, old = row
            if not str(old).startswith("file:") or str(old).rstrip("/").rsplit("/", 1)[-1] \
                    != ARTIFACTS_NAME:
                return None
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master "
                                                "WHERE type = 'table'")}
            with con:
                con.execute("UPDATE experiments SET artifact_location = ? "
                            "WHERE experiment_id = ?", (new, exp_id))
                moved = [("runs", "artifact_uri")]
                if "logged_models" in tables:
                    moved.append(("logged_models", "artifact_location"))
                for table, col in moved:
                    con.execute(f"UPDATE {table} SET {col} = ? || substr({col}, ?) "
                                f"WHERE experiment_id = ? AND substr({col}, 1, ?) = ?",
                                (new, len(old) + 1, exp_id, len(old), old))
        finally:
            con.close()
    return (f"tracking: the workspace moved: experiment {experiment!r} now keeps its artifacts in "
            f"{new} (was {old})")


def _check_reachable(uri: str) -> None:
    """Fail in seconds, naming the URI, when an HTTP tracking server does not answer."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "localhost", port), timeout=5).close()
    except OSError as e:
        raise TrackingError(f"tracking.uri {uri}: cannot reach the MLflow server "
                            f"({e.strerror or e})") from None


def _get_or_create_experiment_at(client: Any, name: str, location: str | None) -> str:
    exp = client.get_experiment_by_name(name)
    return exp.experiment_id if exp else client.create_experiment(name, artifact_location=location,
                                                                   tags=experiment_tags())


def _dispose(client: Any) -> None:
    """Close the SQLAlchemy engine of a client's store (before its database file is renamed)."""
    engine = getattr(getattr(getattr(client, "_tracking_client", None), "store", None), "engine", None)
    if engine is not None:
        engine.dispose()


# -- tags ----------------------------------------------------------------------------------------

def git_commit(cwd: str | Path = ".", paths: Sequence[str] = ()) -> str:
    """``HEAD``'s commit (with ``-dirty`` when tracked files changed, only those under ``paths``
    when given), or ``unknown``."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", *paths], cwd=cwd,
                               capture_output=True, timeout=10).returncode != 0
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def enabled() -> bool:
    """False when tracking was switched off (``tracking.enabled: false`` sets the env var)."""
    return os.environ.get(DISABLE_ENV, "").lower() not in ("1", "true", "yes")


# -- helpers for batches -------------------------------------------------------------------------

def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> ``{"a.b.c": "value"}`` (lists as JSON), values cut to MLflow's limit."""
    out: dict[str, str] = {}
    for k, v in params.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key))
        else:
            text = v if isinstance(v, str) else json.dumps(v)
            out[key] = text[:_MAX_PARAM_LEN]
    return out


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _log_batch(client: Any, run_id: str, params: Mapping[str, Any] | None = None,
               metrics: Sequence[tuple[str, float, int]] = (), tags: Mapping[str, Any] | None = None
               ) -> None:
    from mlflow.entities import Metric, Param, RunTag

    ts = int(time.time() * 1000)
    p = [Param(k, v) for k, v in flatten(params or {}).items()]
    m = [Metric(k, float(v), ts, int(s)) for k, v, s in metrics]
    t = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
    first = True
    while p or m or t or first:
        first = False
        bp, p = p[:_MAX_PARAMS], p[_MAX_PARAMS:]
        room = _MAX_METRICS - len(bp)
        bt, t = t[:room], t[room:]
        room -= len(bt)
        bm, m = m[:room], m[room:]
        if bp or bm or bt:
            client.log_batch(run_id, metrics=bm, params=bp, tags=bt)


# -- runs ----------------------------------------------------------------------------------------

@contextmanager
def store_errors(uri: str) -> Iterator[None]:
    """A store that fails while a stage logs (a server that went away, a lost database
    connection) raises :class:`TrackingError`: one line naming ``tracking.uri``, no traceback."""
    try:
        yield
    except TrackingError:
        raise
    except Exception as e:
        import requests
        from mlflow.exceptions import MlflowException

        if isinstance(e, (MlflowException, requests.RequestException)):
            raise TrackingError(f"tracking.uri {uri}: the MLflow store failed while logging: "
                                f"{' '.join(str(e).split())[:300]}") from e
        raise


class StageRun:
    """An MLflow run of one stage: params once, metrics buffered and sent in batches. Store
    failures raise :class:`TrackingError` naming ``uri``."""

    def __init__(self, client: Any, run_id: str, experiment_id: str, flush_every: int = 500,
                 uri: str = "") -> None:
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.uri = uri
        self._buffer: list[tuple[str, float, int]] = []
        self._flush_every = flush_every

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log (nested) parameters; call once per key (MLflow params are immutable)."""
        with store_errors(self.uri):
            _log_batch(self.client, self.run_id, params=params)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        with store_errors(self.uri):
            _log_batch(self.client, self.run_id, tags=tags)

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Buffer metric points (sent by :meth:`flush`, automatically every ``flush_every``)."""
        self._buffer.extend((k, float(v), step) for k, v in metrics.items())
        if len(self._buffer) >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            buf, self._buffer = self._buffer, []
            with store_errors(self.uri):
                _log_batch(self.client, self.run_id, metrics=buf)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file or directory (architectures, plots, tables) into the run's artifacts."""
        path = Path(path)
        with store_errors(self.uri):
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path)
            else:
                self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        with store_errors(self.uri):
            self.client.log_text(self.run_id, text, artifact_file)

    def log_candidates(self, rows: Iterable[Mapping[str, Any]]) -> list[str]:
        """Child runs of this run, one per candidate (see :func:`log_candidates`)."""
        with store_errors(self.uri):
            return log_candidates(self.client, self.experiment_id, self.run_id, rows)

    def end(self, status: str = "FINISHED") -> None:
        self.flush()
        with store_errors(self.uri):
            self.client.set_terminated(self.run_id, status=status)


class NullRun(StageRun):
    """Tracking switched off: same interface, does nothing."""

    def __init__(self) -> None:
        super().__init__(None, "", "")

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...
    def flush(self) -> None: self._buffer = []
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_candidates(self, rows: Iterable[Mapping[str, Any]]) -> list[str]: return []
    def end(self, status: str = "FINISHED") -> None: ...


def start_run(name: str, *, uri: str | None = None, experiment: str | None = None,
              parent_run_id: str | None = None, tags: Mapping[str, Any] | None = None,
              params: Mapping[str, Any] | None = None) -> StageRun:
    """Start a run (a child of ``parent_run_id``, default ``$SCALENAS_PARENT_RUN_ID``)."""
    if not enabled():
        return NullRun()
    uri = uri or resolve_uri()
    experiment = experiment or os.environ.get(EXPERIMENT_ENV) or DEFAULT_EXPERIMENT
    exp_id = init_store(uri, experiment)
    parent = parent_run_id if parent_run_id is not None else os.environ.get(PARENT_ENV)
    client = _client(uri)
    all_tags = {TAG_COMMIT: git_commit(), TAG_OWNER: process_owner(), **(tags or {})}
    if parent:
        all_tags[PARENT_TAG] = parent
    with store_errors(uri), _full_disk_named(uri):
        run = client.create_run(exp_id, run_name=name,
                                tags={k: str(v) for k, v in all_tags.items()})
    stage = StageRun(client, run.info.run_id, exp_id, uri=uri)
    if params:
        with _full_disk_named(uri):
            stage.log_params(params)
    return stage


def log_candidates(client: Any, experiment_id: str, parent_run_id: str,
                   rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Record candidates as finished child runs of ``parent_run_id``; returns their run ids.

    Each row: ``name`` (run name), optional ``params`` (e.g. fusion/depth group, arch id),
    ``metrics`` (``{name: value}`` or ``{name: [(step, value), ...]}``), ``tags`` and
    ``artifacts`` (``{artifact_file: text or bytes}``, e.g. ``{"arch.json": arch.to_json()}``).
    Costs a create, one batch, one artifact upload and a terminate per candidate.
    """
    ids = []
    for row in rows:
        tags = {PARENT_TAG: parent_run_id, TAG_KIND: "candidate", **(row.get("tags") or {})}
        run = client.create_run(experiment_id, run_name=str(row.get("name", "candidate")),
                                tags={k: str(v) for k, v in tags.items()})
        rid = run.info.run_id
        points: list[tuple[str, float, int]] = []
        for k, v in (row.get("metrics") or {}).items():
            if isinstance(v, (list, tuple)):
                points.extend((k, float(val), int(step)) for step, val in v)
            else:
                points.append((k, float(v), 0))
        _log_batch(client, rid, params=row.get("params"), metrics=points)
        artifacts = row.get("artifacts") or {}
        if artifacts:
            with tempfile.TemporaryDirectory(prefix="scalenas-artifacts-") as tmp:
                for fname, content in artifacts.items():
                    path = Path(tmp) / fname
                    path.parent.mkdir(parents=True, exist_ok=True)
                    if isinstance(content, bytes):
                        path.write_bytes(content)
                    else:
                        path.write_text(content, encoding="utf-8")
                client.log_artifacts(rid, tmp)
        client.set_terminated(rid, status=str(row.get("status", "FINISHED")))
        ids.append(rid)
    return ids


# -- the pipeline's parent run (Snakemake onstart / onsuccess / onerror) -------------------------

def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot; Linux), '' elsewhere, None if
    there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # Field 22; the command name (field 2) may hold spaces, so split after its ')'.
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except FileNotFoundError:
        return None
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return ""


def process_owner(pid: int | None = None) -> str:
    """``host:pid:start`` of a process (default: this one), the value of :data:`TAG_OWNER`."""
    import socket

    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or ''}"


def owner_alive(owner: str) -> bool:
    """False only when ``owner`` names a process of this host that no longer runs."""
    import socket

    try:
        host, pid, start = owner.rsplit(":", 2)
        pid_i = int(pid)
    except ValueError:
        return True  # not ours to judge
    if host != socket.gethostname():
        return True
    now = _start_time(pid_i)
    return now is not None and (not start or not now or now == start)


def mark_stale_runs(uri: str, experiment: str) -> list[str]:
    """Set every RUNNING run of ``experiment`` whose owning process on this host is gone (a
    kill -9 of Snakemake or of a job) to KILLED; returns their run ids."""
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    stale = []
    for run in client.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'",
                                  max_results=10000):
        owner = run.data.tags.get(TAG_OWNER)
        if owner and not owner_alive(owner):
            client.set_terminated(run.info.run_id, status="KILLED")
            stale.append(run.info.run_id)
    return stale


def delete_partial_candidates(uri: str, experiment: str) -> list[str]:
    """Delete (MLflow's soft delete: hidden from searches and the UI, restorable) the candidate
    runs of stage runs that did not finish: such a job is rerun and logs all its candidates
    again, so keeping them would count each of them twice. Returns their run ids."""
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    gone = []
    for stage in client.search_runs(
            [exp.experiment_id], max_results=10000,
            filter_string=f"tags.{TAG_KIND} = 'stage' and attributes.status != 'FINISHED' "
                          "and attributes.status != 'RUNNING'"):
        for cand in client.search_runs(
                [exp.experiment_id], max_results=10000,
                filter_string=f"tags.{TAG_KIND} = 'candidate' and "
                              f"tags.`{PARENT_TAG}` = '{stage.info.run_id}'"):
            client.delete_run(cand.info.run_id)
            gone.append(cand.info.run_id)
    return gone


def start_pipeline(name: str, *, uri: str, experiment: str, params: Mapping[str, Any],
                   tags: Mapping[str, Any] | None = None) -> str:
    """Initialise the store, mark the runs of killed pipelines KILLED, open the parent run,
    export it to the jobs' environment."""
    os.environ[URI_ENV] = uri
    os.environ[EXPERIMENT_ENV] = experiment
    init_store(uri, experiment)
    with store_errors(uri), _full_disk_named(uri):
        mark_stale_runs(uri, experiment)
        delete_partial_candidates(uri, experiment)
    run = start_run(name, uri=uri, experiment=experiment, parent_run_id="",
                    tags={TAG_KIND: "pipeline", **(tags or {})}, params=params)
    os.environ[PARENT_ENV] = run.run_id
    return run.run_id


def end_pipeline(success: bool) -> str | None:
    """Close the parent run opened by :func:`start_pipeline` (FINISHED or FAILED). A store that
    is gone by then (a server that went away) is not worth a traceback: returns one line saying
    so (the next start marks the run KILLED), else None."""
    run_id = os.environ.get(PARENT_ENV)
    if not run_id or not enabled():
        return None
    uri = resolve_uri()
    try:
        with store_errors(uri):
            _client(uri).set_terminated(run_id, status="FINISHED" if success else "FAILED")
    except TrackingError as e:
        return f"warning: the pipeline's MLflow run {run_id} stays open: {e}"
    return None


# -- the UI's page of the candidates ---------------------------------------------------------------

def candidates_url(uri: str, experiment_id: str, base: str | None = None) -> str:
    """The runs table of the experiment in the candidates' view (:data:`VIEW_STATE`: the
    README's filter, sorted by GFLOPs, their columns): on the server itself for an HTTP store,
    else where `make ui` serves it."""
    if base is None:
        base = uri if uri.startswith(("http://", "https://")) else UI_BASE
    # workflowType: the UI's GenAI / model-training switch, kept per browser and GenAI at first,
    # which opens every experiment on its GenAI overview whatever its mlflow.experimentKind tag.
    return (f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}"
            "&workflowType=machine_learning")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline.tracking link [--uri URI] [--base URL]``: print the candidates' page
    (what `make ui` prints before it starts the server)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m pipeline.tracking")
    ap.add_argument("command", choices=["link"])
    ap.add_argument("--uri", default="", help="tracking store (default: the workspace's)")
    ap.add_argument("--base", default=None, help=f"UI address (default {UI_BASE})")
    ap.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    args = ap.parse_args(argv)
    uri = resolve_uri(args.uri)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        print(f"no MLflow store at {db} yet: run the pipeline first", file=sys.stderr)
        return 1
    try:
        exp = _client(uri).get_experiment_by_name(args.experiment)
    except Exception as e:  # the UI still starts; only the link is missing
        print(f"tracking.uri {uri}: {' '.join(str(e).split())[:200]}", file=sys.stderr)
        return 1
    if exp is None:
        print(f"no experiment {args.experiment!r} in {uri} yet", file=sys.stderr)
        return 1
    print(f"The candidates' runs (open this, not the start page): "
          f"{candidates_url(uri, exp.experiment_id, args.base)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
