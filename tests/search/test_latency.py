"""Latency lookup table: built on this machine, summed per architecture, refused elsewhere."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.search.latency import (check_table, load_table, predict_latency,
                                     variable_parts)
from pipeline.space.sample import hrnet, largest, sample_arch, smallest


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("lat") / "seg.json"
    assert main(["latency", "build", "--task", "seg", "--width", "8", "--input", "64x64",
                 "--device", "cpu", "--repeats", "1", "-o", str(path)]) == 0
    return path


def test_table_covers_every_component(table_path):
    t = load_table(table_path)
    e = t["entries"]
    assert {f"block/{b}" for b in range(4)} <= set(e) and "fixed" in e
    assert {f"fuse/{k}->{j}" for k in range(4) for j in range(4) if k != j} <= set(e)
    assert t["input_hw"] == [64, 64] and t["width"] == 8 and len(t["device"]["fingerprint"]) == 16
    assert all(v > 0 for k, v in e.items() if k != "fixed")
    # The smallest network is the calibration point: its prediction is its measured time.
    assert predict_latency(t, smallest("seg")) == pytest.approx(
        t["calibration"]["end_to_end_s"], rel=1e-4)
    assert predict_latency(t, largest("seg")) > predict_latency(t, hrnet("seg"))


def test_counts():
    arch = sample_arch(np.random.default_rng(0), 0.5, [2, 3], "seg")
    counts = variable_parts(arch)
    assert sum(v for k, v in counts.items() if k.startswith("block/")) == sum(
        sum(m.depths) for m in arch.modules)
    assert not any(k.startswith("fuse/") for k in variable_parts(smallest("seg")))


def test_predict_command_and_refusals(table_path, tmp_path, capsys):
    assert main(["latency", "predict", "hrnet", "--table", str(table_path)]) == 0
    assert "ms predicted" in capsys.readouterr().out
    assert main(["latency", "predict", "hrnet", "--table", str(table_path),
                 "--input", "128x64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "64x64" in err[0] and "128x64" in err[0]
    other = json.loads(table_path.read_text())
    other["device"].update(cpu="Some Other CPU", fingerprint="0123456789abcdef")
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))
    assert main(["latency", "predict", "hrnet", "--table", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Some Other CPU" in err[0] and "this device is" in err[0]
    with pytest.raises(InputError, match="pose W8"):
        check_table(load_table(table_path), "pose", 8, (64, 64))
