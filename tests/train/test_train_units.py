"""Pure parts of training: group schedule, learning rates, checkpoint files, configuration."""
from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch

from pipeline.config import ConfigError, SupernetTrainConfig, TrainConfig, make_section
from pipeline.space.sample import sample_group
from pipeline.train.checkpoint import (CheckpointError, fingerprint, load_resume, read_checkpoint,
                                       rng_state, save_checkpoint, set_rng_state)
from pipeline.train.runtime import TrainRun, fingerprint_settings
from pipeline.train.schedule import (LRSchedule, ScheduleError, group_index, parse_groups,
                                     subnet_at)


# -- groups ------------------------------------------------------------------------------------

def test_paper_groups_cycle_over_an_epoch():
    groups = parse_groups("paper", "seg")
    assert len(groups) == 11 and groups[0].name == "smallest" and groups[-1].name == "largest"
    seen = [subnet_at(groups, i, seed=3, task="seg")[0] for i in range(33)]
    assert seen == [i % 11 for i in range(33)]
    # the largest group is deterministic: depth 5 everywhere, every fusion
    _, arch = subnet_at(groups, 10, seed=3, task="seg")
    assert all(d == 5 for m in arch.modules for d in m.depths)
    _, small = subnet_at(groups, 11, seed=3, task="seg")
    assert all(d == 2 for m in small.modules for d in m.depths)


def test_configured_groups_and_subnet_is_function_of_iteration():
    spec = [{"name": "a", "fusion_prob": 0.0, "depths": [2]},
            {"name": "b", "fusion_prob": 0.5, "depths": [3, 4]},
            {"fusion_prob": 1.0, "depths": [5]}]
    groups = parse_groups(spec, "pose")
    assert [g.name for g in groups] == ["a", "b", "group2"]
    counts = np.bincount([group_index(i, 3) for i in range(30)], minlength=3)
    assert counts.tolist() == [10, 10, 10]
    # same (seed, iteration) -> same subnet, whatever came before (ranks, resumes)
    a = subnet_at(groups, 7, seed=1, task="pose")[1]
    for i in range(7):
        subnet_at(groups, i, seed=1, task="pose")
    assert subnet_at(groups, 7, seed=1, task="pose")[1] == a
    assert a == sample_group(np.random.default_rng([1, 7]), groups[1], "pose")
    # a different iteration of the same group differs (p=0.5 grid: practically always)
    assert subnet_at(groups, 10, seed=1, task="pose")[1] != a
    assert {d for m in a.modules for d in m.depths} <= {3, 4}


@pytest.mark.parametrize("spec, msg", [
    ("nope", "groups: expected 'paper'"),
    ([], "non-empty"),
    ([{"fusion_prob": 2.0, "depths": [2]}], "groups[0]"),
    ([{"fusion_prob": 0.5}], "missing ['depths']"),
    ([{"fusion_prob": 0.5, "depths": [2], "x": 1}], "unknown key(s) ['x']"),
    ([{"name": "a", "fusion_prob": 0.5, "depths": [2]}] * 2, "unique"),
])
def test_bad_groups(spec, msg):
    with pytest.raises(ScheduleError, match=None) as e:
        parse_groups(spec, "seg")
    assert msg in str(e.value)


# scalenas.md section 4, written out: the smallest group (fusion 0.1 for seg, 0 for pose, depth
# 2), the 3 x 3 grid of fusion {0.2, 0.5, 0.8} x depths {[2,3], [3,4], [4,5]}, the largest
# (fusion 1, depth 5): 11 groups, smallest first and largest last.
SPEC_GRID = {(0.2, (2, 3)), (0.2, (3, 4)), (0.2, (4, 5)),
             (0.5, (2, 3)), (0.5, (3, 4)), (0.5, (4, 5)),
             (0.8, (2, 3)), (0.8, (3, 4)), (0.8, (4, 5))}


@pytest.mark.parametrize("task, smallest_fusion", [("seg", 0.1), ("pose", 0.0)])
def test_paper_groups_match_the_specification(task, smallest_fusion):
    groups = parse_groups("paper", task)
    table = [(g.fusion_prob, tuple(g.depth_candidates)) for g in groups]
    assert len(table) == 11
    assert table[0] == (smallest_fusion, (2,))
    assert table[-1] == (1.0, (5,))
    assert set(table[1:-1]) == SPEC_GRID and len(set(table[1:-1])) == 9
    assert [g.name for g in groups][0] == "smallest" and groups[-1].name == "largest"
    # what a group means when drawn: every depth among its candidates, fusion as the group says
    rng = np.random.default_rng(0)
    for g in groups:
        depths = {d for _ in range(20) for m in sample_group(rng, g, task).modules
                  for d in m.depths}
        assert depths <= set(g.depth_candidates)
        assert depths == set(g.depth_candidates)  # 20 draws of many branches reach every value


# -- learning rate -----------------------------------------------------------------------------

def test_poly_and_step_lr():
    poly = LRSchedule("poly", 0.01, total_iters=100, iters_per_epoch=10, power=0.9)
    assert poly(0) == pytest.approx(0.01)
    assert poly(50) == pytest.approx(0.01 * 0.5 ** 0.9)
    assert poly(100) == 0.0
    step = LRSchedule("step", 1e-3, total_iters=300, iters_per_epoch=10, milestones=(17, 20))
    assert step(169) == pytest.approx(1e-3)
    assert step(170) == pytest.approx(1e-4)
    assert step(199) == pytest.approx(1e-4)
    assert step(200) == pytest.approx(1e-5)
    warm = LRSchedule("constant", 0.1, total_iters=10, iters_per_epoch=5, warmup_iters=4)
    assert [warm(i) for i in range(5)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])
    with pytest.raises(ScheduleError, match="lr_schedule"):
        LRSchedule("cosine", 0.1, 10, 5)


# -- checkpoints -------------------------------------------------------------------------------

def test_rng_state_round_trip(tmp_path):
    random.seed(1); np.random.seed(2); torch.manual_seed(3)
    save_checkpoint(tmp_path, {"fingerprint": "x", "rng": rng_state()})
    want = (random.random(), np.random.rand(), torch.rand(1).item())
    doc = read_checkpoint(tmp_path / "last.pt")  # weights_only=True inside
    set_rng_state(doc["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == want


def test_rotation_corruption_and_fingerprint(tmp_path):
    fp = fingerprint({"lr": 0.1}, "seg", 8)
    assert fp != fingerprint({"lr": 0.1}, "seg", 16) != fingerprint({"lr": 0.1}, "pose", 8)
    assert load_resume(tmp_path, fp) is None
    save_checkpoint(tmp_path, {"fingerprint": fp, "iteration": 1})
    save_checkpoint(tmp_path, {"fingerprint": fp, "iteration": 2})
    assert read_checkpoint(tmp_path / "prev.pt")["iteration"] == 1
    assert load_resume(tmp_path, fp)["iteration"] == 2
    with pytest.raises(CheckpointError, match="another configuration"):
        load_resume(tmp_path, fingerprint({"lr": 0.2}, "seg", 8))
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt.*prev.pt") as e:
        load_resume(tmp_path, fp)
    assert "last.pt" in str(e.value)
    assert read_checkpoint(tmp_path / "prev.pt")["iteration"] == 1  # the good one is kept
    (tmp_path / "last.pt").unlink()  # killed between the two renames: prev.pt is used
    assert load_resume(tmp_path, fp)["iteration"] == 1
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="x.pt: not a PyTorch checkpoint"):
        read_checkpoint(tmp_path / "x.pt")


def test_unsafe_pickle_is_rejected(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))
    torch.save({"format": "scalenas-train-ckpt/1", "x": Evil()}, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="last.pt: refused: holds Python objects"):
        load_resume(tmp_path, "fp")


# -- configuration -----------------------------------------------------------------------------

def test_training_section_is_passed_as_it_is_and_fingerprinted():
    section = {"epochs": 2, "iterations": None, "batch_size": 4,
               "optimizer": {"name": "adam", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0,
                             "nesterov": False},
               "schedule": {"name": "step", "power": 0.9, "milestones": [170, 200], "gamma": 0.1,
                            "warmup_iters": 0},
               "checkpoint_every": 50, "log_every": 10, "sync_bn": False, "amp": "bf16",
               "num_workers": 0, "kd_ratio": 1.0, "init_from_teacher": True, "groups": "paper"}
    cfg = make_section(SupernetTrainConfig, section, source="supernet.pose")
    run = TrainRun(seed=5)
    assert (cfg.optimizer.name, cfg.schedule.name, cfg.schedule.milestones, cfg.amp, cfg.groups) \
        == ("adam", "step", (170, 200), "bf16", "paper")
    fp = fingerprint_settings(cfg, run)
    assert (fp["optimizer"], fp["lr_steps"], fp["amp"], fp["seed"], fp["groups"]) == \
        ("adam", [170, 200], True, 5, "paper")
    # settings that do not change the computation stay out of the fingerprint
    assert fp == fingerprint_settings(dataclasses.replace(cfg, checkpoint_every=7, num_workers=2),
                                      TrainRun(seed=5, device="cpu", progress=False))
    assert fp != fingerprint_settings(make_section(SupernetTrainConfig, section,
                                                   optimizer={"lr": 0.1}), run)
    assert fp != fingerprint_settings(cfg, TrainRun(seed=6))
    # a teacher/fine-tuning section has no groups and no distillation
    plain = make_section(TrainConfig, {k: v for k, v in section.items()
                                       if k not in ("kd_ratio", "init_from_teacher", "groups")})
    assert fingerprint_settings(plain, run)["groups"] is None
    assert fingerprint_settings(plain, run)["kd_ratio"] == 0.0
    with pytest.raises(ConfigError, match=r"supernet.pose: batch_size: 0 is less than"):
        make_section(SupernetTrainConfig, {**section, "batch_size": 0}, source="supernet.pose")
    with pytest.raises(ConfigError, match=r"'bogus' was unexpected"):
        make_section(TrainConfig, bogus=1)