"""`make demo`'s job, end to end, on a given checkpoint (the digits training is tested
in tests/training): load → export → local server → gRPC and REST clients → stop."""

import subprocess
import sys
from pathlib import Path

import pytest

from keras_vit import ViTClassifier
from tests.conftest import TINY_CONFIG

pytestmark = pytest.mark.slow  # the demo in a fresh process: export, server, queries

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu"]


def test_demo_exports_serves_and_queries_a_given_model(tmp_path):
    model_path = tmp_path / "tiny.keras"
    ViTClassifier(**TINY_CONFIG, labels=LABELS).save(model_path)
    done = subprocess.run(
        [sys.executable, "-m", "keras_vit.demo", "--model", str(model_path),
         "--workdir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert (tmp_path / "work" / "export" / "vit" / "1" / "saved_model.pb").is_file()
    assert "Held-out digits: skipped" in out
    grpc_part = out.split("via grpc:")[1].split("via rest:")[0]
    rest_part = out.split("via rest:")[1].split("===")[0]
    # Five photos, each with the top-5 of the model's own labels, the same over both protocols.
    rows = [line.split(maxsplit=1) for line in grpc_part.strip().splitlines()]
    assert [name for name, _ in rows] == [
        "chelsea.jpg", "astronaut.jpg", "coffee.jpg", "china.jpg", "flower.jpg"
    ]  # fmt: skip
    for _, top in rows:
        pairs = [pair.split() for pair in top.split(", ")]
        assert len(pairs) == 5 and all(label in LABELS for label, _ in pairs)
        scores = [float(score) for _, score in pairs]
        assert scores == sorted(scores, reverse=True)
    assert grpc_part.strip() == rest_part.strip()
    assert "server exited with status 0" in out
