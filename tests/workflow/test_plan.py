"""The workflow's planning policy (pipeline.plan), without Snakemake: launcher, device pool,
latency device, stage commands and the default targets."""
from __future__ import annotations

import pytest

from pipeline import paths, plan
from pipeline.config import resolve_dict

SRC = "invalid parameters: p.yaml"


def on_path(name: str) -> str | None:
    return f"/usr/bin/{name}" if name in ("python", "torchrun") else None


@pytest.mark.parametrize("text, command, nproc", [
    ("python", "python", 1),
    ("torchrun --nproc_per_node 8", "torchrun --standalone --nproc_per_node 8", 8),
    ("torchrun --nproc-per-node=2 --master_port 29600", "torchrun --nproc-per-node=2 --master_port 29600", 2),
    ("python -m torch.distributed.run --nproc_per_node 4",
     "python -m torch.distributed.run --standalone --nproc_per_node 4", 4),
])
def test_launcher(text: str, command: str, nproc: int) -> None:
    assert plan.parse_launcher(text, SRC, which=on_path) == plan.Launcher(command, nproc)


@pytest.mark.parametrize("text, message", [
    ("", "invalid parameters: p.yaml: run.launcher '': '' is not a command on PATH"),
    ("srun -n 2", "invalid parameters: p.yaml: run.launcher 'srun -n 2': 'srun' is not a command on PATH"),
    ("torchrun", "needs --nproc_per_node N with N >= 1 (the processes, and devices, of one "
                 "training job), got None"),
    ("torchrun --nproc_per_node 0", "got '0'"),
    ("torchrun --nproc_per_node", "got ''"),
    ("python 'unclosed", "run.launcher \"python 'unclosed\": No closing quotation"),
])
def test_launcher_refused_with_one_line(text: str, message: str) -> None:
    with pytest.raises(plan.PlanError) as e:
        plan.parse_launcher(text, SRC, which=on_path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_device_pool() -> None:
    two = plan.Launcher("torchrun --standalone --nproc_per_node 2", 2)
    assert plan.device_ids({"device": "cpu", "devices": []}) == []
    assert plan.device_ids({"device": "cpu", "devices": [0, 1]}) == ["0", "1"]
    assert plan.device_ids({"device": "cuda", "devices": []}, cuda_count=lambda: 3) == ["0", "1", "2"]
    assert plan.device_ids({"device": "auto", "devices": [5]}, cuda_count=lambda: 8) == ["5"]
    assert plan.device_ids({"device": "auto", "devices": []}, cuda_count=lambda: 0) == []
    plan.check_pool(two, ["0", "1"], SRC)
    with pytest.raises(plan.PlanError, match="starts 2 processes per job but run.devices has 1"):
        plan.check_pool(two, ["0"], SRC)
    assert plan.gpus(False, two, [], "cpu") == 0 and plan.gpus(True, two, [], "cpu") == 0
    assert plan.gpus(False, two, ["0", "1"], "cpu") == 1 and plan.gpus(True, two, ["0", "1"], "cpu") == 2
    assert plan.gpus(True, two, [], "cuda") == 2  # a cluster's GPUs, not known where it plans
    assert plan.device_wrap("results/.devices", []) == ""
    assert plan.device_wrap("results/.devices", ["0", "3"]) == \
        "python -m pipeline.devices --pool results/.devices --devices 0,3 --"


def test_cuda_checked() -> None:
    plan.check_cuda("cpu", SRC, available=lambda: False)
    plan.check_cuda("cuda", SRC, available=lambda: True)
    with pytest.raises(plan.PlanError, match="run.device is 'cuda' but torch sees no CUDA device"):
        plan.check_cuda("cuda", SRC, available=lambda: False)


def test_latency_fingerprint() -> None:
    assert plan.planned_fingerprint(None, 2, measure=lambda t: f"{t:016x}") == "0000000000000002"
    assert plan.planned_fingerprint("0123456789abcdef", 1, measure=None) == "0123456789abcdef"
    with pytest.raises(plan.PlanError, match=r"SCALENAS_LATENCY_FP='xyz': not a device fingerprint"):
        plan.planned_fingerprint("xyz", 1)


def test_stage_cmd() -> None:
    cmd = plan.stage_cmd("search_shard", ["--task {task}", "--out results/{task}/search/{step}",
                                          "--params {input.params}"], "results/params/run.json",
                         gpu=True)
    assert cmd.startswith("OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} ")
    assert "SCALENAS_GPUS={resources.gpu} $SCALENAS_DEVICE_WRAP python -m pipeline.stages.search_shard" in cmd
    assert "--task {wildcards.task} --out results/{wildcards.task}/search/{wildcards.step}" in cmd
    assert "--params {input.params}" in cmd and cmd.endswith(" > {log} 2>&1")
    assert "--run-settings results/params/run.json" in cmd
    dist = plan.stage_cmd("teacher", [], "r.json", distributed=True)
    assert " $SCALENAS_LAUNCHER -m pipeline.stages.teacher " in dist and "SCALENAS_GPUS" not in dist
    assert plan.as_wildcards("{{literal}} {threads} {x}") == "{{literal}} {threads} {wildcards.x}"


def test_final_targets_in_pipeline_order() -> None:
    params = resolve_dict({"supernet": {"pose": {"checkpoint": "given.pt"}}}, "p.yaml")
    got = plan.final_targets(params, {"seg": ["S-small"], "pose": ["P-small", "P-large"]})
    assert got == [paths.manifest("seg"), paths.manifest("pose"), paths.trained_supernet("seg"),
                   paths.final("summary.json", "seg"), paths.final("summary.json", "pose"),
                   paths.finetune_record("seg", "S-small"), paths.finetune_record("pose", "P-small"),
                   paths.finetune_record("pose", "P-large"), *plan.report_targets()]
