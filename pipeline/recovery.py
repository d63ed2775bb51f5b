"""Recovery after a kill: stage jobs that die with the workflow, and leftovers of killed jobs.

* :func:`watch_workflow` (called by every stage): a stage job must not outlive the Snakemake that
  started it, or a rerun would race with it on the same outputs. The workflow exports its pid
  (:data:`WATCH_ENV`); the stage polls it, and when it is gone (``kill -9``) the stage stops as on
  SIGTERM: its temporary output directory is removed and its MLflow run ends ``KILLED``. On Linux
  the stage also asks for SIGTERM when its parent shell dies (``prctl(PR_SET_PDEATHSIG)``).
* :func:`sweep_stale`: a stage publishes through ``.<output>.tmp-<pid>`` and
  ``.<output>.old-<pid>`` directories (:mod:`pipeline.stages.common`); a job killed with
  ``kill -9`` leaves them behind. They are removed once their process is gone (same host).
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

#: The pid of the Snakemake process whose jobs should die with it (set by workflow/rules/common.smk).
WATCH_ENV = "SCALENAS_WORKFLOW_PID"
#: How often a stage checks that the workflow is alive, and how long it waits for a clean stop
#: (the main thread may be inside a long native call) before it exits hard.
POLL_S = 1.0
GRACE_S = 20.0

_PR_SET_PDEATHSIG = 1
#: ``.<name>.tmp-<pid>`` / ``.<name>.old-<pid>`` (stage outputs) and ``.<name>.<pid>.tmp`` (the
#: workflow's parameter files and the MLflow store under construction).
_STALE = re.compile(r"^\..+\.(?:tmp|old)-(\d+)$|^\..+\.(\d+)\.tmp$")


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(directory: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove the temporary leftovers of dead processes in ``directory`` (only those of output
    ``name`` when given); returns what was removed."""
    d = Path(directory)
    try:
        entries = list(d.iterdir())
    except OSError:
        return []
    removed = []
    for p in entries:
        m = _STALE.match(p.name)
        if m is None or (name is not None and not p.name.startswith(f".{name}.")):
            continue
        pid = int(m.group(1) or m.group(2))
        if pid == os.getpid() or pid_alive(pid):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def sweep_tree(root: str | os.PathLike) -> list[Path]:
    """:func:`sweep_stale` in ``root`` and every directory below it."""
    removed: list[Path] = []
    if not Path(root).is_dir():
        return removed
    for dirpath, dirnames, _ in os.walk(root):
        gone = sweep_stale(dirpath)
        removed += gone
        names = {p.name for p in gone}
        dirnames[:] = [n for n in dirnames if n not in names]
    return removed


class WorkflowGone(KeyboardInterrupt):
    """Raised in a stage's main thread when its workflow died or it was sent SIGTERM."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise WorkflowGone(f"stopped by signal {signum} (the workflow was stopped or killed)")


def _set_pdeathsig(sig: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass


_installed = False


def watch_workflow() -> None:
    """Make this stage process stop when its workflow is gone (see the module docstring).

    A no-op outside a workflow (no :data:`WATCH_ENV`), off the main thread, or when called twice.
    """
    global _installed
    raw = os.environ.get(WATCH_ENV, "")
    if _installed or not raw.isdigit() or threading.current_thread() is not threading.main_thread():
        return
    pid = int(raw)
    if pid == os.getpid():
        return
    _installed = True
    signal.signal(signal.SIGTERM, _on_sigterm)
    # The parent is the job's shell, except under torchrun (its agent's spawning thread may end
    # before the worker does, which would fire the signal).
    if "LOCAL_RANK" not in os.environ:
        _set_pdeathsig(signal.SIGTERM)
    me = os.getpid()

    def watch() -> None:
        while pid_alive(pid):
            time.sleep(POLL_S)
        print(f"workflow process {pid} is gone: stopping", file=sys.stderr, flush=True)
        os.kill(me, signal.SIGTERM)
        time.sleep(GRACE_S)
        os._exit(128 + signal.SIGKILL)

    threading.Thread(target=watch, name="scalenas-watch-workflow", daemon=True).start()
