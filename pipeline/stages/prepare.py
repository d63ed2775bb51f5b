"""Stages ``data`` and ``prepare``: materialise the built-in data; verify a dataset and write its
deterministic split lists.

``python -m pipeline.stages.prepare --phase data --params results/params/data.json --out data/builtin``
generates the built-in synthetic datasets (both tasks, so the bytes and data.dvc's hash do not
depend on which tasks a run selects).

``python -m pipeline.stages.prepare --params results/params/seg/prepare.json --task seg
--out results/seg/data`` reads the dataset (built-in or user-supplied), carves the held-out search
split from train and writes ``manifest.json`` (:mod:`pipeline.data.manifest`): counts, the key
lists of train/search/val and their hashes, and the data hash (tagged on every later MLflow run).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Mapping, Sequence

from pipeline.data.manifest import MANIFEST, build_manifest
from pipeline.io import atomic_write_text
from pipeline.stages.common import StageContext, run_phased_stage
from pipeline.tasks import REGISTRY
from pipeline.data import batches


def prepare(ctx: StageContext) -> Mapping[str, float]:
    tc = ctx.task_cfg
    manifest = build_manifest(ctx.task, REGISTRY[ctx.task].make_splits, Path(tc.root), tc.train_set,
                              tc.val_set, tc.search_fraction, builtin=ctx.cfg.data.builtin,
                              calibration_images=int(ctx.cfg.calibration.images),
                              batches=batches.from_json(ctx.extra.get("batches")),
                              batches_source=ctx.extra.get("source"))
    atomic_write_text(ctx.out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    ctx.run.set_tags({"scalenas.data_hash": manifest["data_hash"]})
    ctx.run.log_artifact(ctx.out / MANIFEST)
    metrics = {f"{k}_images": float(v["count"]) for k, v in manifest["splits"].items()}
    metrics.update({f"{k}_persons": float(v) for k, v in manifest.get("persons", {}).items()})
    return metrics


def generate(ctx: StageContext) -> Mapping[str, float]:
    from pipeline.data.synth import RECORD_FILE, generate_all

    d = ctx.cfg.data
    # Each built-in dataset once, whichever tasks read it (bottom-up reads the pose data).
    datasets = tuple(dict.fromkeys(REGISTRY[t].facts.builtin_data for t in REGISTRY))
    rec = generate_all(ctx.out, d.seed, datasets, seg_train=d.seg_train, seg_val=d.seg_val,
                       seg_size_hw=tuple(d.seg_size), pose_train=d.pose_train,
                       pose_val=d.pose_val, pose_size_hw=tuple(d.pose_size))
    ctx.run.log_text(json.dumps(rec, indent=1), RECORD_FILE)
    return {"seg_images": float(d.seg_train + d.seg_val),
            "pose_images": float(d.pose_train + d.pose_val)}


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.data.synth import RECORD_FILE

    # The built-in data's bytes must not depend on how the stage was called (data.dvc pins
    # them): no resolved_params.json there; its generator record marks a replaceable output.
    return run_phased_stage(("data", "prepare"), {"data": generate, "prepare": prepare}, argv,
                            default="prepare",
                            options={"data": dict(needs_task=False, write_resolved=False,
                                                  output_marker=RECORD_FILE)})


if __name__ == "__main__":
    sys.exit(main())
