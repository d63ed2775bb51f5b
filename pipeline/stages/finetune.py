"""Stage ``finetune``: choose the final models, then fine-tune each one (one job per model).

Selection (one job per task) reads the final Pareto front and the ``finetune.<task>`` parameters
(:func:`pipeline.finetune.select.specs_from_params`), and also measures the HRNet reference point
the report draws: HRNet's subnet of the supernet, BN-calibrated, scored on the search split like
every candidate::

    python -m pipeline.stages.finetune --select --params results/params/seg/finetune.json \\
        --task seg --checkpoint results/seg/supernet/model.pt \\
        --front results/seg/search/final/front.csv --out results/seg/finetune/select

writes ``selection.json`` (models, reference) and ``archs/<name>.json``. With
``search.objective: latency`` the budgets are in ms along the front's ``latency_ms`` column and
``--latency-table`` (the search's table) adds HRNet's predicted latency to the reference.

Fine-tuning one model (:func:`pipeline.finetune.tune.finetune_model`)::

    python -m pipeline.stages.finetune --model S1 --selection .../select/selection.json \\
        --params ... --task seg --checkpoint ... --out results/seg/finetune/S1

writes ``model/`` (weights.pt, arch.json, model.json: rebuilds the network alone; deploy/optimized.ts:
the optimized TorchScript, and its record deploy/optimized.ts.json) and
``finetune.json`` (val metric with inherited weights, after fine-tuning, after reloading), and
logs both to MLflow. Training checkpoints live in the stage's work directory, so a killed job
resumes where it stopped.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pipeline.io import read_json
from pipeline.io import atomic_write_text
from pipeline.stages.common import StageContext, StageInputError, run_stage

PHASE = "finetune"
SELECTION_FILE = "selection.json"
SELECTION_SCHEMA = "scalenas-selection/1"


def add_args(p: argparse.ArgumentParser) -> None:
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--select", action="store_true", help="choose the models to fine-tune")
    mode.add_argument("--model", help="fine-tune the selected model of this name")
    p.add_argument("--checkpoint", type=Path, required=True, help="trained supernet weights")
    p.add_argument("--front", type=Path, default=None,
                   help="the search's final Pareto front (front.csv); --select only")
    p.add_argument("--selection", type=Path, default=None,
                   help="selection.json of the selection job; --model only")
    p.add_argument("--latency-table", type=Path, default=None,
                   help="the search's latency table (search.objective latency; --select only)")


# -- selection ------------------------------------------------------------------------------------
def _reference(ctx: StageContext, latency: Any = None) -> dict[str, Any]:
    """HRNet at the search's width and input: analytic cost (and predicted latency with a latency
    objective's predictor ``latency``), inherited-weight search-split score."""
    from pipeline.evaluate import score
    from pipeline.stages.build import (task_from_config, cost_input_hw, load_calibration, load_supernet,
                                       make_cost_fn)
    from pipeline.space.sample import hrnet

    arch = hrnet(ctx.task)
    cost = make_cost_fn(ctx.task, ctx.cfg)(arch)
    task_obj = task_from_config(ctx.task, ctx.cfg)
    net = load_supernet(ctx.task, ctx.cfg, ctx.args.checkpoint, ctx.device)
    net.set_arch(arch)
    load_calibration(task_obj, ctx.cfg, ctx.device).calibrate(net)
    net.eval()
    result = score(task_obj, net, "search", ctx.device, int(ctx.cfg.calibration.batch_size))
    width = int(ctx.task_cfg.width)
    ref = {"label": f"HRNet-W{width}", "arch_id": arch.arch_id, "params": int(cost.params),
           "gflops": float(cost.gflops), "input_hw": list(cost_input_hw(ctx.task, ctx.cfg)),
           "search_score": float(result["score"]),
           "note": "supernet subnet, BN-calibrated, search split"}
    if latency is not None:
        ref["latency_ms"] = float(latency(arch))
    return ref


def select_body(ctx: StageContext) -> dict[str, float]:
    from pipeline.finetune.select import select_models, specs_from_params
    from pipeline.search.table import load_results
    from pipeline.stages.build import search_cost

    if ctx.args.front is None:
        raise StageInputError("--select needs --front (the search's final front.csv)")
    cost = search_cost(ctx.task, ctx.cfg, ctx.args.latency_table)
    specs = specs_from_params(getattr(ctx.cfg.finetune, ctx.task), source=f"finetune.{ctx.task}",
                              objective=cost.axis.objective)
    front = load_results(ctx.args.front)
    chosen = select_models(specs, ctx.task, front, source=f"finetune.{ctx.task}",
                           cost=cost.axis.column)
    reference = _reference(ctx, cost.latency)
    doc = {"schema": SELECTION_SCHEMA, "task": ctx.task, "front": str(ctx.args.front),
           "front_size": len(front), "models": [m.to_dict() for m in chosen],
           "reference": reference}
    for m in chosen:
        m.arch.save(ctx.out / "archs" / f"{m.name}.json")
        print(f"{ctx.task}: {m.name}: {m.rule} -> {m.arch.arch_id} {dict(m.search)}")
    atomic_write_text(ctx.out / SELECTION_FILE, json.dumps(doc, indent=1) + "\n")
    ctx.run.log_artifact(ctx.out / SELECTION_FILE)
    ctx.run.log_artifact(ctx.out / "archs", "archs")
    return {"selected": float(len(chosen)), "hrnet_search_score": reference["search_score"],
            "hrnet_gflops": reference["gflops"]}


# -- fine-tuning one model --------------------------------------------------------------------------
def read_selection(path: Path, name: str, task: str) -> Any:
    """The selected model ``name`` of a ``selection.json``, or a one-line error."""
    from pipeline.finetune.select import SelectedModel, SelectionError

    doc = read_json(path, "selection file", StageInputError)
    if not isinstance(doc, dict) or doc.get("schema") != SELECTION_SCHEMA or doc.get("task") != task:
        raise StageInputError(f"{path}: not a {task} selection file of schema {SELECTION_SCHEMA!r}")
    for entry in doc.get("models", []):
        if isinstance(entry, dict) and entry.get("name") == name:
            try:
                return SelectedModel.from_dict(entry, source=str(path))
            except (SelectionError, ValueError) as e:
                raise StageInputError(str(e)) from None
    names = [e.get("name") for e in doc.get("models", []) if isinstance(e, dict)]
    raise StageInputError(f"{path}: no selected model named {name!r} (selected: {names})")


def model_body(ctx: StageContext) -> dict[str, float]:
    from pipeline.nets.init import file_sha256
    from pipeline.nets.deploy import write_deployable
    from pipeline.finetune.tune import MODEL_DIR, RECORD_FILE, finetune_model
    from pipeline.stages.build import (task_from_config, cost_input_hw, load_calibration, load_supernet,
                                       make_cost_fn, train_run)
    from pipeline.stages.training import start_weights

    if ctx.args.selection is None:
        raise StageInputError("--model needs --selection (selection.json of the selection job)")
    selected = read_selection(ctx.args.selection, ctx.args.model, ctx.task)
    task_obj = task_from_config(ctx.task, ctx.cfg)
    supernet = load_supernet(ctx.task, ctx.cfg, ctx.args.checkpoint, ctx.device)
    calib = load_calibration(task_obj, ctx.cfg, ctx.device)
    section = getattr(ctx.cfg.finetune, ctx.task)
    ctx.run.set_tags({"scalenas.supernet_sha256": file_sha256(ctx.args.checkpoint)})
    # finetune.<task>.init: the models start from these weights instead of the supernet's.
    init, train_dir = start_weights(ctx, supernet, section)
    work = ctx.work if init is None else train_dir
    ctx.run.set_tags({"scalenas.arch_id": selected.arch.arch_id, "scalenas.model": selected.name})
    record = finetune_model(
        task_obj, supernet, selected, section, calib.calibrate, ctx.out, work,
        run=train_run(ctx.cfg, ctx.device),
        cost=make_cost_fn(ctx.task, ctx.cfg)(selected.arch),
        input_hw=cost_input_hw(ctx.task, ctx.cfg), device=ctx.device,
        eval_batch_size=int(section.batch_size), tracker=ctx.run)
    write_deployable(ctx.out / MODEL_DIR)
    # The model files themselves (torch.save + log_artifact; mlflow.pytorch.log_model is slow).
    ctx.run.log_artifact(ctx.out / MODEL_DIR, "model")
    ctx.run.log_artifact(ctx.out / RECORD_FILE)
    print(f"{ctx.task}: {record.name} ({record.arch_id}): {record.metric} "
          f"{record.inherited:.4f} inherited -> {record.finetuned:.4f} fine-tuned "
          f"(reloaded {record.reloaded:.4f}), {record.iterations} iterations")
    return {"val_inherited": record.inherited, "val_finetuned": record.finetuned,
            "val_reloaded": record.reloaded, "val_gain": record.gain,
            "params": float(record.params), "gflops": record.gflops}


def body(ctx: StageContext) -> dict[str, float]:
    if ctx.args.select:
        return select_body(ctx)
    from pipeline.train.distributed import init_distributed

    # Under torchrun: join the group first, so that "cuda" is this rank's device from here on.
    init_distributed(ctx.device)
    return model_body(ctx)


def main(argv: list[str] | None = None) -> int:
    from pipeline.train.distributed import shutdown_distributed
    from pipeline.stages.training import disable_tracking_off_main

    disable_tracking_off_main()
    try:
        return run_stage(PHASE, body, argv, add_args=add_args)
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    sys.exit(main())
