"""One stand-alone training of the audit: an architecture trained from scratch (a seeded supernet
initialisation cut down to it), with one recipe, BN statistics recomputed on the calibration
images, scored on val. The audit's training jobs and ``benchmarks/arch_spread.py`` both call it,
so a spread measured by the benchmark is the spread the audit would see."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.space.arch import Architecture


@dataclass(frozen=True)
class StandAlone:
    """A finished stand-alone training: its val score, the full evaluation and the loop's summary."""

    score: float
    metric: str    # the score's name (mIoU, AP)
    result: dict[str, Any]
    summary: Any


def train_standalone(task: str, cfg: Config, arch: Architecture, section: Any, seed: int,
                     work: str | Path, device: str = "cpu", *, tracker: Any = None,
                     progress: bool = True) -> StandAlone:
    """Train ``arch`` from scratch with the training section ``section`` (``audit.<task>``)
    on the train and search splits together (``trainfull``, as fine-tuning trains), then
    precise BN and val. Resumes from ``work``/train after a kill."""
    from pipeline.evaluate import score as evaluate_score
    from pipeline.nets.export import export_subnet
    from pipeline.nets.supernet import SuperNet
    from pipeline.stages.build import load_calibration, task_from_config, train_run
    from pipeline.stages.common import seed_everything
    from pipeline.train.loop import train

    seed_everything(seed)
    task_obj = task_from_config(task, cfg)
    sup = SuperNet(task, int(cfg.task(task).width), task_obj.num_outputs, seed=seed)
    sup.set_arch(arch)
    net = export_subnet(sup).to(device)
    del sup
    summary = train(task_obj, net, section, Path(work) / "train", tracker=tracker,
                    split="trainfull",
                    run=dataclasses.replace(train_run(cfg, device, progress=progress), seed=seed))
    # Precise BN, as the teacher: a short run's running averages are far from the statistics of
    # its final weights.
    load_calibration(task_obj, cfg, device).calibrate(net)
    net.eval()
    result = evaluate_score(task_obj, net, "val", device, int(section.batch_size))
    return StandAlone(float(result["score"]), getattr(task_obj, "metric", "score"), dict(result),
                      summary)
