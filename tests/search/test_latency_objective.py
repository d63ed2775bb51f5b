"""search.objective latency: the README's latency commands, the search through its stage entry
points on the predicted-latency axis, the refusal of a table of another device or input size,
and the key's validation."""
from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import readme_bash_commands
from pipeline import config as pc
from pipeline.cli import main as cli
from pipeline.data.synth import generate_cityscapes
from pipeline.nets.supernet import SuperNet
from pipeline.search.jobs import candidate_records
from pipeline.search.latency import PLANNED_FP_ENV, device_info, load_table, predict_latency
from pipeline.search.pareto import pareto_front
from pipeline.search.table import load_results, read_shard
from pipeline.space.arch import Architecture
from pipeline.space.sample import largest
from pipeline.stages import evolve, finetune, latency, report, sample, search_merge, \
    search_shard, search_summary



def readme_commands() -> list[str]:
    """The commands of the README's latency section (its bash block)."""
    return readme_bash_commands("Latency as a search objective")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The README's `scalenas latency` commands (their table is the search's), tiny seg data at
    the table's input size, a random W8 supernet and latency-objective parameters."""
    root = tmp_path_factory.mktemp("latency_objective")
    cmds = [c for c in readme_commands() if c.startswith("scalenas ")]
    assert [shlex.split(c)[1:3] for c in cmds] == [["latency", "build"], ["latency", "predict"]]
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for c in cmds:  # as written
            assert cli(shlex.split(c)[1:]) == 0, c
    finally:
        os.chdir(cwd)
    table = root / "seg_latency.json"
    generate_cityscapes(root / "cs", 0, num_train=12, num_val=2, size_hw=(64, 128))
    ckpt = root / "supernet.pt"
    torch.save(SuperNet("seg", width=8, seed=0).state_dict(), ckpt)
    doc = {"tasks": ["seg"], "data": {"builtin": False},
           "seg": {"root": str(root / "cs"), "width": 8, "crop_size": [64, 128],
                   "search_fraction": 0.25},
           "calibration": {"images": 2, "batch_size": 2},
           "search": {"objective": "latency",
                      "random": {"fusion_probs": [0.2, 0.8], "depth_candidates": [[2, 3]],
                                 "samples_per_cell": 2, "shards": 1},
                      "evolution": {"generations": 1, "population": 2, "parents": 2,
                                    "shards": 1, "screen_factor": 1}},
           "tracking": {"enabled": False}}
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(doc))
    return root, doc, params, ckpt, table


def _write(root: Path, doc: dict, name: str) -> Path:
    p = root / name
    p.write_text(yaml.safe_dump(doc))
    return p


def test_readme_latency_commands_ran(run, capsys):
    root, _, _, _, table = run
    t = load_table(table)
    assert t["task"] == "seg" and t["width"] == 8 and t["input_hw"] == [64, 128]
    # The snakemake command of the section is run by tests/workflow/test_workflow.py.
    assert [c.split()[0] for c in readme_commands()] == ["scalenas", "scalenas", "snakemake"]
    assert cli(["latency", "predict", "hrnet", "--table", str(table)]) == 0
    assert "ms predicted" in capsys.readouterr().out


def test_search_on_the_latency_axis_end_to_end(run, capsys, monkeypatch):
    root, doc, params, ckpt, table = run
    lat = ["--latency-table", str(table)]
    common = ["--params", str(params), "--task", "seg"]
    t = load_table(table)
    ms = lambda arch: predict_latency(t, arch) * 1e3  # noqa: E731

    def step(name, phase, pool=()):
        cand = root / name / "candidates" / "candidates.json"
        assert search_shard.main(["--phase", phase, *common, "--out", str(root / name / "shard_0"),
                                  "--candidates", str(cand), "--shard", "0",
                                  "--checkpoint", str(ckpt), *lat]) == 0, capsys.readouterr().err
        pool_args = ["--pool", *map(str, pool)] if pool else []
        assert search_merge.main(["--phase", phase, *common, "--out", str(root / name / "merged"),
                                  "--candidates", str(cand), "--shards",
                                  str(root / name / "shard_0"), *pool_args, *lat]) == 0, \
            capsys.readouterr().err
        return root / name / "merged" / "results.csv"

    assert sample.main([*common, "--out", str(root / "sample" / "candidates")]) == 0
    pool = step("sample", "search_random")
    assert evolve.main([*common, "--out", str(root / "gen1" / "candidates"), "--generation", "1",
                        "--pool", str(pool), *lat]) == 0, capsys.readouterr().err
    gen1 = step("gen1", "search_evolution", [pool])
    final = root / "final"
    assert search_summary.main([*common, "--out", str(final), "--sample", str(pool),
                                "--generations", str(gen1), "--states",
                                str(root / "gen1" / "candidates" / "state.json"), *lat]) == 0

    # Every row holds its predicted latency (and still its GFLOPs); MLflow gets both.
    rows, _ = read_shard(root / "sample" / "shard_0" / "rows.jsonl")
    for r in rows:
        assert r.gflops > 0
        assert r.latency_ms == pytest.approx(ms(Architecture.from_dict(dict(r.arch))), rel=1e-9)
    assert "latency_ms" in candidate_records(rows, task="seg", phase="search_random")[0]["metrics"]
    # The Pareto front is the front along latency_ms, not along GFLOPs.
    allc = load_results(final / "all.csv")
    cols = list(allc.columns)
    assert cols[cols.index("gflops") + 1] == "latency_ms"
    front = pd.read_csv(final / "front.csv")
    want = allc.iloc[pareto_front(allc["latency_ms"], allc["score"])]["arch_id"].tolist()
    assert front["arch_id"].tolist() == want and front["latency_ms"].is_monotonic_increasing
    summary = json.loads((final / "summary.json").read_text())
    assert summary["objective"] == "latency" and summary["cost_unit"] == "ms"
    assert summary["reference"][0] == pytest.approx(ms(largest("seg")))
    assert json.loads((root / "sample" / "merged" / "summary.json").read_text())[
        "reference"] == summary["reference"]
    state = json.loads((root / "gen1" / "candidates" / "state.json").read_text())
    assert state["config"]["objective"] == "latency" and state["config"]["cost_unit"] == "ms"

    # The cost bounds are in ms too.
    bounded = json.loads(json.dumps(doc))
    bounded["search"]["evolution"]["cost_max"] = 1e-6
    capsys.readouterr()
    assert evolve.main(["--params", str(_write(root, bounded, "bounded.yaml")), "--task", "seg",
                        "--out", str(root / "bounded"), "--generation", "1", "--pool", str(pool),
                        *lat]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cost_max = 1e-06 is below the smallest seg subnet" in err[0]
    assert " ms): no architecture satisfies the latency bounds" in err[0], err

    # Fine-tune budgets follow: a latency_ms budget and a front fraction along the latency span.
    top = float(front["latency_ms"].max())
    picked = json.loads(json.dumps(doc))
    picked["finetune"] = {"seg": {"models": [{"name": "L-cheap", "front_fraction": 0.0},
                                             {"name": "L-top", "latency_ms": top}]}}
    sel = root / "select"
    assert finetune.main(["--select", "--params", str(_write(root, picked, "ft.yaml")),
                          "--task", "seg", "--checkpoint", str(ckpt), "--front",
                          str(final / "front.csv"), "--out", str(sel), *lat]) == 0, \
        capsys.readouterr().err
    doc_sel = json.loads((sel / "selection.json").read_text())
    by_name = {m["name"]: m for m in doc_sel["models"]}
    best = front[front["latency_ms"] <= top].sort_values("score", ascending=False).iloc[0]
    assert by_name["L-top"]["arch_id"] == best["arch_id"]
    assert by_name["L-top"]["budget_latency_ms"] == top and "latency <= " in by_name["L-top"]["rule"]
    assert by_name["L-cheap"]["arch_id"] == front["arch_id"].iloc[0]
    assert by_name["L-cheap"]["search"]["latency_ms"] == pytest.approx(front["latency_ms"].iloc[0])
    assert doc_sel["reference"]["latency_ms"] > 0 and doc_sel["reference"]["gflops"] > 0

    # The report draws the latency axis (the label of the search's own plots) and reports
    # HRNet's and the final models' predicted latency.
    from pipeline.report import figures
    from pipeline.finetune.records import FinetuneRecord

    rec = root / "records" / "L-top" / "finetune.json"
    FinetuneRecord(name="L-top", task="seg", arch_id=by_name["L-top"]["arch_id"], rule="front",
                   metric="mIoU", params=1000, gflops=0.5, input_hw=(64, 128), width=8,
                   inherited=0.1, finetuned=0.2, reloaded=0.2, iterations=1, epochs=1.0,
                   wall_s=1.0, model_dir="model").save(rec)
    drawn, draw = [], figures.pareto_figure
    monkeypatch.setattr(figures, "pareto_figure",
                        lambda *a, **k: (drawn.append(k), draw(*a, **k))[1])
    rep = root / "report"
    assert report.main(["--params", str(params), "--out", str(rep),
                        "--candidates", f"seg={final / 'all.csv'}",
                        "--front", f"seg={final / 'front.csv'}",
                        "--summary", f"seg={final / 'summary.json'}",
                        "--selection", f"seg={sel / 'selection.json'}",
                        "--records", str(rec)]) == 0, capsys.readouterr().err
    metrics = json.loads((rep / "metrics.json").read_text())
    assert metrics["seg"]["search"]["hrnet_latency_ms"] == doc_sel["reference"]["latency_ms"]
    assert "latency_ms" in pd.read_csv(rep / "plots" / "seg_front.csv").columns
    assert " ms predicted" in (rep / "REPORT.md").read_text()
    dev = t["device"]
    label = f"predicted latency (ms, {dev['cpu']}, {dev['threads']} thread(s))"  # the README's
    assert summary["cost_label"] == label and [k["cost_label"] for k in drawn] == [label]
    md = (rep / "final_models.md").read_text().splitlines()
    assert "| GFLOPs | predicted latency (ms) | metric |" in md[0]
    assert f"| {by_name['L-top']['search']['latency_ms']:.4g} | mIoU |" in md[2], md
    assert "<th>predicted latency (ms)</th>" in (rep / "final_models.html").read_text()


@pytest.fixture
def candidates(run, tmp_path):
    """A sampling step's candidate list of this test's own (no other test's files)."""
    root, doc, params, ckpt, table = run
    out = tmp_path / "sample_candidates"
    assert sample.main(["--params", str(params), "--task", "seg", "--out", str(out)]) == 0
    return out / "candidates.json"


@pytest.fixture(autouse=True)
def no_planned_device(monkeypatch):
    """Outside a workflow run: no planned device fingerprint in the environment (a test that
    plays a workflow job sets one)."""
    monkeypatch.delenv(PLANNED_FP_ENV, raising=False)


def test_table_of_another_device_or_input_size_is_refused(run, candidates, tmp_path, capsys):
    root, doc, params, ckpt, table = run
    other = json.loads(table.read_text())
    other["device"].update(cpu="Some Other CPU", fingerprint="0123456789abcdef")
    moved = tmp_path / "other_device.json"
    moved.write_text(json.dumps(other))
    rc = search_shard.main(["--phase", "search_random", "--params", str(params), "--task", "seg",
                            "--out", str(tmp_path / "shard"), "--candidates", str(candidates),
                            "--shard", "0",
                            "--checkpoint", str(ckpt), "--latency-table", str(moved)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("error: search_random[seg]: ") and "Some Other CPU" in err[0]
    assert "this device is" in err[0] and load_table(table)["device"]["cpu"] in err[0]
    assert not (tmp_path / "shard").exists()

    # The parameters' input size (seg.crop_size 64x128) is not the table's.
    small = json.loads(json.dumps(doc))
    small["seg"]["crop_size"] = [64, 64]
    rc = evolve.main(["--params", str(_write(tmp_path, small, "p.yaml")), "--task", "seg",
                      "--out", str(tmp_path / "gen"), "--generation", "1",
                      "--pool", str(tmp_path / "none.csv"), "--latency-table", str(table)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "at 64x128, needed seg W8 at 64x64" in err[0], err

    # A latency objective without a table, and a table without a latency objective.
    rc = evolve.main(["--params", str(params), "--task", "seg", "--out", str(tmp_path / "gen"),
                      "--generation", "1", "--pool", str(tmp_path / "none.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "search.objective is latency: pass --latency-table" in err[0]
    flops = json.loads(json.dumps(doc))
    del flops["search"]["objective"]
    rc = evolve.main(["--params", str(_write(tmp_path, flops, "g.yaml")), "--task", "seg",
                      "--out", str(tmp_path / "gen"), "--generation", "1",
                      "--pool", str(tmp_path / "none.csv"), "--latency-table", str(table)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "search.objective is gflops" in err[0], err


def test_objective_key_validated_and_read_by_its_phases(tmp_path):
    base = yaml.safe_load((Path(__file__).parents[2] / "params" / "default.yaml").read_text())
    assert pc.load_params(_write(tmp_path, base, "d.yaml")).search.objective == "gflops"
    base["search"]["objective"] = "latency"
    latency = pc.load_resolved(_write(tmp_path, base, "l.yaml"))
    assert pc.from_dict(latency).search.objective == "latency"
    base["search"]["objective"] = "flops"
    with pytest.raises(pc.ConfigError) as e:
        pc.load_params(_write(tmp_path, base, "bad.yaml"))
    assert str(e.value).endswith("search.objective: must be one of ['gflops', 'latency'], "
                                 "got 'flops'"), e.value
    # Switching the objective reruns the search and the fine-tune selection, nothing else.
    default = pc.load_resolved(Path(__file__).parents[2] / "params" / "default.yaml")
    changed = {ph for ph in pc.PHASES
               if pc.phase_params(default, ph, "seg") != pc.phase_params(latency, ph, "seg")}
    assert changed == {"search_random", "search_evolution", "finetune"}
    # Budgets are in the objective's unit.
    from pipeline.finetune.select import specs_from_params
    (spec,) = specs_from_params(pc.make_section(pc.FinetuneTrainConfig, models=[], budgets=[12.5]),
                                objective="latency")
    assert (spec.name, spec.kind, spec.latency_ms) == ("ms12.5", "latency_ms", 12.5)
    (spec,) = specs_from_params(pc.make_section(pc.FinetuneTrainConfig, models=[], budgets=[0.5]))
    assert (spec.name, spec.kind, spec.gflops) == ("gflops0.5", "gflops", 0.5)
    # The latency table's own parameters: the task section (width and input size).
    assert pc.phase_keys("latency", "pose") == ("pose",)
    np.testing.assert_equal(pc.restrict(latency, "latency", "seg").seg.crop_size, (64, 128))


def test_merge_front_and_plot_follow_latency_not_gflops(run, tmp_path, monkeypatch):
    """Rows whose GFLOPs and predicted latency disagree: the merged front is the latency one."""

    root, doc, params, ckpt, table = run
    # GFLOPs up with the score (every row on the GFLOPs front), latency down (one on its front).
    archs, cands, shard = _synthetic_merge_inputs(tmp_path, 4)
    plots = []
    monkeypatch.setattr(search_merge, "plot_fronts", lambda *a, **k: plots.append(k))
    out = tmp_path / "merged"
    assert search_merge.main(["--phase", "search_random", "--params", str(params), "--task", "seg",
                              "--out", str(out), "--candidates", str(cands),
                              "--shards", str(shard),
                              "--latency-table", str(table)]) == 0
    front = pd.read_csv(out / "front.csv")
    assert front["arch_id"].tolist() == [archs[3].arch_id]
    summary = json.loads((out / "summary.json").read_text())
    ref = predict_latency(load_table(table), largest("seg")) * 1e3
    assert summary["objective"] == "latency" and summary["reference"][0] == pytest.approx(ref)
    assert summary["cumulative"]["hypervolume"] == pytest.approx((ref - 37.0) * 0.4)
    (kw,) = plots
    assert kw["cost"] == "latency_ms" and kw["cost_label"].startswith("predicted latency (ms, ")


def _synthetic_merge_inputs(tmp_path: Path, n: int = 3) -> tuple[list, Path, Path]:
    """``n`` architectures, their candidate list and one shard of rows for them (no network
    evaluated): GFLOPs and score rise with the index, predicted latency falls."""
    from pipeline.search.candidates import Candidate, write_candidates
    from pipeline.search.table import Row, write_shard
    from pipeline.space.sample import sample_arch

    archs = [sample_arch(np.random.default_rng(i), 0.5, (2, 3), "seg") for i in range(n)]
    cands = [Candidate(i, 0, "g", 0.5, "2-3", a) for i, a in enumerate(archs)]
    write_candidates(tmp_path / "candidates.json", "sample", 0, 1, cands)
    timing = {"wall_s": 1.0, "calib_s": 0.5, "eval_s": 0.5, "forward_s": 0.9, "overhead_s": 0.1}
    write_shard(tmp_path / "shard_0" / "rows.jsonl", [
        Row(a.arch_id, "sample", 0, i, 0, "g", 0.5, "2-3", 1000, 1.0 + i, 0.1 * (i + 1), {},
            timing, a.to_dict(), latency_ms=40.0 - i) for i, a in enumerate(archs)])
    return archs, tmp_path / "candidates.json", tmp_path / "shard_0"


def test_jobs_check_the_table_against_the_planned_device_not_their_node(run, tmp_path,
                                                                        monkeypatch, capsys):
    """A workflow job (SCALENAS_LATENCY_FP set by the planning process) takes a table of the
    planned device, whichever node it runs on, and refuses a table of any other device."""
    root, doc, params, ckpt, table = run
    _, cands, shard = _synthetic_merge_inputs(tmp_path)
    fp = "0123456789abcdef"  # the planning machine: not this one
    other = json.loads(table.read_text())
    other["device"].update(cpu="Planning Node CPU", fingerprint=fp)
    planned = tmp_path / "latency" / fp / "table.json"
    planned.parent.mkdir(parents=True)
    planned.write_text(json.dumps(other))

    def merge(out: str, tbl: Path) -> int:
        return search_merge.main(["--phase", "search_random", "--params", str(params), "--task",
                                  "seg", "--out", str(tmp_path / out), "--candidates", str(cands),
                                  "--shards", str(shard), "--latency-table", str(tbl)])

    monkeypatch.setenv(PLANNED_FP_ENV, fp)
    assert device_info()["fingerprint"] != fp
    assert merge("ok", planned) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "ok" / "summary.json").read_text())
    assert summary["objective"] == "latency"
    assert summary["cost_label"] == "predicted latency (ms, Planning Node CPU, 1 thread(s))"
    # This node's own table is not the planned device's.
    capsys.readouterr()
    assert merge("mine", table) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"the run planned device [{fp}] ({PLANNED_FP_ENV})" in err[0], err
    assert not (tmp_path / "mine").exists()
    # The planned device's table still has to be of the task's width and input size.
    small = json.loads(json.dumps(doc))
    small["seg"]["crop_size"] = [64, 64]
    assert search_merge.main(["--phase", "search_random", "--params",
                              str(_write(tmp_path, small, "small.yaml")), "--task", "seg",
                              "--out", str(tmp_path / "small"), "--candidates", str(cands),
                              "--shards", str(shard), "--latency-table", str(planned)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "at 64x128, needed seg W8 at 64x64" in err[0], err
    # Started by hand (no planned device), the job checks the table against this machine.
    monkeypatch.delenv(PLANNED_FP_ENV)
    assert merge("by_hand", planned) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Planning Node CPU" in err[0] and "this device is" in err[0], err


def test_table_job_refuses_a_device_other_than_the_planned_one(run, tmp_path, monkeypatch,
                                                               capsys):
    """The latency stage measures only the planned device: another machine, or this one with
    fewer threads than planned (Snakemake caps a job's threads at --cores), is one line, exit 2,
    no table; the planned device itself gets its table."""
    root, doc, params, ckpt, table = run

    def build(out: str, threads: int) -> int:
        return latency.main(["--params", str(params), "--task", "seg", "--threads", str(threads),
                             "--repeats", "1", "--out", str(tmp_path / out)])

    monkeypatch.setenv(PLANNED_FP_ENV, "0123456789abcdef")
    assert build("other", 1) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: latency[seg]: this machine is "), err
    assert "not the device the run planned [0123456789abcdef]" in err[0]
    assert not (tmp_path / "other").exists()

    monkeypatch.setenv(PLANNED_FP_ENV, device_info(2)["fingerprint"])  # run.threads 2
    assert build("capped", 1) == 2  # the job got 1 thread
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "this job measures with 1 thread(s), the run planned its table " \
        "for 2 (run.threads)" in err[0] and "--cores >= 2" in err[0], err
    assert not (tmp_path / "capped").exists()

    monkeypatch.setenv(PLANNED_FP_ENV, device_info(1)["fingerprint"])
    assert build("planned", 1) == 0, capsys.readouterr().err
    built = load_table(tmp_path / "planned" / "table.json")
    assert built["device"]["fingerprint"] == device_info(1)["fingerprint"]
    assert (built["task"], built["width"], built["input_hw"]) == ("seg", 8, [64, 128])
