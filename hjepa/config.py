"""Typed configuration: one dataclass per section, layered defaults -> YAML preset or path -> ``--set`` overrides.

Unknown keys and values of the wrong type fail at load time with the dotted key named, so a typo in a YAML file or
on the command line never silently trains the wrong model. The resolved config is written beside every run and into
every checkpoint and exported artifact; ``Config.from_dict(cfg.to_dict())`` gives back an equal object.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hjepa.config_checks import check_values
from hjepa.errors import ConfigError, one_line
from hjepa.files import atomic_write_text
from hjepa.safe_yaml import describe_yaml_error, load_yaml


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
    # multiview: pool: level k is the 2^k x 2^k mean of the level-0 tokens (then the level norm) | merge: each
    # window's tokens concatenated, projected and mixed by one transformer block per level (models/hierarchy.py)
    level_heads: str = "pool"
    predictor: str = "transformer"  # transformer | hamiltonian | cross (ablation: learned worse, see README)
    predictor_embed_dim: int = 96
    predictor_depth: int = 4
    predictor_num_heads: int = 4
    predictor_drop_path: float = 0.0
    # packed: one sequence per image, each query once | joint: packed without dedup (its reference)
    # per_block: I-JEPA's, one sequence per block
    predictor_batching: str = "packed"
    # masked: I-JEPA blocks (masks.*, model.predictor*) | multiview: LeJEPA views (data.num_*_views,
    # model.view_predictor, model.projector_*)
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
    # multiview: weight of each level's cell-matching term across overlapping crops (0: pooled term only)
    spatial_weight: list[float] = field(default_factory=lambda: [0.0])  # per level; the last value repeats
    # multiview, per level: each level-k cell showing the picture predicts the picture's centre embedding
    # (losses/multiview.py), so a cell carries what its picture is
    cell_weight: list[float] = field(default_factory=lambda: [0.0])
    # multiview with scenes, per level: every filler tile of a scene view (another picture of the batch, small) is
    # a small view of its own picture: its cells pooled, projected and predicting that picture's centre embedding
    tile_weight: list[float] = field(default_factory=lambda: [0.0])
    # the cell term relative to the cells' spread: each dimension divided by its variance over the batch's cells
    # that show a picture, so neither a direction every token shares nor a common scale makes the term small
    cell_standardise: bool = False
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
    # share of crops on a black canvas zoom_out_scale x the picture's side (0: off)
    zoom_out: float = 0.0
    zoom_out_scale: tuple[float, float] = (1.0, 2.0)
    # multiview: global views at model.img_size and crop_scale, local views smaller
    num_global_views: int = 2
    num_local_views: int = 0
    local_img_size: int = 16
    local_crop_scale: tuple[float, float] = (0.05, 0.3)
    # multiview: share of rows whose second view is cut from the nearest raw-pixel neighbour
    # among neighbour_pool random images (data/neighbours.py); 0: off
    neighbour_views: float = 0.0
    neighbour_pool: int = 8192
    # multiview: share of rows whose views are mosaics placing the picture elsewhere in each
    # (data/scenes.py); 0: off
    scenes: float = 0.0
    scene_layouts: list[int] = field(default_factory=lambda: [1, 2, 4])
    # scenes: the first global view of a scene row stays the whole picture, and the cell term's
    # target is that view's pooled token (the picture at full size taught to its small copies)
    scene_anchor: bool = False
    # scenes: the second view of a scene row places the row's raw-pixel neighbour (data.neighbour_views)
    # instead of the picture, so the scene rows learn from neighbours too
    scene_neighbours: bool = False
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
    cpu_amp: str = "auto"  # bf16 autocast on the CPU: auto (where it has native bf16) | on | off
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
        check_values(cfg)
        return cfg

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            atomic_write_text(path, text)
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


def _quote(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for quoting a user's value inside a message."""
    return one_line(repr(value), limit)


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
