"""Typed configuration: one dataclass per section, layered defaults -> YAML preset or path -> ``--set`` overrides.

Unknown keys and values of the wrong type fail at load time with the dotted key named, so a typo in a YAML file or
on the command line never silently trains the wrong model. The resolved config is written beside every run and into
every checkpoint and exported artifact; ``Config.from_dict(cfg.to_dict())`` gives back an equal object.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hjepa.errors import HJEPAError
from hjepa.safe_yaml import describe_yaml_error, load_yaml


class ConfigError(HJEPAError, ValueError):
    """A user-facing configuration problem; the message names the offending key or file.

    Always one line of bounded length: a message may quote a value from a hostile file (see ``_one_line``).
    """

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


@dataclass
class HamiltonianConfig:
    """Hamiltonian predictor (HamJEPA): H(q, p) = 1/2 |p|^2 + V(q), integrated by leapfrog."""

    dt: float = 0.1
    steps: int = 4
    damping: float = 0.0
    base_coeff: float = 0.5
    residual_scale: float = 0.1
    hidden_dim: int = 256
    match: str = "q"  # "q", "p" or "qp"


@dataclass
class ModelConfig:
    encoder: str = "vit_tiny"  # vit_tiny | vit_small | vit_base | vit_large | custom
    img_size: int = 32
    patch_size: int = 4
    in_chans: int = 3
    embed_dim: int | None = None  # overrides the size preset when set
    depth: int | None = None
    num_heads: int | None = None
    drop_path_rate: float = 0.0
    num_levels: int = 3
    head_dim: int | None = None  # width of the per-level projection heads; default: embed_dim
    target_heads: str = "layernorm"  # layernorm: parameter-free targets (as I-JEPA) | ema: EMA copies of the heads
    predictor: str = "transformer"  # transformer | hamiltonian | cross (ablation: learned worse, see README)
    predictor_embed_dim: int = 96
    predictor_depth: int = 4
    predictor_num_heads: int = 4
    predictor_drop_path: float = 0.0
    # packed: all blocks of an image in one sequence, each distinct query once | joint: the same without dedup or
    # packing (a reference for packed) | per_block: I-JEPA's layout, one sequence per block with the context repeated
    predictor_batching: str = "packed"
    # masked: I-JEPA masked-block prediction (masks.*, model.predictor*) | multiview: LeJEPA-style prediction of the
    # global views' mean embedding from every view (data.num_*_views, model.view_predictor, model.projector_*)
    objective: str = "masked"
    view_predictor: str = "none"  # multiview: none (LeJEPA) | mlp (residual MLP) | hamiltonian (model.hamiltonian.*)
    projector_hidden: int = 512  # multiview: per-level MLP projector from pooled features to the loss's embedding
    projector_dim: int = 128
    hamiltonian: HamiltonianConfig = field(default_factory=HamiltonianConfig)


@dataclass
class MaskConfig:
    generator: str = "hierarchical"  # multiblock | hierarchical
    num_targets: list[int] = field(default_factory=lambda: [4])  # per level; the last value repeats
    target_scale: tuple[float, float] = (0.15, 0.2)  # level-0 scale range (fraction of the grid)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)
    context_aspect: tuple[float, float] = (1.0, 1.0)
    scale_progression: str = "geometric"  # geometric | linear: how target scale grows with level
    scale_factor: float = 1.5  # level k scale: base * f^k (geometric) or base * (1 + k (f - 1)) (linear)
    min_keep: int = 4  # fewest context tokens any sample may keep
    max_attempts: int = 20


@dataclass
class LossConfig:
    prediction: str = "smoothl1"  # mse | smoothl1 | huber
    huber_delta: float = 1.0
    normalize: bool = False  # L2-normalise predictions and targets before the distance
    level_weights: list[float] | None = None  # default: 1 for every level
    regularizer: str = "none"  # none | vicreg | barlow | sigreg
    regularizer_weight: list[float] = field(default_factory=lambda: [0.0])  # per level; the last value repeats
    vicreg_sim: float = 25.0
    vicreg_var: float = 25.0
    vicreg_cov: float = 1.0
    vicreg_gamma: float = 1.0
    vicreg_eps: float = 1e-4
    barlow_lambda: float = 0.005
    sigreg_slices: int = 256
    sigreg_points: int = 17
    sigreg_t_max: float = 3.0


@dataclass
class DataConfig:
    dataset: str = "fashion-mnist"  # fashion-mnist | digits | cifar100 | imagefolder | imagenet100
    data_dir: str | None = None
    download: bool = False  # only cifar100 downloads, and only when this is set
    batch_size: int = 64
    num_workers: int = 0
    crop_scale: tuple[float, float] = (0.3, 1.0)
    hflip: bool = True
    # multiview objective: global views are model.img_size crops at crop_scale; local views are smaller crops
    num_global_views: int = 2
    num_local_views: int = 0
    local_img_size: int = 16
    local_crop_scale: tuple[float, float] = (0.05, 0.3)
    # multiview objective, neighbour views: this share of each batch cuts its second global view from the image's
    # nearest raw-pixel neighbour among neighbour_pool random training images (hjepa/data/neighbours.py); 0: off
    neighbour_views: float = 0.0
    neighbour_pool: int = 8192
    on_device: bool = False  # keep the whole uint8 dataset as one tensor on the training device
    limit: int | None = None  # use only the first N training images (debugging, tests)


@dataclass
class OptimConfig:
    lr: float = 1e-3
    min_lr: float = 1e-6
    warmup_steps: int = 100
    weight_decay: float = 0.04
    final_weight_decay: float = 0.4
    betas: tuple[float, float] = (0.9, 0.95)
    clip_grad: float = 1.0  # 0 disables clipping
    ema_start: float = 0.996
    ema_end: float = 1.0
    ema_schedule: str = "cosine"  # cosine | linear


@dataclass
class TrainConfig:
    steps: int = 1000
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    compile: bool = False
    log_every: int = 20
    checkpoint_every: int = 500
    keep_last: int = 2
    knn_every: int = 0  # 0 disables the online k-NN monitor
    knn_train_samples: int = 5000
    knn_test_samples: int = 1000
    knn_split: str = "test"  # test | val: queries from a validation split carved from train (for choosing settings)
    out_dir: str = "runs/default"
    progress: bool = True


@dataclass
class ExportConfig:
    opset: int = 20
    atol: float = 1e-3
    min_cosine: float = 0.999
    verify_batch: int = 4
    profile_batches: tuple[int, int, int] = (1, 8, 64)  # TensorRT min / opt / max batch


@dataclass
class EvalConfig:
    knn_k: list[int] = field(default_factory=lambda: [20])
    knn_temperature: float = 0.07
    probe_lrs: list[float] = field(default_factory=lambda: [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1])
    probe_epochs: int = 100
    probe_val_fraction: float = 0.1
    batch_size: int = 256


@dataclass
class Config:
    name: str = "default"
    model: ModelConfig = field(default_factory=ModelConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        cfg = _build(cls, data, "")
        _check_values(cfg)
        return cfg

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    def override(self, assignments: list[str]) -> Config:
        """Apply ``a.b=value`` overrides (values parsed as YAML) and return a new, re-validated config."""
        data = self.to_dict()
        for assignment in assignments:
            if "=" not in assignment:
                raise ConfigError(f"override {assignment!r} is not of the form section.key=value")
            key, raw = assignment.split("=", 1)
            parts = key.strip().split(".")
            node = data
            for i, part in enumerate(parts[:-1]):
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"unknown config key {'.'.join(parts[: i + 1])!r} in override {assignment!r}")
                node = node[part]
            if parts[-1] not in node:
                raise ConfigError(f"unknown config key {key.strip()!r} in override {assignment!r}")
            try:
                node[parts[-1]] = load_yaml(raw) if raw.strip() else None
            except yaml.YAMLError as exc:
                reason = describe_yaml_error(exc)
                raise ConfigError(
                    f"config key {key.strip()!r}: {_quote(raw)} is not a valid YAML value ({reason})"
                ) from None
        return Config.from_dict(data)


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or '<root>'!r} must be a mapping, got {_quote(data)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(key) for key in data if key not in names)  # YAML keys may be numbers or booleans
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix + unknown[0]!r}; valid keys in this section: {', '.join(sorted(names))}"
        )
    kwargs = {name: _coerce(hints[name], value, prefix + name) for name, value in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples where the field is a tuple."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"config key {key!r}: bad value {_quote(value)}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} expects a list, got {_quote(value)}")
        args = typing.get_args(tp)
        if origin is tuple:
            if len(args) != len(value):
                raise ConfigError(f"config key {key!r} expects {len(args)} values, got {_quote(list(value))}")
            return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads 5e-4 as a string; it is plainly meant as a number
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r} expects a number, got {_quote(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key!r} expects an integer, got {_quote(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r} expects true or false, got {_quote(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r} expects a string, got {_quote(value)}")
        return value
    raise ConfigError(f"config key {key!r} has an unsupported type {tp!r}")  # pragma: no cover


# ---- Value checks --------------------------------------------------------------------------------------------
# Every setting's allowed values, in tables checked at load time (``Config.from_dict``), so a value that cannot work
# (log_every=0 divides by zero at the first step; steps=-1 "trains" nothing and reports success; drop_path_rate=5
# fails deep inside timm) fails before anything is built or written, with the key named. A new field gets the
# generic checks for free (finite floats, integers below _MAX_INT); give it a row in _RANGES / _CHOICES / _ORDERED
# when it has a narrower domain. Registry names (model.encoder, model.predictor, masks.generator, loss.prediction,
# loss.regularizer, data.dataset, model.view_predictor) are checked by their registries, which list the valid names.


@dataclass(frozen=True)
class Range:
    """``low <= value <= high`` (``<`` at an open end; ``None``: unbounded). For a list or tuple, each element."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def admits(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high}"
        if not (self.low_open or self.high_open):
            return f"between {self.low} and {self.high}"
        return f"in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"


_MAX_INT = 2**31 - 1  # any integer setting beyond this is a typo; sizes and seeds overflow C integers past it
_MAX_STEPS = 100_000_000  # schedules are arrays of this length; I-JEPA's longest runs are under 1M steps
_POSITIVE = Range(0, None, low_open=True)
_NON_NEGATIVE = Range(0, None)
_FRACTION = Range(0, 1, low_open=True)  # (0, 1]
_RATE = Range(0, 1)  # a probability; 1 drops every residual branch (tests use it to switch blocks off)

_RANGES: dict[str, Range] = {
    "model.img_size": Range(1, 65536),  # check_model_size bounds the token count, the real limit
    "model.patch_size": Range(1, 1024),
    "model.in_chans": Range(1, 64),
    "model.embed_dim": Range(1, 65536),
    "model.depth": Range(1, 256),
    "model.num_heads": Range(1, 1024),
    "model.drop_path_rate": _RATE,
    "model.num_levels": Range(1, 4),
    "model.head_dim": Range(1, 65536),
    "model.predictor_embed_dim": Range(1, 65536),
    "model.predictor_depth": Range(1, 256),
    "model.predictor_num_heads": Range(1, 1024),
    "model.predictor_drop_path": _RATE,
    "model.projector_hidden": Range(1, 65536),
    "model.projector_dim": Range(1, 65536),
    "model.hamiltonian.dt": _POSITIVE,
    "model.hamiltonian.steps": Range(1, 1000),
    "model.hamiltonian.damping": _NON_NEGATIVE,  # negative damping pumps energy in: the integration diverges
    "model.hamiltonian.hidden_dim": Range(1, 65536),
    "masks.num_targets": Range(1, 1000),
    "masks.target_scale": _FRACTION,
    "masks.target_aspect": _POSITIVE,
    "masks.context_scale": _FRACTION,
    "masks.context_aspect": _POSITIVE,
    "masks.scale_factor": _POSITIVE,
    "masks.min_keep": _NON_NEGATIVE,
    "masks.max_attempts": _NON_NEGATIVE,
    "loss.huber_delta": _POSITIVE,
    "loss.level_weights": _NON_NEGATIVE,
    "loss.regularizer_weight": _NON_NEGATIVE,
    "loss.vicreg_sim": _NON_NEGATIVE,
    "loss.vicreg_var": _NON_NEGATIVE,
    "loss.vicreg_cov": _NON_NEGATIVE,
    "loss.vicreg_gamma": _POSITIVE,
    "loss.vicreg_eps": _POSITIVE,
    "loss.barlow_lambda": _NON_NEGATIVE,
    "loss.sigreg_slices": Range(1, 1_000_000),
    "loss.sigreg_points": Range(2, 10_000),
    "loss.sigreg_t_max": _POSITIVE,
    "data.batch_size": Range(1, None),
    "data.num_workers": Range(0, 256),
    "data.crop_scale": _FRACTION,
    "data.num_global_views": Range(1, 64),
    "data.num_local_views": Range(0, 64),
    "data.local_img_size": Range(1, 65536),
    "data.local_crop_scale": _FRACTION,
    "data.neighbour_views": Range(0, 1),
    "data.neighbour_pool": Range(2, 10_000_000),
    "data.limit": _NON_NEGATIVE,  # 0 (like null) uses every image
    "optim.lr": _NON_NEGATIVE,
    "optim.min_lr": _NON_NEGATIVE,
    "optim.warmup_steps": Range(0, _MAX_STEPS),
    "optim.weight_decay": _NON_NEGATIVE,
    "optim.final_weight_decay": _NON_NEGATIVE,
    "optim.betas": Range(0, 1, high_open=True),  # Adam divides by 1 - beta^t
    "optim.clip_grad": _NON_NEGATIVE,  # 0 disables clipping; a negative norm is meaningless
    "optim.ema_start": Range(0, 1),
    "optim.ema_end": Range(0, 1),
    "train.steps": Range(1, _MAX_STEPS),
    "train.seed": Range(0, 2**32 - 1),  # numpy takes 32-bit seeds; derived torch seeds stay inside 64 bits
    "train.log_every": Range(1, None),
    "train.checkpoint_every": Range(1, None),
    "train.keep_last": _NON_NEGATIVE,
    "train.knn_every": _NON_NEGATIVE,
    "train.knn_train_samples": Range(1, None),
    "train.knn_test_samples": Range(1, None),
    "export.opset": Range(1, None),
    "export.atol": _NON_NEGATIVE,
    "export.min_cosine": Range(-1, 1),
    "export.verify_batch": Range(1, 4096),
    "export.profile_batches": Range(1, None),
    "eval.knn_k": Range(1, None),
    "eval.knn_temperature": _POSITIVE,  # the k-NN vote divides by it
    "eval.probe_lrs": _POSITIVE,
    "eval.probe_epochs": Range(1, None),
    "eval.probe_val_fraction": Range(0, 1, low_open=True, high_open=True),
    "eval.batch_size": Range(1, None),
}

_CHOICES: dict[str, tuple[str, ...]] = {
    "model.objective": ("masked", "multiview"),
    "model.target_heads": ("layernorm", "ema"),
    "model.predictor_batching": ("packed", "joint", "per_block"),
    "model.hamiltonian.match": ("q", "p", "qp"),
    "masks.scale_progression": ("geometric", "linear"),
    "optim.ema_schedule": ("cosine", "linear"),
    "train.knn_split": ("test", "val"),
}

# (a, b): a <= b. List elements are addressed as key[i].
_ORDERED: tuple[tuple[str, str], ...] = (
    ("optim.ema_start", "optim.ema_end"),  # the target encoder's momentum rises to 1, never falls
    ("masks.target_scale[0]", "masks.target_scale[1]"),
    ("masks.target_aspect[0]", "masks.target_aspect[1]"),
    ("masks.context_scale[0]", "masks.context_scale[1]"),
    ("masks.context_aspect[0]", "masks.context_aspect[1]"),
    ("data.crop_scale[0]", "data.crop_scale[1]"),
    ("data.local_crop_scale[0]", "data.local_crop_scale[1]"),
    ("export.profile_batches[0]", "export.profile_batches[1]"),  # TensorRT: min <= opt <= max
    ("export.profile_batches[1]", "export.profile_batches[2]"),
)

# What one accelerator can hold. Beyond these a model fails allocating tensors of tens of GB (or hangs swapping),
# so it is refused before anything is allocated.
_MAX_TOKENS = 16_384  # a 128x128 patch grid: 2048 px at patch 16; attention at that length already needs GBs
_MAX_MODEL_BYTES = 256 * 2**30
_WIDEST_PRESET = (1024, 24, 16)  # vit_large's (embed_dim, depth, num_heads): an upper bound for the size presets


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value for every setting; list and tuple elements also appear as ``key[i]``."""
    if isinstance(node, dict):
        return {k: v for key, child in node.items() for k, v in _flatten(child, f"{prefix}{key}.").items()}
    key = prefix.rstrip(".")
    flat = {key: node}
    if isinstance(node, (list, tuple)):
        flat.update({f"{key}[{i}]": value for i, value in enumerate(node)})
    return flat


def _check_values(cfg: Config) -> None:
    values = _flatten(cfg.to_dict())
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config key {key!r} must be a finite number, got {value}")
        if isinstance(value, int) and not isinstance(value, bool):
            bound = _RANGES.get(key.split("[")[0])
            if (bound is None or bound.high is None) and abs(value) > _MAX_INT:
                raise ConfigError(f"config key {key!r} must be at most {_MAX_INT}, got {value}")
    for key, value in values.items():
        bound = _RANGES.get(key)
        if bound is None or value is None or isinstance(value, (list, tuple)):
            bound = _RANGES.get(key.split("[")[0]) if "[" in key else None
            if bound is None:
                continue
        if not bound.admits(value):
            raise ConfigError(f"config key {key!r} must be {bound.describe()}, got {value}")
    for key, choices in _CHOICES.items():
        if values[key] not in choices:
            raise ConfigError(f"config key {key!r} must be one of {', '.join(choices)}; got {values[key]!r}")
    for low_key, high_key in _ORDERED:
        low, high = values.get(low_key), values.get(high_key)
        if low is not None and high is not None and low > high:
            raise ConfigError(f"config key {low_key!r} ({low}) must not exceed {high_key!r} ({high})")
    if cfg.data.neighbour_views and (cfg.model.objective != "multiview" or cfg.data.num_global_views < 2):
        raise ConfigError("data.neighbour_views needs model.objective=multiview with data.num_global_views >= 2 "
                          "(the neighbour replaces the second global view)")
    check_model_size(cfg.model)


def check_model_size(model: ModelConfig, img_size: int | None = None) -> None:
    """Refuse an encoder whose tensors cannot fit on one accelerator, before any is allocated.

    ``img_size`` (default ``model.img_size``) is the input side, e.g. an export's ``--img-size``. Two estimates:
    the token count ``(img_size / patch_size)^2`` (positional tables and attention grow with it, the latter
    quadratically) and the training memory for one image: weights, gradients and two Adam moments of the encoder
    and predictor plus the EMA target encoder (~12 d^2 parameters per block), and per block ~16 saved floats per
    token and channel plus the attention probabilities.
    """
    size = model.img_size if img_size is None else img_size
    what = f"model.img_size={size}" if img_size is None else f"image size {size}"
    side = size // max(model.patch_size, 1)
    tokens = side * side
    if tokens > _MAX_TOKENS:
        raise ConfigError(
            f"{what} with model.patch_size={model.patch_size} gives a {side}x{side} grid ({tokens} tokens); at most "
            f"{_MAX_TOKENS} tokens fit one accelerator: use a smaller image size or a larger patch size"
        )
    dim = model.embed_dim or _WIDEST_PRESET[0]
    depth = model.depth or _WIDEST_PRESET[1]
    heads = model.num_heads or _WIDEST_PRESET[2]
    encoder_params = 12 * depth * dim**2
    predictor_params = 12 * model.predictor_depth * model.predictor_embed_dim**2
    parameter_bytes = 4 * (4 * (encoder_params + predictor_params) + encoder_params)
    activation_bytes = 4 * depth * tokens * (16 * dim + tokens * heads)
    total = parameter_bytes + activation_bytes
    if total > _MAX_MODEL_BYTES:
        raise ConfigError(
            f"the model (model.embed_dim={dim}, model.depth={depth}, model.predictor_embed_dim="
            f"{model.predictor_embed_dim}, {tokens} tokens) needs an estimated {total / 2**30:,.0f} GiB to train, "
            f"more than one accelerator holds ({_MAX_MODEL_BYTES // 2**30} GiB)"
        )


def _one_line(message: str, limit: int = 400) -> str:
    """Collapse a message to one line and cut it at ``limit`` characters: messages quote values from user files,
    which may be huge (a list of 10,000 items) or span lines."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quote(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for quoting a user's value inside a message."""
    return _one_line(repr(value), limit)


def config_differences(before: Config, after: Config, ignore: tuple[str, ...] = ()) -> list[str]:
    """``"key: old -> new"`` for every dotted key whose value differs, skipping keys that start with an ``ignore``
    prefix (``"eval."`` skips a section, ``"train.device"`` one key)."""
    def flat(node: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(node, dict):
            return {k: v for key, child in node.items() for k, v in flat(child, f"{prefix}{key}.").items()}
        return {prefix.rstrip("."): node}

    old, new = flat(before.to_dict()), flat(after.to_dict())
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key) and not key.startswith(ignore)]


def preset_names() -> list[str]:
    """Names of the packaged presets in ``hjepa/configs``."""
    return sorted(p.name[:-5] for p in resources.files("hjepa.configs").iterdir() if p.name.endswith(".yaml"))


def load_config(name_or_path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then a packaged preset (by name) or YAML file (by path), then ``a.b=value`` overrides."""
    data: dict[str, Any] = {}
    if name_or_path is not None:
        text = _read_config_text(str(name_or_path))
        try:
            data = load_yaml(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config {name_or_path!s} is not valid YAML: {describe_yaml_error(exc)}") from None
    cfg = Config.from_dict(data)
    return cfg.override(overrides or [])


def _read_config_text(name_or_path: str) -> str:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path.read_text()
    resource = resources.files("hjepa.configs") / f"{name_or_path}.yaml"
    if not resource.is_file():
        raise ConfigError(f"unknown preset {name_or_path!r}; presets: {', '.join(preset_names())} (or a .yaml path)")
    return resource.read_text()
