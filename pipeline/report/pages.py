"""Self-contained HTML pages of the report stage, for Snakemake's own report
(``snakemake --report report.zip``), which shows images and HTML inline and offers every other
file as a download:

- ``final_models.html``: the table of final models (the same rows as ``final_models.md``);
- ``parameters.html``: the resolved values every phase read, one table per per-rule parameter
  file (``results/params/...``, schema defaults included);
- ``software.html``: Python, the platform, the project's commit and the versions of the packages
  the stages import, as installed in the environment that ran the report job (every job runs in
  that environment unless Snakemake deploys per-rule conda environments).
"""
from __future__ import annotations

import html
import json
import platform
import sys
from importlib import metadata
from typing import Any, Iterable, Mapping, Sequence

from pipeline.finetune.records import FinetuneRecord

#: Distributions whose versions ``software.html`` lists (the project's dependencies).
PACKAGES = ("torch", "numpy", "pandas", "matplotlib", "pillow", "pycocotools", "pyyaml",
            "jsonschema", "snakemake", "dvc", "mlflow")

_STYLE = ("body{font-family:sans-serif;margin:1em}"
          "table{border-collapse:collapse;margin-bottom:1.5em}"
          "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#eee}"
          "td.num{text-align:right;font-family:monospace}code{font-family:monospace}")


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{_STYLE}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
            f"{body}</body></html>\n")


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]], num: Sequence[int] = ()) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        cells = [("<td class=\"num\">" if i in num else "<td>") + html.escape(str(c)) + "</td>"
                 for i, c in enumerate(row)]
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out + ["</table>"]) + "\n"


def final_models_html(records: Sequence[FinetuneRecord],
                      latency_ms: Mapping[tuple[str, str], float] | None = None) -> str:
    """The final models: cost and the val metric inherited, fine-tuned, reloaded (``latency_ms``:
    a predicted-latency column, as in :func:`pipeline.report.tables.final_models_table`)."""
    lat = dict(latency_ms or {})
    head: tuple[str, ...] = ("task", "model", "arch id", "selected by", "input", "params (M)",
                             "GFLOPs", "metric", "inherited", "fine-tuned", "gain", "reloaded")
    rows = [[r.task, r.name, r.arch_id, r.rule, f"{r.input_hw[0]}x{r.input_hw[1]}",
             f"{r.params / 1e6:.3f}", f"{r.gflops:.4g}", r.metric, f"{r.inherited:.4f}",
             f"{r.finetuned:.4f}", f"{r.gain:+.4f}", f"{r.reloaded:.4f}"] for r in records]
    num: tuple[int, ...] = (5, 6, 8, 9, 10, 11)
    if lat:
        head = head[:7] + ("predicted latency (ms)",) + head[7:]
        for r, row in zip(records, rows):
            v = lat.get((r.task, r.name))
            row.insert(7, f"{v:.4g}" if v is not None else "-")
        num = (5, 6, 7, 9, 10, 11, 12)
    return _page("Final models", _table(head, rows, num=num))


def _flatten(doc: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(doc, dict) and doc:
        return [kv for k in sorted(doc) for kv in _flatten(doc[k], f"{prefix}{k}.")]
    return [(prefix[:-1], doc)]


def parameters_html(docs: Sequence[dict[str, Any]]) -> str:
    """One table per per-rule parameter file ``{"phase", "task", "params"}``, in the given order."""
    parts = []
    for d in docs:
        where = d["phase"] + (f" ({d['task']})" if d.get("task") else "")
        rows = [(k, json.dumps(v)) for k, v in _flatten(d.get("params") or {})]
        parts.append(f"<h2>{html.escape(where)}</h2>\n" + _table(("key", "value"), rows))
    return _page("Parameters", "".join(parts))


def package_versions(names: Iterable[str] = PACKAGES) -> list[tuple[str, str]]:
    out = []
    for n in names:
        try:
            out.append((n, metadata.version(n)))
        except metadata.PackageNotFoundError:
            out.append((n, "not installed"))
    return out


def software_html(commit: str) -> str:
    rows = [("python", platform.python_version()), ("platform", platform.platform()),
            ("scalenas-pipeline (git commit)", commit), *package_versions()]
    note = (f"<p>Environment of the report job (<code>{html.escape(sys.executable)}</code>).</p>\n")
    return _page("Software", note + _table(("software", "version"), rows))
