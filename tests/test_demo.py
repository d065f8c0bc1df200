"""`make demo`'s job, end to end, on a given checkpoint (the digits training is tested
in tests/training): load → export → local server → gRPC and REST clients → stop."""

import os
import re
import subprocess
import sys
from pathlib import Path

from keras_vit import ViTClassifier
from tests.conftest import TINY_CONFIG

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu"]
# TensorFlow's and gRPC's C++ log lines (glog/absl prefixes, absl's pre-init notice).
LOG_LINE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|oneDNN|cuda drivers|cuInit", re.M)
QUIET_SETTINGS = ("TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY", "KERAS_VIT_TF_LOGS")


def test_demo_exports_serves_and_queries_a_given_model(tmp_path):
    model_path = tmp_path / "tiny.keras"
    ViTClassifier(**TINY_CONFIG, labels=LABELS).save(model_path)
    # What a user's terminal gets: none of the test suite's own log settings.
    env = {k: v for k, v in os.environ.items() if k not in QUIET_SETTINGS}
    done = subprocess.run(
        [sys.executable, "-m", "keras_vit.demo", "--model", str(model_path),
         "--workdir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    # No TensorFlow start-up line (oneDNN, cuda drivers, cuInit) on either stream.
    assert not LOG_LINE.search(out + done.stderr), done.stderr[-3000:]
    assert done.stderr == "", done.stderr[-3000:]
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
