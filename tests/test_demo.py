import json

from click.testing import CliRunner

from hjepa.demo import main


def test_demo_trains_and_compares_with_random_init_and_pixels(tmp_path):
    out = tmp_path / "run"
    args = ["--config", "digits-debug", "--set", f"train.out_dir={out}", "--train-bank", "300",
            "--dense-mosaics", "100", "40"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "demo.json").read_text())
    trained, baseline, pixels = summary["knn_trained"], summary["knn_random_init"], summary["knn_pixels"]
    assert trained["train_bank"] == baseline["train_bank"] == pixels["train_bank"] == 300
    assert trained["test"] == baseline["test"] == pixels["test"] == 360  # the whole digits test split
    assert pixels["top1"] > 80  # centred raw pixels of 8x8 digits are a strong baseline
    assert 0 <= trained["top1"] <= trained["top5"] <= 100
    assert summary["gain_points"] == round(trained["top1"] - baseline["top1"], 2)
    assert summary["over_pixels_points"] == round(trained["top1"] - pixels["top1"], 2)
    assert "random init" in result.output and "raw pixels" in result.output and str(out) in result.output
    assert (out / "checkpoints" / "last.pt").is_file()
    # Per level: pooled k-NN (pixels: level 0 only) and both dense probes, for every row.
    levels = summary["levels"]
    assert set(levels) == {"trained", "random init", "raw pixels"}
    assert set(levels["trained"]) == {"0", "1"} and levels["trained"]["0"]["grid"] == [4, 4]
    # The headline k-NN is the coarsest level's (the whole-image descriptor); pixels have level 0 only.
    assert summary["knn_level"] == 1 and levels["trained"]["1"]["knn_top1"] == trained["top1"]
    assert levels["random init"]["1"]["knn_top1"] == baseline["top1"]
    assert levels["raw pixels"]["0"]["knn_top1"] == pixels["top1"] and levels["raw pixels"]["1"]["knn_top1"] is None
    for rows in levels.values():
        assert all(0 <= row["miou"] <= 100 and 0 <= row["tile_top1"] <= 100 for row in rows.values())
    assert summary["best_miou"]["trained"] == max(row["miou"] for row in levels["trained"].values())
    assert "mIoU" in result.output and summary["dense_splits"] == {"train": 100, "test": 40}


def test_demo_reports_a_missing_dataset_in_one_line(tmp_path):
    result = CliRunner().invoke(main, ["--set", "data.data_dir=" + str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "nowhere" in result.output and result.output.startswith("Error: ")
