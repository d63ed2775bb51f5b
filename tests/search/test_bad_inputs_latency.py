"""Bad latency tables and `scalenas latency` arguments, as a user meets them.

A table is checked against workflow/schemas/latency_table.schema.yaml by the one reader
(pipeline.search.latency.load_table) that the CLI (`scalenas latency predict`) and the jobs of a
``search.objective: latency`` run (pipeline.stages.build.latency_predictor) share: each bad table
is one line naming the file and the entry, exit 2, the same line on both paths."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.errors import InputError

REPO = Path(__file__).resolve().parents[2]
SCALENAS = str(Path(sys.executable).parent / "scalenas")


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> dict:
    """A real table of this machine (seg W8 at 64x64, the size of the tiny runs)."""
    path = tmp_path_factory.mktemp("lat") / "seg.json"
    assert main(["latency", "build", "--task", "seg", "--width", "8", "--input", "64x64",
                 "--device", "cpu", "--repeats", "1", "-o", str(path)]) == 0
    return json.loads(path.read_text())


def _set(*keys_value):
    """An edit that sets doc[k1][k2]... = value (None as the last key: delete the key)."""
    *keys, value = keys_value

    def edit(doc: dict) -> None:
        for k in keys[:-1]:
            doc = doc[k]
        if value is _DELETE:
            del doc[keys[-1]]
        else:
            doc[keys[-1]] = value
    return edit


_DELETE = object()
BIG = "1" * 5000
TABLE_CASES = [
    # (id, edit of the table document or raw text, message after "t.json: ")
    ("nan-entry", _set("entries", "block/0", float("nan")),
     "entries.block/0: must be a finite number, got nan"),
    ("inf-fixed", _set("entries", "fixed", float("inf")), "entries.fixed: must be a finite number, got inf"),
    ("bool-entry", _set("entries", "merge/1", True), "entries.merge/1: expected number, got boolean True"),
    ("negative-entry", _set("entries", "fuse/1->0", -0.001),
     "entries.fuse/1->0: -0.001 is less than the minimum of 0"),
    ("string-entry", _set("entries", "block/2", "1ms"), "entries.block/2: expected number, got string '1ms'"),
    ("null-entry", _set("entries", "fixed", None), "entries.fixed: expected number, got null"),
    ("unknown-entry", _set("entries", "blok/0", 0.001),
     "entries.blok/0: unknown key (must match ^(fixed|block/[0-3]|merge/[0-3]|fuse/[0-3]->[0-3])$)"),
    ("no-fixed", _set("entries", "fixed", _DELETE), "entries.fixed: missing"),
    ("null-input-hw", _set("input_hw", None), "input_hw: expected array, got null"),
    ("string-input-hw", _set("input_hw", "64x128"), "input_hw: expected array, got string '64x128'"),
    ("float-input-hw", _set("input_hw", [64.0, 64]), "input_hw[0]: expected integer, got number 64.0"),
    ("null-width", _set("width", None), "width: expected integer, got null"),
    ("float-width", _set("width", 8.0), "width: expected integer, got number 8.0"),
    ("no-cpu", _set("device", "cpu", _DELETE), "device.cpu: missing"),
    ("device-without-cpu-fields", lambda d: d.update(device={"device": "cpu"}),
     "device.cpu: missing (and 4 more: device.fingerprint: missing; device.logical_cpus: missing; "
     "device.threads: missing; device.torch: missing)"),
    ("other-schema", _set("schema", "scalenas-latency/0"),
     "not a latency table of schema 'scalenas-latency/1' (schema: 'scalenas-latency/0')"),
    ("not-an-object", "[1, 2]",
     "not a latency table (a JSON object of schema 'scalenas-latency/1' expected, got list)"),
    ("deep-nesting", "[" * 100000 + "]" * 100000, "unreadable latency table: nested too deeply"),
    ("5000-digit-integer", '{"schema": "scalenas-latency/1", "width": ' + BIG + "}",
     "unreadable latency table: a number of more than 4300 digits"),
    ("not-json", "width: 8\n", "unreadable latency table: Expecting value: line 1 column 1 (char 0)"),
]


def _write_table(d: Path, table: dict, edit) -> Path:
    path = d / "t.json"
    if isinstance(edit, str):
        path.write_text(edit)
    else:
        doc = copy.deepcopy(table)
        edit(doc)
        path.write_text(json.dumps(doc))  # NaN and Infinity as Python's json writes them
    return path


@pytest.mark.parametrize("edit, message", [c[1:] for c in TABLE_CASES], ids=[c[0] for c in TABLE_CASES])
def test_bad_table_is_one_line_in_cli_and_rules(table, tmp_path: Path, monkeypatch, capsys,
                                                edit, message) -> None:
    monkeypatch.chdir(tmp_path)
    path = _write_table(tmp_path, table, edit)
    before = path.read_bytes()
    assert main(["latency", "predict", "hrnet", "--table", "t.json"]) == 2
    out = capsys.readouterr()
    assert out.err.splitlines() == [f"scalenas: error: t.json: {message}"] and out.out == ""
    # The jobs of a search.objective: latency run read the table through the same reader.
    from pipeline import config as pc
    from pipeline.stages.build import latency_predictor

    cfg = pc.from_dict(pc.load_resolved(REPO / "params" / "default.yaml"))
    with pytest.raises(InputError) as e:
        latency_predictor("seg", cfg, "t.json")
    assert str(e.value) == f"t.json: {message}"
    assert path.read_bytes() == before


def test_a_good_table_still_predicts(table, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    _write_table(tmp_path, table, lambda d: None)
    assert main(["latency", "predict", "hrnet", "--table", "t.json"]) == 0
    assert "ms predicted" in capsys.readouterr().out


def test_fifo_table_is_refused_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "t.json")
    r = subprocess.run([SCALENAS, "latency", "predict", "hrnet", "--table", "t.json"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [
        "scalenas: error: t.json: latency table is not a regular file (a FIFO)"]


@pytest.mark.slow
def test_search_job_names_the_table(table, tmp_path: Path) -> None:
    """A NaN table in a search.objective: latency run: the search job (a shard) stops with the
    table's line, through the real stage entry point, not a JSON traceback."""
    doc = yaml.safe_load((REPO / "params" / "default.yaml").read_text())
    doc["search"]["objective"] = "latency"
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    _write_table(tmp_path, table, _set("entries", "block/0", float("nan")))
    (tmp_path / "supernet.pt").write_bytes(b"the table is read before the supernet")
    (tmp_path / "candidates.json").write_text("{}")
    r = subprocess.run([sys.executable, "-m", "pipeline.stages.search_shard", "--phase",
                        "search_random", "--params", "p.yaml", "--task", "seg", "--out", "out",
                        "--candidates", "candidates.json", "--shard", "0",
                        "--checkpoint", "supernet.pt", "--latency-table", "t.json"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out[-3000:]
    assert r.returncode == 2, out[-3000:]
    assert "t.json: entries.block/0: must be a finite number, got nan" in out, out[-3000:]


# -- arguments ---------------------------------------------------------------------------------
ARG_CASES = [
    ("build-threads-negative", ["latency", "build", "--task", "seg", "--input", "64x64", "--threads", "-3"],
     "scalenas latency build: error: argument --threads: expected a positive number of threads "
     "(0: torch's default), got '-3'"),
    ("predict-threads-negative", ["latency", "predict", "hrnet", "--threads", "-3"],
     "scalenas latency predict: error: argument --threads: expected a positive number of threads "
     "(0: torch's default), got '-3'"),
    ("build-width-zero", ["latency", "build", "--task", "seg", "--input", "64x64", "--width", "0"],
     "scalenas latency build: error: argument --width: expected a positive integer, got '0'"),
    ("build-repeats-zero", ["latency", "build", "--task", "seg", "--input", "64x64", "--repeats", "0"],
     "scalenas latency build: error: argument --repeats: expected a positive integer, got '0'"),
    ("predict-width-negative", ["latency", "predict", "hrnet", "--width", "-8"],
     "scalenas latency predict: error: argument --width: expected a positive integer, got '-8'"),
]


@pytest.mark.parametrize("argv, line", [c[1:] for c in ARG_CASES], ids=[c[0] for c in ARG_CASES])
def test_bad_argument_is_one_argparse_line(tmp_path: Path, monkeypatch, capsys, argv, line) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [f"{line} (see --help)"]
    assert list(tmp_path.iterdir()) == []  # nothing measured, nothing written


def test_negative_fixed_part_is_measured_again_then_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    """A fixed part below zero means the timings are noise: the build measures again, and after
    the last attempt refuses with one line (nothing written). The busy machine is simulated by
    an end-to-end time of zero, which every real component time exceeds."""
    from pipeline.search import latency

    calls = []
    monkeypatch.setattr(latency, "end_to_end", lambda *a, **k: calls.append(1) or 0.0)
    monkeypatch.chdir(tmp_path)
    assert main(["latency", "build", "--task", "seg", "--width", "8", "--input", "64x64",
                 "--repeats", "1", "-o", "t.json"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(calls) == latency.ATTEMPTS and not (tmp_path / "t.json").exists()
    assert sum("measuring again" in ln for ln in err) == latency.ATTEMPTS - 1
    last = err[-1]
    assert last.startswith("scalenas: error: seg W8 64x64: the fixed part came out negative (-")
    assert last.endswith(f"in {latency.ATTEMPTS} measurements: the timings are noise; measure "
                         "on an idle machine, or with more --repeats than 1")
