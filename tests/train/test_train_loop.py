"""The training loop on the built-in data (W8, tiny crops): loss, groups, distillation, errors."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from pipeline.data.synth import generate_all
from pipeline.nets.supernet import SuperNet
from pipeline.space.sample import largest, smallest
from pipeline.stages.supernet import load_teacher
from pipeline.tasks import PoseTaskConfig, SegTaskConfig, build_task
from pipeline.train.artifacts import save_trained
from pipeline.train.checkpoint import CheckpointError, read_checkpoint
from pipeline.config import SupernetTrainConfig, TrainConfig, make_section
from pipeline.train.hooks import EvalHook
from pipeline.train.loop import Trainer, TrainingError, train
from pipeline.train.runtime import TrainRun
from pipeline.train.schedule import parse_groups, subnet_at
from pipeline.train.stats import RunStats

CHEAP_GROUPS = ({"name": "a", "fusion_prob": 0.0, "depths": [2]},
                {"name": "b", "fusion_prob": 0.5, "depths": [2]},
                {"name": "c", "fusion_prob": 1.0, "depths": [2]})


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "builtin"
    generate_all(root, 0, seg_train=12, seg_val=2, seg_size_hw=(64, 128), pose_train=12,
                 pose_val=2, pose_size_hw=(96, 128))
    return root


def seg_task(root: Path):
    return build_task("seg", SegTaskConfig.for_synthetic(
        root / "cityscapes", crop_hw=(64, 64), base_size=128, ohem_min_kept=1024))


def pose_task(root: Path):
    return build_task("pose", PoseTaskConfig.for_synthetic(root / "coco", input_hw=(64, 64)))


#: One group that always draws the smallest pose subnet (distillation on a fixed architecture).
SMALLEST_ONLY = [{"name": "smallest", "fusion_prob": 0.0, "depths": [2]}]
RUN = TrainRun(device="cpu", progress=False)


def cfg(*, lr: float = 0.01, optimizer: str = "sgd", lr_schedule: str = "poly",
        groups=None, kd_ratio=None, **kw) -> TrainConfig:
    """A training section as a parameter file would give it (a supernet section with groups)."""
    values = {"epochs": 1, "batch_size": 2, "checkpoint_every": 100, "log_every": 1, **kw,
              "optimizer": {"name": optimizer, "lr": lr, "weight_decay": 0.0},
              "schedule": {"name": lr_schedule}}
    if groups is None and kd_ratio is None:
        return make_section(TrainConfig, values)
    return make_section(SupernetTrainConfig, values, groups=list(groups or SMALLEST_ONLY),
                        kd_ratio=kd_ratio or 0.0)


class Recorder:
    """A tracker that keeps every metric point."""

    def __init__(self) -> None:
        self.points: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, metrics, step=0):
        self.points.append((step, dict(metrics)))


class RecordingSuperNet(SuperNet):
    """Records the architectures the loop switches to."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.history: list = []

    def set_arch(self, arch) -> None:
        super().set_arch(arch)
        if hasattr(self, "history"):
            self.history.append(arch)


def test_training_lowers_the_loss(data, tmp_path):
    task = seg_task(data)
    model = SuperNet("seg", 8, task.num_outputs, seed=0)
    model.set_arch(smallest("seg"))
    ds = task.dataset("train", train=False)
    batch = task.collate([ds[i] for i in range(4)])

    def probe() -> float:
        with torch.no_grad():
            return float(task.loss(model(batch["image"]), batch))

    before = probe()
    summary = train(task, model, cfg(iterations=12, lr=0.05, lr_schedule="constant"), tmp_path,
                    run=RUN)
    after = probe()
    assert summary.iterations == 12 and summary.kd is False
    assert after < 0.9 * before, (before, after)
    assert summary.epoch_losses[-1] < summary.epoch_losses[0]


def test_group_schedule_over_an_epoch(data, tmp_path):
    task = pose_task(data)
    model = RecordingSuperNet("pose", 8, task.num_outputs, seed=0)
    rec = Recorder()
    c = cfg(groups=CHEAP_GROUPS, optimizer="adam", lr=1e-3)
    summary = train(task, model, c, tmp_path, tracker=rec, run=TrainRun(seed=7, device="cpu",
                                                                         progress=False))
    n = summary.iters_per_epoch
    assert n >= 3 and summary.iterations == n
    groups = parse_groups(list(CHEAP_GROUPS), "pose")
    want = [subnet_at(groups, i, 7, "pose")[1] for i in range(n)]
    assert model.history == want
    assert summary.group_counts == {g["name"]: len(range(i, n, 3))
                                    for i, g in enumerate(CHEAP_GROUPS)}
    logged = [next(k.split("/")[1] for k in m if k.startswith("group/")) for _, m in rec.points
              if any(k.startswith("group/") for k in m)]
    assert logged == [CHEAP_GROUPS[i % 3]["name"] for i in range(n)]
    assert [s for s, m in rec.points if "loss" in m] == list(range(1, n + 1))
    assert any("images_per_s" in m for _, m in rec.points)
    assert any("checkpoint_iteration" in m for _, m in rec.points)


def test_kd_term_only_with_a_teacher(data, tmp_path):
    task = pose_task(data)
    arch = smallest("pose")
    teacher = SuperNet("pose", 8, task.num_outputs, seed=1)
    teacher.set_arch(arch)

    def run(out, teacher, ratio):
        model = SuperNet("pose", 8, task.num_outputs, seed=0)
        model.set_arch(arch)
        rec = Recorder()
        s = train(task, model, cfg(iterations=2, kd_ratio=ratio, optimizer="adam", lr=1e-3),
                  out, teacher=teacher, tracker=rec, run=RUN)
        return s, [m for _, m in rec.points if "loss" in m]

    s, pts = run(tmp_path / "kd", teacher, 0.5)
    assert s.kd and all("kd_loss" in m and m["kd_loss"] > 0 for m in pts)
    for m in pts:
        assert m["loss"] == pytest.approx(m["task_loss"] + 0.5 * m["kd_loss"], rel=1e-5)
    s, pts = run(tmp_path / "nokd", None, 0.5)
    assert not s.kd and all("kd_loss" not in m and m["loss"] == m["task_loss"] for m in pts)
    s, pts = run(tmp_path / "ratio0", teacher, 0.0)
    assert not s.kd and all("kd_loss" not in m for m in pts)


class NaNAfter:
    """The pose task, with a loss that turns NaN from the given call on."""

    def __init__(self, task, at: int) -> None:
        self.task, self.at, self.calls = task, at, 0
        self.name, self.collate = task.name, task.collate

    def dataset(self, split, train):
        return self.task.dataset(split, train)

    def loss(self, output, batch):
        self.calls += 1
        loss = self.task.loss(output, batch)
        return loss * math.nan if self.calls > self.at else loss


def test_nan_loss_stops_with_the_checkpoint_kept(data, tmp_path):
    model = SuperNet("pose", 8, 17, seed=0)
    model.set_arch(smallest("pose"))
    with pytest.raises(TrainingError, match=r"non-finite loss \(nan\) at iteration 3 .*last good "
                                            r"checkpoint kept: .*last.pt"):
        train(NaNAfter(pose_task(data), 3), model,
              cfg(iterations=6, checkpoint_every=2, optimizer="adam", lr=1e-3), tmp_path,
              run=RUN)
    doc = read_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert doc["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in doc["model"].values() if v.is_floating_point())


def test_resume_refuses_another_configuration_and_a_corrupt_file(data, tmp_path):
    task = pose_task(data)
    model = SuperNet("pose", 8, task.num_outputs, seed=0)
    model.set_arch(smallest("pose"))
    train(task, model, cfg(iterations=2, checkpoint_every=1, optimizer="adam", lr=1e-3), tmp_path,
          run=RUN)
    with pytest.raises(CheckpointError, match="another configuration"):
        train(task, model, cfg(iterations=2, optimizer="adam", lr=2e-3), tmp_path, run=RUN)
    last = tmp_path / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"last.pt: not a readable PyTorch checkpoint \(corrupt or truncated.*prev.pt"):
        train(task, model, cfg(iterations=2, optimizer="adam", lr=1e-3), tmp_path, run=RUN)
    assert read_checkpoint(tmp_path / "checkpoints" / "prev.pt")["iteration"] == 1


def test_bad_teacher_files(tmp_path):
    net = SuperNet("seg", 8, seed=0)
    net.set_arch(largest("seg"))
    good = tmp_path / "t8.pt"
    save_trained(good, net, {"kind": "teacher", "task": "seg", "width": 8, "num_outputs": 19,
                             "arch": largest("seg").to_dict()})
    t = load_teacher(good, "seg", 8, 19, 0)
    assert t.arch == largest("seg") and not t.training
    with pytest.raises(CheckpointError, match=r"t8.pt: .*width 8, but width 16 is needed"):
        load_teacher(good, "seg", 16, 19, 0)
    with pytest.raises(CheckpointError, match=r"t8.pt: a teacher of task 'seg'.*task 'pose'"):
        load_teacher(good, "pose", 8, 17, 0)
    wide = SuperNet("seg", 16, seed=0)
    lying = tmp_path / "lying.pt"  # meta says width 8, weights are W16: caught by the shapes
    save_trained(lying, wide, {"kind": "teacher", "task": "seg", "width": 8, "num_outputs": 19,
                               "arch": largest("seg").to_dict()})
    with pytest.raises(CheckpointError, match=r"lying.pt: does not fit the model.*width 16"):
        load_teacher(lying, "seg", 8, 19, 0)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"bad.pt: not a readable PyTorch checkpoint \(corrupt or truncated"):
        load_teacher(bad, "seg", 8, 19, 0)
    with pytest.raises(CheckpointError, match="not found"):
        load_teacher(tmp_path / "none.pt", "seg", 8, 19, 0)


def test_hooks_do_not_change_what_is_trained(data, tmp_path):
    """Bitwise the same weights with the default hooks, with none, and with an evaluation hook
    that draws random numbers and runs the model in between (it must leave training alone)."""
    task = pose_task(data)
    c = cfg(iterations=4, groups=CHEAP_GROUPS, optimizer="adam", lr=1e-3, checkpoint_every=2)
    run = TrainRun(seed=3, device="cpu", progress=False)
    ds = task.dataset("train", train=False)
    probe = task.collate([ds[i] for i in range(2)])

    def fresh() -> SuperNet:
        return SuperNet("pose", 8, task.num_outputs, seed=0)

    ref = fresh()
    summary = train(task, ref, c, tmp_path / "default", run=run)
    bare = fresh()
    trainer = Trainer.from_config(task, bare, c, tmp_path / "bare", run=run)
    trainer.run([])
    assert not (tmp_path / "bare" / "checkpoints").exists()  # no checkpointer, no files

    def evaluate(tr: Trainer) -> dict[str, float]:
        assert not tr.model.training
        torch.rand(3)  # a draw the training stream must not see
        with torch.no_grad():
            return {"probe_loss": float(task.loss(tr.model(probe["image"]), probe))}

    evaluated, rec = fresh(), Recorder()
    ev = EvalHook(3, evaluate)
    train(task, evaluated, c, tmp_path / "eval", tracker=rec, hooks=[ev], run=run)
    assert [it for it, _ in ev.results] == [3, 4]  # every 3 steps and after the last
    assert [s for s, m in rec.points if "eval/probe_loss" in m] == [3, 4]
    for net in (bare, evaluated):
        a, b = ref.state_dict(), net.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert trainer.stats.to_dict() | {"seconds": 0.0} == \
        read_checkpoint(tmp_path / "default" / "checkpoints" / "last.pt")["stats"] | {"seconds": 0.0}
    assert summary.group_counts == trainer.stats.group_counts(["a", "b", "c"])


def test_run_stats_in_the_checkpoint(data, tmp_path):
    """RunStats is stored as the plain dict older checkpoints held (same eight keys), so those
    resume; a checkpoint whose stats do not fit is refused with the file named."""
    task = pose_task(data)
    model = SuperNet("pose", 8, task.num_outputs, seed=0)
    model.set_arch(smallest("pose"))
    c = cfg(iterations=2, checkpoint_every=1, optimizer="adam", lr=1e-3)
    train(task, model, c, tmp_path, run=RUN)
    doc = read_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert sorted(doc["stats"]) == ["first_loss", "group_loss", "group_n", "images", "last_loss",
                                    "loss_n", "loss_sum", "seconds"]
    stats = RunStats.from_dict(doc["stats"], 0)
    assert stats.loss_n == [2] and stats.images == 4 and stats.last_loss == doc["stats"]["last_loss"]
    with pytest.raises(CheckpointError, match=r"x.pt: 'stats' must have the keys"):
        RunStats.from_dict({"loss_sum": []}, 0, where="x.pt")
    with pytest.raises(CheckpointError, match=r"x.pt: 'stats' does not fit"):
        RunStats.from_dict(doc["stats"], 3, where="x.pt")


# -- the trainer on injected parts ---------------------------------------------------------------

class _StubTask:
    name = "stub"

    @staticmethod
    def loss(output: torch.Tensor, batch: dict) -> torch.Tensor:
        return torch.nn.functional.mse_loss(output, batch["target"])


class _ConstantLR:
    def __init__(self, lr: float) -> None:
        self.lr = lr

    def __call__(self, iteration: int) -> float:
        return self.lr

    def state_dict(self) -> dict:
        return {"lr": self.lr}


def _stub_trainer(out: Path, total: int = 30) -> Trainer:
    torch.manual_seed(0)
    x = torch.randn(64, 3)
    batches = [{"image": x[i:i + 8], "target": x[i:i + 8] @ torch.tensor([[1.0], [-2.0], [0.5]]) + 1}
               for i in range(0, 64, 8)]
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return Trainer(_StubTask(), model, opt, batches, _ConstantLR(0.1), out, total=total,
                   batch_size=8, fingerprint="stub-linear")


def test_trainer_runs_on_injected_parts_and_resumes(tmp_path: Path) -> None:
    """No task plug-in, dataset or supernet: a linear model, a list of batches and an optimizer
    are enough to drive the loop, its hooks, its checkpoint and its resume."""
    from pipeline.train.hooks import Checkpointer

    trainer = _stub_trainer(tmp_path / "a")
    assert trainer.iters_per_epoch == 8 and trainer.iter == 0
    trainer.run([Checkpointer(every=10)])
    s = trainer.summary()
    assert s.iterations == 30 and s.final_loss < 0.05 * s.first_loss, s
    again = _stub_trainer(tmp_path / "a")  # same fingerprint: resumes at the end
    assert again.iter == again.resumed_from == 30
    for p, q in zip(trainer.model.parameters(), again.model.parameters()):
        assert torch.equal(p, q)
