"""Import/export of the release's .npy architecture files, including hostile files."""
from __future__ import annotations

import io
import os
import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest

from pipeline.space.arch import ArchitectureError, check_task
from pipeline.space.official import (load_official, official_bytes, parse_official, save_official,
                                     to_official_array)
from pipeline.space.registry import resolve
from pipeline.space.sample import hrnet, largest, sample_arch, smallest

MASKS = Path(__file__).resolve().parents[3] / "shared" / "masks"
S1 = MASKS / "seg_w32_S1.npy"
P2 = MASKS / "w32_256_P2.npy"
S1_DEPTHS = [[3, 4], [3, 2, 3], [2, 2, 2], [2, 2, 2], [2, 3, 2], [2, 2, 2, 3], [2, 3, 3, 3],
             [3, 4, 3, 4]]
P2_DEPTHS = [[5, 5], [3, 3, 4], [4, 4, 3], [5, 5, 4], [4, 4, 4], [4, 5, 4, 5], [3, 4, 4, 4],
             [4, 5, 4, 4]]

needs_masks = pytest.mark.skipif(not S1.exists(), reason="release masks not available")


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)  # writing is safe; reading is what we guard
    return buf.getvalue()


def npy_with_payload(payload: bytes) -> bytes:
    """A .npy header announcing an object array of 8, followed by an arbitrary pickle."""
    from numpy.lib import format as npy_format
    buf = io.BytesIO()
    npy_format.write_array_header_1_0(
        buf, {"descr": "|O", "fortran_order": False, "shape": (8,)})
    return buf.getvalue() + payload


# -- the release files -------------------------------------------------------------------------------
@needs_masks
def test_import_s1_and_p2():
    s1, p2 = load_official(S1), load_official(P2)
    assert s1.depths() == S1_DEPTHS
    assert p2.depths() == P2_DEPTHS
    check_task(s1, "seg")
    check_task(p2, "pose")
    assert resolve(str(P2), "pose") == p2
    # Bits read from S1's last module: f[0][2] = [1,0,0,1], f[1][3] = [0,1,1,0],
    # f[3][3] = [1,0,1,1], f[0][3] = [0,0,0,0] (self flags ignored).
    last = s1.modules[-1]
    assert last.fusions[2][0] == (3,)
    assert last.fusions[3][1] == (2,)
    assert last.fusions[3][3] == (0, 2)
    assert last.fusions[3][0] == ()
    assert s1.meta["imported_from"] == "seg_w32_S1.npy"


@needs_masks
@pytest.mark.parametrize("path", [S1, P2], ids=["S1", "P2"])
def test_round_trip(path, tmp_path):
    a = load_official(path)
    out = tmp_path / "again.npy"
    save_official(a, out)
    b = load_official(out)
    assert b == a and b.arch_id == a.arch_id
    assert parse_official(official_bytes(a)) == a


def test_export_layout_matches_release_conventions():
    a = sample_arch(np.random.default_rng(0), 0.5, (2, 3, 4), "seg")
    data = official_bytes(a)
    globals_used = {arg for op, arg, _ in pickletools.genops(data[data.index(b"\n") + 1:])
                    if op.name == "GLOBAL"}
    assert globals_used <= {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype",
                            "_codecs encode"}
    # Our own output is trusted, so a plain numpy load (what the release does) may read it.
    arr = np.load(io.BytesIO(data), allow_pickle=True)
    assert arr.dtype == object and arr.shape == (8,)
    for m, entry in zip(a.modules, arr):
        nb = m.num_branches
        assert entry["d"].dtype == np.int64 and entry["d"].shape == (nb, 1)
        assert entry["d"][:, 0].tolist() == list(m.depths)
        assert entry["f"].shape == (nb, 5)
        for j in range(nb):
            for s in range(5):
                col = entry["f"][j, s]
                if s < m.steps:
                    assert isinstance(col, list) and len(col) == nb
                    assert col[j] == int(s < m.depths[j])
                    assert [k for k in range(nb) if k != j and col[k] == 1] == list(m.fusions[s][j])
                else:
                    assert isinstance(col, np.ndarray) and col.dtype == np.int64
                    assert col.tolist() == [0, 0]


def test_round_trip_named_and_sampled():
    rng = np.random.default_rng(3)
    archs = [smallest("pose"), largest("seg"), hrnet("pose")]
    archs += [sample_arch(rng, 0.5, (2, 3, 4, 5), t) for t in ("seg", "pose") for _ in range(5)]
    for a in archs:
        assert parse_official(official_bytes(a)) == a


def test_bits_beyond_a_targets_depth_are_honoured():
    # The release's forward reads bits at steps >= a target's depth (below T): keep them.
    arr = to_official_array(largest("seg"))
    arr[7]["d"][0, 0] = 3  # branch 0 of module 7 now stops at 3 while T stays 5
    a = parse_official(npy_bytes(arr))
    assert a.modules[7].depths[0] == 3
    assert a.modules[7].fusions[4][0] == (1, 2, 3)
    assert parse_official(official_bytes(a)) == a


def test_self_flag_is_ignored():
    a = sample_arch(np.random.default_rng(1), 0.5, (3,), "seg")
    arr = to_official_array(a)
    for entry in arr:
        for j in range(entry["f"].shape[0]):
            entry["f"][j, 0][j] = 0
            entry["f"][j, 1][j] = 1
    assert parse_official(npy_bytes(arr)) == a


# -- bad files ----------------------------------------------------------------------------------------
def good_array() -> np.ndarray:
    return to_official_array(sample_arch(np.random.default_rng(2), 0.5, (3,), "seg"))


def expect_error(tmp_path: Path, data: bytes, match: str) -> None:
    path = tmp_path / "bad_arch.npy"
    path.write_bytes(data)
    with pytest.raises(ArchitectureError, match=match) as info:
        load_official(path)
    assert "bad_arch.npy" in str(info.value)


def test_truncated_and_bad_magic(tmp_path):
    data = official_bytes(smallest("seg"))
    expect_error(tmp_path, data[:50], "not a valid .npy")
    expect_error(tmp_path, data[:-40], "truncated|invalid pickle")
    expect_error(tmp_path, b"", "not a valid .npy")
    expect_error(tmp_path, b"\x93NOTNPY" + data[7:], "not a valid .npy")


def test_missing_file(tmp_path):
    with pytest.raises(ArchitectureError, match="nothere.npy.*not found"):
        load_official(tmp_path / "nothere.npy")


def test_not_an_object_array_of_8_dicts(tmp_path):
    expect_error(tmp_path, npy_bytes(np.zeros(8, dtype=np.int64)), "object array of 8")
    seven = np.empty(7, dtype=object)
    seven[:] = list(good_array()[:7])
    expect_error(tmp_path, npy_bytes(seven), "object array of 8")
    arr = good_array()
    arr[3] = 5
    expect_error(tmp_path, npy_bytes(arr), r"module 3 \(stage3.2\).*expected a dict")


@pytest.mark.parametrize("key", ["d", "f"])
def test_missing_key(tmp_path, key):
    arr = good_array()
    del arr[2][key]
    expect_error(tmp_path, npy_bytes(arr), f"module 2.*missing key '{key}'")


def test_wrong_shapes(tmp_path):
    arr = good_array()
    arr[1]["d"] = arr[1]["d"][:, 0]
    expect_error(tmp_path, npy_bytes(arr), r"module 1.*'d' must be an integer array of shape \(3, 1\)")
    arr = good_array()
    arr[1]["d"] = arr[1]["d"].astype(float)
    expect_error(tmp_path, npy_bytes(arr), "'d' must be an integer array")
    arr = good_array()
    arr[5]["f"] = arr[5]["f"][:, :4]
    expect_error(tmp_path, npy_bytes(arr), r"module 5.*'f' must be an object array of shape \(4, 5\)")
    arr = good_array()
    arr[5]["d"][2, 0] = 9
    expect_error(tmp_path, npy_bytes(arr), "depth|out of range")


def test_written_column_of_wrong_length(tmp_path):
    arr = good_array()
    arr[1]["f"][2, 1] = np.zeros(2, dtype=np.int64)  # 3 branches, step 1 < T = 3
    expect_error(tmp_path, npy_bytes(arr), r"module 1 \(stage3.0\), step 1, target 2: expected 3 flags")
    arr = good_array()
    arr[6]["f"][0, 0] = [1, 2, 0, 0]
    expect_error(tmp_path, npy_bytes(arr), "module 6.*step 0, target 0: flags must be 0 or 1")
    arr = good_array()
    arr[6]["f"][0, 0] = "1111"
    expect_error(tmp_path, npy_bytes(arr), "module 6.*step 0, target 0: expected 4 flags")


# -- hostile pickles: refused, never executed ---------------------------------------------------------
class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_pickle_calling_os_system_is_refused(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Evil(os.system, f"touch {marker}"), protocol=protocol)
    expect_error(tmp_path, npy_with_payload(payload), r"refusing to load global (posix|os|nt)\.system")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4])
def test_pickle_calling_eval_is_refused(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Evil(eval, f"open({str(marker)!r}, 'w')"), protocol=protocol)
    # Protocol 2 spells the module the Python 2 way.
    expect_error(tmp_path, npy_with_payload(payload),
                 r"refusing to load global (builtins|__builtin__)\.eval")
    assert not marker.exists()


def test_evil_object_hidden_inside_a_valid_structure(tmp_path):
    marker = tmp_path / "pwned"
    arr = good_array()
    arr[4]["f"][1, 0] = _Evil(os.system, f"touch {marker}")
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    expect_error(tmp_path, buf.getvalue(), "refusing to load global")
    assert not marker.exists()


def test_other_numpy_callables_are_refused(tmp_path):
    payload = b"cnumpy\nload\n(S'x'\ntR."
    expect_error(tmp_path, npy_with_payload(payload), r"refusing to load global numpy\.load")


def test_ndarray_cannot_be_called_directly(tmp_path):
    # numpy.ndarray((10**9,), 'O') would allocate and fill gigabytes; it must not be callable.
    payload = b"cnumpy\nndarray\n((I1000000000\ntS'O'\ntR."
    expect_error(tmp_path, npy_with_payload(payload), "invalid pickle payload")
    payload = (b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I1000000000\ntS'b'\ntR.")
    expect_error(tmp_path, npy_with_payload(payload), "unexpected array reconstruction")
