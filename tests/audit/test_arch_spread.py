"""benchmarks/arch_spread.py (does architecture matter on this data?) at a tiny size: it trains
through the audit's own stand-alone function and prints the spread a researcher reads."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import tiny

REPO = Path(__file__).resolve().parents[2]


def test_arch_spread_prints_scores_and_the_spread(tmp_path: Path) -> None:
    doc = tiny(yaml.safe_load((REPO / "params" / "default.yaml").read_text()))
    doc["calibration"]["images"] = 2
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump(doc))
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "arch_spread.py"), "--params",
                        str(params), "--tasks", "seg", "--archs", "smallest", "largest",
                        "--seeds", "0", "1", "--iterations", "2", "--jobs", "1"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    rows = re.findall(r"^\s+(smallest|largest)\s+([\d.]+) GFLOPs\s+([\d.]+)\s+([\d.]+)\s+mean", out,
                      re.M)
    assert [x[0] for x in rows] == ["smallest", "largest"], out
    assert float(rows[0][1]) < float(rows[1][1])   # the cost axis: smallest below largest
    assert re.search(r"largest - smallest: [+-][\d.]+", out), out
    assert "SD between networks" in out
