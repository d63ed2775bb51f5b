"""The ``scalenas arch`` commands, run in process (and once as a real process)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cost
from pipeline.cli import main
from pipeline.space.arch import Architecture
from pipeline.space.official import load_official
from pipeline.space.sample import hrnet, smallest

MASKS = Path(__file__).resolve().parents[3] / "shared" / "masks"
S1 = MASKS / "seg_w32_S1.npy"
P2 = MASKS / "w32_256_P2.npy"
needs_masks = pytest.mark.skipif(not S1.exists(), reason="release masks not available")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, *names: str) -> None:
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("scalenas")
    for name in names:
        assert name in lines[0]


@needs_masks
def test_import_show_export(tmp_path, capsys):
    js, npy = tmp_path / "s1.json", tmp_path / "out" / "s1.npy"
    rc, out, _ = run(capsys, "arch", "import", str(S1), "-o", str(js))
    assert rc == 0 and js.exists()
    arch = Architecture.load(js)
    assert arch == load_official(S1)
    assert arch.arch_id in out

    rc, out, _ = run(capsys, "arch", "show", str(js), "--task", "seg")
    assert rc == 0
    assert "stage2.0: depths [3, 4]" in out
    assert "stage4.2: depths [3, 4, 3, 4]" in out
    assert "step 0: 1->0" in out  # S1 module 0, step 0: branch 1 fused into branch 0

    rc, _, _ = run(capsys, "arch", "export", str(js), "-o", str(npy))
    assert rc == 0 and load_official(npy) == arch
    assert not list(npy.parent.glob(".*tmp"))


def test_show_registered_name(capsys):
    rc, out, _ = run(capsys, "arch", "show", "hrnet", "--task", "pose")
    assert rc == 0
    assert "stage4.2: depths [4, 4, 4, 4]" in out
    assert out.count("step 3: 1->0, 2->0, 3->0\n") == 1  # only the last module is pose-shaped
    assert hrnet("pose").arch_id in out


def test_sample_is_deterministic(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for path in (a, b):
        rc, _, _ = run(capsys, "arch", "sample", "--task", "pose", "--fusion", "0.5",
                       "--depth", "2,3", "--seed", "0", "-o", str(path))
        assert rc == 0
    arch_a, arch_b = Architecture.load(a), Architecture.load(b)
    assert arch_a == arch_b
    assert {d for m in arch_a.depths() for d in m} <= {2, 3}
    assert arch_a.meta["sampler"] == {"task": "pose", "fusion_prob": 0.5,
                                      "depth_candidates": [2, 3], "seed": 0}


@pytest.mark.parametrize("argv,names", [
    (["arch", "import", "{tmp}/missing.npy", "-o", "{out}"], ["missing.npy", "not found"]),
    (["arch", "import", "{bad}", "-o", "{out}"], ["bad.npy", "not a valid .npy"]),
    (["arch", "export", "{tmp}/missing.json", "-o", "{out}"], ["missing.json"]),
    (["arch", "export", "resnet50", "-o", "{out}"], ["resnet50"]),
    (["arch", "export", "{segjson}", "--task", "pose", "-o", "{out}"], ["seg.json", "branch 0"]),
    (["arch", "sample", "--task", "seg", "--fusion", "1.5", "--depth", "2", "--seed", "0",
      "-o", "{out}"], ["fusion_prob"]),
    (["arch", "sample", "--task", "seg", "--fusion", "0.5", "--depth", "2,7", "--seed", "0",
      "-o", "{out}"], ["depth_candidates"]),
    (["arch", "sample", "--task", "seg", "--fusion", "0.5", "--depth", "2,x", "--seed", "0",
      "-o", "{out}"], ["--depth"]),
    (["arch", "sample", "--task", "seg", "--fusion", "0.5", "--depth", "2"], ["--output"]),
])
def test_bad_input_exit_2_one_line_no_output(tmp_path, capsys, argv, names):
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not a numpy file at all")
    segjson = tmp_path / "seg.json"
    smallest("seg").save(segjson)  # no fusion into branch 0: not a pose architecture
    out = tmp_path / "result" / "out.file"
    fmt = {"tmp": tmp_path, "out": out, "bad": bad, "segjson": segjson}
    rc, stdout, err = run(capsys, *[a.format(**fmt) for a in argv])
    assert_one_line_error(rc, err, *names)
    assert not out.exists()
    assert not (out.parent.exists() and list(out.parent.iterdir()))


def test_console_entry_point_runs_as_a_process(tmp_path):
    out = tmp_path / "x.json"
    ok = subprocess.run([sys.executable, "-m", "pipeline.cli", "arch", "sample", "--task", "seg",
                         "--fusion", "0.2", "--depth", "4,5", "--seed", "3", "-o", str(out)],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert Architecture.load(out).depths()
    bad = subprocess.run([sys.executable, "-m", "pipeline.cli", "arch", "show", "nope.json"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["scalenas: error: nope.json: architecture file not found"]


def test_profile_json_and_table(capsys):
    rc, out, _ = run(capsys, "arch", "profile", "hrnet", "--task", "pose", "--width", "32",
                     "--input", "256x192", "--json")
    assert rc == 0
    doc = json.loads(out)
    # HRNet-W32 pose at 256x192 (scalenas.md section 3).
    assert doc["params"] == 28_536_113
    assert doc["gflops"] == pytest.approx(7.120, abs=5e-4)
    assert doc["macs"] == cost.profile(hrnet("pose"), task="pose", width=32,
                                       input_hw=(256, 192), num_outputs=None).macs
    assert (doc["task"], doc["width"], doc["input"]) == ("pose", 32, [256, 192])
    rc, out, _ = run(capsys, "arch", "profile", "smallest", "--task", "seg", "--width", "32")
    assert rc == 0
    assert "params 13,857,491" in out and "GFLOPs 200.707" in out


@needs_masks
def test_profile_release_files(capsys):
    for path, task, params, gflops in ((S1, "seg", 25_349_139, 265.535),
                                       (P2, "pose", 35_614_321, 8.013)):
        rc, out, _ = run(capsys, "arch", "profile", str(path), "--task", task, "--width", "32",
                         "--json")
        assert rc == 0
        doc = json.loads(out)
        assert doc["params"] == params
        assert doc["gflops"] == pytest.approx(gflops, abs=5e-4)


@needs_masks
def test_a_release_pose_mask_profiles_as_a_bottom_up_network_at_640(capsys):
    """The release's pose masks import as bottom-up networks (HigherHRNet's head on the searched
    body), as P4 would; HRNet there is HigherHRNet-W48 (63,827,139 params, its published size)."""
    rc, out, _ = run(capsys, "arch", "profile", str(P2), "--task", "bottomup", "--width", "48",
                     "--input", "640x640", "--json")
    assert rc == 0
    doc = json.loads(out)
    assert (doc["params"], doc["macs"]) == (79_732_899, 172_280_217_600)
    assert doc["gflops"] == pytest.approx(160.448, abs=5e-4)
    rc, out, _ = run(capsys, "arch", "profile", "hrnet", "--task", "bottomup", "--width", "48",
                     "--input", "640x640", "--json")
    assert rc == 0 and json.loads(out)["params"] == 63_827_139


def test_profile_bad_input_size(capsys):
    rc, _, err = run(capsys, "arch", "profile", "hrnet", "--task", "pose", "--width", "8",
                     "--input", "100x75")
    assert_one_line_error(rc, err)
    rc, _, err = run(capsys, "arch", "profile", "hrnet", "--task", "pose", "--width", "8",
                     "--input", "big")
    assert_one_line_error(rc, err, "HxW")
