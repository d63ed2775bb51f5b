"""``scalenas eval``: the release's test commands, checked three ways.

- fidelity: the official W8 fixture running S1, calibrated on real CamVid frames and scored on the
  real Cityscapes frame, gives the mIoU that the release's own steps give (reimplemented here from
  scalenas.md sections 5 and 7: its calib_bn_seg statistics, its confusion matrix and mean_IoU);
- consistency: a fine-tuned model directory of the tiny run prints the report's fine-tuned figure;
- the README's "Check the paper's numbers" commands run, with the fixture for the released files;
- bad input: one line, exit status 2, nothing written.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import SHARED, readme_bash_commands
from pipeline.cli import main

FIXTURE = SHARED / "reference" / "official_seg_w8_S1.pt"
S1 = SHARED / "masks" / "seg_w32_S1.npy"
P2 = SHARED / "masks" / "w32_256_P2.npy"
CAMVID = SHARED / "data" / "camvid_cityscapes_layout"
FRAME = SHARED / "data" / "cityscapes_frame"
COCO = SHARED / "data" / "coco_sample"
COCO_DETS = COCO / "person_detection_results" / "COCO_sample_detections_AP_H_56_person.json"

pytestmark = pytest.mark.shared_data


# -- data in the release's layouts, from the real samples ------------------------------------------
def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src.resolve(), dst)


def seg_dataset(root: Path, copies: int = 1) -> Path:
    """Cityscapes layout: train = the 6 real CamVid training frames (``copies`` times, under other
    sequence names), val = the real Cityscapes frame."""
    for k in range(copies):
        for img in sorted((CAMVID / "leftImg8bit" / "train").glob("*/*_leftImg8bit.png")):
            seq = f"{img.parent.name}c{k}" if k else img.parent.name
            stem = img.name[: -len("_leftImg8bit.png")].replace(img.parent.name, seq, 1)
            lab = CAMVID / "gtFine" / "train" / img.parent.name / (
                img.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png"))
            _link(img, root / "leftImg8bit" / "train" / seq / f"{stem}_leftImg8bit.png")
            _link(lab, root / "gtFine" / "train" / seq / f"{stem}_gtFine_labelIds.png")
    for img in (FRAME / "leftImg8bit" / "val").glob("*/*_leftImg8bit.png"):
        lab = FRAME / "gtFine" / "val" / img.parent.name / img.name.replace(
            "_leftImg8bit.png", "_gtFine_labelIds.png")
        _link(img, root / "leftImg8bit" / "val" / img.parent.name / img.name)
        _link(lab, root / "gtFine" / "val" / img.parent.name / lab.name)
    return root


def coco_dataset(root: Path, max_dets: int | None = None) -> Path:
    """COCO layout with the real sample as ``val2017`` and its detections (the ``max_dets`` best
    of each image, when given) under the release's detector file name."""
    (root / "annotations").mkdir(parents=True)
    shutil.copy(COCO / "annotations" / "person_keypoints_sample.json",
                root / "annotations" / "person_keypoints_val2017.json")
    for img in (COCO / "images" / "sample").iterdir():
        _link(img, root / "images" / "val2017" / img.name)
    det = root / "person_detection_results" / "COCO_val2017_detections_AP_H_56_person.json"
    if max_dets is None:
        _link(COCO_DETS, det)
        return root
    dets = sorted(json.loads(COCO_DETS.read_text()), key=lambda d: -d["score"])
    kept = [d for d in dets if sum(e["image_id"] == d["image_id"] for e in dets
                                   if e["score"] > d["score"]) < max_dets]
    det.parent.mkdir(parents=True)
    det.write_text(json.dumps(kept))
    return root


def pose_weights(path: Path, arch_file: Path = P2) -> Path:
    """A W8 pose network of the P2 architecture saved as a plain state_dict, as the release's
    fine-tuned ``.pth`` files are (random weights: the released ones are not ours to ship)."""
    from pipeline.nets.export import StandaloneNet
    from pipeline.space.official import load_official

    torch.manual_seed(0)
    net = StandaloneNet("pose", 8, 17, load_official(arch_file))
    torch.save(net.state_dict(), path)
    return path


def run(capsys, *argv: object) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


# -- fidelity: the release's evaluation steps ----------------------------------------------------
#: Cityscapes label id -> train id (the dataset's published table; 255 = ignored).
_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
             25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
_MEAN, _STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _image(path: Path, exact_float32: bool = False) -> torch.Tensor:
    """The release's input: RGB, float32, / 255, minus the ImageNet mean, over its std. The
    release subtracts Python float (float64) lists in numpy, rounding each step to float32;
    ``exact_float32`` subtracts float32 constants instead, as our loader does (results differ in
    the last bit of some pixels)."""
    arr = np.asarray(Image.open(path).convert("RGB")).astype(np.float32) / 255.0
    if exact_float32:
        arr = (arr - np.float32(_MEAN)) / np.float32(_STD)
    else:
        arr -= _MEAN
        arr /= _STD
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def release_calibrate(net: torch.nn.Module, batches: list[torch.Tensor]) -> None:
    """The release's calib_bn_seg, in float32 as it runs: on a copy of the network every BN
    normalises with its batch's mean and biased variance (means over the batch, the rows, then the
    columns), whose sums weighted by the batch's images are kept as by its AverageMeter; their
    averages become the model's running statistics."""
    import copy

    fwd = copy.deepcopy(net)
    meters: dict[str, list] = {}

    def forward_of(name, bn):
        def forward(x):
            mean = x.mean(0, keepdim=True).mean(2, keepdim=True).mean(3, keepdim=True)
            var = ((x - mean) * (x - mean)).mean(0, keepdim=True).mean(2, keepdim=True).mean(
                3, keepdim=True)
            mean, var = torch.squeeze(mean), torch.squeeze(var)
            m = meters.setdefault(name, [0, 0, 0])  # images, sum of means, sum of variances
            m[0] += x.size(0)
            m[1] += mean * x.size(0)
            m[2] += var * x.size(0)
            return F.batch_norm(x, mean, var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return forward

    for name, m in fwd.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.forward = forward_of(name, m)
    with torch.no_grad():
        for b in batches:
            fwd(b)
    mods = dict(net.named_modules())
    for name, (n, mean_sum, var_sum) in meters.items():
        mods[name].running_mean.copy_(mean_sum / n)
        mods[name].running_var.copy_(var_sum / n)


def release_mean_iou(net: torch.nn.Module, frames: list[tuple[Path, Path]],
                     exact_float32: bool = False) -> tuple[float, np.ndarray]:
    """The release's test: full frame, one scale, no flip; logits upsampled bilinearly to the
    label; a 19-class confusion matrix; mean_IoU = mean over all 19 classes of
    TP / max(1, TP + FP + FN)."""
    conf = np.zeros((19, 19), dtype=np.int64)
    net.eval()
    with torch.no_grad():
        for img, lab in frames:
            label_ids = np.asarray(Image.open(lab))
            label = np.full(label_ids.shape, 255, dtype=np.int64)
            for lid, tid in _TRAIN_ID.items():
                label[label_ids == lid] = tid
            logits = net(_image(img, exact_float32)[None])
            logits = F.interpolate(logits, size=label.shape, mode="bilinear", align_corners=False)
            pred = logits.argmax(1)[0].numpy()
            keep = label != 255
            conf += np.bincount(label[keep] * 19 + pred[keep], minlength=361).reshape(19, 19)
    tp = np.diag(conf)
    iou = tp / np.maximum(1.0, conf.sum(0) + conf.sum(1) - tp)
    return float(iou.mean()), iou


def release_figures(seg_data: Path, exact_float32: bool) -> tuple[float, np.ndarray, list[str]]:
    """The release's steps by hand: its network (checked against the fixture's recorded official
    output), the first 6 of its seeded permutation of the training list as 2 batches of 3 (each
    frame cropped top-left to 352x480, the multiple of 32), its BN statistics, its metric."""
    from pipeline.nets import SuperNet, load_into, load_state_dict_file
    from pipeline.space.official import load_official

    fixture = torch.load(FIXTURE, weights_only=True)
    net = SuperNet("seg", 8, 19)
    load_into(net, load_state_dict_file(FIXTURE), str(FIXTURE))
    net.set_arch(load_official(S1))
    net.eval()
    with torch.no_grad():
        ref = fixture["output"]
        assert float((net(fixture["input"]) - ref).norm() / ref.norm()) < 1e-5
    train = sorted((seg_data / "leftImg8bit" / "train").glob("*/*_leftImg8bit.png"))
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(937162211))[:6]
    images = [_image(train[int(i)], exact_float32)[:, :352, :480] for i in order]
    release_calibrate(net, [torch.stack(images[:3]), torch.stack(images[3:])])
    frames = [(img, seg_data / "gtFine" / "val" / img.parent.name / img.name.replace(
        "_leftImg8bit.png", "_gtFine_labelIds.png"))
        for img in sorted((seg_data / "leftImg8bit" / "val").glob("*/*_leftImg8bit.png"))]
    mean_iou, iou = release_mean_iou(net, frames, exact_float32)
    names = [p.name[: -len("_leftImg8bit.png")] for p in (train[int(i)] for i in order)]
    return mean_iou, iou, names


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory) -> Path:
    return seg_dataset(tmp_path_factory.mktemp("eval-seg") / "cityscapes")


@pytest.mark.slow
def test_fixture_s1_on_real_frames_gives_the_releases_miou(seg_data, tmp_path, capsys):
    out = tmp_path / "results.json"
    rc, stdout, err = run(capsys, "eval", "--supernet", FIXTURE, "--arch", S1, "--data", seg_data,
                          "--bn-calib", 6, "--calib-batch-size", 3, "-o", out, "-q")
    assert rc == 0, err
    doc = json.loads(out.read_text())
    ours = np.array([v or 0.0 for v in doc["metrics"]["iou"].values()])
    present = [v for v in doc["metrics"]["iou"].values() if v is not None]
    assert doc["metrics"]["miou"] == pytest.approx(float(np.mean(present)), abs=1e-12)

    # Fed the same input tensors, the release's steps give the same figures to the last bit.
    mean_iou, iou, names = release_figures(seg_data, exact_float32=True)
    assert doc["protocol"]["bn_calibration"]["names"] == names
    np.testing.assert_array_equal(ours, iou)
    assert float(ours.mean()) == mean_iou
    # With the release's own input rounding, a pixel may land on another class; the printed
    # figure (4 decimals, as the release prints mean_IoU) is the same.
    rel_mean, rel_iou, _ = release_figures(seg_data, exact_float32=False)
    assert abs(rel_mean - mean_iou) < 1e-6 and f"{rel_mean:.4f}" == f"{mean_iou:.4f}"
    assert f"release's mean_IoU counts: {rel_mean:.4f})" in stdout
    print(f"fixture S1 (6 CamVid calibration frames, the Cityscapes frame): eval mean_IoU "
          f"{mean_iou:.9f}, release steps {rel_mean:.9f}; mIoU over present classes "
          f"{doc['metrics']['miou']:.9f}")


def test_profile_line_is_the_releases(seg_data, capsys):
    """W8 fixture: the profile counts the W8 network; S1 at W32 is the paper's 25.3 M / 265.5 G."""
    from pipeline.cost import profile
    from pipeline.evaluate.cli import profile_line
    from pipeline.evaluate.sources import load_supernet_source

    src = load_supernet_source(FIXTURE, str(S1))
    c = profile(src.arch, "seg", 32, (1024, 2048))
    line = profile_line(src, {**c.to_dict(), "input": [1, 3, 1024, 2048]})
    assert "params 25.3 M, flops 265.5 G" in line


@pytest.mark.slow
def test_pooled_statistics_and_results_record(seg_data, tmp_path, capsys):
    out = tmp_path / "r.json"
    rc, stdout, err = run(capsys, "eval", "--supernet", FIXTURE, "--arch", S1, "--data", seg_data,
                          "--bn-calib", 3, "--bn-stats", "pooled", "--flip", "-o", out, "-q")
    assert rc == 0, err
    doc = json.loads(out.read_text())
    assert doc["protocol"]["bn_calibration"]["stats"] == "pooled"
    assert doc["protocol"]["flip"] is True and doc["protocol"]["scales"] == [1.0]
    assert doc["checksums"]["supernet"]["sha256"] and doc["checksums"]["arch"]["sha256"]
    assert doc["data"]["hash"].startswith("sha256:") and doc["data"]["images"] == 1
    assert doc["runtime"]["runtime"] == "eager" and doc["runtime"]["device"] == "cpu"
    assert stdout.splitlines()[0].endswith("the paper's unit]")
    assert "mIoU: " in stdout and "pixel accuracy" in stdout and "road" in stdout


# -- the README's commands --------------------------------------------------------------------------
@pytest.mark.slow
def test_readme_check_the_papers_numbers_runs(tmp_path, capsys):
    """Each command of the README section, with the released files replaced: the official W8
    fixture for both seg supernets, S1's release file for S4's architecture, a W8 P2 network for
    the P models (P2's release file for their architectures), and the real samples as data."""
    commands = readme_bash_commands("Check the paper's numbers")
    assert [c.split()[:2] for c in commands] == [["scalenas", "eval"]] * 5
    seg_dataset(tmp_path / "datasets" / "cityscapes", copies=4)  # 24 training frames
    coco_dataset(tmp_path / "datasets" / "coco", max_dets=3)  # 12 people: seconds, not minutes
    weights = pose_weights(tmp_path / "pose_w8.pth")
    released = {"superscalenet_seg_w32.pth": FIXTURE, "superscalenet_seg_w48.pth": FIXTURE,
                "seg_w32_S1.npy": S1, "seg_w48_S4.npy": S1,
                "w32_256_P2.npy": P2, "w32_384_P3.npy": P2, "w48_384_P4.npy": P2,
                "scalenet_P2_w32_256x192.pth": weights, "scalenet_P3_w32_384x288.pth": weights,
                "scalenet_P4_w48_384x288.pth": weights}
    for cmd in commands:
        argv = []
        for a in shlex.split(cmd)[1:]:
            if a in released:
                a = str(released[a])
            elif a.startswith("datasets/"):
                a = str(tmp_path / a)
            argv.append(a)
        assert any(a in released for a in shlex.split(cmd)), cmd
        rc, stdout, err = run(capsys, *argv, "-q")
        assert rc == 0, (cmd, err)
        assert "params " in stdout.splitlines()[0] and " M, flops " in stdout.splitlines()[0]
        assert ("mIoU: " in stdout) if "--supernet" in cmd else ("| AP | AP50 |" in stdout), cmd


# -- bad input: one line, exit 2, nothing written -------------------------------------------------
@pytest.mark.slow
def test_bad_inputs_one_line_exit_2_nothing_written(seg_data, tmp_path, capsys):
    from pipeline.space.official import load_official

    out = tmp_path / "r.json"
    coco = coco_dataset(tmp_path / "coco")
    weights = pose_weights(tmp_path / "pose.pth")
    pose_arch = tmp_path / "pose_arch.json"
    assert main(["arch", "sample", "--task", "pose", "--fusion", "0.5", "--depth", "2,3",
                 "--seed", "0", "-o", str(pose_arch)]) == 0
    wide = tmp_path / "w32.json"
    load_official(S1).with_meta(width=32).save(wide)
    bad_dets = tmp_path / "dets.json"
    bad_dets.write_text(json.dumps([{"image_id": 999999, "category_id": 1,
                                     "bbox": [1, 1, 20, 40], "score": 0.9}]))
    model = tmp_path / "model"
    from pipeline.nets.export import StandaloneNet, save_model
    save_model(model, StandaloneNet("seg", 8, 19, load_official(S1)), {"input_hw": [64, 128]})
    blob = (model / "weights.pt").read_bytes()
    (model / "weights.pt").write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    capsys.readouterr()

    cases = {
        "pose architecture for seg weights": (
            ["--supernet", FIXTURE, "--arch", pose_arch, "--data", seg_data],
            "an architecture of the pose task"),
        "seg architecture for pose weights": (
            ["--weights", weights, "--arch", S1, "--data", coco, "--gt-boxes"],
            "not an architecture of the pose task"),
        "architecture of another width": (
            ["--supernet", FIXTURE, "--arch", wide, "--data", seg_data],
            "an architecture of width 32 (its meta), but"),
        "split that does not exist": (
            ["--supernet", FIXTURE, "--arch", S1, "--data", seg_data, "--split", "test"],
            "--split test: no such split in"),
        "detector file of other images": (
            ["--weights", weights, "--arch", P2, "--data", coco, "--det-file", bad_dets],
            "0 of its 1 person detections match an image of split 'val2017' (4 images)"),
        "--bn-calib larger than the train split": (
            ["--supernet", FIXTURE, "--arch", S1, "--data", seg_data, "--bn-calib", 7],
            "--bn-calib 7: larger than the train split 'train'"),
        "model directory whose checksum fails": (
            ["--model", model, "--data", seg_data],
            "weights.pt: checksum does not match"),
    }
    for name, (argv, message) in cases.items():
        rc, stdout, err = run(capsys, "eval", *argv, "-o", out, "-q")
        assert rc == 2, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("scalenas: error: "), (name, err)
        assert message in lines[0], (name, lines[0])
        assert not out.exists(), name
        assert "params" not in stdout, name  # the checks come before any work


# -- consistency with the pipeline -------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("task", ["seg", "pose"])
def test_model_directory_prints_the_reports_finetuned_metric(tiny_run, task, tmp_path, capsys,
                                                             monkeypatch):
    metrics = json.loads((tiny_run / "results" / "report" / "metrics.json").read_text())
    dirs = sorted((tiny_run / "results" / task / "finetune").glob("*/model"))
    assert dirs
    for model in dirs:
        record = json.loads((model.parent / "finetune.json").read_text())
        data = tiny_run / "data" / "builtin" / ("cityscapes" if task == "seg" else "coco")
        extra = [] if task == "seg" else [
            "--det-file", data / "person_detection_results" / "COCO_val2017_detections_synth.json"]
        out = tmp_path / f"{model.parent.name}.json"
        rc, stdout, err = run(capsys, "eval", "--model", model, "--data", data, *extra,
                              "-o", out, "-q")
        assert rc == 0, err
        doc = json.loads(out.read_text())
        assert doc["score"] == record["finetuned"], (model, doc["score"], record["finetuned"])
        assert f"{record['finetuned']:.4f}" in stdout or f"{record['finetuned']:.3f}" in stdout
        assert str(record["finetuned"]) in json.dumps(metrics)
        print(f"{task} {model.parent.name}: eval {doc['score']!r}, fine-tuned record "
              f"{record['finetuned']!r}")
        numeric = {k: v for k, v in doc["metrics"].items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        assert numeric == pytest.approx(record["details_finetuned"], abs=0), model
    if task == "pose":
        # The tiny run's pose AP is 0, so compare the people themselves: the task built from the
        # run's parameters (as fine-tuning scored) and the one eval builds predict the same.
        from pipeline import config as pc
        from pipeline.nets.export import load_model
        from pipeline.stages.build import task_from_config
        from pipeline.tasks import PoseTask
        from pipeline.tasks.base import EvalData

        monkeypatch.chdir(tiny_run)
        pipe = task_from_config("pose", pc.load_params(tiny_run / "params" / "default.yaml"))
        net = load_model(dirs[-1])
        ours = PoseTask.for_evaluation(EvalData(
            root=str(data), split="val2017", train_split="train2017",
            input_hw=tuple(net.meta["input_hw"]), det_file=str(extra[1])))
        people = ours.predict(net, ours.dataset("val", False), "cpu", 2)
        assert people and people == pipe.predict(net, pipe.dataset("val", False), "cpu", 2)


# -- other sources and outputs --------------------------------------------------------------------
@pytest.mark.slow
def test_pose_supernet_subnet_with_ground_truth_boxes(tmp_path, capsys):
    """A pose supernet file running a registered architecture, calibrated on person crops."""
    from pipeline.nets import SuperNet

    coco = coco_dataset(tmp_path / "coco")
    torch.manual_seed(0)
    torch.save(SuperNet("pose", 8).state_dict(), tmp_path / "pose_super.pth")
    out = tmp_path / "r.json"
    rc, stdout, err = run(capsys, "eval", "--supernet", tmp_path / "pose_super.pth", "--arch",
                          "hrnet", "--data", coco, "--gt-boxes", "--train-split", "val2017",
                          "--bn-calib", 4, "--calib-batch-size", 2, "--input", "128x96",
                          "-o", out, "-q")
    assert rc == 0, err
    doc = json.loads(out.read_text())
    assert doc["protocol"]["boxes"] == "ground truth" and doc["protocol"]["flip"] is True
    assert doc["protocol"]["bn_calibration"]["unit"] == "person crops"
    assert len(doc["protocol"]["bn_calibration"]["names"]) == 4
    assert doc["profile"]["input"] == [1, 3, 128, 96] and doc["metrics"]["num_persons"] == 12
    assert "| AP | AP50 | AP75 | APM | APL | AR |" in stdout


@pytest.mark.slow
def test_model_directory_runtimes_and_mlflow(seg_data, tmp_path, capsys):
    """Eager, optimized TorchScript and ONNX of one model directory score alike; --mlflow logs a
    run with the pipeline's tags."""
    import mlflow

    from pipeline.nets.deploy import export_artifact
    from pipeline.nets.export import StandaloneNet, save_model
    from pipeline.space.official import load_official

    torch.manual_seed(0)
    model = tmp_path / "model"
    save_model(model, StandaloneNet("seg", 8, 19, load_official(S1)).eval(),
               {"input_hw": [128, 256], "eval_batch_size": 1})
    export_artifact(model, "torchscript", optimize=True, channels_last=False)
    export_artifact(model, "onnx", optimize=False)
    scores = {}
    for runtime in ("eager", "torchscript", "onnx"):
        out = tmp_path / f"{runtime}.json"
        extra = ["--mlflow", f"sqlite:///{tmp_path / 'mlflow.db'}"] if runtime == "eager" else []
        rc, stdout, err = run(capsys, "eval", "--model", model, "--runtime", runtime,
                              "--data", seg_data, "-o", out, "-q", *extra)
        assert rc == 0, (runtime, err)
        doc = json.loads(out.read_text())
        assert doc["runtime"]["runtime"] == runtime and doc["protocol"]["batch_size"] == 1
        scores[runtime] = doc["metrics"]["pixel_acc"]
        if runtime != "eager":
            assert runtime in doc["checksums"]
    assert scores["torchscript"] == pytest.approx(scores["eager"], abs=1e-3)
    assert scores["onnx"] == pytest.approx(scores["eager"], abs=1e-3)
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("scalenas")
    (r,) = client.search_runs([exp.experiment_id])
    assert r.data.tags["scalenas.phase"] == "eval" and r.data.tags["scalenas.task"] == "seg"
    assert r.data.tags["scalenas.arch_id"] == load_official(S1).arch_id
    assert r.data.tags["scalenas.data_hash"].startswith("sha256:")
    assert "scalenas.git_commit" in r.data.tags and "scalenas.weights_sha256" in r.data.tags
    assert r.data.metrics["mIoU" if "mIoU" in r.data.metrics else "miou"] >= 0
    assert r.data.params["split"] == "val"
