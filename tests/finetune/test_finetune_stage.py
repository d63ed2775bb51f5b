"""The finetune and report stages end to end on tiny built-in data (seg, W8, CPU): selection from
a front, HRNet reference, fine-tuning job, report; and the bad-input errors of the selection."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pipeline.cost import profile
from pipeline.data.synth import generate_cityscapes
from pipeline.nets.export import load_model
from pipeline.nets.supernet import SuperNet
from pipeline.search.table import Row, rows_to_frames, write_table
from pipeline.space.sample import sample_arch
from pipeline.stages import finetune as finetune_stage
from pipeline.stages import report as report_stage


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    generate_cityscapes(root / "cs", 0, num_train=20, num_val=4, size_hw=(64, 128))
    ckpt = root / "supernet.pt"
    torch.save(SuperNet("seg", width=8, seed=0).state_dict(), ckpt)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        arch = sample_arch(rng, 0.5, (2, 3) if i < 3 else (4, 5), "seg")
        c = profile(arch, "seg", 8, (64, 64))
        rows.append(Row(arch_id=arch.arch_id, stage="sample" if i < 4 else "evolve",
                        generation=0 if i < 4 else 1, index=i, shard=0, group="g",
                        fusion_prob=0.5, depth_candidates="2,3", params=int(c.params),
                        gflops=float(c.gflops), score=float(rng.random()), metrics={},
                        timing={"wall_s": 1.0, "calib_s": 0.1, "eval_s": 0.5, "forward_s": 0.5,
                                "overhead_s": 0.5},
                        arch=arch.to_dict()))
    table, _ = rows_to_frames(rows)
    write_table(table, root / "all.csv")
    from pipeline.search.jobs import front_table
    front = front_table(table)
    write_table(front, root / "front.csv")
    (root / "summary.json").write_text(json.dumps({
        "sample": {"hypervolume": 0.1}, "evolution": {"hypervolume": 0.2},
        "screening": [{"generation": 1, "surrogate_loo_r2": 0.3, "children": 2,
                       "surrogate_mae": 0.01},
                      {"generation": 2, "surrogate_loo_r2": 0.5, "children": 4,
                       "surrogate_mae": 0.02, "surrogate_r": 0.875},
                      {"generation": 3, "r": 0.5}]}))  # another version's keys: left out
    return root, front


def _params(root: Path, models: list[dict]) -> Path:
    doc = {"tasks": ["seg"], "data": {"builtin": False},
           "seg": {"root": str(root / "cs"), "width": 8, "crop_size": [64, 64],
                   "search_fraction": 0.2},
           "calibration": {"images": 2, "batch_size": 2},
           "finetune": {"seg": {"iterations": 4, "batch_size": 2, "models": models,
                                "optimizer": {"name": "adam", "lr": 0.001, "weight_decay": 0.0},
                                "schedule": {"name": "constant"}}},
           "tracking": {"enabled": False}}
    p = root / f"params_{abs(hash(json.dumps(models)))}.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_select_finetune_report(setup, capsys):
    root, front = setup
    mid = float(front["gflops"].iloc[len(front) // 2])
    params = _params(root, [{"name": "lo", "front_fraction": 0.0}, {"name": "mid", "gflops": mid},
                            {"name": "hr", "arch": "hrnet"}])
    common = ["--params", str(params), "--task", "seg", "--checkpoint", str(root / "supernet.pt")]
    sel_dir = root / "out" / "seg" / "finetune" / "select"
    assert finetune_stage.main(["--select", *common, "--front", str(root / "front.csv"),
                                "--out", str(sel_dir)]) == 0, capsys.readouterr().err
    sel = json.loads((sel_dir / "selection.json").read_text())
    assert [m["name"] for m in sel["models"]] == ["lo", "mid", "hr"]
    assert sel["models"][0]["arch_id"] == front["arch_id"].iloc[0]
    assert sel["reference"]["label"] == "HRNet-W8" and 0 <= sel["reference"]["search_score"] <= 1

    rec_path = root / "out" / "seg" / "finetune" / "lo" / "finetune.json"
    assert finetune_stage.main(["--model", "lo", *common, "--selection", str(sel_dir / "selection.json"),
                                "--out", str(rec_path.parent)]) == 0, capsys.readouterr().err
    rec = json.loads(rec_path.read_text())
    assert rec["reloaded"] == rec["finetuned"] and rec["iterations"] == 4
    net = load_model(rec_path.parent / "model")
    assert net.arch.arch_id == front["arch_id"].iloc[0]
    # The deployable artifact next to the model: optimized TorchScript, checksummed in its record.
    deployed = json.loads((rec_path.parent / "model" / "deploy" / "optimized.ts.json").read_text())
    assert "deploy" not in json.loads((rec_path.parent / "model" / "model.json").read_text())
    assert deployed["optimized"] and deployed["format"] == "torchscript"
    assert (rec_path.parent / "model" / "deploy" / deployed["file"]).is_file()
    assert deployed["other_sizes"]

    rep = root / "out" / "report"
    assert report_stage.main([
        "--params", str(params), "--out", str(rep),
        "--candidates", f"seg={root / 'all.csv'}", "--front", f"seg={root / 'front.csv'}",
        "--summary", f"seg={root / 'summary.json'}", "--selection", f"seg={sel_dir / 'selection.json'}",
        "--records", str(rec_path)]) == 0, capsys.readouterr().err
    md = (rep / "REPORT.md").read_text()
    assert "seg_pareto.png" in md and "../seg/finetune/lo/model" in md and "| lo |" in md
    assert "measured score of the evaluated children: gen 1: MAE 0.01, gen 2: r 0.88\n" in md
    assert Image.open(rep / "seg_pareto.png").format == "PNG"
    metrics = json.loads((rep / "metrics.json").read_text())
    assert metrics["seg"]["models"]["lo"]["finetuned"] == rec["finetuned"]
    assert metrics["seg"]["search"]["hypervolume_evolution"] == 0.2
    assert (rep / "plots" / "seg_candidates.csv").read_text().count("\n") == 7


@pytest.mark.parametrize("models, msg", [
    ([{"name": "S9", "gflops": 1e-6}], r"'S9'.*budget .* outside the final Pareto front"),
    ([{"name": "P2", "arch": "missing/nope.json"}], r"'P2'.*nope\.json.*not found"),
])
def test_selection_errors_are_one_line(setup, capsys, models, msg):
    root, _ = setup
    out = root / "bad" / "select"
    rc = finetune_stage.main(["--select", "--params", str(_params(root, models)), "--task", "seg",
                              "--checkpoint", str(root / "supernet.pt"),
                              "--front", str(root / "front.csv"), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    import re
    assert re.search(msg, err[0]), err[0]
    assert not out.exists()
