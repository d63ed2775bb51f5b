"""``results/report/AUDIT.md``: the ranking audit of every audited task on one page beside
``REPORT.md`` (the headline figures first, then each task's table and scatter figure).

    python -m pipeline.audit.summary --out results/report/AUDIT.md \\
        results/seg/audit/ranking.json results/pose/audit/ranking.json
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from pipeline.audit.ranking import markdown
from pipeline.errors import InputError
from pipeline.io import atomic_write_text, read_json


def _f(v: Any, nd: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def headline(docs: Sequence[Mapping[str, Any]]) -> list[str]:
    """One row per task: the supernet's tau against the cost-only predictors, the spread, the
    protocol's repeatability and the picks' margins."""
    lines = ["| task | metric | tau supernet [95 % CI] | tau GFLOPs | tau params | "
             "largest - smallest | seed SD / arch SD | pick - random | pick - uniform |",
             "|---|---|---|---|---|---|---|---|---|"]
    for d in docs:
        st = d["stats"]
        s = st["supernet"]
        rep = st["repeatability"]
        inv = (rep["within_sd"] / rep["between_sd"]
               if rep.get("between_sd") else float("nan"))
        margins = {k: ", ".join(f"{c['pick']} {_f(c[k]['margin']['mean'])}"
                                for c in d["comparisons"] if k in c) or "n/a"
                   for k in ("random", "uniform")}
        lines.append(f"| {d['task']} | {d['metric']} | {_f(s['tau'])} [{_f(s['tau_lo'])}, "
                     f"{_f(s['tau_hi'])}] | {_f(st['gflops']['tau'])} | {_f(st['params']['tau'])} | "
                     f"{_f(st['largest_minus_smallest'])} | {_f(inv, 2)} | {margins['random']} | "
                     f"{margins['uniform']} |")
    return lines


def page(rankings: Sequence[Path], out: Path) -> str:
    docs = [read_json(p, "audit ranking", InputError) for p in rankings]
    parts = ["# Ranking audit", "",
             "Does the supernet rank architectures as training them stand-alone does? "
             "(docs/audit.md explains each figure.)", "", *headline(docs)]
    for p, d in zip(rankings, docs):
        fig = os.path.relpath(p.parent / "ranking.png", out.parent)
        body = markdown(d, fig).replace("# Ranking audit:", "## Ranking audit:", 1)
        parts += ["", body.rstrip()]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("rankings", nargs="+", type=Path)
    args = ap.parse_args(argv)
    atomic_write_text(args.out, page(args.rankings, args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
