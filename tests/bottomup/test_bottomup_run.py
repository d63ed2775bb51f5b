"""End to end: params/bottomup_tiny.yaml as the README gives it, in a fresh git clone of the
committed branch (`snakemake --cores 2 --config params=params/bottomup_tiny.yaml`).

The report holds the bottom-up Pareto front; every fine-tuned model scores a val AP above the
untrained network of its architecture; `scalenas eval` on a model directory prints the report's
figure."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, REPO, clone_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bottomup-run") / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(root)], check=True, timeout=120)
    t0 = time.time()
    r = subprocess.run([str(BIN / "snakemake"), "--cores", "2", "--config",
                        "params=params/bottomup_tiny.yaml"], cwd=root, env=clone_env(root),
                       capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    print(f"bottom-up tiny pipeline: {time.time() - t0:.0f} s")
    return root


def test_report_holds_the_bottom_up_front(run):
    report = (run / "results" / "report" / "REPORT.md").read_text()
    assert "## bottomup" in report and "bottomup_pareto.png" in report
    assert (run / "results" / "report" / "bottomup_pareto.png").stat().st_size > 0
    front = (run / "results" / "report" / "plots" / "bottomup_front.csv").read_text().splitlines()
    assert len(front) >= 2  # header and at least one front member


def test_finetuned_models_beat_the_untrained_network(run, monkeypatch):
    import torch

    from pipeline import config as pc
    from pipeline.nets.export import StandaloneNet, load_model
    from pipeline.stages.build import task_from_config

    metrics = json.loads((run / "results" / "report" / "metrics.json").read_text())
    models = metrics["bottomup"]["models"]
    assert set(models) == {"B-small", "B-large"}
    monkeypatch.chdir(run)  # the recipe's data root is relative to the clone
    cfg = pc.load_params(run / "params" / "bottomup_tiny.yaml")
    task = task_from_config("bottomup", cfg)
    torch.manual_seed(0)
    for name, m in models.items():
        assert m["metric"] == "AP" and m["reload_matches"]
        net = load_model(run / "results" / "bottomup" / "finetune" / name / "model")
        untrained = StandaloneNet("bottomup", cfg.bottomup.width, None, net.arch).eval()
        base = task.evaluate(untrained, "val")["AP"]
        print(f"{name}: untrained {base:.4f}, inherited {m['inherited']:.4f}, "
              f"fine-tuned {m['finetuned']:.4f} AP")
        assert m["finetuned"] > base, (name, m["finetuned"], base)


def test_eval_of_a_model_directory_prints_the_reports_figure(run, tmp_path):
    model = run / "results" / "bottomup" / "finetune" / "B-small" / "model"
    record = json.loads((model.parent / "finetune.json").read_text())
    out = tmp_path / "eval.json"
    r = subprocess.run([str(BIN / "scalenas"), "eval", "--model", str(model), "--data",
                        str(run / "data" / "builtin" / "coco"), "--threads", "1", "-o", str(out)],
                       cwd=run, env=clone_env(run), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["score"] == record["finetuned"]
    assert "boxes none (bottom-up)" in r.stdout and "| AP | AP50 |" in r.stdout
