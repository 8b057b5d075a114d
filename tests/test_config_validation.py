"""Every config value is range-checked at load time, and hostile YAML fails with one short line (issue 14: 8, 9)."""

import pytest
from click.testing import CliRunner

from hjepa.cli.train import main as train_main
from hjepa.config import Config, ConfigError, load_config


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        # accepted and trained before
        (["model.depth=0"], "model.depth"),
        (["model.drop_path_rate=-0.5"], "model.drop_path_rate"),
        (["optim.ema_start=0.5", "optim.ema_end=0.3"], "optim.ema_start"),
        (["optim.ema_start=5"], "optim.ema_start"),
        (["optim.ema_end=-3"], "optim.ema_end"),
        (["optim.clip_grad=-1"], "optim.clip_grad"),
        (["eval.probe_val_fraction=2"], "eval.probe_val_fraction"),
        (["eval.knn_temperature=0"], "eval.knn_temperature"),
        # tracebacks before
        (["model.drop_path_rate=5"], "model.drop_path_rate"),
        (["model.embed_dim=-32"], "model.embed_dim"),
        (["model.depth=-3"], "model.depth"),
        (["train.steps=1000000000000000000000"], "train.steps"),
        (["model.img_size=100000"], "model.img_size"),
        # non-finite floats, element ranges, ordered pairs, choices, a general integer cap
        (["optim.lr=.nan"], "optim.lr"),
        (["optim.lr=inf"], "optim.lr"),
        (["loss.level_weights=[1.0, -1.0]"], "loss.level_weights"),
        (["masks.target_scale=[0.3, 0.2]"], "masks.target_scale"),
        (["masks.target_scale=[0.0, 0.2]"], "masks.target_scale"),
        (["data.crop_scale=[0.5, 1.5]"], "data.crop_scale"),
        (["export.profile_batches=[8, 1, 64]"], "export.profile_batches"),
        (["optim.betas=[0.9, 1.0]"], "optim.betas"),
        (["optim.ema_schedule=exponential"], "optim.ema_schedule"),
        (["model.target_heads=none"], "model.target_heads"),
        (["eval.knn_k=[0]"], "eval.knn_k"),
        (["masks.num_targets=[99999999999]"], "masks.num_targets"),
        (["train.seed=-1"], "train.seed"),
    ],
)
def test_out_of_range_values_are_refused_at_load_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as info:
        load_config("digits-debug", overrides)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


@pytest.mark.parametrize(
    "overrides",
    [["model.drop_path_rate=5"], ["model.embed_dim=-32"], ["model.depth=-3"], ["train.steps=1000000000000000000000"],
     ["model.img_size=100000"], ["model.depth=0"], ["optim.clip_grad=-1"]],
)
def test_bad_values_are_one_line_errors_through_the_cli(tmp_path, overrides):
    args = ["--config", "digits-debug", "--out", str(tmp_path / "run")]
    for override in overrides:
        args += ["--set", override]
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and result.output.strip().count("\n") == 0, result.output
    assert not (tmp_path / "run").exists()


def test_every_preset_passes_the_checks():
    from hjepa.config import preset_names

    for name in preset_names():
        load_config(name)
    Config.from_dict({})  # the defaults too


def test_the_check_tables_name_only_real_fields():
    # A renamed field must not leave a row behind that silently checks nothing.
    from hjepa.config_checks import _CHOICES, _ORDERED, _RANGES, _flatten

    keys = _flatten(Config().to_dict())
    for key in [*_RANGES, *_CHOICES, *(k for pair in _ORDERED for k in pair)]:
        assert key in keys, key


def test_model_size_estimate_refuses_what_cannot_fit_but_keeps_real_models():
    from hjepa.config_checks import check_model_size

    cfg = load_config("imagenet100-vit-base")
    check_model_size(cfg.model)  # 224 px, patch 16: fine
    check_model_size(cfg.model, img_size=1024)  # a larger export size: still fine
    with pytest.raises(ConfigError, match="100000"):
        check_model_size(cfg.model, img_size=100000)
    with pytest.raises(ConfigError, match="model.embed_dim"):
        load_config("digits-debug", ["model.embed_dim=65536", "model.num_heads=1", "model.head_dim=65536"])


# ---- hostile YAML (issue 14, cause 9) -------------------------------------------------------------------------


def _config_error(path, text: str) -> str:
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message and len(message) <= 400, message[:1000]
    return message


def test_deep_nesting_is_one_line_not_a_recursion_error(tmp_path):
    message = _config_error(tmp_path / "deep.yaml", "model: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested deeper" in message


def test_alias_expansion_bomb_is_refused_quickly(tmp_path):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefghi"):
        previous = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    lines.append("model: *i")
    message = _config_error(tmp_path / "laughs.yaml", "\n".join(lines) + "\n")
    assert "alias" in message


def test_recursive_alias_is_refused(tmp_path):
    assert "recursive" in _config_error(tmp_path / "loop.yaml", "model: &a [*a]\n")


def test_unclosed_bracket_is_one_line_with_its_position(tmp_path):
    message = _config_error(tmp_path / "open.yaml", "model:\n  img_size: [16\ntrain:\n  steps: 3\n")
    assert "not valid YAML" in message and "line" in message


def test_duplicate_keys_are_an_error(tmp_path):
    message = _config_error(tmp_path / "dup.yaml", "train:\n  steps: 3\n  steps: 5\n")
    assert "duplicate key 'steps'" in message and "line 3" in message
    message = _config_error(tmp_path / "dup2.yaml", "train:\n  steps: 3\ntrain:\n  seed: 1\n")
    assert "duplicate key 'train'" in message


def test_small_aliases_still_work(tmp_path):
    path = tmp_path / "alias.yaml"
    path.write_text("masks:\n  target_scale: &s [0.2, 0.3]\ndata:\n  crop_scale: *s\n")
    cfg = load_config(path)
    assert cfg.data.crop_scale == (0.2, 0.3)


def test_hostile_override_values_are_one_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config("digits-debug", ["masks.num_targets=" + "[" * 5000])
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_long_messages_are_cut(tmp_path):
    message = _config_error(tmp_path / "long.yaml", "model: [" + ", ".join(["1"] * 5000) + "]\n")
    assert "model" in message
