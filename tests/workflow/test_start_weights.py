"""Starting weights: teacher|supernet|finetune.<task>.init and supernet.<task>.checkpoint.

* the pipeline searches, fine-tunes and reports from the official W8 seg supernet with no training
  job, records the file's hash, and a new file at the same path reruns the search;
* a pose supernet warm-started from our own earlier supernet scores exactly what that supernet
  scored, before any step;
* a file of the wrong task, width or outputs stops the run at parse time with one line naming it;
  a headless backbone loads only with init_strict: false, its missing keys reported.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import SHARED
from pipeline.data.synth import generate_all
from pipeline.nets.checkpoint import CheckpointError
from pipeline.nets.init import check_fits, file_sha256, inspect, load_init
from pipeline.nets.supernet import SuperNet
from pipeline.train.artifacts import save_trained
from test_workflow import REPO, SNAKEMAKE, _env, _params, smk

OFFICIAL = SHARED / "reference" / "official_seg_w8_S1.pt"


def _pose_supernet_file(path: Path, width: int = 8, outputs: int = 17) -> Path:
    net = SuperNet("pose", width, outputs, seed=0)
    save_trained(path, net, {"kind": "supernet", "task": "pose", "width": width,
                             "num_outputs": outputs})
    return path


def test_wrong_task_width_or_outputs_is_one_line(tmp_path: Path) -> None:
    f = _pose_supernet_file(tmp_path / "pose8.pt")
    assert inspect(f).looks_like() == "a pose W8 supernet (17 outputs)"
    for task, width, outs in (("seg", 8, 19), ("pose", 16, 17), ("pose", 8, 16)):
        with pytest.raises(CheckpointError) as e:
            check_fits(f, task, width, outs, key="supernet.x.init")
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"{f}: looks like a pose W8 supernet (17 outputs)")
    assert check_fits(f, "pose", 8, 17).kind == "supernet"


def test_backbone_needs_init_strict_false(tmp_path: Path) -> None:
    # An ImageNet-style backbone: the stem, stage 1 and transitions, no head, no later stages.
    full = SuperNet("pose", 8, seed=0).state_dict()
    backbone = {k: v for k, v in full.items()
                if k.startswith(("conv", "bn", "layer1", "transition1"))}
    backbone["classifier.weight"] = torch.zeros(1000, 2048)
    f = tmp_path / "hrnet_w8_imagenet.pth"
    torch.save(backbone, f)
    with pytest.raises(CheckpointError, match="looks like a W8 backbone without a head.*init_strict: false"):
        check_fits(f, "pose", 8, 17)
    check_fits(f, "pose", 8, 17, strict=False)
    with pytest.raises(CheckpointError, match="missing key"):
        load_init(SuperNet("pose", 8, seed=1), f, strict=True)
    net = SuperNet("pose", 8, seed=1)
    report = load_init(net, f, strict=False)
    assert report.unexpected == ("classifier.weight",)
    assert "final_layer.weight" in report.missing and "stage2.0.branches.0.0.conv1.weight" in report.missing
    assert torch.equal(net.state_dict()["transition1.0.0.weight"], backbone["transition1.0.0.weight"])
    assert report.sha256 == file_sha256(f)


def test_bad_checkpoint_fails_before_any_job(tmp_path: Path) -> None:
    f = _pose_supernet_file(tmp_path / "pose8.pt")

    def edit(d):
        d["supernet"]["seg"]["checkpoint"] = str(f)
    r = smk(tmp_path, _params(tmp_path, edit), "prepare_all")
    assert r.returncode != 0
    assert (f"supernet.seg.checkpoint: {f}: looks like a pose W8 supernet (17 outputs), "
            "but supernet.seg.checkpoint needs a seg W8 network (19 outputs)") in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "results" / "seg").exists() and not (tmp_path / "data").exists()


# -- warm start from our own supernet ---------------------------------------------------------------
def _supernet_cmd(params: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline.stages.supernet", "--params", str(params),
            "--task", "pose", "--out", str(out), "--threads", "1"]


@pytest.mark.slow
def test_pose_warm_start_reproduces_the_supernets_scores(tmp_path: Path) -> None:
    root = tmp_path / "builtin"
    generate_all(root, 0, tasks=("pose",), pose_train=10, pose_val=2, pose_size_hw=(96, 128))
    groups = [{"name": "a", "fusion_prob": 0.0, "depths": [2]},
              {"name": "b", "fusion_prob": 1.0, "depths": [3]}]
    doc = {"run": {"seed": 1, "device": "cpu"}, "tasks": ["pose"],
           "data": {"builtin": True, "root": str(root)},
           "pose": {"root": str(root / "coco"), "width": 8, "input_size": [64, 64], "det_file": None},
           "supernet": {"pose": {"iterations": 4, "batch_size": 2, "kd_ratio": 0.0,
                                 "init_from_teacher": False, "groups": groups,
                                 "optimizer": {"name": "adam", "lr": 0.001}}},
           "tracking": {"enabled": False}}
    p1 = tmp_path / "p1.yaml"
    p1.write_text(yaml.safe_dump(doc))
    first = tmp_path / "a" / "supernet"
    r = subprocess.run(_supernet_cmd(p1, first), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]

    doc["supernet"]["pose"].update(init=str(first / "model.pt"), iterations=1)
    p2 = tmp_path / "p2.yaml"
    p2.write_text(yaml.safe_dump(doc))
    second = tmp_path / "b" / "supernet"
    r = subprocess.run(_supernet_cmd(p2, second), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    m1 = json.loads((first / "metrics.json").read_text())
    m2 = json.loads((second / "metrics.json").read_text())
    assert m2["init_largest_search_score"] == m1["largest_search_score"]
    assert m2["init_smallest_search_score"] == m1["smallest_search_score"]
    meta = torch.load(second / "model.pt", weights_only=True)["meta"]
    assert meta["init"]["sha256"] == file_sha256(first / "model.pt") and meta["init"]["missing"] == []


# -- the official supernet, searched with no training phase ------------------------------------------
@pytest.mark.slow
@pytest.mark.shared_data
def test_search_finetune_report_from_official_supernet(tmp_path: Path) -> None:
    ckpt = tmp_path / "superscalenet_seg_w8.pt"
    shutil.copyfile(OFFICIAL, ckpt)

    def tiny(d):
        d["tasks"] = ["seg"]
        d["supernet"]["seg"]["checkpoint"] = str(ckpt)
        d["calibration"] = {"images": 1, "batch_size": 1}  # the search split has 1 image
        d["search"]["random"].update(fusion_probs=[0.5], depth_candidates=[[2, 3]],
                                     samples_per_cell=2, shards=1)
        d["search"]["evolution"].update(generations=0, shards=1)  # random sampling only: fewer jobs
        d["finetune"]["seg"].update(iterations=2, batch_size=2,
                                    models=[{"name": "S-small", "front_fraction": 0.0}])
    params = _params(tmp_path, tiny)
    # The whole graph (about 20 jobs) on a shared 2-core machine: more than smk()'s 300 s limit.
    r = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--cores",
                        "2", "--config", f"params={params}"],
                       capture_output=True, text=True, env=_env(), timeout=1200)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    res = tmp_path / "results"
    assert (res / "report" / "REPORT.md").is_file()
    assert (res / "seg" / "finetune" / "S-small" / "finetune.json").is_file()
    assert not (res / "seg" / "teacher").exists() and not (res / "seg" / "supernet").exists()
    assert "rule teacher:" not in out and "rule supernet:" not in out

    from pipeline import tracking
    client = tracking._client(tracking.default_uri(tmp_path))
    exp = client.get_experiment_by_name("scalenas")
    runs = client.search_runs([exp.experiment_id])
    shas = {r.data.tags.get("scalenas.supernet_sha256") for r in runs
            if r.data.tags.get(tracking.TAG_PHASE) in ("search_random", "search_evolution", "finetune")}
    assert shas == {file_sha256(ckpt)} or shas == {file_sha256(ckpt), None}
    assert any(r.data.tags.get("scalenas.supernet_sha256") for r in runs)

    # A new file at the same path: the search and what follows rerun.
    sd = torch.load(ckpt, weights_only=True)
    sd["state_dict"]["last_layer.3.bias"] += 1.0
    torch.save(sd, ckpt)
    r = smk(tmp_path, params, "-n")
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "search_shard" in out and "report" in out, out[-3000:]
