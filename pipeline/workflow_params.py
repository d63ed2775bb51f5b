"""Per-rule parameter files of the workflow: their text, and when and by whom they are written.

Every rule takes ``results/params/[<task>/]<phase>.json`` (the values of its phase) as an input,
so a change of a phase's values, and of no other value, reruns it. Snakemake parses the Snakefile
before it takes its lock, and also for a dry run (``-n``) and for a run that the lock then
refuses, so nothing at parse time may write under ``results/``: a second ``snakemake`` with other
parameters would change the values that the jobs of a run in progress read next. Hence:

1. When Snakemake builds the job graph (after parsing, before its lock), :class:`Staged` writes
   each file's text to a content-addressed copy in :data:`STAGE_DIR` (Snakemake's own scratch
   folder: a name says its bytes, so writing it can change nothing that anybody reads). Nothing
   under ``results/`` is touched.
2. The local rule ``param_file`` publishes a staged copy as the per-rule file
   (``python -m pipeline.workflow_params STAGED OUT``). It is a job, so it runs only in a real run,
   after Snakemake holds its lock, and Snakemake plans it, and every job downstream, exactly when
   the values changed: the staged path names the content (a new path is a changed input in
   Snakemake's records), and :func:`stage` gives the staged copy an mtime after the published
   file's when they differ and not after when they agree (planning without ``.snakemake/``
   records goes by mtimes).
3. The ``onstart`` hook (after the lock, real and ``--touch`` runs only) writes this run's files
   (a ``--touch`` run publishes nothing else) and those of phases outside its targets
   (:func:`refresh`), so that ``dvc repro``, whose stages run one phase each, sees a later phase's
   values change; it skips any file that another running Snakemake has in its lock.

The run settings (``run``, ``tracking``: never an input, changing them reruns nothing) are one more
content-addressed copy (:func:`stage_settings`), named to the jobs through an environment variable,
so a run in progress keeps reading its own.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

from pipeline.io import atomic_write_text
from pipeline.paths import param_file

#: Staged copies (relative to the working directory, as Snakemake's own ``.snakemake/``).
STAGE_DIR = ".snakemake/scalenas/params"
#: Snakemake's lock folder: one ``<n>.input.lock`` / ``<n>.output.lock`` per running instance.
LOCK_DIR = ".snakemake/locks"
#: Environment variable naming the run-settings copy to the jobs (not in the shell command text,
#: whose change Snakemake counts as a code change that reruns every job).
RUN_SETTINGS_ENV = "SCALENAS_RUN_SETTINGS"


def _dumps(doc: Any) -> str:
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def per_task(phase: str) -> bool:
    """Whether a phase has one file per task (``{task}`` in its keys) or one in all."""
    from pipeline import config as pconfig  # not at import: the param_file jobs only copy

    return any("{task}" in k for k in pconfig.PHASES[phase])


def phase_texts(params: Mapping[str, Any], tasks: Iterable[str]) -> dict[str, str]:
    """``{per-rule file: text}`` of every phase (pipeline order); task-independent phases (no
    ``{task}`` in their keys) have one file."""
    from pipeline import config as pconfig

    tasks = list(tasks)
    out: dict[str, str] = {}
    for phase in pconfig.PHASES:
        for task in (tasks if per_task(phase) else [None]):
            doc = {"phase": phase, "task": task,
                   "params": pconfig.phase_params(params, phase, task)}
            out[param_file(phase, task)] = _dumps(doc)
    return out


def settings_text(params: Mapping[str, Any], source: str,
                  batches: list[dict[str, Any]] | None = None) -> str:
    """The run settings the jobs read: the parameter file's name, ``run`` and ``tracking``, and
    the training batches that ``prepare`` checks against the splits
    (:mod:`pipeline.data.batches`)."""
    return _dumps({"source": source, "run": params["run"], "tracking": params["tracking"],
                   "batches": batches or []})


def published(final: str, texts: Mapping[str, str]) -> bool:
    """Whether the per-rule file ``final`` holds the values the parameters give it now."""
    try:
        return Path(final).read_text(encoding="utf-8") == texts[final]
    except (OSError, UnicodeDecodeError):
        return False


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def staged_name(final: str, text: str) -> str:
    """``<phase>[-<task>]-<sha256 of text, 16 hex>.json``: readable, and unique per content."""
    parts = Path(final).with_suffix("").parts
    label = "-".join(parts[parts.index("params") + 1:]) if "params" in parts else Path(final).stem
    return f"{label}-{_digest(text)}.json"


def _put(path: Path, text: str) -> None:
    """Write a content-addressed copy unless it already holds ``text``."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write_text(path, text)


def stage(final: str, text: str, stage_dir: str | os.PathLike = STAGE_DIR) -> str:
    """The staged copy of ``final``'s ``text`` (written if missing), with the mtime that makes
    Snakemake rerun the ``param_file`` job exactly when ``final`` does not hold ``text``.

    Reads ``final``, never writes it."""
    staged = Path(stage_dir) / staged_name(final, text)
    _put(staged, text)
    try:
        published = Path(final).read_text(encoding="utf-8")
        published_mtime = os.stat(final).st_mtime_ns
    except (OSError, UnicodeDecodeError):
        return str(staged)  # missing (or unreadable): Snakemake plans the job for that alone
    mtime = os.stat(staged).st_mtime_ns
    if published == text and mtime > published_mtime:
        # The same values: not newer than the published file, or the phase would rerun.
        os.utime(staged, ns=(published_mtime, published_mtime))
    elif published != text and mtime <= published_mtime:
        # Other values (e.g. back to an earlier set, whose copy is old): newer, so it reruns.
        now = max(published_mtime + 1_000_000, _now_ns())
        os.utime(staged, ns=(now, now))
    return str(staged)


def _now_ns() -> int:
    import time

    return time.time_ns()


def stage_all(texts: Mapping[str, str], stage_dir: str | os.PathLike = STAGE_DIR
              ) -> dict[str, str]:
    """``{per-rule file: staged copy}`` for every file of :func:`phase_texts`."""
    return {final: stage(final, text, stage_dir) for final, text in texts.items()}


def stage_settings(text: str, stage_dir: str | os.PathLike = STAGE_DIR) -> str:
    """The run-settings copy (content-addressed: a run in progress keeps its own)."""
    staged = Path(stage_dir) / f"run-{_digest(text)}.json"
    _put(staged, text)
    return str(staged)


class Staged:
    """The staged copies of one invocation, written on first use: when Snakemake builds the job
    graph, i.e. only once every parse-time check has passed (a refused parameter file leaves
    no trace). The run-settings path is known before: the jobs' environment names it."""

    def __init__(self, texts: Mapping[str, str], settings: str,
                 stage_dir: str | os.PathLike = STAGE_DIR) -> None:
        self.texts = dict(texts)
        self.settings = settings
        self.stage_dir = stage_dir
        self.settings_path = str(Path(stage_dir) / f"run-{_digest(settings)}.json")
        self._copies: dict[str, str] | None = None

    def ensure(self) -> dict[str, str]:
        """Write the copies (once); ``{per-rule file: staged copy}``."""
        if self._copies is None:
            self._copies = stage_all(self.texts, self.stage_dir)
            stage_settings(self.settings, self.stage_dir)
        return self._copies

    def copy(self, final: str) -> str:
        """The staged copy of ``final`` (the input of its ``param_file`` job)."""
        return self.ensure()[final]


def locked_paths(lock_dir: str | os.PathLike = LOCK_DIR) -> set[str]:
    """Every path that a running Snakemake has in its lock (inputs and outputs of its jobs)."""
    out: set[str] = set()
    for lock in Path(lock_dir).glob("*.lock"):
        try:
            text = lock.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # removed as we read: that instance has finished
        out.update(os.path.normpath(line.strip()) for line in text.splitlines() if line.strip())
    return out


def refresh(texts: Mapping[str, str], ours: Iterable[str], locked: Iterable[str]) -> list[str]:
    """Write (when changed) the per-rule files of this run (``ours``: the files of its jobs,
    which it holds the lock on) and those that no running Snakemake has in its lock; leave the
    others (another run's values). Returns the files written. Call it after the lock only."""
    ours = {os.path.normpath(p) for p in ours}
    others = {os.path.normpath(p) for p in locked} - ours
    written = []
    for final, text in texts.items():
        if os.path.normpath(final) in others:
            continue
        try:
            if Path(final).read_text(encoding="utf-8") == text:
                continue
        except (OSError, UnicodeDecodeError):
            pass
        atomic_write_text(final, text)
        written.append(final)
    return written


def publish(staged: str | os.PathLike, final: str | os.PathLike) -> None:
    """The ``param_file`` job: copy a staged copy to its per-rule file (atomically), after
    checking that its bytes are those its name says."""
    text = Path(staged).read_text(encoding="utf-8")
    if not Path(staged).name.endswith(f"-{_digest(text)}.json"):
        raise ValueError(f"{staged}: staged parameter copy does not match its name (edited?); "
                         "remove it and run again")
    atomic_write_text(final, text)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m pipeline.workflow_params STAGED OUT", file=sys.stderr)
        return 2
    try:
        publish(args[0], args[1])
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
