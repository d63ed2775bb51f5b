"""results/report/AUDIT.md: every audited task's headline figures and table on one page."""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.audit.ranking import build_ranking
from pipeline.audit.summary import main


def _ranking(task: str, metric: str, flip: bool) -> dict:
    slots = [{"slot": f"a{i:02d}", "role": r, "label": lab, "arch_id": f"id{i}", "gflops": g,
              "params": 1000 + i, "inherited": inh}
             for i, (r, lab, g, inh) in enumerate([
                 ("smallest", "smallest", 0.1, 0.1), ("largest", "largest", 0.4, 0.4),
                 ("hrnet", "HRNet", 0.3, 0.3), ("pick", "S", 0.2, 0.35)])]
    slots += [{"slot": "S.random", "role": "random", "label": "S", "arch_id": "r", "gflops": 0.2,
               "params": 5, "inherited": 0.1},
              {"slot": "S.uniform", "role": "uniform", "label": "S", "arch_id": "u",
               "gflops": 0.21, "params": 6, "inherited": 0.2}]
    truth = {"a00": 0.1, "a01": 0.5, "a02": 0.3, "a03": 0.4, "S.random": 0.25, "S.uniform": 0.35}
    if flip:  # a supernet that ranks backwards
        truth = {k: 0.6 - v for k, v in truth.items()}
    scores = {s: {0: v, 1: v + 0.01} for s, v in truth.items()}
    return build_ranking(task, metric, slots, scores, {"S": 0.45}, {"S": "a03"}, resamples=200,
                         seed=0)


def test_one_page_with_headline_tables_and_figures(tmp_path: Path) -> None:
    paths = []
    for task, metric, flip in (("seg", "mIoU", False), ("pose", "AP", True)):
        d = tmp_path / "results" / task / "audit"
        d.mkdir(parents=True)
        (d / "ranking.json").write_text(json.dumps(_ranking(task, metric, flip)))
        paths.append(d / "ranking.json")
    out = tmp_path / "results" / "report" / "AUDIT.md"
    assert main(["--out", str(out), *map(str, paths)]) == 0
    text = out.read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith(("| seg |", "| pose |"))]
    assert rows[0].startswith("| seg | mIoU | 1.000 [") and "| 0.400 |" in rows[0], rows
    assert rows[1].startswith("| pose | AP | -1.000 [") and "| -0.400 |" in rows[1], rows
    assert "S 0.150" in rows[0] and "S 0.050" in rows[0]  # pick - random, pick - uniform
    assert "## Ranking audit: seg" in text and "## Ranking audit: pose" in text
    assert "(../seg/audit/ranking.png)" in text and "(../pose/audit/ranking.png)" in text


def test_unreadable_ranking_is_one_error(tmp_path: Path) -> None:
    import pytest

    from pipeline.errors import InputError

    bad = tmp_path / "ranking.json"
    bad.write_text("{")
    with pytest.raises(InputError, match="ranking.json"):
        main(["--out", str(tmp_path / "AUDIT.md"), str(bad)])
    assert not (tmp_path / "AUDIT.md").exists()
