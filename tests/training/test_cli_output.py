"""``keras-vit train`` options, and the model directory it writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.training.conftest import SMALL_VIT

# 10 CPU-s in all (tests/support/cpu_report.py): `make test` runs it, `make test-fast` not
pytestmark = pytest.mark.slow


def _parse(argv):
    from keras_vit.cli import build_parser

    return build_parser().parse_args(["train", *argv])


def test_recipe_sets_defaults_and_flags_override_it():
    from keras_vit.cli.train import options_from_args

    args = _parse(
        "--data d --output o --recipe digits --epochs 3 --lr 5e-4 --mixup 0.2 "
        "--freeze-backbone --unfreeze-at-epoch 2 --cache none --monitor last".split()
    )
    options, model_config = options_from_args(args)
    assert model_config["patch_size"] == 4 and model_config["hidden_dim"] == 64
    assert options["epochs"] == 3 and options["learning_rate"] == 5e-4
    assert options["batch_size"] == 32  # from the recipe
    assert options["augment"].horizontal_flip is False  # from the recipe
    assert options["augment"].mixup_alpha == 0.2  # from the flag
    assert options["unfreeze_at_epoch"] == 1  # 1-based on the command line
    assert options["cache"] is False and options["monitor"] is None


def test_bad_arguments_exit_with_a_message(capsys, tmp_path):
    from keras_vit.cli import main

    assert main(["train", "--data", "d", "--output", "o", "--model-config", "{nope"]) == 2
    assert "--model-config is neither a JSON file nor JSON" in capsys.readouterr().err
    assert main(["train", "--data", "d", "--output", "o"]) == 2
    assert "say what to train" in capsys.readouterr().err
    assert main(["train", "--data", "d", "--output", "o", "--recipe", "cats"]) == 2
    assert "Unknown recipe 'cats'" in capsys.readouterr().err
    missing = str(tmp_path / "missing")
    config = json.dumps(SMALL_VIT)
    code = main(["train", "--data", missing, "--output", "o", "--model-config", config])
    assert code == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: --preset and --model exclude each other
        _parse(["--data", "d", "--output", "o", "--model", "m", "--preset", "B/16"])


def test_cli_run_writes_a_model_directory_that_others_read(colour_folder, tmp_path, capsys):
    """The directory loads with our loader and its preprocessing config with transformers'."""
    from PIL import Image

    from keras_vit.cli import main
    from keras_vit.loading import load_pretrained
    from keras_vit.training.output import CURVE_FILE, HISTORY_FILE, METRICS_FILE

    output = tmp_path / "run"
    argv = ["train", "--data", str(colour_folder), "--output", str(output)]
    argv += ["--model-config", json.dumps(SMALL_VIT), "--epochs", "2", "--batch-size", "8"]
    argv += ["--verbose", "0", "--test-data", str(colour_folder)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "test accuracy:" in printed and "model directory:" in printed

    labels = (output / "labels.txt").read_text().splitlines()
    assert labels == ["blue", "green", "red"]
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert not (output / "logs").exists()  # "auto": no TensorBoard, no logs, no failure
    else:
        assert any((output / "logs").rglob("events.out.tfevents.*"))
    assert "<svg" in (output / CURVE_FILE).read_text()
    metrics = json.loads((output / METRICS_FILE).read_text())
    assert metrics["test"]["examples"] == 36
    assert len((output / HISTORY_FILE).read_text().splitlines()) == 3  # header + 2 epochs

    model = load_pretrained(str(output))
    assert model.labels == labels and tuple(model.image_size) == (16, 16)

    transformers = pytest.importorskip("transformers")
    processor = transformers.ViTImageProcessor.from_pretrained(str(output))
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype("uint8")
    theirs = processor(images=Image.fromarray(image), return_tensors="np")["pixel_values"]
    ours = model.get_layer("preprocessing")(image[None].astype("float32"))
    np.testing.assert_allclose(np.transpose(theirs, (0, 2, 3, 1)), ours, rtol=1e-5, atol=1e-5)


def test_tensorboard_logs_without_the_package_fail_only_when_asked_for(monkeypatch, capsys):
    import sys

    from keras_vit.training.trainer import _tensorboard_choice

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    with pytest.raises(ValueError, match="pip install tensorboard"):
        _tensorboard_choice(True)
    assert _tensorboard_choice("auto") is False
    assert "tensorboard is not installed" in capsys.readouterr().out
    assert _tensorboard_choice(False) is False
    monkeypatch.delitem(sys.modules, "tensorboard")  # installed here (requirements.txt)
    assert _tensorboard_choice("auto") is True and _tensorboard_choice(True) is True
