"""Report outputs from records and a results table: figure, markdown table, metrics, plot data."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.report.figures import ReferencePoint, group_labels, pareto_figure
from pipeline.finetune.records import FinetuneRecord, RecordError
from pipeline.report.tables import (final_models_table, finetune_plot_frame, metrics_doc,
                                    write_csv, write_json)
from pipeline.search.jobs import front_table


def _record(name: str, before: float, after: float, gflops: float = 2.0) -> FinetuneRecord:
    return FinetuneRecord(name=name, task="seg", arch_id="0123456789abcdef", rule="front",
                          metric="mIoU", params=123456, gflops=gflops, input_hw=(64, 64), width=8,
                          inherited=before, finetuned=after, reloaded=after, iterations=10,
                          epochs=1.0, wall_s=1.0, model_dir="model")


def _candidates() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    n = 30
    return pd.DataFrame({"stage": ["sample"] * 10 + ["evolve"] * 20,
                         "generation": [0] * 10 + [1] * 10 + [2] * 10,
                         "gflops": rng.uniform(1, 3, n), "score": rng.uniform(0, 1, n),
                         "arch": ["{}"] * n})


def test_group_labels_split_stage_and_generation():
    labels = group_labels(_candidates())
    assert list(labels.unique()) == ["random sampling", "evolution g1", "evolution g2"]


@pytest.mark.parametrize("ref_score", [0.4, None])
def test_pareto_figure_writes_png(tmp_path, ref_score):
    table = _candidates()
    out = tmp_path / "fig" / "seg_pareto.png"
    pareto_figure(table, front_table(table), [_record("a", 0.2, 0.5), _record("b", 0.3, 0.6, 2.5)],
                  ReferencePoint("HRNet", 2.2, ref_score), "seg", "mIoU", out)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 300
    assert [p.name for p in out.parent.iterdir()] == ["seg_pareto.png"]  # no temp files left


def test_table_and_metrics(tmp_path):
    recs = [_record("a", 0.2, 0.5), _record("b", 0.3, 0.25)]
    md = final_models_table(recs)
    lines = md.strip().splitlines()
    assert len(lines) == 4 and all(l.count("|") == lines[0].count("|") for l in lines)
    assert "| 0.2000 | 0.5000 | +0.3000 |" in lines[2]
    assert "-0.0500" in lines[3]
    # Without predicted latencies (a GFLOPs search): the columns the table always had.
    assert lines[0] == ("| task | model | arch id | selected by | input | params (M) | GFLOPs "
                        "| metric | inherited | fine-tuned | gain | reloaded |")
    assert final_models_table(recs, {}) == md
    doc = metrics_doc(recs, {"seg": {"front_size": 3}})
    assert doc["seg"]["models"]["a"]["gain"] == pytest.approx(0.3)
    assert doc["seg"]["search"]["front_size"] == 3
    write_json(tmp_path / "metrics.json", doc)
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(doc))
    frame = finetune_plot_frame(recs)
    write_csv(tmp_path / "ft.csv", frame)
    back = pd.read_csv(tmp_path / "ft.csv")
    assert len(back) == 4 and set(back["phase"]) == {"inherited", "finetuned"}


def test_record_round_trip_and_errors(tmp_path):
    rec = _record("a", 0.2, 0.5)
    rec.save(tmp_path / "r.json")
    assert FinetuneRecord.load(tmp_path / "r.json") == rec
    with pytest.raises(RecordError, match="not found"):
        FinetuneRecord.load(tmp_path / "missing.json")
    doc = rec.to_dict()
    del doc["finetuned"]
    with pytest.raises(RecordError, match="missing key.*finetuned"):
        FinetuneRecord.from_dict(doc, "r.json")


def test_html_pages_of_snakemakes_report():
    from pipeline.report.pages import final_models_html, parameters_html, software_html

    page = final_models_html([_record("a<b", 0.2, 0.5)])
    assert "<td>a&lt;b</td>" in page and '<td class="num">+0.3000</td>' in page
    page = parameters_html([{"phase": "search_random", "task": "seg",
                             "params": {"search": {"random": {"samples_per_cell": 3,
                                                              "fusion_probs": [0.5]}},
                                        "seg": {"flops_size": None}}},
                            {"phase": "report", "task": None, "params": {"report": {"dpi": 120}}}])
    assert "<h2>search_random (seg)</h2>" in page and "<h2>report</h2>" in page
    assert "<td>search.random.samples_per_cell</td><td>3</td>" in page
    assert "<td>search.random.fusion_probs</td><td>[0.5]</td>" in page
    assert "<td>seg.flops_size</td><td>null</td>" in page
    page = software_html("0123abc")
    assert "<td>0123abc</td>" in page and "<td>torch</td>" in page and "<td>python</td>" in page


def test_final_models_table_with_predicted_latency():
    """A latency search: a predicted-latency column after GFLOPs ("-" for a model without one),
    in the markdown table and its HTML page."""
    from pipeline.report.pages import final_models_html

    recs = [_record("a", 0.2, 0.5), _record("b", 0.3, 0.25)]
    lines = final_models_table(recs, {("seg", "a"): 12.345}).strip().splitlines()
    assert "| GFLOPs | predicted latency (ms) | metric |" in lines[0]
    assert all(l.count("|") == lines[0].count("|") for l in lines)
    assert "| 2 | 12.35 | mIoU |" in lines[2] and "| 2 | - | mIoU |" in lines[3]
    page = final_models_html(recs, {("seg", "a"): 12.345})
    assert "<th>GFLOPs</th><th>predicted latency (ms)</th><th>metric</th>" in page
    assert '<td class="num">12.35</td>' in page and "<td class=\"num\">-</td>" in page
    assert final_models_html(recs) == final_models_html(recs, {})
    assert "predicted latency" not in final_models_html(recs)
