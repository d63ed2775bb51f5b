"""kill -9 during a sampling shard and during an evolution generation, then rerun: only the
missing candidates are evaluated, no duplicate rows, the same table as an uninterrupted run."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pipeline.search.shards import partial_path
from pipeline.search.table import read_shard

# A real search job at W8 on synthetic images: supernet, BN calibration, evaluation, cost model.
DRIVER = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from pipeline.cost import profile
    from pipeline.nets.supernet import SuperNet
    from pipeline.nets.calibrate import CalibrationSet
    from pipeline.search.candidates import (children_candidates, grid_candidates, grid_groups,
                                            read_candidates, write_candidates)
    from pipeline.search.evaluate import CandidateEvaluator
    from pipeline.config import EvolutionConfig, make_section
    from pipeline.search.evolution import Generation, initial_rng_state, next_generation
    from pipeline.search.shards import merge_outputs, run_shard
    from pipeline.search.table import load_results, architectures
    from pipeline.search.evolution import Evaluated

    mode, out = sys.argv[1], Path(sys.argv[2])
    g = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 64, 64, generator=g)
    labels = torch.randint(0, 19, (4, 16, 16), generator=g)
    net = SuperNet("seg", 8, seed=0)
    calib = CalibrationSet.from_images([0, 1, 2, 3], images)
    def evaluate_fn(model):
        with torch.no_grad():
            pred = model(images).argmax(1)
        return {"score": float((pred == labels).float().mean()), "pixel_acc": 0.0}
    cost = lambda a: profile(a, "seg", 8, (64, 64))
    groups = grid_groups([0.2, 0.8], [(2, 3)])
    if mode == "sample":
        stage, gen = "sample", 0
        cands_path = out / "candidates.json"
        if not cands_path.exists():
            write_candidates(cands_path, stage, gen, 2, grid_candidates("seg", groups, 4, 0, 2))
    else:
        stage, gen = "evolve", 1
        cands_path = out / "gen_1" / "candidates.json"
        state_path = out / "gen_1" / "state.json"
        if not state_path.exists():
            pool_df = load_results(out / "results.csv")
            pool = [Evaluated(a, float(f), float(s)) for a, f, s in
                    zip(architectures(pool_df), pool_df["gflops"], pool_df["score"])]
            cfg = make_section(EvolutionConfig, parents=4, population=6)
            state = next_generation(pool, initial_rng_state(5), cfg, task="seg",
                                    estimate_cost=lambda a: cost(a).gflops, generation=1)
            state.save(state_path)
        state = Generation.load(state_path)
        if not cands_path.exists():
            write_candidates(cands_path, stage, gen, 2, children_candidates(state.children, 2))
    cl = read_candidates(cands_path)
    ev = CandidateEvaluator(net, calib, evaluate_fn, cost, stage=stage, generation=gen)
    outs = []
    for k in range(cl.shards):
        o = cands_path.parent / f"shard_{k}.jsonl"
        rows, new = run_shard(cl.shard(k), o, ev)
        print(f"shard {k}: {new} evaluated", flush=True)
        outs.append(o)
    merge_outputs(outs, cands_path.parent / "results.csv", cands_path.parent / "timings.csv")
''')


def run(mode, out, kill_after_rows=None, watch=None):
    cmd = [sys.executable, "-c", DRIVER, mode, str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if kill_after_rows is None:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert res.returncode == 0, res.stderr
        return res.stdout
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        if watch.exists() and watch.read_bytes().count(b"\n") >= kill_after_rows:
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return None


def evaluated_counts(stdout):
    return [int(line.split(": ")[1].split()[0]) for line in stdout.splitlines()
            if line.startswith("shard")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    ref = tmp_path_factory.mktemp("ref")
    assert evaluated_counts(run("sample", ref)) == [4, 4]
    assert evaluated_counts(run("evolve", ref)) == [3, 3]
    return ref


def test_kill_sampling_shard_then_resume(reference, tmp_path):
    watch = partial_path(tmp_path / "shard_0.jsonl")
    run("sample", tmp_path, kill_after_rows=2, watch=watch)
    done = len(read_shard(watch)[0])
    assert 2 <= done < 4 and not (tmp_path / "results.csv").exists()
    counts = evaluated_counts(run("sample", tmp_path))
    assert counts == [4 - done, 4]          # only the missing candidates
    rows = read_shard(tmp_path / "shard_0.jsonl")[0]
    assert len({r.arch_id for r in rows}) == len(rows) == 4
    assert (tmp_path / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()


def test_kill_evolution_generation_then_resume(reference, tmp_path):
    for name in ("results.csv", "candidates.json"):
        (tmp_path / name).write_bytes((reference / name).read_bytes())
    watch = partial_path(tmp_path / "gen_1" / "shard_0.jsonl")
    run("evolve", tmp_path, kill_after_rows=1, watch=watch)
    done = len(read_shard(watch)[0])
    assert 1 <= done < 3
    counts = evaluated_counts(run("evolve", tmp_path))
    assert counts == [3 - done, 3]
    for name in ("state.json", "candidates.json", "results.csv"):
        assert (tmp_path / "gen_1" / name).read_bytes() == (reference / "gen_1" / name).read_bytes()
