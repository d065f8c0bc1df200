"""``keras-vit evaluate``: the report's numbers recounted independently, in-process and served."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.support.servers import serving

# 28 CPU-s in all (tests/support/cpu_report.py): `make test` runs it, `make test-fast` not
pytestmark = pytest.mark.slow

LABELS = ["blue", "green", "red", "cyan", "magenta", "yellow", "black"]
PER_CLASS = {"blue": 9, "green": 7, "red": 8}
COLOURS = {"blue": (30, 60, 220), "green": (40, 200, 60), "red": (220, 40, 40)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """``root/<colour>/<i>.png`` at the model's 32x32 (no resizing on either side)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("eval_data")
    rng = np.random.default_rng(0)
    for name, count in PER_CLASS.items():
        (root / name).mkdir()
        for i in range(count):
            noise = rng.normal(0, 60, size=(32, 32, 3))
            pixels = np.clip(np.asarray(COLOURS[name]) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    import keras

    from keras_vit import ViTClassifier
    from tests.conftest import TINY_CONFIG

    keras.utils.set_random_seed(7)
    path = tmp_path_factory.mktemp("eval_model") / "tiny.keras"
    ViTClassifier(**TINY_CONFIG, labels=LABELS).save(path)
    return path


@pytest.fixture(scope="module")
def local_report(model_file, folder, tmp_path_factory) -> Path:
    from keras_vit.cli import main

    out = tmp_path_factory.mktemp("report_local")
    args = ["evaluate", "--model", str(model_file), "--data", str(folder), "--output", str(out)]
    assert main(args + ["--batch-size", "5", "--no-progress"]) == 0
    return out


def _predictions(report: Path) -> list[dict]:
    return [json.loads(line) for line in (report / "predictions.jsonl").read_text().splitlines()]


def test_accuracy_and_confusion_matrix_recounted(local_report, folder):
    metrics = json.loads((local_report / "metrics.json").read_text())
    rows = _predictions(local_report)
    files = sorted(folder.rglob("*.png"))
    assert len(rows) == len(files) == metrics["num_images"] == sum(PER_CLASS.values())
    # Every file once, each under its own class folder.
    assert sorted(Path(r["image"]) for r in rows) == files
    assert all(Path(r["image"]).parent.name == r["true"] for r in rows)

    correct = sum(r["true"] == r["predicted"] for r in rows)
    assert metrics["accuracy"] == correct / len(rows)
    top5 = sum(r["true"] in [label for label, _ in r["top_k"][:5]] for r in rows)
    assert metrics["top_5_accuracy"] == top5 / len(rows)

    matrix = np.asarray(metrics["confusion_matrix"])
    labels = metrics["labels"]
    assert matrix.sum() == len(files)
    for name, count in PER_CLASS.items():
        assert matrix[labels.index(name)].sum() == count
        assert metrics["per_class"][name]["support"] == count
    assert np.trace(matrix) == correct


def test_predictions_are_the_models_own(local_report, model_file, folder):
    import keras
    from PIL import Image

    model = keras.saving.load_model(model_file)
    rows = _predictions(local_report)
    pixels = np.stack([np.asarray(Image.open(r["image"]).convert("RGB")) for r in rows])
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(model(pixels.astype("float32"))))
    assert [r["predicted"] for r in rows] == [LABELS[i] for i in probabilities.argmax(axis=1)]
    np.testing.assert_allclose([r["score"] for r in rows], probabilities.max(axis=1), atol=1e-5)


def test_ece_matches_sklearn_calibration_curve(local_report):
    from sklearn.calibration import calibration_curve

    metrics = json.loads((local_report / "metrics.json").read_text())
    rows = _predictions(local_report)
    correct = np.asarray([r["true"] == r["predicted"] for r in rows], dtype=int)
    confidence = np.asarray([r["score"] for r in rows])
    prob_true, prob_pred = calibration_curve(correct, confidence, n_bins=15, strategy="uniform")
    counts = np.histogram(confidence, bins=np.linspace(0, 1, 16))[0]
    counts = counts[counts > 0]
    expected = float(np.sum(counts / len(rows) * np.abs(prob_true - prob_pred)))
    assert metrics["ece"] == pytest.approx(expected, abs=1e-9)


def test_report_is_one_offline_page(local_report):
    from PIL import Image

    page = (local_report / "report.html").read_text()
    assert "http://" not in page and "https://" not in page  # no CDN, nothing fetched
    metrics = json.loads((local_report / "metrics.json").read_text())
    assert set(metrics["figures"]) == {
        "confusion_counts",
        "confusion_normalized",
        "reliability",
        "gallery",
    }
    assert page.count("data:image/png;base64,") == 4
    for name in metrics["figures"].values():
        with Image.open(local_report / name) as image:
            assert image.format == "PNG" and min(image.size) > 200
    for label in PER_CLASS:
        assert f"<td>{label}</td>" in page


@pytest.fixture(scope="module")
def server(model_file, tmp_path_factory):
    """The same model exported and served once for the gRPC and REST runs."""
    import keras

    from serving.export import export_saved_model

    base = tmp_path_factory.mktemp("eval_export") / "vit"
    export_saved_model(keras.saving.load_model(model_file), base, top_k=5)
    with serving(base) as running:
        yield running


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_served_model_gives_the_same_report(protocol, server, folder, local_report, tmp_path):
    from keras_vit.cli import main

    out = tmp_path / f"report_{protocol}"
    port = server.grpc_port if protocol == "grpc" else server.rest_port
    args = ["evaluate", "--server", f"127.0.0.1:{port}", "--protocol", protocol]
    args += ["--data", str(folder), "--output", str(out), "--batch-size", "5"]
    assert main(args + ["--no-progress"]) == 0
    served, local = _predictions(out), _predictions(local_report)
    assert [r["predicted"] for r in served] == [r["predicted"] for r in local]
    np.testing.assert_allclose([r["score"] for r in served], [r["score"] for r in local], atol=1e-5)
    metrics = json.loads((out / "metrics.json").read_text())
    local_metrics = json.loads((local_report / "metrics.json").read_text())
    assert metrics["accuracy"] == local_metrics["accuracy"]
    assert metrics["confusion_matrix"] == local_metrics["confusion_matrix"]
    assert metrics["mode"] == "server"
    assert metrics["latency"]["requests"] == math.ceil(sum(PER_CLASS.values()) / 5)
    assert metrics["latency"]["p50_ms"] > 0
    assert (out / "latency.png").stat().st_size > 1000
    assert "Latency per request" in (out / "report.html").read_text()


def test_served_evaluation_skips_bad_files_like_the_local_one(
    server, folder, local_report, tmp_path, capsys
):
    """With --server the folder is read without TensorFlow: a text file named .jpg is
    skipped by its first bytes, a truncated PNG by the server's refusal (its request is
    then sent one image at a time); the good images' report is the local one's."""
    import shutil

    from keras_vit.cli import main

    data = tmp_path / "data"
    shutil.copytree(folder, data)
    (data / "red" / "notes.jpg").write_text("not an image at all")
    good = (data / "blue" / "0.png").read_bytes()
    (data / "blue" / "0a_truncated.png").write_bytes(good[: len(good) // 2])
    out = tmp_path / "report"
    args = ["evaluate", "--server", f"127.0.0.1:{server.grpc_port}", "--protocol", "grpc"]
    args += ["--data", str(data), "--output", str(out), "--batch-size", "5", "--no-progress"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "notes.jpg: not an image (text)" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert [s["image"] for s in metrics["skipped"]] == [str(data / "blue" / "0a_truncated.png")]
    served, local = _predictions(out), _predictions(local_report)
    assert [r["predicted"] for r in served] == [r["predicted"] for r in local]
    assert [Path(r["image"]).relative_to(data) for r in served] == [
        Path(r["image"]).relative_to(folder) for r in local
    ]
    assert (
        metrics["confusion_matrix"]
        == json.loads((local_report / "metrics.json").read_text())["confusion_matrix"]
    )


def test_bad_data_is_a_clear_error(model_file, tmp_path, capsys):
    from keras_vit.cli import main

    args = ["evaluate", "--model", str(model_file), "--output", str(tmp_path / "out")]
    assert main(args + ["--data", str(tmp_path / "missing")]) == 1
    assert "error:" in capsys.readouterr().err
    for name in ("cat", "dog"):
        (tmp_path / "empty" / name).mkdir(parents=True)
    assert main(args + ["--data", str(tmp_path / "empty")]) == 1
    assert "No images" in capsys.readouterr().err
    assert main(args + ["--data", str(tmp_path / "empty"), "--batch-size", "0"]) == 2


def test_protocol_comes_from_the_address_or_a_clear_error(folder, tmp_path, capsys):
    """As `keras-vit predict`: 8500/8501 or a URL pick the protocol; else ask for --protocol."""
    from keras_vit.cli import main

    args = ["evaluate", "--server", "127.0.0.1:9", "--data", str(folder)]
    assert main(args + ["--output", str(tmp_path / "r"), "--no-progress"]) == 1
    assert "pass --protocol grpc or --protocol rest" in capsys.readouterr().err
    assert not (tmp_path / "r" / "metrics.json").exists()
