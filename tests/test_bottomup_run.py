"""End to end: params/bottomup_tiny.yaml, as the README gives it, in a fresh git clone of the
committed branch (`snakemake --cores 2 --config params=params/bottomup_tiny.yaml`): the report
holds the bottom-up Pareto front, and every fine-tuned model scores a val AP above the untrained
network of its architecture."""
from __future__ import annotations

import dataclasses
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
                       capture_output=True, text=True, timeout=5400)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    print(f"bottom-up tiny pipeline: {time.time() - t0:.0f} s")
    return root


def test_report_holds_the_bottom_up_front(run):
    report = (run / "results" / "report" / "REPORT.md").read_text()
    assert "bottomup" in report
    assert (run / "results" / "report" / "bottomup_pareto.png").stat().st_size > 0
    front = (run / "results" / "report" / "plots" / "bottomup_front.csv").read_text().splitlines()
    assert len(front) >= 2  # header and at least one front member


def test_finetuned_models_beat_the_untrained_network(run):
    import torch

    from pipeline import config as pc
    from pipeline.nets.export import StandaloneNet, load_model
    from pipeline.tasks import REGISTRY

    metrics = json.loads((run / "results" / "report" / "metrics.json").read_text())
    models = metrics["bottomup"]["models"]
    assert set(models) == {"B-small", "B-large"}
    cfg = pc.load_params(run / "params" / "bottomup_tiny.yaml")
    section = cfg.bottomup
    task = REGISTRY["bottomup"].from_params(
        dataclasses.replace(section, root=str(run / section.root)), seed=0)
    torch.manual_seed(0)
    for name, m in models.items():
        assert m["metric"] == "AP" and m["reload_matches"]
        net = load_model(run / "results" / "bottomup" / "finetune" / name / "model")
        untrained = StandaloneNet("bottomup", section.width, None, net.arch).eval()
        base = task.evaluate(untrained, "val")["AP"]
        assert m["finetuned"] > base, (name, m["finetuned"], base)
