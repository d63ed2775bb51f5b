"""Search stage entry points: deterministic candidate lists and one clear error per bad input."""
import numpy as np
import pytest

from pipeline.search.table import Row, rows_to_frames, write_table
from pipeline.space.sample import sample_arch
from pipeline.stages import evolve, sample


def write_params(tmp_path, evolution="{generations: 2, population: 4, parents: 3, shards: 2}"):
    root = tmp_path / "cityscapes"
    root.mkdir(exist_ok=True)
    p = tmp_path / "params.yaml"
    p.write_text(f"""
tasks: [seg]
data: {{builtin: false}}
seg: {{root: {root}}}
search:
  random: {{fusion_probs: [0.2, 0.8], depth_candidates: [[2, 3], [4, 5]], samples_per_cell: 2, shards: 2}}
  evolution: {evolution}
tracking: {{enabled: false}}
""")
    return p


def write_pool(path, n=4, score=lambda i, arch: 0.1 * i):
    rows = []
    for i in range(n):
        arch = sample_arch(np.random.default_rng(i), 0.5, (2, 3), "seg")
        rows.append(Row(arch.arch_id, "sample", 0, i, i % 2, "p0.5_d23", 0.5, "2-3", 1000 + i,
                        0.2 + 0.01 * i, score(i, arch), {}, {"wall_s": 1.0, "calib_s": 0.5, "eval_s": 0.5,
                                                   "forward_s": 0.9, "overhead_s": 0.1},
                        arch.to_dict()))
    write_table(rows_to_frames(rows)[0], path)
    return path


def test_sample_stage_is_deterministic(tmp_path):
    p = write_params(tmp_path)
    for d in ("a", "b"):
        assert sample.main(["--params", str(p), "--task", "seg", "--out", str(tmp_path / d)]) == 0
    a, b = (tmp_path / d / "candidates.json" for d in ("a", "b"))
    assert a.read_bytes() == b.read_bytes()
    assert a.read_text().count('"index"') == 8


def run_evolve(tmp_path, params, pool):
    return evolve.main(["--params", str(params), "--task", "seg", "--out", str(tmp_path / "gen"),
                        "--generation", "1", "--pool", str(pool)])


def test_evolve_stage_ok_and_resumable_state(tmp_path):
    pool = write_pool(tmp_path / "results.csv")
    assert run_evolve(tmp_path, write_params(tmp_path), pool) == 0
    first = (tmp_path / "gen" / "state.json").read_bytes()
    assert run_evolve(tmp_path, write_params(tmp_path), pool) == 0
    assert (tmp_path / "gen" / "state.json").read_bytes() == first


@pytest.mark.parametrize("evolution, pool_edit, message", [
    ("{generations: 1, population: 4, parents: 9}", None,
     "evolution.parents (the parent population) = 9 is larger than the evaluated pool (4 candidates)"),
    ("{generations: 1, population: 4, parents: 3, cost_max: 0.0001}", None,
     "cost_max = 0.0001 is below the smallest seg subnet"),
    ("{generations: 1, population: 4, parents: 3}", "corrupt",
     "results.csv:3: corrupt row: column 'score' = 'oops' is not float"),
])
def test_evolve_stage_bad_input_one_line(tmp_path, capsys, evolution, pool_edit, message):
    pool = write_pool(tmp_path / "results.csv")
    if pool_edit == "corrupt":
        lines = pool.read_text().splitlines()
        header = lines[0].split(",")
        cells = lines[2].split(",")
        cells[header.index("score")] = "oops"
        lines[2] = ",".join(cells)
        pool.write_text("\n".join(lines) + "\n")
    rc = run_evolve(tmp_path, write_params(tmp_path, evolution), pool)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: search_evolution[seg]: ")
    assert message in err[0]
    assert not (tmp_path / "gen" / "state.json").exists()


def test_summary_reports_how_well_screening_predicted(tmp_path):
    import json

    from pipeline.search.evolution import Generation
    from pipeline.stages import search_summary
    params = write_params(tmp_path, "{generations: 1, population: 4, parents: 3, screen_factor: 3}")
    # Scores the surrogate can learn (it is not used when it has no skill).
    pool = write_pool(tmp_path / "pool.csv", n=10, score=lambda i, arch: 0.01 * arch.num_fusions())
    assert run_evolve(tmp_path, params, pool) == 0
    gen = Generation.load(tmp_path / "gen" / "state.json")
    pred = gen.screening["predicted"]
    assert gen.screening["candidates"] == 12 and sorted(pred) == sorted(a.arch_id for a in gen.children)
    # Measured scores: an affine map of the predictions, so r = 1 and the error is known.
    rows = [Row(a.arch_id, "evolve", 1, i, 0, "", -1.0, "", 1000, 0.21 + 0.001 * i,
                2.0 * pred[a.arch_id] + 0.1, {}, {"wall_s": 1.0, "calib_s": 0.5, "eval_s": 0.5,
                                                  "forward_s": 0.9, "overhead_s": 0.1}, a.to_dict())
            for i, a in enumerate(gen.children)]
    write_table(rows_to_frames(rows)[0], tmp_path / "gen1.csv")
    out = tmp_path / "final"
    assert search_summary.main(["--params", str(params), "--task", "seg", "--out", str(out),
                                "--sample", str(pool), "--generations", str(tmp_path / "gen1.csv"),
                                "--states", str(tmp_path / "gen" / "state.json")]) == 0
    (row,) = json.loads((out / "summary.json").read_text())["screening"]
    assert row["generation"] == 1 and row["children"] == 4
    assert row["surrogate_r"] == pytest.approx(1.0)
    mae = np.mean([abs(p + 0.1) for p in pred.values()])
    assert row["surrogate_mae"] == pytest.approx(mae)
    rc = search_summary.main(["--params", str(params), "--task", "seg", "--out", str(out),
                              "--sample", str(pool), "--generations", str(tmp_path / "gen1.csv"),
                              "--states", str(tmp_path / "gen" / "state.json"),
                              str(tmp_path / "gen" / "state.json")])
    assert rc != 0
