"""Every setting's allowed values, checked when a config is built (``Config.from_dict``).

Split from ``hjepa.config`` (the settings themselves) because the tables are their own concern: what each field may
hold, which pairs are ordered, and whether the encoder they describe can fit on one accelerator at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hjepa.errors import ConfigError

# ---- Value checks ----
# Checked at load time: a bad value fails with its key named, before anything is built.
# New fields get the generic checks; a narrower domain gets a row in _RANGES / _CHOICES / _ORDERED.
# Registry names are checked by their registries.


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
    "loss.spatial_weight": _NON_NEGATIVE,
    "loss.cell_weight": _NON_NEGATIVE,
    "loss.tile_weight": _NON_NEGATIVE,
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
    "data.scenes": Range(0, 1),
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
    "model.level_heads": ("pool", "merge"),
    "model.predictor_batching": ("packed", "joint", "per_block"),
    "model.hamiltonian.match": ("q", "p", "qp"),
    "masks.scale_progression": ("geometric", "linear"),
    "optim.ema_schedule": ("cosine", "linear"),
    "train.knn_split": ("test", "val"),
    "train.cpu_amp": ("auto", "on", "off"),
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

# What one accelerator holds; beyond it allocation fails (or swaps), so refuse first.
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


def check_values(cfg: Any) -> None:  # an hjepa.config.Config (that module imports this one)
    """Raise ``ConfigError`` naming the first setting outside its range, choices or order, or an encoder that
    cannot fit."""
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
    if cfg.model.level_heads != "pool" and cfg.model.objective != "multiview":
        raise ConfigError("model.level_heads=merge needs model.objective=multiview (the masked objective predicts "
                          "pooled cells)")
    if cfg.data.scenes and cfg.model.objective != "multiview":
        raise ConfigError("data.scenes needs model.objective=multiview (the masked objective has no views to place)")
    if cfg.data.scene_anchor and not cfg.data.scenes:
        raise ConfigError("data.scene_anchor needs data.scenes > 0 (it anchors the scene rows)")
    if cfg.data.scene_neighbours and not (cfg.data.scenes and cfg.data.neighbour_views == 1):
        raise ConfigError("data.scene_neighbours needs data.scenes > 0 and data.neighbour_views=1.0 (every row's "
                          "neighbour, placed in its second view)")
    if any(cfg.loss.tile_weight) and not cfg.data.scenes:
        raise ConfigError("loss.tile_weight needs data.scenes > 0 (its small views are the scenes' filler tiles)")
    if any(cfg.loss.cell_weight) and cfg.model.objective != "multiview":
        raise ConfigError("loss.cell_weight needs model.objective=multiview")
    if any(not 1 <= k <= 8 for k in cfg.data.scene_layouts) or not cfg.data.scene_layouts:
        raise ConfigError(f"data.scene_layouts must be tile counts per side in 1..8, got {cfg.data.scene_layouts}")
    if cfg.data.neighbour_views and (cfg.model.objective != "multiview" or cfg.data.num_global_views < 2):
        raise ConfigError("data.neighbour_views needs model.objective=multiview with data.num_global_views >= 2 "
                          "(the neighbour replaces the second global view)")
    check_model_size(cfg.model)


def check_model_size(model: Any, img_size: int | None = None) -> None:  # an hjepa.config.ModelConfig
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
