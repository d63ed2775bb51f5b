"""Stage ``report``: the Pareto figures, the table of final models, metrics and plot data.

One job for all tasks::

    python -m pipeline.stages.report --params results/params/report.json --out results/report \\
        --candidates seg=results/seg/search/final/all.csv \\
        --front seg=results/seg/search/final/front.csv \\
        --summary seg=results/seg/search/final/summary.json \\
        --selection seg=results/seg/finetune/select/selection.json \\
        --records results/seg/finetune/*/finetune.json [... the same for pose] \\
        --param-files results/params/data.json results/params/seg/prepare.json ...

writes ``REPORT.md`` (links everything), ``<task>_pareto.png``, ``final_models.md``,
``metrics.json`` (for ``dvc metrics``), ``plots/<task>_candidates.csv``, ``plots/<task>_front.csv``
and ``plots/finetune.csv`` (for ``dvc plots``), the HTML pages of Snakemake's report
(``final_models.html``, ``parameters.html`` from the per-rule parameter files, ``software.html``:
see :mod:`pipeline.report.pages`), and logs them all as MLflow artifacts.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipeline import tracking
from pipeline.io import atomic_write_text, read_json
from pipeline.space.arch import TASK_NAMES
from pipeline.stages.common import StageContext, StageInputError, run_stage
from pipeline.tracking import git_commit

#: What "the software" is on the report's software page: a run's own parameter edits or the
#: lineage step's data.dvc are not a different version of the pipeline.
CODE_PATHS = ("pipeline", "workflow", "Snakefile", "pyproject.toml")

PHASE = "report"
PLOT_COLUMNS = ["arch_id", "stage", "generation", "params", "gflops", "latency_ms", "score"]


def _task_path(text: str) -> tuple[str, Path]:
    task, sep, path = text.partition("=")
    if not sep or task not in TASK_NAMES or not path:
        raise argparse.ArgumentTypeError(f"expected TASK=PATH with TASK one of {', '.join(TASK_NAMES)}, got {text!r}")
    return task, Path(path)


def add_args(p: argparse.ArgumentParser) -> None:
    for name, hlp in (("candidates", "every evaluated candidate (search/final/all.csv)"),
                      ("front", "the final Pareto front (search/final/front.csv)"),
                      ("summary", "the search summary (search/final/summary.json)"),
                      ("selection", "the selection of the finetune stage (selection.json)")):
        p.add_argument(f"--{name}", type=_task_path, action="append", default=[],
                       metavar="TASK=PATH", help=hlp)
    p.add_argument("--records", type=Path, nargs="*", default=[],
                   help="finetune.json of every fine-tuned model")
    p.add_argument("--param-files", type=Path, nargs="*", default=[],
                   help="the per-rule parameter files of the run (results/params/...), listed in "
                        "parameters.html")


def _by_task(pairs: list[tuple[str, Path]], what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for task, path in pairs:
        if task in out:
            raise StageInputError(f"--{what} given twice for task {task}")
        out[task] = path
    return out


def _param_doc(path: Path) -> dict[str, Any]:
    doc = read_json(path, "per-rule parameter file", StageInputError)
    if not isinstance(doc, dict) or not isinstance(doc.get("phase"), str) \
            or not isinstance(doc.get("params"), dict):
        raise StageInputError(f"{path}: not a per-rule parameter file (expected the keys phase, "
                              "task and params)")
    return doc


def body(ctx: StageContext) -> dict[str, float]:
    from pipeline.report.figures import GFLOPS_LABEL, ReferencePoint, pareto_figure
    from pipeline.report.markdown import report_md, screening_line, task_section
    from pipeline.report.pages import final_models_html, parameters_html, software_html
    from pipeline.finetune.records import FinetuneRecord
    from pipeline.report.tables import (final_models_table, finetune_plot_frame, metrics_doc,
                                        write_csv, write_json)
    from pipeline.search.table import load_results

    cands = _by_task(ctx.args.candidates, "candidates")
    fronts = _by_task(ctx.args.front, "front")
    summaries = _by_task(ctx.args.summary, "summary")
    selections = _by_task(ctx.args.selection, "selection")
    tasks = [t for t in TASK_NAMES if t in cands]
    for t in tasks:
        if t not in fronts:
            raise StageInputError(f"--front missing for task {t}")
    records = [FinetuneRecord.load(p) for p in ctx.args.records]
    record_dirs = {(r.task, r.name): p.parent for r, p in zip(records, ctx.args.records)}
    dpi = int(ctx.cfg.report.dpi)
    draw_reference = bool(ctx.cfg.report.hrnet_reference)
    out, final = ctx.out, ctx.final_out

    from pipeline.tasks import task_class  # torch: only when the report is built

    search_metrics: dict[str, dict[str, Any]] = {}
    latency_ms: dict[tuple[str, str], float] = {}
    sections: list[str] = []
    for task in tasks:
        table = load_results(cands[task])
        front = load_results(fronts[task])
        recs = [r for r in records if r.task == task]
        reference = None
        sel = read_json(selections[task], "selection file", StageInputError) if task in selections else None
        if draw_reference and sel is not None and sel.get("reference"):
            ref = sel["reference"]
            reference = ReferencePoint(ref["label"], float(ref["gflops"]), ref.get("search_score"),
                                       note="(inherited weights, search split)",
                                       latency_ms=ref.get("latency_ms"))
        summary = read_json(summaries[task], "search summary", StageInputError) if task in summaries else {}
        # The search's cost axis (summary.json names it after a latency search).
        cost = summary.get("cost", "gflops") if isinstance(summary, dict) else "gflops"
        if cost not in table.columns or cost not in front.columns:
            raise StageInputError(f"{summaries[task]}: the search's cost axis is {cost!r}, but "
                                  f"{cands[task]} or {fronts[task]} has no such column")
        axis = {"cost": cost, "cost_label": GFLOPS_LABEL}
        if cost != "gflops":
            by_arch = dict(zip(table["arch_id"], table[cost]))
            # The label of the search's own front plots: predicted latency (ms, <CPU>, <N>
            # thread(s)), as summary.json records it.
            record_cost = {r.name: float(by_arch[r.arch_id]) for r in recs
                           if r.arch_id in by_arch}
            axis.update(cost_label=str(summary.get("cost_label") or
                                       f"predicted latency ({summary.get('cost_unit', 'ms')})"),
                        record_cost=record_cost)
            if cost == "latency_ms":  # the final-models table gets a predicted-latency column
                latency_ms.update({(task, name): v for name, v in record_cost.items()})
        metric = recs[0].metric if recs else task_class(task).metric
        fig = f"{task}_pareto.png"
        pareto_figure(table, front, recs, reference, task, metric, out / fig,
                      subtitle=f"{len(table)} candidates, front of {len(front)}", dpi=dpi,
                      **axis)
        write_csv(out / "plots" / f"{task}_candidates.csv",
                  table[[c for c in PLOT_COLUMNS if c in table.columns]])
        write_csv(out / "plots" / f"{task}_front.csv",
                  front[[c for c in PLOT_COLUMNS if c in front.columns]])
        sm: dict[str, Any] = {"evaluated": len(table), "front_size": len(front),
                              "best_score": float(table["score"].max())}
        for key in ("sample", "random", "evolution"):
            if isinstance(summary.get(key), dict) and "hypervolume" in summary[key]:
                sm[f"hypervolume_{key}"] = float(summary[key]["hypervolume"])
        if reference is not None:
            sm["hrnet_gflops"] = reference.gflops
            if reference.latency_ms is not None:
                sm["hrnet_latency_ms"] = float(reference.latency_ms)
            if reference.score is not None:
                sm["hrnet_search_score"] = float(reference.score)
        search_metrics[task] = sm
        sections.append(task_section(task, fig, sm, recs, record_dirs, reference, final,
                                     cands[task], fronts[task],
                                     screening_line(summary.get("screening"))))

    table_md = final_models_table(records, latency_ms)
    link = (tracking.candidates_url(ctx.run.uri, ctx.run.experiment_id)
            if ctx.run.experiment_id else "")
    if link:
        print(f"The candidates' runs in the MLflow UI: {link}", file=sys.stderr)
    atomic_write_text(out / "final_models.md", table_md)
    write_json(out / "metrics.json", metrics_doc(records, search_metrics))
    write_csv(out / "plots" / "finetune.csv", finetune_plot_frame(records))
    atomic_write_text(out / "REPORT.md",
                      report_md(sections, table_md, records, ctx.params_hash, link))
    # Snakemake's report (snakemake --report) shows HTML inline.
    atomic_write_text(out / "final_models.html", final_models_html(records, latency_ms))
    atomic_write_text(out / "parameters.html",
                      parameters_html([_param_doc(p) for p in ctx.args.param_files]))
    atomic_write_text(out / "software.html", software_html(git_commit(paths=CODE_PATHS)))
    ctx.run.log_artifact(out, "report")

    metrics: dict[str, float] = {"models": float(len(records)),
                                 "models_improved": float(sum(r.gain > 0 for r in records)),
                                 "models_reload_exact": float(sum(r.reloaded == r.finetuned
                                                                  for r in records))}
    for r in records:
        metrics[f"{r.task}.{r.name}.gain"] = r.gain
    return metrics


def main(argv: list[str] | None = None) -> int:
    return run_stage(PHASE, body, argv, add_args=add_args, needs_task=False)


if __name__ == "__main__":
    sys.exit(main())
