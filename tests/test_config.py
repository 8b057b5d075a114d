import pytest

from hjepa.config import Config, ConfigError, load_config, preset_names


def test_presets_load_and_round_trip_through_yaml(tmp_path):
    assert {"fashion-mnist", "digits-debug", "cifar100-vit-tiny", "cifar100-vit-small", "imagenet100-vit-base"} <= set(
        preset_names()
    )
    for name in preset_names():
        cfg = load_config(name)
        path = tmp_path / f"{name}.yaml"
        cfg.to_yaml(path)
        assert load_config(path) == cfg
        assert Config.from_dict(cfg.to_dict()) == cfg


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  num_levelz: 2\n")
    with pytest.raises(ConfigError, match="model.num_levelz"):
        load_config(path)
    with pytest.raises(ConfigError, match="'modle'"):
        Config.from_dict({"modle": {}})


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="optim.lr.*number"):
        Config.from_dict({"optim": {"lr": "fast"}})
    with pytest.raises(ConfigError, match="model.num_levels.*integer"):
        Config.from_dict({"model": {"num_levels": 2.5}})
    with pytest.raises(ConfigError, match="masks.target_scale.*2 values"):
        Config.from_dict({"masks": {"target_scale": [0.1]}})
    with pytest.raises(ConfigError, match="train.amp.*true or false"):
        Config.from_dict({"train": {"amp": "yes"}})


def test_overrides_parse_yaml_values_and_revalidate():
    cfg = load_config("digits-debug", ["optim.lr=5e-4", "masks.target_scale=[0.2, 0.3]", "model.head_dim=16"])
    assert cfg.optim.lr == 5e-4 and cfg.masks.target_scale == (0.2, 0.3) and cfg.model.head_dim == 16
    cfg = load_config("digits-debug", ["model.hamiltonian.steps=7", "data.data_dir=null"])
    assert cfg.model.hamiltonian.steps == 7 and cfg.data.data_dir is None
    with pytest.raises(ConfigError, match="optim.lrr"):
        load_config("digits-debug", ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="model.depth.*integer"):
        load_config("digits-debug", ["model.depth=deep"])
    with pytest.raises(ConfigError, match="form"):
        load_config("digits-debug", ["optim.lr"])


def test_unknown_preset_and_missing_file():
    with pytest.raises(ConfigError, match="unknown preset 'nope'.*digits-debug"):
        load_config("nope")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/no/such/file.yaml")


def test_invalid_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
