"""`keras-vit predict` and `keras-vit info` on a local model file."""

import json

import numpy as np
import pytest
from PIL import Image
from skimage import data

from keras_vit import ViTClassifier
from keras_vit.cli import main

LABELS = ["tabby", "tiger", "lynx", "astronaut", "rocket", "cup", "coffee"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    from tests.conftest import TINY_CONFIG

    model = ViTClassifier(**{**TINY_CONFIG, "num_classes": 7}, labels=LABELS)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return model, path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for name in ("chelsea", "astronaut"):
        path = folder / f"{name}.jpg"
        Image.fromarray(getattr(data, name)()).save(path, quality=90)
        paths.append(path)
    return paths


def test_predict_prints_the_top_k_of_the_in_process_model(model_file, photos, capsys):
    model, path = model_file
    assert main(["predict", "--model", str(path), "--top-k", "3", *map(str, photos)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    # The reference: PIL's decode at libjpeg's reduced DCT scale (``draft``, the rule the
    # one decoder follows: at least twice the model input), then the model's own resize.
    image = Image.open(photos[0])
    image.draft("RGB", (2 * model.image_size[1], 2 * model.image_size[0]))
    pixels = np.asarray(image.convert("RGB"))[None].astype("float32")
    logits = np.asarray(model(pixels), dtype="float64")[0]
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    order = np.argsort(-probabilities)[:3]
    image, label, score, top = out[0].split("\t")
    assert (image, label) == (str(photos[0]), LABELS[order[0]])
    assert float(score) == pytest.approx(probabilities[order[0]], abs=1e-4)
    pairs = [pair.rsplit(":", 1) for pair in top.split(", ")]
    assert [name for name, _ in pairs] == [LABELS[i] for i in order]
    np.testing.assert_allclose([float(p) for _, p in pairs], probabilities[order], atol=1e-4)


def test_predict_json_output(model_file, photos, capsys):
    _, path = model_file
    assert main(["predict", "--model", str(path), "--json", str(photos[1])]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["image"] == str(photos[1])
    assert record["label"] in LABELS and len(record["top_k"]) == 5
    assert record["top_k"][0] == [record["label"], record["score"]]


def test_predict_needs_exactly_one_of_model_or_server(model_file, photos, capsys):
    _, path = model_file
    assert main(["predict", str(photos[0])]) == 2
    assert main(["predict", "--model", str(path), "--server", "x:1", str(photos[0])]) == 2
    assert "exactly one of --model" in capsys.readouterr().err


def test_predict_reports_unreadable_images_and_continues(model_file, photos, tmp_path, capsys):
    _, path = model_file
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    code = main(["predict", "--model", str(path), str(broken), str(photos[0])])
    captured = capsys.readouterr()
    assert code == 1  # an input failed: the same status as through a server
    assert "broken.jpg" in captured.err
    assert str(photos[0]) in captured.out


def test_predict_with_an_unknown_model_fails_cleanly(tmp_path, photos, capsys):
    code = main(["predict", "--model", str(tmp_path / "nothing-here"), str(photos[0])])
    assert code == 1
    assert "cannot load model" in capsys.readouterr().err


def test_info_prints_config_parameter_count_and_labels(model_file, capsys):
    model, path = model_file
    assert main(["info", "--model", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == model.count_params()
    assert info["labels"] == LABELS
    assert info["config"]["hidden_dim"] == 48


def test_info_on_a_preset_gives_the_vit_b16_parameter_count(capsys):
    assert main(["info", "--model", "vit-base-patch16-224", "--max-labels", "2"]) == 0
    out = capsys.readouterr().out
    assert "parameters: 86,567,656" in out
    assert "998 more" in out
