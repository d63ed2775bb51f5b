"""The training and search stages as stages, on tiny data (seg, W8, CPU): the teacher, one
search shard, the merge, the random-search baseline and ``make_evaluator``, each through its
entry point (``main(argv)``) with a real parameter file, as the workflow runs them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipeline import config as pc
from pipeline.data.synth import generate_cityscapes
from pipeline.nets.checkpoint import load_state_dict_file
from pipeline.nets.supernet import SuperNet
from pipeline.search.candidates import read_candidates
from pipeline.stages.build import task_from_config, load_calibration, make_evaluator
from pipeline.search.table import load_all_results
from pipeline.space.sample import smallest
from pipeline.stages import random_search, sample, search_merge, search_shard, teacher


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    generate_cityscapes(root / "cs", 0, num_train=12, num_val=2, size_hw=(64, 96))
    doc = {"tasks": ["seg"], "data": {"builtin": False},
           "seg": {"root": str(root / "cs"), "width": 8, "crop_size": [64, 64],
                   "search_fraction": 0.25},
           "teacher": {"seg": {"iterations": 2, "batch_size": 2, "checkpoint_every": 1}},
           "calibration": {"images": 2, "batch_size": 2},
           "search": {"random": {"fusion_probs": [0.2, 0.8], "depth_candidates": [[2, 3]],
                                 "samples_per_cell": 1, "shards": 2},
                      "evolution": {"generations": 1, "population": 3, "parents": 2,
                                    "shards": 1}},
           "tracking": {"enabled": False}}
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(doc))
    ckpt = root / "supernet.pt"
    torch.save(SuperNet("seg", width=8, seed=0).state_dict(), ckpt)
    return root, params, ckpt


def test_teacher_stage_trains_calibrates_and_scores(run, capsys):
    root, params, _ = run
    out = root / "teacher"
    rc = teacher.main(["--params", str(params), "--task", "seg", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iterations"] == 2.0 and 0.0 <= metrics["search_score"] <= 1.0
    assert np.isfinite(metrics["first_loss"]) and np.isfinite(metrics["final_loss"])
    assert json.loads((out / "arch.json").read_text())["modules"]
    state = load_state_dict_file(out / "model.pt")
    net = SuperNet("seg", width=8)
    net.load_state_dict(state)  # a loadable supernet-shaped checkpoint
    # Run again into the finished directory: the stage refuses nothing and gives the same model.
    first = (out / "model.pt").read_bytes()
    assert teacher.main(["--params", str(params), "--task", "seg", "--out",
                         str(root / "teacher2")]) == 0
    assert (root / "teacher2" / "model.pt").read_bytes() == first  # deterministic given a seed


def shard_args(root: Path, params: Path, ckpt: Path, shard: int) -> list[str]:
    return ["--phase", "search_random", "--params", str(params), "--task", "seg", "--out",
            str(root / "sample" / f"shard_{shard}"), "--candidates",
            str(root / "sample" / "candidates.json"), "--shard", str(shard),
            "--checkpoint", str(ckpt)]


@pytest.fixture(scope="module")
def shards(run):
    root, params, ckpt = run
    assert sample.main(["--params", str(params), "--task", "seg", "--out",
                        str(root / "sample")]) == 0
    for s in (0, 1):
        assert search_shard.main(shard_args(root, params, ckpt, s)) == 0
    return root / "sample"


def test_search_shard_stage_evaluates_its_candidates_calibrated_on_train(run, shards):
    root, params, _ = run
    cl = read_candidates(shards / "candidates.json")
    task = task_from_config("seg", pc.load_params(params))
    search = {s.name for s in task.samples("search")}
    for s in (0, 1):
        rows = [json.loads(line) for line in
                (shards / f"shard_{s}" / "rows.jsonl").read_text().splitlines() if line.strip()]
        assert sorted(r["arch_id"] for r in rows) == sorted(c.arch.arch_id for c in cl.shard(s))
        assert all(0.0 <= r["score"] <= 1.0 and r["gflops"] > 0 for r in rows)
        calib = json.loads((shards / f"shard_{s}" / "calibration.json").read_text())
        assert calib["split"] == "train" and calib["num_images"] == 2
        assert not set(calib["images"]) & search


def test_search_shard_stage_bad_checkpoint_one_line(run, shards, capsys, tmp_path):
    root, params, _ = run
    wrong = tmp_path / "w16.pt"
    torch.save(SuperNet("seg", width=16, seed=0).state_dict(), wrong)
    args = shard_args(root, params, wrong, 0)
    args[args.index("--out") + 1] = str(tmp_path / "out")
    rc = search_shard.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and str(wrong) in err[0], err
    assert not (tmp_path / "out" / "rows.jsonl").exists()


def test_merge_stage_table_front_and_hypervolume(run, shards, capsys):
    root, params, _ = run
    out = shards / "merged"
    common = ["--phase", "search_random", "--params", str(params), "--task", "seg",
              "--candidates", str(shards / "candidates.json")]
    assert search_merge.main([*common, "--out", str(out), "--shards", str(shards / "shard_0"),
                              str(shards / "shard_1")]) == 0, capsys.readouterr().err
    res = load_all_results([out / "results.csv"])
    assert len(res) == len(read_candidates(shards / "candidates.json").candidates)
    front = pd.read_csv(out / "front.csv")
    assert 1 <= len(front) <= len(res) and front["gflops"].is_monotonic_increasing
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cumulative"]["hypervolume"] > 0
    assert summary["this"]["evaluated"] == len(res) and (out / "front.png").stat().st_size > 0
    # A shard missing: one line, nothing written.
    rc = search_merge.main([*common, "--out", str(shards / "merged_bad"),
                            "--shards", str(shards / "shard_0")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "missing from the shards" in err[0]
    assert not (shards / "merged_bad" / "results.csv").exists()


def test_random_search_stage_draws_new_candidates(run, shards, capsys):
    root, params, _ = run
    pool = shards / "merged" / "results.csv"
    if not pool.exists():
        pytest.skip("needs the merge test's table")
    out = root / "random"
    args = ["--params", str(params), "--task", "seg", "--out", str(out), "--pool", str(pool)]
    assert random_search.main(args) == 0, capsys.readouterr().err
    cl = read_candidates(out / "candidates.json")
    assert cl.stage == "random" and len(cl.candidates) == 1 * 3  # generations x population
    assert not {c.arch.arch_id for c in cl.candidates} & set(load_all_results([pool])["arch_id"])
    first = (out / "candidates.json").read_bytes()
    assert random_search.main([*args[:5], str(root / "random2"), *args[6:]]) == 0
    assert (root / "random2" / "candidates.json").read_bytes() == first


def test_make_evaluator_scores_as_calibrate_then_evaluate(run):
    _, params, ckpt = run
    cfg = pc.load_params(params)
    evaluator, calib = make_evaluator("seg", cfg, ckpt, "cpu", stage="sample", generation=0,
                                      cache_mb=cfg.run.search_cache_mb)
    from pipeline.search.candidates import Candidate
    arch = smallest("seg")
    row = evaluator(Candidate(0, 0, "g", 0.5, "2-3", arch))
    evaluator.close()
    assert row.arch_id == arch.arch_id and row.stage == "sample" and row.gflops > 0
    assert set(row.timing) >= {"wall_s", "calib_s", "eval_s", "forward_s", "overhead_s"}
    # The same score by hand: a fresh supernet, calibrated on the same train images, scored on
    # the whole search split.
    task = task_from_config("seg", cfg)
    net = SuperNet("seg", width=8)
    net.load_state_dict(load_state_dict_file(ckpt))
    net.set_arch(arch)
    load_calibration(task, cfg, "cpu").calibrate(net)
    ref = task.evaluate(net, "search", "cpu", batch_size=2)
    assert row.score == pytest.approx(ref["score"], abs=1e-6)
    assert calib.indices == load_calibration(task, cfg, "cpu").indices
