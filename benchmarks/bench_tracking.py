"""Many writers, bounded: concurrent candidate-logging jobs against a shared MLflow server on
PostgreSQL, and against the one-machine SQLite store.

Each writer is a process doing what a search merge job does (pipeline.stages.search_merge): open
a stage run, then log its candidates as child runs (tags, ~36 params, metrics, and the
``arch.json`` / ``arch.npy`` artifacts) through ``pipeline.tracking``. All writers start
together; the figure is candidate runs stored per second of wall time, and every run must be in
the store once (none lost, none twice), with no error and no retry (urllib3's "Retrying" warnings
are counted).

    python benchmarks/bench_tracking.py                       # 8 writers on PostgreSQL, 2 on SQLite
    python benchmarks/bench_tracking.py --pg-writers 8 --sqlite-writers 2 --candidates 40

Needs Debian's ``postgresql`` and ``pip install -e '.[team]'`` (as root, PostgreSQL runs as the
``postgres`` user). Prints figures; asserts nothing about speed.
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

from pipeline import servers, tracking


def rows(writer: int, n: int) -> list[dict]:
    """Candidate records shaped like the search's (see pipeline.stages.search_merge)."""
    out = []
    for i in range(n):
        arch = {"id": f"{writer:02d}{i:06d}", "modules": [[writer, i, k] for k in range(12)]}
        params = {f"depth.branch{b}": str(2 + (i + b) % 3) for b in range(4)}
        params.update({f"fusion.stage{s}.{m}": str(((i * 7 + s + m) % 10) / 10)
                       for s in (2, 3, 4) for m in range(3)})
        params.update({f"cell.{k}": str(k * i) for k in range(19)})
        out.append({"name": f"bench:w{writer}:c{i}",
                    "params": params,
                    "metrics": {"params": 1e5 + i, "gflops": 0.1 + i / 1000,
                                "score": 0.2 + (i % 17) / 100, "metric_miou": 0.3},
                    "tags": {tracking.TAG_TASK: "seg", tracking.TAG_STAGE: "random",
                             tracking.TAG_GENERATION: "0", tracking.TAG_ARCH_ID: arch["id"],
                             "bench.writer": str(writer)},
                    "artifacts": {"arch.json": str(arch), "arch.npy": bytes(256)}})
    return out


class _Retries(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.n = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "Retrying" in record.getMessage():
            self.n += 1


def _writer(uri: str, writer: int, n: int, start: mp.Event, q: mp.Queue) -> None:
    retries = _Retries()
    logging.getLogger("urllib3").addHandler(retries)
    recs = rows(writer, n)
    start.wait()
    t0 = time.monotonic()
    err = ""
    try:
        run = tracking.start_run(f"bench:writer{writer}", uri=uri, experiment="bench",
                                 parent_run_id="", tags={tracking.TAG_KIND: "stage"})
        run.log_candidates(recs)
        run.end()
    except Exception as e:  # counted and shown, never hidden
        err = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
    q.put((writer, time.monotonic() - t0, err, retries.n))


def measure(uri: str, writers: int, n: int) -> dict:
    tracking.init_store(uri, "bench")  # created once, before the writers (see toolchain notes)
    ctx = mp.get_context("spawn")
    start, q = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(uri, w, n, start, q)) for w in range(writers)]
    for p in procs:
        p.start()
    time.sleep(3.0)  # every writer has imported mlflow and built its rows
    t0 = time.monotonic()
    start.set()
    done = [q.get(timeout=1800) for _ in procs]
    wall = time.monotonic() - t0
    for p in procs:
        p.join()
    client = tracking._client(uri)
    exp = client.get_experiment_by_name("bench")
    got = client.search_runs([exp.experiment_id], "tags.scalenas.kind = 'candidate'",
                             max_results=50000)
    names = [r.info.run_name for r in got]
    return {"writers": writers, "expected": writers * n, "stored": len(got),
            "twice": len(names) - len(set(names)), "wall_s": wall,
            "runs_per_s": len(got) / wall, "slowest_writer_s": max(d[1] for d in done),
            "errors": [d[2] for d in done if d[2]], "retries": sum(d[3] for d in done)}


def show(store: str, r: dict) -> None:
    print(f"{store:<10} writers {r['writers']:>2}  candidate runs {r['stored']}/{r['expected']} "
          f"(twice: {r['twice']})  {r['wall_s']:6.1f} s  {r['runs_per_s']:6.1f} runs/s  "
          f"errors {len(r['errors'])}  retries {r['retries']}")
    for e in r["errors"]:
        print(f"           error: {e}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pg-writers", type=int, default=8)
    ap.add_argument("--sqlite-writers", type=int, default=2)
    ap.add_argument("--candidates", type=int, default=40, help="candidate runs per writer")
    ap.add_argument("--server-workers", type=int, default=4,
                    help="mlflow server --workers (make ui uses 1; a team server more)")
    args = ap.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
        why = servers.missing()
        if why:
            print(f"PostgreSQL skipped: {why}")
        else:
            with servers.Postgres() as pg, servers.MlflowServer(
                    pg.uri, Path(tmp) / "artifacts", workers=args.server_workers) as srv:
                results["postgresql"] = measure(srv.uri, args.pg_writers, args.candidates)
        db = Path(tmp) / "results" / tracking.DB_NAME
        results["sqlite"] = measure(f"sqlite:///{db}", args.sqlite_writers, args.candidates)
    print(f"{args.candidates} candidate runs per writer (create, tags + params + metrics in one "
          "batch, 2 artifacts, terminate)")
    for store, r in results.items():
        show(store, r)
    bad = any(r["errors"] or r["retries"] or r["twice"] or r["stored"] != r["expected"]
              for r in results.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
