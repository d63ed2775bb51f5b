"""Bad parameter files and the files they name, as a user meets them: each case is one line that
names the file at fault (a ``base:`` file, not the file that names it), exit 2 through a stage,
and stops planning through Snakemake.

Integers are integers: JSON Schema counts 1.0 as one, the parameter schema's validation does not
(pipeline.config.strict_validator), so a count of 1.0 stops before any job instead of failing in
one."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import config as pc

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
RUN_KEYS = ", ".join(sorted(pc.load_schema()["properties"]["run"]["properties"]))


def _files(**files: str):
    """A setup writing ``name=text`` as ``name.yaml``."""
    def setup(d: Path) -> None:
        for name, text in files.items():
            (d / f"{name}.yaml").write_text(text)
    return setup


def _link_loop(d: Path, name: str = "loop.yaml") -> None:
    (d / name).symlink_to(f"{name}.2")
    (d / f"{name}.2").symlink_to(name)


def _chain(n: int):
    def setup(d: Path) -> None:
        for i in range(n):
            (d / f"c{i}.yaml").write_text(f"base: c{i + 1}.yaml\n")
        (d / f"c{n}.yaml").write_text("run:\n  seed: 1\n")
        (d / "p.yaml").write_text("base: c0.yaml\n")
    return setup


def _all(*setups):
    def setup(d: Path) -> None:
        for s in setups:
            s(d)
    return setup


CASES = [
    # (id, setup(dir) writing p.yaml and what it names, the one line)
    ("integer-as-float", _files(p="search:\n  random:\n    samples_per_cell: 1.0\n"),
     "p.yaml: search.random.samples_per_cell: expected integer, got number 1.0"),
    ("integer-as-float-in-list", _files(p="run:\n  devices: [0, 1.0]\n"),
     "p.yaml: run.devices[1]: expected integer, got number 1.0"),
    ("nullable-integer-as-float", _files(p="teacher:\n  seg:\n    iterations: 2.0\n"),
     "p.yaml: teacher.seg.iterations: expected ['integer', 'null'], got number 2.0"),
    ("base-wrong-type", _files(p="base: b.yaml\nrun:\n  name: x\n", b="run:\n  seed: one\n"),
     "b.yaml (base of p.yaml): run.seed: expected integer, got string 'one'"),
    ("base-typo", _files(p="base: b.yaml\n", b="run:\n  sed: 1\n"),
     f"b.yaml (base of p.yaml): run.sed: unknown key (allowed: {RUN_KEYS})"),
    ("base-of-base-typo", _files(p="base: b.yaml\n", b="base: c.yaml\n", c="run:\n  sed: 1\n"),
     f"c.yaml (base of b.yaml): run.sed: unknown key (allowed: {RUN_KEYS})"),
    ("base-and-child", _files(p="base: b.yaml\nrun:\n  threads: two\n", b="run:\n  seed: one\n"),
     "b.yaml (base of p.yaml): run.seed: expected integer, got string 'one' (and 1 more: p.yaml: "
     "run.threads: expected integer, got string 'two')"),
    ("child-typo-over-base", _files(p="base: b.yaml\nrun:\n  sed: 1\n", b="run:\n  seed: 1\n"),
     f"p.yaml: run.sed: unknown key (allowed: {RUN_KEYS})"),
    ("base-chain-over-1000", _chain(1001),
     "p.yaml: base: a chain of more than 100 parameter files (stopped at c99.yaml)"),
    ("base-directory", _all(_files(p="base: d\n"), lambda d: (d / "d").mkdir()),
     "p.yaml: base: d: is a directory, a file expected"),
    ("base-symlink-loop", _all(_files(p="base: loop.yaml\n"), _link_loop),
     "p.yaml: base: loop.yaml: symbolic link loop"),
    ("base-broken-symlink", _all(_files(p="base: gone.yaml\n"),
                                 lambda d: (d / "gone.yaml").symlink_to("nowhere.yaml")),
     "p.yaml: base: gone.yaml: broken symbolic link to nowhere.yaml"),
    ("base-missing", _files(p="base: nope.yaml\n"), "p.yaml: base: parameter file not found: nope.yaml"),
    ("params-symlink-loop", lambda d: _link_loop(d, "p.yaml"),
     "p.yaml: symbolic link loop (parameter file expected)"),
    ("5000-digit-integer", _files(p="run:\n  seed: " + "1" * 5000 + "\n"),
     "p.yaml: not valid YAML: a number of more than 4300 digits"),
    ("init-directory", _all(_files(p="tasks: [seg]\nteacher:\n  seg:\n    init: ck\n"),
                            lambda d: (d / "ck").mkdir()),
     "p.yaml: teacher.seg.init: ck: is a directory, a file expected"),
    ("init-symlink-loop", _all(_files(p="tasks: [seg]\nteacher:\n  seg:\n    init: loop.yaml\n"),
                               _link_loop),
     "p.yaml: teacher.seg.init: loop.yaml: symbolic link loop"),
    ("checkpoint-directory", _all(_files(p="tasks: [seg]\nsupernet:\n  seg:\n    checkpoint: ck\n"),
                                  lambda d: (d / "ck").mkdir()),
     "p.yaml: supernet.seg.checkpoint: ck: is a directory, a file expected"),
    ("checkpoint-symlink-loop", _all(
        _files(p="tasks: [seg]\nsupernet:\n  seg:\n    checkpoint: loop.yaml\n"), _link_loop),
     "p.yaml: supernet.seg.checkpoint: loop.yaml: symbolic link loop"),
]


def _load(d: Path) -> None:
    """What every stage does with its parameter file (pipeline.stages.common.load)."""
    resolved = pc.load_resolved("p.yaml")
    pc.check_paths(resolved, "p.yaml")


@pytest.mark.parametrize("setup, line", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_parameters_are_one_line_naming_the_file(tmp_path: Path, monkeypatch, setup,
                                                      line) -> None:
    setup(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(pc.ConfigError) as e:
        _load(tmp_path)
    assert str(e.value) == line


def test_a_base_value_the_child_overrides_is_not_reported(tmp_path: Path, monkeypatch) -> None:
    _files(p="base: b.yaml\nrun:\n  seed: 3\n", b="run:\n  seed: one\n")(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert pc.load_resolved("p.yaml")["run"]["seed"] == 3


def test_integers_stay_integers_in_section_records() -> None:
    with pytest.raises(pc.ConfigError, match="epochs: 1.0 is not of type 'integer'"):
        pc.make_section(pc.TrainConfig, epochs=1.0)
    assert pc.make_section(pc.TrainConfig, epochs=1).epochs == 1


STAGE_CASES = ["integer-as-float", "base-typo", "base-chain-over-1000", "base-symlink-loop"]


@pytest.mark.parametrize("case", STAGE_CASES)
def test_stage_prints_the_line_and_exits_2(tmp_path: Path, case: str) -> None:
    _, setup, line = next(c for c in CASES if c[0] == case)
    setup(tmp_path)
    r = subprocess.run([sys.executable, "-m", "pipeline.stages.prepare", "--params", "p.yaml",
                        "--task", "seg", "--out", "out"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.stderr.splitlines() == [f"error: prepare[seg]: {line}"]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_integer_as_float_stops_snakemake_at_planning(tmp_path: Path) -> None:
    doc = yaml.safe_load((REPO / "params" / "default.yaml").read_text())
    doc["search"]["random"]["samples_per_cell"] = 1.0
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SCALENAS_"))}
    r = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--cores",
                        "1", "-n", "--config", "params=p.yaml"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, env=env, stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out, out[-3000:]
    assert "invalid parameters: p.yaml: search.random.samples_per_cell: expected integer, got " \
           "number 1.0" in out, out[-3000:]
    assert not (tmp_path / "results" / "search").exists()
