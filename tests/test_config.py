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


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.steps=0", "train.steps"),
        ("train.steps=-1", "train.steps"),
        ("train.log_every=0", "train.log_every"),
        ("train.checkpoint_every=0", "train.checkpoint_every"),
        ("train.keep_last=-1", "train.keep_last"),
        ("train.knn_every=-2", "train.knn_every"),
        ("model.num_levels=0", "model.num_levels"),
        ("model.num_levels=5", "model.num_levels"),
        ("data.batch_size=0", "data.batch_size"),
        ("optim.warmup_steps=-1", "optim.warmup_steps"),
        ("masks.min_keep=-1", "masks.min_keep"),
    ],
)
def test_invalid_values_fail_at_load_time_naming_the_key(override, key):
    # log_every=0 used to train and then die in ``step % 0`` with a ZeroDivisionError traceback; steps=-1 "trained"
    # for no step and reported success.
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("digits-debug", [override])


def test_override_that_is_not_valid_yaml_is_a_config_error():
    # ``--set optim.lr=*x`` (a YAML alias) or an unclosed list used to escape as a yaml ComposerError traceback.
    for override in ("optim.lr=*x", "masks.target_scale=[0.1, 0.2"):
        with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
            load_config("digits-debug", [override])


def test_non_string_yaml_key_is_named(tmp_path):
    # A numeric key (``1: 2``) made the unknown-key message itself fail with a TypeError.
    path = tmp_path / "numeric.yaml"
    path.write_text("train:\n  1: 2\n")
    with pytest.raises(ConfigError, match="unknown config key 'train.1'"):
        load_config(path)
