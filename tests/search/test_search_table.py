"""Results shards: strict loading, torn last line, resume, deterministic merge."""
import json

import numpy as np
import pytest

from pipeline.search.table import (ResultsError, Row, ShardWriter, load_results, merge_shards,
                                   read_shard, write_table)
from pipeline.space.sample import sample_arch


def make_row(i: int, shard: int = 0, stage: str = "sample") -> Row:
    arch = sample_arch(np.random.default_rng(i), 0.5, (2, 3), "seg")
    return Row(arch_id=arch.arch_id, stage=stage, generation=0, index=i, shard=shard,
               group="p0.5_d23", fusion_prob=0.5, depth_candidates="2-3", params=1000 + i,
               gflops=0.1 * i + 0.05, score=1.0 / (i + 1), metrics={"miou": 0.5, "pixel_acc": 0.25},
               timing={"wall_s": 1.0, "calib_s": 0.5, "eval_s": 0.4, "forward_s": 0.8,
                       "overhead_s": 0.2},
               arch=arch.to_dict())


def test_append_resume_and_torn_last_line(tmp_path):
    p = tmp_path / "shard_0.jsonl"
    with ShardWriter(p) as w:
        for i in range(3):
            w.append(make_row(i))
    full = p.read_bytes()
    # A kill mid-write leaves a prefix of the next row without its newline.
    torn = make_row(3).to_json()[:40]
    p.write_bytes(full + torn.encode())
    rows, valid = read_shard(p)
    assert [r.index for r in rows] == [0, 1, 2] and valid == len(full)
    with ShardWriter(p) as w:  # resume: the torn tail is cut, new rows start on a fresh line
        assert w.done == {make_row(i).arch_id for i in range(3)}
        w.append(make_row(3))
        with pytest.raises(ResultsError, match="already recorded"):
            w.append(make_row(3))
    assert [r.index for r in read_shard(p)[0]] == [0, 1, 2, 3]


def test_corrupt_row_names_file_and_line(tmp_path):
    p = tmp_path / "shard_0.jsonl"
    lines = [make_row(i).to_json() for i in range(3)]
    lines[1] = lines[1].replace('"score"', '"scor"')
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(ResultsError, match=r"shard_0\.jsonl:2: missing key\(s\) \['score'\]"):
        read_shard(p)
    lines = [make_row(i).to_json() for i in range(3)]
    lines[0] = lines[0][:-5]  # a broken line that is not the last one is not a torn write
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(ResultsError, match=r"shard_0\.jsonl:1: corrupt row"):
        read_shard(p)
    doc = json.loads(make_row(0).to_json())
    doc["arch_id"] = "0" * 16
    p.write_text(json.dumps(doc) + "\n")
    with pytest.raises(ResultsError, match=r":1: arch_id '0000000000000000' does not match"):
        read_shard(p)


def test_merge_sorted_deduped_and_roundtrip(tmp_path):
    a, b = tmp_path / "shard_0.jsonl", tmp_path / "shard_1.jsonl"
    with ShardWriter(a) as w:
        for i in (4, 0, 2):
            w.append(make_row(i, 0))
    with ShardWriter(b) as w:
        for i in (3, 1):
            w.append(make_row(i, 1))
        w.append(make_row(2, 1, stage="sample"))  # same arch twice across shards: kept once
    res, tim = merge_shards([b, a])
    assert res["index"].tolist() == [0, 1, 2, 3, 4]
    assert list(tim.columns[:2]) == ["arch_id", "stage"] and len(tim) == 5
    assert "wall_s" not in res.columns and "metric_miou" in res.columns
    write_table(res, tmp_path / "results.csv")
    back = load_results(tmp_path / "results.csv")
    assert back["arch_id"].tolist() == res["arch_id"].tolist()
    assert np.allclose(back["gflops"], res["gflops"], rtol=0, atol=0)
    res2, _ = merge_shards([a, b])
    write_table(res2, tmp_path / "results2.csv")
    assert (tmp_path / "results.csv").read_bytes() == (tmp_path / "results2.csv").read_bytes()


def test_corrupt_csv_row(tmp_path):
    a = tmp_path / "shard_0.jsonl"
    with ShardWriter(a) as w:
        for i in range(3):
            w.append(make_row(i))
    res, _ = merge_shards([a])
    p = tmp_path / "results.csv"
    write_table(res, p)
    lines = p.read_text().splitlines()
    cells = lines[2].split(",")
    cells[res.columns.get_loc("gflops")] = "lots"
    lines[2] = ",".join(cells)
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(ResultsError, match=r"results\.csv:3: corrupt row: column 'gflops' = 'lots'"):
        load_results(p)
