"""Bad checkpoints, as a user meets them: every reader of a weights file (start weights, a
supernet to search, a training checkpoint to resume, a trained-model file, a model directory's
weights) refuses each kind of bad file with one line that says what the file is, and loads
torch's pre-1.6 (non-zip) format like the zip one. No hostile pickle ever runs, and torch's advice
to retry with ``weights_only=False`` never reaches the user."""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import pytest
import torch

from pipeline.errors import InputError
from pipeline.nets.checkpoint import load_state_dict_file
from pipeline.nets.init import check_fits, inspect
from pipeline.nets.init import read_checkpoint as read_start_weights
from pipeline.train.artifacts import read_trained, save_trained
from pipeline.train.checkpoint import read_checkpoint as read_train_checkpoint

REPO = Path(__file__).resolve().parents[2]
MARK = "MARKER_hostile_pickle_ran"
STATE = {"conv1.weight": torch.arange(6.0).reshape(1, 2, 3, 1)}


class _Hostile:
    """Unpickling this runs a shell command that creates the marker file."""

    def __init__(self, d: Path) -> None:
        self.cmd = f"touch {d / MARK}"

    def __reduce__(self):
        return (os.system, (self.cmd,))


# -- the readers: (id, function, what the messages call the file) ------------------------------
READERS = [
    ("state-dict", load_state_dict_file, "checkpoint file"),
    ("start-weights", lambda p: read_start_weights(p)[0], "checkpoint file"),  # memory-mapped
    ("train-resume", read_train_checkpoint, "checkpoint"),
    ("trained-model", lambda p: read_trained(p)[0], "trained model file"),
]


def _loop(d: Path) -> Path:
    (d / "a.pt").symlink_to("b.pt")
    (d / "b.pt").symlink_to("a.pt")
    return d / "a.pt"


def _save(d: Path, obj, legacy: bool = False) -> Path:
    torch.save(obj, d / "x.pt", _use_new_zipfile_serialization=not legacy)
    return d / "x.pt"


def _cut(d: Path, legacy: bool) -> Path:
    p = _save(d, STATE, legacy)
    p.write_bytes(p.read_bytes()[:40 if legacy else 300])
    return p


def _write(data: bytes):
    def setup(d: Path) -> Path:
        (d / "x.pt").write_bytes(data)
        return d / "x.pt"
    return setup


REFUSE = "refused: holds Python objects other than tensors and plain data (posix.system), which " \
         "are never unpickled (that could run code)"
CASES = [
    # (id, setup(dir) -> path, message after "<path>: "; {what} is the reader's word)
    ("missing", lambda d: d / "nope.pt", "{what} not found"),
    ("empty", _write(b""), "{what} is empty (0 bytes)"),
    ("raw-pickle", _write(pickle.dumps({"conv1.weight": [1.0]})),
     "a plain Python pickle, not a file of torch.save; refused unread (unpickling it could run code)"),
    ("raw-hostile-pickle", lambda d: _write(pickle.dumps(_Hostile(d)))(d),
     "a plain Python pickle, not a file of torch.save; refused unread (unpickling it could run code)"),
    ("text", _write(b"hello, not weights\n"),
     "not a PyTorch checkpoint (neither torch.save's zip format nor its pre-1.6 format)"),
    ("directory", lambda d: (d / "x.pt").mkdir() or d / "x.pt", "is a directory ({what} expected)"),
    ("symlink-loop", _loop, "symbolic link loop ({what} expected)"),
    ("broken-symlink", lambda d: (d / "x.pt").symlink_to("gone.pt") or d / "x.pt",
     "{what} not found (broken symbolic link to gone.pt)"),
    ("fifo", lambda d: os.mkfifo(d / "x.pt") or d / "x.pt", "{what} is not a regular file (a FIFO)"),
    ("hostile-zip", lambda d: _save(d, {"conv1.weight": torch.zeros(1), "x": _Hostile(d)}), REFUSE),
    ("hostile-pre-1.6", lambda d: _save(d, {"conv1.weight": torch.zeros(1), "x": _Hostile(d)},
                                        legacy=True), REFUSE),
    ("truncated-zip", lambda d: _cut(d, legacy=False),
     "not a readable PyTorch checkpoint (corrupt or truncated, zip format): PytorchStreamReader "
     "failed reading zip archive: failed finding central directory"),
    ("truncated-pre-1.6", lambda d: _cut(d, legacy=True),
     "not a readable PyTorch checkpoint (corrupt or truncated, pre-1.6 format): the file ends early"),
]


@pytest.mark.parametrize("reader, what", [r[1:] for r in READERS], ids=[r[0] for r in READERS])
@pytest.mark.parametrize("setup, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_checkpoint_is_one_line(tmp_path: Path, reader, what, setup, message) -> None:
    path = setup(tmp_path)
    with pytest.raises(InputError) as e:
        reader(path)
    line = str(e.value)
    assert line == f"{path}: {message.format(what=what)}"
    assert "\n" not in line and "weights_only" not in line
    assert not (tmp_path / MARK).exists()  # the hostile pickle never ran


def test_torch_advice_never_reaches_the_user(tmp_path: Path, capfd) -> None:
    """Whatever torch says about a refused pickle (its first line is the advice to load the file
    with weights_only=False) is replaced by our line, on every reader."""
    for reader, _ in ((r[1], r[2]) for r in READERS):
        path = _save(tmp_path, {"conv1.weight": torch.zeros(1), "x": _Hostile(tmp_path)})
        with pytest.raises(InputError) as e:
            reader(path)
        assert "weights_only" not in str(e.value) and "trusted source" not in str(e.value)
    out = capfd.readouterr()
    assert "weights_only" not in out.out + out.err
    assert not (tmp_path / MARK).exists()


def test_every_torch_load_goes_through_the_one_safe_reader() -> None:
    """One reader (pipeline.nets.checkpoint.torch_load) calls torch.load; any other call would
    have to repeat its refusals and its replacement of torch's advice."""
    calls = [f"{p.relative_to(REPO)}:{i}" for p in sorted((REPO / "pipeline").rglob("*.py"))
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"torch\.load\(", line) and not line.lstrip().startswith(("#", "``"))
             and "``torch.load(" not in line]
    assert len(calls) == 1 and calls[0].startswith("pipeline/nets/checkpoint.py:"), calls


# -- torch's pre-1.6 format loads like the zip one ---------------------------------------------
@pytest.mark.parametrize("reader", [r[1] for r in READERS[:2]], ids=[r[0] for r in READERS[:2]])
@pytest.mark.parametrize("wrapper", ["plain", "state_dict", "module."])
def test_pre_1_6_format_loads(tmp_path: Path, reader, wrapper) -> None:
    obj = {"plain": STATE, "state_dict": {"state_dict": STATE},
           "module.": {f"module.{k}": v for k, v in STATE.items()}}[wrapper]
    legacy = _save(tmp_path, obj, legacy=True)
    assert legacy.read_bytes()[:2] == b"\x80\x02"  # really the old format
    got = reader(legacy)
    assert list(got) == list(STATE) and torch.equal(got["conv1.weight"], STATE["conv1.weight"])


def test_pre_1_6_training_checkpoint_and_model_file_load(tmp_path: Path) -> None:
    doc = {"format": "scalenas-train-ckpt/1", "iteration": 3, "model": STATE}
    torch.save(doc, tmp_path / "last.pt", _use_new_zipfile_serialization=False)
    assert read_train_checkpoint(tmp_path / "last.pt")["iteration"] == 3
    net = torch.nn.Conv2d(2, 1, (3, 1), bias=False)
    save_trained(tmp_path / "model.pt", net, {"task": "seg", "width": 8, "kind": "teacher"})
    new = torch.load(tmp_path / "model.pt", weights_only=True)
    torch.save(new, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    sd, meta = read_trained(tmp_path / "old.pt", task="seg", width=8)
    assert meta["kind"] == "teacher" and torch.equal(sd["weight"], net.weight.detach())


# -- a 0-dimensional head tensor (planning: supernet.<task>.checkpoint and <phase>.<task>.init) ---
def _zero_dim_head(d: Path, key: str) -> Path:
    from pipeline.nets.supernet import SuperNet

    sd = SuperNet("seg", 8).state_dict()
    sd.pop("last_layer.3.weight", None)
    sd[key] = torch.tensor(3.0)
    torch.save(sd, d / "head0.pt")
    return d / "head0.pt"


def _params(d: Path, edit) -> dict:
    import yaml

    from pipeline import config as pc

    doc = yaml.safe_load((REPO / "params" / "default.yaml").read_text())
    doc["tasks"] = ["seg"]
    edit(doc)
    (d / "p.yaml").write_text(yaml.safe_dump(doc))
    return pc.load_resolved(d / "p.yaml")


HEAD0 = ("{p}: {key} has shape (), not a head convolution's (outputs, channels, kh, kw): a "
         "damaged or foreign checkpoint")


@pytest.mark.parametrize("key", ["last_layer.3.weight", "final_layer.weight"])
@pytest.mark.parametrize("as_what", ["checkpoint", "init"])
def test_zero_dim_head_is_one_line_at_planning(tmp_path: Path, key: str, as_what: str) -> None:
    from pipeline.stages.build import check_start_weights

    path = _zero_dim_head(tmp_path, key)
    section = "supernet" if as_what == "checkpoint" else "teacher"
    resolved = _params(tmp_path, lambda doc: doc[section]["seg"].update({as_what: str(path)}))
    with pytest.raises(InputError) as e:
        check_start_weights(resolved, "p.yaml")
    assert str(e.value) == f"p.yaml: {section}.seg.{as_what}: " + HEAD0.format(p=path, key=key)
    with pytest.raises(InputError) as e:  # and when a stage loads it (pipeline.nets.init)
        inspect(path)
    assert str(e.value) == HEAD0.format(p=path, key=key)
    with pytest.raises(InputError):
        check_fits(path, "seg", 8, 19)
