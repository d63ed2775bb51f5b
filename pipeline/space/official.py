"""Import and export of the release's architecture files (pickled numpy object arrays).

A release file is a ``.npy`` holding an object array of 8 dicts ``{'d', 'f'}`` (one per module):
``d`` is an int array (branches, 1) of depths and ``f`` an object array (branches, 5) whose entry
``f[j][s]`` is a list of 0/1 flags over source branches. The release's forward fuses source
``k != j`` into target ``j`` after step ``s`` exactly when ``f[j][s][k] == 1``; ``f[j][s][j]`` is
never read, and columns ``s >= T`` (T = the module's largest depth) are never read either.

Reading such a file with ``np.load(allow_pickle=True)`` could execute arbitrary code. We parse the
``.npy`` header ourselves and unpickle the payload with :class:`RestrictedUnpickler`, which
resolves only numpy's array reconstruction and refuses every other global before it is called.
"""
from __future__ import annotations

import codecs
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.io import atomic_write_bytes, read_bytes  # noqa: F401  (re-exported)
from numpy.lib import format as npy_format

from .arch import (BRANCHES, MAX_DEPTH, MODULE_NAMES, Architecture, ArchitectureError, ModuleArch,
                   make_module, validate_modules)

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

#: Columns of ``f``: one per possible block step.
COLUMNS = MAX_DEPTH
#: Release files are a few kB; anything far larger is not one (and is not worth unpickling).
MAX_FILE_BYTES = 1 << 22


class _NdarrayMarker:
    """Stands for ``numpy.ndarray`` inside a pickle: it can be passed to the reconstructor but,
    unlike the real class, cannot be called to allocate an array of any shape."""

    def __repr__(self) -> str:
        return "<numpy.ndarray (reconstruction only)>"


_NDARRAY = _NdarrayMarker()


def _guarded_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's ``_reconstruct`` restricted to what ``ndarray.__reduce__`` emits: an empty
    ndarray, whose real shape and content then come from ``__setstate__`` (size-checked by numpy)."""
    if subtype is not _NDARRAY or tuple(shape) != (0,):
        raise pickle.UnpicklingError(
            f"unexpected array reconstruction arguments ({subtype!r}, {shape!r})")
    return _reconstruct(np.ndarray, (0,), dtype)


# The release's files (numpy 1.x, protocol 2) name the reconstructor ``numpy.core.multiarray``;
# numpy 2 names it ``numpy._core.multiarray``. Bytes in protocol 2 come through ``_codecs.encode``.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _guarded_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _guarded_reconstruct,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy's array reconstruction globals.

    ``numpy.ndarray`` resolves to a marker and the reconstructor only builds empty arrays, so a
    pickle cannot allocate arbitrary arrays. Any other global (``os.system``, ``builtins.eval``,
    ...) raises ``pickle.UnpicklingError`` at lookup time, i.e. before the pickle can call it.
    Persistent ids are refused by the base class.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


# -- import ------------------------------------------------------------------------------------------
def _read_payload(data: bytes, source: str) -> Any:
    """Check the .npy header and unpickle the object array behind it (restricted)."""
    fp = io.BytesIO(data)
    try:
        version = npy_format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(fp)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, EOFError) as e:
        raise ArchitectureError(f"{source}: not a valid .npy file: {e}") from None
    if dtype != np.dtype(object) or tuple(shape) != (len(BRANCHES),) or fortran:
        raise ArchitectureError(
            f"{source}: expected an object array of {len(BRANCHES)} module dicts, "
            f"got dtype {dtype}, shape {tuple(shape)}")
    try:
        arr = RestrictedUnpickler(fp).load()
    except pickle.UnpicklingError as e:
        if "truncated" in str(e):
            raise ArchitectureError(f"{source}: truncated file (pickle payload ends early)") from None
        raise ArchitectureError(f"{source}: unsafe or invalid pickle payload: {e}") from None
    except EOFError:
        raise ArchitectureError(f"{source}: truncated file (pickle payload ends early)") from None
    except Exception as e:  # malformed opcodes surface as many types (ValueError, TypeError, ...)
        raise ArchitectureError(
            f"{source}: invalid pickle payload: {type(e).__name__}: {e}") from None
    if (not isinstance(arr, np.ndarray) or arr.dtype != np.dtype(object)
            or arr.shape != (len(BRANCHES),)):
        raise ArchitectureError(
            f"{source}: payload is not an object array of {len(BRANCHES)} module dicts")
    return arr


def _flag(v: Any) -> int | None:
    """0 or 1 for a release flag value (int, bool, numpy int or an integral float), else None."""
    if isinstance(v, (bool, np.bool_, int, np.integer, float, np.floating)) and v in (0, 1):
        return int(v)
    return None


def _parse_module(mi: int, entry: Any, source: str) -> ModuleArch:
    nb = BRANCHES[mi]
    where = f"{source}: module {mi} ({MODULE_NAMES[mi]})"
    if not isinstance(entry, dict):
        raise ArchitectureError(f"{where}: expected a dict with keys 'd' and 'f', got {type(entry).__name__}")
    for key in ("d", "f"):
        if key not in entry:
            raise ArchitectureError(f"{where}: missing key {key!r}")
    extra = set(entry) - {"d", "f"}
    if extra:
        raise ArchitectureError(f"{where}: unexpected key(s) {sorted(map(repr, extra))}")
    d, f = entry["d"], entry["f"]
    if (not isinstance(d, np.ndarray) or not np.issubdtype(d.dtype, np.integer)
            or d.shape != (nb, 1)):
        got = f"dtype {d.dtype}, shape {d.shape}" if isinstance(d, np.ndarray) else type(d).__name__
        raise ArchitectureError(f"{where}: 'd' must be an integer array of shape ({nb}, 1), got {got}")
    if not isinstance(f, np.ndarray) or f.dtype != np.dtype(object) or f.shape != (nb, COLUMNS):
        got = f"dtype {f.dtype}, shape {f.shape}" if isinstance(f, np.ndarray) else type(f).__name__
        raise ArchitectureError(
            f"{where}: 'f' must be an object array of shape ({nb}, {COLUMNS}), got {got}")
    depths = tuple(int(x) for x in d[:, 0])
    T = max(depths)
    if not 1 <= T <= COLUMNS:  # the detailed depth check follows in validate_modules
        raise ArchitectureError(f"{where}: depths {list(depths)} out of range 1..{COLUMNS}")
    fusions = []
    for s in range(T):
        step = []
        for j in range(nb):
            flags = f[j, s]
            if isinstance(flags, np.ndarray):
                flags = flags.tolist() if flags.ndim == 1 else None
            if not isinstance(flags, (list, tuple)) or len(flags) != nb:
                n = len(flags) if isinstance(flags, (list, tuple)) else type(flags).__name__
                raise ArchitectureError(
                    f"{where}, step {s}, target {j}: expected {nb} flags over source branches, got {n}")
            vals = [_flag(v) for v in flags]
            if None in vals:
                raise ArchitectureError(
                    f"{where}, step {s}, target {j}: flags must be 0 or 1, got {list(flags)!r}")
            step.append([k for k, v in enumerate(vals) if k != j and v == 1])
        fusions.append(step)
    return make_module(depths, fusions)


def parse_official(data: bytes, source: str = "official file") -> Architecture:
    """Parse the bytes of a release ``.npy`` architecture file (never executes pickled code)."""
    if len(data) > MAX_FILE_BYTES:
        raise ArchitectureError(f"{source}: architecture file too large ({len(data)} bytes; the "
                                f"limit is {MAX_FILE_BYTES} bytes)")
    arr = _read_payload(data, source)
    modules = tuple(_parse_module(mi, arr[mi], source) for mi in range(len(BRANCHES)))
    validate_modules(modules, source)
    return Architecture(modules, {"imported_from": Path(source).name})


def load_official(path: str | os.PathLike) -> Architecture:
    """Read a release ``.npy`` architecture file."""
    p = Path(path)
    return parse_official(read_bytes(p, "architecture file", ArchitectureError, MAX_FILE_BYTES),
                          str(p))


# -- export ------------------------------------------------------------------------------------------
def to_official_array(arch: Architecture) -> np.ndarray:
    """The object array the release's code expects (written columns s < T, self flag = s < depth)."""
    out = np.empty(len(arch.modules), dtype=object)
    for mi, m in enumerate(arch.modules):
        nb = m.num_branches
        f = np.empty((nb, COLUMNS), dtype=object)
        for j in range(nb):
            for s in range(COLUMNS):
                if s < m.steps:
                    srcs = set(m.fusions[s][j])
                    f[j, s] = [int(k in srcs or (k == j and s < m.depths[j])) for k in range(nb)]
                else:
                    f[j, s] = np.zeros(2, dtype=np.int64)
        out[mi] = {"d": np.array(m.depths, dtype=np.int64).reshape(nb, 1), "f": f}
    return out


class _ReleasePickler(pickle._Pickler):
    """Protocol-2 pickler that names the array reconstructor as numpy 1.x does.

    numpy 2 would write ``numpy._core.multiarray._reconstruct``, which the numpy 1.x that the
    release runs on cannot import; ``numpy.core.multiarray`` loads in both.
    """

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if obj is _reconstruct:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def official_bytes(arch: Architecture) -> bytes:
    """The bytes of a release-format ``.npy`` file for ``arch`` (npy 1.0 header + protocol 2)."""
    arr = to_official_array(arch)
    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, npy_format.header_data_from_array_1_0(arr))
    _ReleasePickler(buf, protocol=2).dump(arr)
    return buf.getvalue()


def save_official(arch: Architecture, path: str | os.PathLike) -> None:
    """Write ``arch`` in the release's format, atomically."""
    atomic_write_bytes(Path(path), official_bytes(arch))
