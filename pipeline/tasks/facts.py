"""What the low layers need to know about each task, declared once, as plain data.

The network body (pipeline.nets), the search space (pipeline.space) and the tools built on them
(the arch CLI, deployment, predict) must not import the task plug-ins: those pull in the data
loaders, metrics and torch. They read these records instead. Each plug-in exposes its record as
``facts`` (``REGISTRY[name].facts``), so what a task is stays in pipeline/tasks/.

This module imports nothing of the project: importing it is free of cycles.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskFacts:
    """The facts of one task that code below the plug-ins reads."""

    name: str
    #: BatchNorm momentum of the network (the official models: 0.01 seg, 0.1 pose; the BN inside
    #: coarse-to-fine fusion layers keeps PyTorch's 0.1 in every task, pipeline.nets.blocks).
    bn_momentum: float
    #: The head reads branch 0 of the last module only: that module must then fuse every branch
    #: into branch 0 at its last step (pipeline.space.arch.check_task).
    single_scale_output: bool
    #: Fusion probability of the paper's smallest sandwich group (scalenas.md section 4).
    smallest_fusion_prob: float
    #: Input (H, W) at which ``scalenas arch profile`` counts params/GFLOPs unless told otherwise
    #: (the paper's counting input, scalenas.md sections 3 and 10).
    profile_input_hw: tuple[int, int]
    #: Traced input (H, W) of a deployed model whose record gives none.
    deploy_input_hw: tuple[int, int]
    #: ``module:Class`` of the writer ``scalenas predict`` draws this task's outputs with
    #: (imported only by predict).
    predict_writer: str
    #: What the network's output is, for messages ("logits", "heatmaps").
    output_kind: str
    #: The built-in dataset the task reads (pipeline.data.synth.generate_all: "seg" Cityscapes
    #: layout, "pose" COCO keypoints layout).
    builtin_data: str


#: The tasks by name, in their canonical order (the order of ``TASK_NAMES``).
FACTS: dict[str, TaskFacts] = {}


def declare(facts: TaskFacts) -> TaskFacts:
    """Add a task's facts; a name declared already is refused."""
    if facts.name in FACTS:
        raise ValueError(f"task {facts.name!r} is declared already")
    FACTS[facts.name] = facts
    return facts


SEG = declare(TaskFacts(
    name="seg", bn_momentum=0.01, single_scale_output=False, smallest_fusion_prob=0.1,
    profile_input_hw=(1024, 2048), deploy_input_hw=(64, 128),
    predict_writer="pipeline.infer.cli:SegWriter", output_kind="logits", builtin_data="seg"))
POSE = declare(TaskFacts(
    name="pose", bn_momentum=0.1, single_scale_output=True, smallest_fusion_prob=0.0,
    profile_input_hw=(256, 192), deploy_input_hw=(256, 192),
    predict_writer="pipeline.infer.cli:PoseWriter", output_kind="heatmaps", builtin_data="pose"))
# HigherHRNet's pose-model BN (0.1) and the pose sampler's rules: its head reads branch 0 only.
# Profiled at 640x640, the paper's P4 bottom-up setting (scalenas.md section 10).
BOTTOMUP = declare(TaskFacts(
    name="bottomup", bn_momentum=0.1, single_scale_output=True, smallest_fusion_prob=0.0,
    profile_input_hw=(640, 640), deploy_input_hw=(256, 256),
    predict_writer="pipeline.infer.bottomup:BottomUpWriter", output_kind="heatmaps and tags",
    builtin_data="pose"))

#: The task names, defined once.
TASK_NAMES: tuple[str, ...] = tuple(FACTS)


def task_facts(task: str) -> TaskFacts:
    """The facts of ``task``; an unknown name raises ``KeyError`` naming the known ones."""
    try:
        return FACTS[task]
    except KeyError:
        raise KeyError(f"unknown task {task!r} (expected one of {TASK_NAMES})") from None


__all__ = ["FACTS", "TASK_NAMES", "TaskFacts", "declare", "task_facts"]
