"""The training loop's settings: one typed, validated record built from the parameter files."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

#: Settings that do not change what is computed, so a resumed run may change them freely.
RESUME_NEUTRAL = ("checkpoint_every", "log_every", "num_workers", "progress", "device")


def _as_mapping(obj: Any) -> Mapping[str, Any]:
    """A parameter section given as a mapping or as a (typed) dataclass."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return obj
    raise TrainConfigError(f"expected a mapping of training settings, got {type(obj).__name__}")


class TrainConfigError(ValueError):
    """A training setting that cannot be used; the message names the key."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything the loop needs besides the task, the model and the output directory.

    ``groups=None`` trains one fixed architecture (teacher, fine-tuning); ``"paper"`` or a list of
    ``{name, fusion_prob, depths}`` trains a supernet, one subnet per iteration.
    """

    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "sgd"            # "sgd" | "adam" | "adamw"
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    lr_schedule: str = "poly"         # "poly" | "step" | "constant"
    poly_power: float = 0.9
    lr_steps: tuple[int, ...] = ()    # epochs at which a step schedule multiplies by lr_gamma
    lr_gamma: float = 0.1
    warmup_iters: int = 0             # linear warm-up of the learning rate
    iterations: int | None = None     # total steps; None = epochs x steps per epoch
    groups: str | tuple[Mapping[str, Any], ...] | None = None
    kd_ratio: float = 0.0
    seed: int = 0
    sync_bn: bool = True              # GPUs only (torch's SyncBatchNorm has no CPU kernel)
    freeze_bn: bool = False           # BN layers in eval mode: running statistics, no update
    amp: bool = True                  # bf16 autocast, GPUs only
    deterministic: bool = True
    checkpoint_every: int = 100
    log_every: int = 10
    num_workers: int = 0
    progress: bool = True
    device: str = "auto"

    def __post_init__(self) -> None:
        def need(cond: bool, key: str, msg: str) -> None:
            if not cond:
                raise TrainConfigError(f"{key}: {msg}, got {getattr(self, key)!r}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        need(is_int(self.epochs) and self.epochs >= 1, "epochs", "must be an integer >= 1")
        need(is_int(self.batch_size) and self.batch_size >= 1, "batch_size", "must be an integer >= 1")
        need(isinstance(self.lr, (int, float)) and self.lr > 0, "lr", "must be a positive number")
        need(self.optimizer in ("sgd", "adam", "adamw"), "optimizer",
             "must be 'sgd', 'adam' or 'adamw'")
        need(self.lr_schedule in ("poly", "step", "constant"), "lr_schedule",
             "must be 'poly', 'step' or 'constant'")
        need(self.iterations is None or (is_int(self.iterations) and self.iterations >= 1),
             "iterations", "must be null or an integer >= 1")
        need(is_int(self.warmup_iters) and self.warmup_iters >= 0, "warmup_iters",
             "must be an integer >= 0")
        need(isinstance(self.kd_ratio, (int, float)) and self.kd_ratio >= 0, "kd_ratio",
             "must be a number >= 0")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(is_int(self.checkpoint_every) and self.checkpoint_every >= 1, "checkpoint_every",
             "must be an integer >= 1")
        need(is_int(self.log_every) and self.log_every >= 1, "log_every", "must be an integer >= 1")
        need(is_int(self.num_workers) and self.num_workers >= 0, "num_workers", "must be >= 0")
        need(self.device in ("auto", "cpu", "cuda"), "device", "must be 'auto', 'cpu' or 'cuda'")
        need(all(is_int(e) and e >= 0 for e in self.lr_steps), "lr_steps",
             "must be a list of epoch numbers")

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], section: str = "train") -> "TrainConfig":
        """Build from a parameter section; unknown keys are an error naming ``section.key``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise TrainConfigError(f"{section}: unknown key(s) {unknown}")
        kw = dict(d)
        if "lr_steps" in kw and kw["lr_steps"] is not None:
            kw["lr_steps"] = tuple(kw["lr_steps"])
        if isinstance(kw.get("groups"), Sequence) and not isinstance(kw.get("groups"), str):
            kw["groups"] = tuple(dict(g) if isinstance(g, Mapping) else g for g in kw["groups"])
        try:
            return cls(**kw)
        except TrainConfigError as e:
            raise TrainConfigError(f"{section}.{e}") from None
        except TypeError as e:
            raise TrainConfigError(f"{section}: {e}") from None

    @classmethod
    def from_params(cls, section: Mapping[str, Any], *, seed: int, device: str = "auto",
                    section_name: str = "train", **overrides: Any) -> "TrainConfig":
        """Build from a training section of the parameter files (workflow/schemas/params.schema.yaml).

        The section nests ``optimizer: {name, lr, momentum, weight_decay, nesterov}`` and
        ``schedule: {name, power, milestones, gamma, warmup_iters}``; ``seed`` and ``device`` come
        from the ``run`` section. Keys of the section that are not training settings (e.g.
        ``init_from_teacher``, ``budgets``) are ignored here: their stage reads them.
        """
        sec = _as_mapping(section)
        opt = _as_mapping(sec.get("optimizer", {}))
        sch = _as_mapping(sec.get("schedule", {}))
        flat: dict[str, Any] = {
            k: sec[k] for k in ("epochs", "iterations", "batch_size", "checkpoint_every",
                                "log_every", "sync_bn", "freeze_bn", "num_workers", "kd_ratio",
                                "groups")
            if k in sec}
        if "amp" in sec:
            flat["amp"] = sec["amp"] in (True, "bf16")
        renames = {"name": "optimizer", "lr": "lr", "momentum": "momentum",
                   "weight_decay": "weight_decay", "nesterov": "nesterov"}
        flat.update({renames[k]: v for k, v in opt.items() if k in renames})
        renames = {"name": "lr_schedule", "power": "poly_power", "milestones": "lr_steps",
                   "gamma": "lr_gamma", "warmup_iters": "warmup_iters"}
        flat.update({renames[k]: v for k, v in sch.items() if k in renames})
        flat.setdefault("lr", 1e-3)
        flat.setdefault("epochs", 1)
        flat.setdefault("batch_size", 1)
        flat.update(seed=seed, device=device, **overrides)
        return cls.from_mapping(flat, section=section_name)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lr_steps"] = list(self.lr_steps)
        if isinstance(self.groups, tuple):
            d["groups"] = [dict(g) for g in self.groups]
        return d

    def fingerprint_dict(self) -> dict[str, Any]:
        """The settings that define the computation (what a resume must agree on)."""
        d = self.to_dict()
        for k in RESUME_NEUTRAL:
            d.pop(k, None)
        return d

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)
