"""Deployable artifacts of a saved model: optimized TorchScript and ONNX, each with its record.

``--optimize`` (the default for what the fine-tune stage writes) traces the eval-mode network,
freezes it and runs ``torch.jit.optimize_for_inference``, which folds every BatchNorm into the
convolution before it. Memory format: on this kind of CPU channels_last is sometimes faster and
sometimes not, depending on widths and sizes, so both variants are built and timed on the traced
input and the faster one is kept (the measured times are recorded).

Every artifact is checked before it is written: its output must match the eager model's to a
relative error below :data:`TOLERANCE` at the traced input size, and it is run at a second size
(another batch and spatial size) to record whether it accepts other sizes.

The record goes beside the artifact, never into the model directory's files: ``ART.json`` next to
``ART`` (schema :data:`ARTIFACT_SCHEMA`: file, sha256, format, traced input shape,
``other_sizes``, error, for ONNX the opset, and the model it was exported from: task,
architecture id, weights checksum). An export to a path outside the model directory leaves that
directory byte-identical. The record is written first, then the artifact, both atomically.
Readers (:func:`deploy_entries`, :func:`load_artifact`) find the records in ``MODEL/deploy/`` and,
for model directories written before records moved, the ``deploy`` list of ``model.json``.
Loading checks the artifact's checksum and that it was exported from the model's weights.

An export never replaces a file of the model directory itself (its record, architecture, weights),
even with ``overwrite``; an existing file at the artifact's path (or its record's) that is not an
artifact of ``scalenas export`` is replaced only with ``overwrite``. Both are refused before
anything is built.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from pipeline.errors import InputError
from pipeline.io import atomic_write_bytes, atomic_write_text, check_regular_file, read_json
from pipeline.limits import check_input_hw
from pipeline.tasks.facts import task_facts

from .export import (MODEL_JSON, ModelFileError, StandaloneNet, is_model_file, load_model,
                     meta_input_hw, read_record)
from .supernet import INPUT_MULTIPLE

FORMATS = ("torchscript", "onnx")
SUFFIX = {"torchscript": ".ts", "onnx": ".onnx"}
DEPLOY_DIR = "deploy"
#: Schema of the record written beside each artifact (``ART.json``).
ARTIFACT_SCHEMA = "scalenas-artifact/1"
RECORD_SUFFIX = ".json"
#: Opset of the ONNX export: supported by onnxruntime >= 1.12 and every current deployment stack.
ONNX_OPSET = 17
#: Largest relative error (max |a-b| / max |b|) accepted against the eager model, per format.
TOLERANCE = {"torchscript": 1e-5, "onnx": 1e-4}


class DeployError(InputError):
    """An artifact that cannot be built, checked or loaded; the message names the file."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        # torch >= 2.11 flags torch.jit and the TorchScript-based ONNX exporter as deprecated;
        # both still work and are what deployment stacks take.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def rel_err(a: Tensor | Sequence[Tensor], b: Tensor | Sequence[Tensor]) -> float:
    """max |a - b| / max |b|; for a network of several outputs (bottom-up: 1/4 and 1/2 maps)
    the largest over its outputs."""
    if isinstance(b, (tuple, list)):
        if not isinstance(a, (tuple, list)) or len(a) != len(b):
            return float("inf")
        return max(rel_err(x, y) for x, y in zip(a, b))
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


def _outputs(net: nn.Module, example: Tensor) -> int:
    """How many output tensors ``net`` returns (1, or the length of its tuple)."""
    with torch.no_grad():
        out = net(example)
    return len(out) if isinstance(out, (tuple, list)) else 1


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def median_time(fn: Callable[[], Any], repeats: int = 3) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


class _ChannelsLast(nn.Module):
    """The network fed channels_last input, so the traced graph carries the format itself."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Any:
        out = self.net(x.contiguous(memory_format=torch.channels_last))
        if isinstance(out, (tuple, list)):
            return tuple(o.contiguous() for o in out)
        return out.contiguous()


def _trace(net: nn.Module, example: Tensor, freeze: bool) -> bytes:
    """Saved TorchScript of ``net`` traced on ``example``; frozen: weights inlined as constants and
    every BatchNorm folded into its convolution (``torch.jit.freeze``'s frozen optimisations)."""
    with torch.no_grad(), _quiet():
        ts = torch.jit.trace(net.eval(), example, check_trace=False)
        if freeze:
            ts = torch.jit.freeze(ts.eval())
        buf = io.BytesIO()
        torch.jit.save(ts, buf)
    return buf.getvalue()


def torchscript_runtime(data: bytes, optimized: bool) -> torch.jit.ScriptModule:
    """A saved artifact ready to run. ``optimize_for_inference`` (MKLDNN convolutions, fused
    activations) is applied here, on load: its graph does not survive ``torch.jit.save``."""
    with _quiet():
        module = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
        if optimized:
            module = torch.jit.optimize_for_inference(module)
    return module


@dataclass
class Built:
    data: bytes
    module: Any
    info: dict[str, Any]


def optimize_torchscript(net: StandaloneNet, example: Tensor, channels_last: bool | None = None,
                         repeats: int = 3) -> Built:
    """Frozen, BN-folded TorchScript of ``net``; channels_last if measured faster (``None``),
    or as forced (``True``/``False``)."""
    import copy

    info: dict[str, Any] = {"optimized": True, "bn_folded": True, "frozen": True,
                            "optimize_for_inference_on_load": True}
    variants = {}
    if channels_last is not True:
        variants[False] = _trace(net, example, True)
    if channels_last is not False:
        variants[True] = _trace(_ChannelsLast(copy.deepcopy(net)), example, True)
    modules = {k: torchscript_runtime(v, True) for k, v in variants.items()}
    if channels_last is None:
        times = {k: float("inf") for k in modules}
        with torch.no_grad():
            for _ in range(2):  # interleaved, so a busy machine slows both alike
                for k, m in modules.items():
                    times[k] = min(times[k], median_time(lambda: m(example), repeats))
        channels_last = times[True] < times[False]
        info["measured_s"] = {"contiguous": round(times[False], 6),
                              "channels_last": round(times[True], 6)}
    info["channels_last"] = channels_last
    return Built(variants[channels_last], modules[channels_last], info)


def build_torchscript(net: StandaloneNet, example: Tensor, optimize: bool,
                      channels_last: bool | None = None) -> Built:
    if optimize:
        return optimize_torchscript(net, example, channels_last)
    data = _trace(net, example, False)
    return Built(data, torchscript_runtime(data, False), {"optimized": False})


# -- ONNX -----------------------------------------------------------------------------------------
def onnx_available() -> str | None:
    """``None`` when onnx and onnxruntime import, else why not (install the ``deploy`` extra)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return f"{e.name} is not installed (pip install -e '.[deploy]')"
    return None


def onnx_bytes(net: StandaloneNet, example: Tensor, opset: int = ONNX_OPSET) -> bytes:
    """ONNX of ``net`` with dynamic batch and spatial axes, checked by ``onnx.checker``.

    The TorchScript-based exporter (``dynamo=False``): it keeps the bilinear upsampling sizes
    symbolic, so one file serves every input size divisible by 32.
    """
    import onnx

    n = _outputs(net.eval(), example)
    names = ["output"] if n == 1 else [f"output{i}" for i in range(n)]
    axes: dict[str, dict[int, str]] = {"image": {0: "batch", 2: "height", 3: "width"}}
    axes.update({o: {0: "batch", 2: f"{o}_height", 3: f"{o}_width"} for o in names})
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), _quiet():
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(net.eval(), (example,), str(path), opset_version=opset, dynamo=False,
                          input_names=["image"], output_names=names, dynamic_axes=axes)
        data = path.read_bytes()
    onnx.checker.check_model(onnx.load_from_string(data))
    return data


class OnnxRunner:
    """An onnxruntime session called like a module: ``runner(x: Tensor) -> Tensor``."""

    def __init__(self, data: bytes, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])

    def __call__(self, x: Tensor) -> Any:
        outs = self.session.run(None, {"image": x.detach().cpu().contiguous().numpy()})
        if len(outs) == 1:
            return torch.from_numpy(outs[0])
        return tuple(torch.from_numpy(o) for o in outs)


# -- artifacts recorded in model.json ---------------------------------------------------------------
def _other_input(example: Tensor) -> Tensor:
    n, c, h, w = example.shape
    g = torch.Generator().manual_seed(1)
    return torch.randn(n + 1, c, h + INPUT_MULTIPLE, w + 2 * INPUT_MULTIPLE, generator=g)


def check_artifact(run: Callable[[Tensor], Tensor], net: nn.Module, example: Tensor,
                   fmt: str) -> tuple[float, bool]:
    """(relative error at the traced input, whether another batch and size gives the eager output)."""
    with torch.no_grad():
        err = rel_err(run(example), net(example))
        other = _other_input(example)
        try:
            other_ok = rel_err(run(other), net(other)) < TOLERANCE[fmt]
        except Exception:  # noqa: BLE001 - a runtime that rejects the size is the answer "no"
            other_ok = False
    return err, other_ok


def default_output(model_dir: Path, fmt: str, optimize: bool) -> Path:
    return model_dir / DEPLOY_DIR / (("optimized" if optimize else "model") + SUFFIX[fmt])


def record_path(artifact: str | os.PathLike) -> Path:
    """Where the record of ``artifact`` goes: beside it, ``ART`` + ``.json``."""
    a = Path(artifact)
    return a.with_name(a.name + RECORD_SUFFIX)


def _read_artifact_record(path: Path) -> dict[str, Any] | None:
    """The artifact record at ``path`` if it is one of ours, else ``None``."""
    try:
        rec = read_json(path, "artifact record", DeployError)
    except DeployError:
        return None
    if not isinstance(rec, dict) or rec.get("schema") != ARTIFACT_SCHEMA or not isinstance(
            rec.get("file"), str):
        return None
    return rec


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def check_output(model_dir: Path, out: Path, overwrite: bool = False) -> None:
    """Refuse, in one :class:`DeployError` line, an artifact path that would replace a file of the
    model directory (always), or a file that is not an artifact of ours (without ``overwrite``)."""
    side = record_path(out)
    own = [f for f in model_dir.iterdir() if f.is_file()] if model_dir.is_dir() else []
    for target in (out, side):
        if any(_same_file(target, f) for f in own) or is_model_file(target):
            where = model_dir if any(_same_file(target, f) for f in own) else target.parent
            what = (f"is a file of the model directory {where}" if target == out else
                    f"its record {side} would replace a file of the model directory {where}")
            raise DeployError(f"{out}: {what}; export never replaces one, even with --overwrite "
                              f"(give another -o)")
        if target.is_dir():
            raise DeployError(f"{target}: is a folder (an artifact file path expected)")
    if out.suffix.lower() == RECORD_SUFFIX:
        raise DeployError(f"{out}: an artifact's name must not end in {RECORD_SUFFIX} (that name "
                          f"is for the record written beside it)")
    if overwrite:
        return
    legacy = {str(e.get("file")) for e in _legacy_entries(model_dir)}
    ours_side = side.exists() and _read_artifact_record(side) is not None
    ours_out = ours_side or any(_same_file(out, model_dir / f) for f in legacy)
    foreign = [str(t) for t, ours in ((out, ours_out), (side, ours_side))
               if t.exists() and not ours]
    if foreign:
        raise DeployError(f"{' and '.join(foreign)}: exist{'s' if len(foreign) == 1 else ''} and "
                          f"{'was' if len(foreign) == 1 else 'were'} not written by scalenas "
                          f"export; --overwrite replaces {'it' if len(foreign) == 1 else 'them'} "
                          f"(or give another -o)")


def export_artifact(model_dir: str | os.PathLike, fmt: str = "torchscript", optimize: bool = True,
                    output: str | os.PathLike | None = None,
                    input_hw: tuple[int, int] | None = None,
                    channels_last: bool | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Build, check and write one artifact of the saved model in ``model_dir`` and its record
    beside it; return the record (``file`` relative to the model directory).

    The output is checked first (:func:`check_output`), then the sizes, then the weights'
    checksum (:func:`load_model`): each refusal is one :class:`InputError` and nothing is
    written. ``input_hw`` defaults to the record's ``meta.input_hw``, else the task's ``deploy_input_hw`` (pipeline.tasks.facts).
    ``channels_last``: ``None`` measures which memory format is faster, a bool forces one.
    """
    if fmt not in FORMATS:
        raise DeployError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    d = Path(model_dir)
    rec = read_record(d / MODEL_JSON)
    out = Path(output) if output is not None else default_output(d, fmt, optimize)
    check_output(d, out, overwrite)
    if input_hw is None:
        hw = meta_input_hw(rec["meta"], d / MODEL_JSON)  # malformed: one line naming the record
        if hw is not None:
            check_input_hw(str(d / MODEL_JSON), hw[0], hw[1], "meta.input_hw", DeployError)
            input_hw = hw
        else:
            input_hw = task_facts(rec["task"]).deploy_input_hw
    h, w = int(input_hw[0]), int(input_hw[1])
    if h <= 0 or w <= 0 or h % INPUT_MULTIPLE or w % INPUT_MULTIPLE:
        raise DeployError(f"input size {h}x{w}: must be positive multiples of {INPUT_MULTIPLE}")
    check_input_hw(f"{d}: input size", h, w, "input", DeployError)
    net = load_model(d)
    example = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    entry: dict[str, Any] = {"format": fmt}
    if fmt == "torchscript":
        built = build_torchscript(net, example, optimize, channels_last)
        data = built.data
        entry.update(built.info)
        runner: Callable[[Tensor], Tensor] = built.module
    else:
        why = onnx_available()
        if why:
            raise DeployError(f"--format onnx: {why}")
        data = onnx_bytes(net, example)
        entry.update(optimized=bool(optimize), opset=ONNX_OPSET)
        runner = OnnxRunner(data)
    err, other_ok = check_artifact(runner, net, example, fmt)
    if not err < TOLERANCE[fmt]:
        raise DeployError(f"{d}: {fmt} artifact differs from the eager model by relative error "
                          f"{err:.2e} (limit {TOLERANCE[fmt]:.0e}); nothing written")
    entry.update(sha256=_sha256(data), input_shape=list(example.shape), other_sizes=other_ok,
                 rel_err=err, torch=torch.__version__.split("+")[0])
    record = {"schema": ARTIFACT_SCHEMA, "file": out.name, **entry,
              "model": {"task": rec["task"], "arch_id": rec["arch_id"],
                        "weights_sha256": rec["weights_sha256"]}}
    # Record first: an export killed between the two leaves a record whose checksum the old
    # artifact fails (refused on load, replaced by the next export), never an unrecorded file.
    atomic_write_text(record_path(out), json.dumps(record, indent=1) + "\n")
    atomic_write_bytes(out, data)
    return {**record, "file": os.path.relpath(out.resolve(), d.resolve())}


def write_deployable(model_dir: str | os.PathLike) -> dict[str, Any]:
    """The deployable artifact written next to each fine-tuned model: optimized TorchScript at the
    model's input size (``meta.input_hw``), in the memory format measured faster."""
    return export_artifact(model_dir, "torchscript", optimize=True)


def _legacy_entries(model_dir: Path) -> list[dict[str, Any]]:
    """Artifacts recorded in ``model.json`` itself (model directories of earlier versions)."""
    try:
        rec = read_record(model_dir / MODEL_JSON)
    except ModelFileError:
        return []
    entries = rec.get("deploy", [])
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def deploy_entries(model_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of the model's artifacts, ``file`` relative to the model directory: those beside
    the artifacts in ``MODEL/deploy/`` (sorted by name), then those an older version wrote into
    ``model.json``, for files without a record of their own."""
    d = Path(model_dir)
    read_record(d / MODEL_JSON)  # a missing or broken model record is the error to report
    found: list[dict[str, Any]] = []
    folder = d / DEPLOY_DIR
    if folder.is_dir():
        for side in sorted(folder.glob("*" + RECORD_SUFFIX)):
            rec = _read_artifact_record(side)
            if rec is not None:
                found.append({**rec, "file": f"{DEPLOY_DIR}/{rec['file']}",
                              "record": f"{DEPLOY_DIR}/{side.name}"})
    have = {e["file"] for e in found}
    return found + [e for e in _legacy_entries(d) if str(e.get("file")) not in have]


def find_entry(model_dir: str | os.PathLike, fmt: str) -> dict[str, Any]:
    """The model's recorded artifact of format ``fmt``: optimized ones first, then those inside
    the model directory, then the latest."""
    entries = [e for e in deploy_entries(model_dir) if e.get("format") == fmt]
    found = sorted(reversed(entries), key=lambda e: (
        not e.get("optimized"), str(e.get("file", "")).startswith("..")))
    if not found:
        raise DeployError(f"{Path(model_dir) / DEPLOY_DIR}: no {fmt} artifact recorded "
                          f"(run: scalenas export {model_dir} --format {fmt} --optimize)")
    return found[0]


def load_artifact(model_dir: str | os.PathLike, fmt: str = "torchscript",
                  artifact: str | os.PathLike | None = None) -> tuple[Any, dict[str, Any]]:
    """The model's artifact of format ``fmt`` (or the file ``artifact``, anywhere, of the format
    its record says) as a callable ``(x) -> Tensor`` and its record; the checksum is verified,
    and an artifact with a record of its own must come from the model's weights."""
    d = Path(model_dir)
    if artifact is None:
        entry = find_entry(d, fmt)
        path = d / str(entry.get("file"))
        where = d / str(entry.get("record", MODEL_JSON))
    else:
        path = Path(artifact)
        where = record_path(path)
        check_regular_file(path, "artifact", DeployError)
        rec = _read_artifact_record(where)
        if rec is None or rec.get("format") not in FORMATS:
            raise DeployError(f"{path}: no artifact record beside it ({where} missing or not one "
                              f"of ours): export it with scalenas export")
        entry = {**rec, "file": str(path), "record": str(where)}
        fmt = str(rec["format"])
    if not path.is_file():
        raise DeployError(f"{path}: artifact recorded in {where} not found")
    model = entry.get("model")
    if isinstance(model, dict):
        weights = read_record(d / MODEL_JSON)["weights_sha256"]
        if model.get("weights_sha256") != weights:
            raise DeployError(f"{path}: exported from other weights than {d / MODEL_JSON} "
                              f"(record {where}); export it again")
    data = path.read_bytes()
    if _sha256(data) != entry.get("sha256"):
        raise DeployError(f"{path}: checksum does not match {where} "
                          f"(corrupt or from another export)")
    if fmt == "onnx":
        why = onnx_available()
        if why:
            raise DeployError(f"{path}: {why}")
        return OnnxRunner(data), entry
    return torchscript_runtime(data, bool(entry.get("optimized"))), entry


__all__ = ["FORMATS", "ONNX_OPSET", "TOLERANCE", "DeployError", "export_artifact", "check_output",
           "record_path", "ARTIFACT_SCHEMA", "load_artifact", "write_deployable", "find_entry",
           "deploy_entries", "optimize_torchscript", "onnx_bytes",
           "onnx_available", "OnnxRunner", "rel_err", "median_time", "build_torchscript",
           "torchscript_runtime", "ModelFileError"]
