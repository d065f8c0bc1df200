"""``keras-vit train --strategy multi_worker``: two worker processes on 127.0.0.1.

Both finish with bit-identical weights; only the chief writes the model
directory, which exports and serves. Killing a worker mid-run makes the other
stop with a clear error; the same commands started again resume from the
chief's backup and finish in step.
"""

from __future__ import annotations

import json
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from keras_vit import cli
from keras_vit.training.callbacks import read_history
from tests.support.ports import free_ports
from tests.support.servers import serving
from tests.training.conftest import SMALL_VIT, write_colour_folder
from tests.training.multi_worker_support import (
    finish,
    read_log,
    start,
    tf_config,
)

pytestmark = pytest.mark.slow  # several training processes in step

CLI = [sys.executable, "-m", "keras_vit"]


def _train_command(data: Path, output: Path, epochs: int) -> list[str]:
    return CLI + [
        "train",
        "--strategy",
        "multi_worker",
        "--data",
        str(data),
        "--model-config",
        json.dumps(SMALL_VIT),
        "--output",
        str(output),
        "--epochs",
        str(epochs),
        "--batch-size",
        "8",
        "--lr",
        "3e-3",
        "--validation-split",
        "0.25",
        "--monitor",
        "last",
        "--no-tensorboard",
        "--verbose",
        "2",
    ]


def _weights(model_file: Path) -> dict[str, np.ndarray]:
    """Every array in a ``.keras`` file's weights, by HDF5 path (read without TensorFlow)."""
    import h5py

    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(model_file) as archive, archive.open("model.weights.h5") as raw:
        with h5py.File(raw, "r") as weights:
            weights.visititems(
                lambda name, item: (
                    arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
                )
            )
    return arrays


def _assert_same_weights(chief: Path, worker: Path) -> None:
    ours, theirs = _weights(chief), _weights(worker)
    assert ours and ours.keys() == theirs.keys()
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory) -> Path:
    return write_colour_folder(tmp_path_factory.mktemp("colours"), per_class=8)


def test_two_workers_train_in_step_and_the_chief_exports_and_serves(colour_data, tmp_path, capsys):
    output = tmp_path / "run"
    ports = free_ports(2)
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    started = time.monotonic()
    workers = [
        start(_train_command(colour_data, output, epochs=2), tf_config(ports, i), logs[i])
        for i in range(2)
    ]
    codes = finish(workers, timeout=300)
    wall = time.monotonic() - started
    assert codes == [0, 0], read_log(logs[0])[-3000:] + read_log(logs[1])[-3000:]
    print(f"two-worker training wall time: {wall:.1f} s")

    # Only the chief wrote the model directory; worker 1 kept its copy aside.
    assert (output / "model.keras").is_file()
    assert (output / "labels.txt").read_text().split() == ["blue", "green", "red"]
    assert not (output / "backup").exists()  # removed by the chief once training ended
    assert "model directory: " + str(output.resolve()) in read_log(logs[0])
    _assert_same_weights(output / "model.keras", output / ".worker-1" / "model.keras")
    assert len((output / "history.csv").read_text().strip().splitlines()) == 1 + 2  # header, epochs
    # The image folder is sharded by file: each worker read its 9 of the 18 training images.
    for index, log in enumerate(logs):
        shard = f"This worker reads file shard {index}: 9 of 18 training images, 2 batches of 4"
        assert shard in read_log(log), read_log(log)[-2000:]

    # The chief's model directory exports and serves (in this process: the two worker
    # processes above are this test's point; export, serve and predict are tested as
    # fresh commands by the journeys).
    exported = tmp_path / "export"
    assert cli.main(["export", "--model", str(output), "--output", str(exported)]) == 0
    assert (exported / "1" / "saved_model.pb").is_file()
    image = next((colour_data / "red").glob("*.png"))
    capsys.readouterr()
    with serving(exported) as server:
        status = cli.main(
            ["predict", "--server", f"127.0.0.1:{server.grpc_port}", "--protocol", "grpc"]
            + ["--json", str(image)]
        )
    out, err = capsys.readouterr()
    assert status == 0, err[-2000:]
    answer = json.loads(out.strip().splitlines()[-1])
    # The served answer is the chief's model's: same top label and probabilities.
    expected = _chief_probabilities(output / "model.keras", image)
    labels = ["blue", "green", "red"]
    assert answer["label"] == labels[int(expected.argmax())], (answer, expected)
    served = dict(answer["top_k"])
    for label, probability in zip(labels, expected, strict=True):
        assert abs(served[label] - probability) <= 1e-4, (answer, expected)


def _chief_probabilities(model_file: Path, image: Path) -> np.ndarray:
    """The saved model's softmax on the PNG (lossless: the server decodes the same pixels)."""
    import keras
    from PIL import Image

    from keras_vit import load_pretrained

    model = load_pretrained(model_file)
    pixels = np.asarray(Image.open(image).convert("RGB"), dtype="float32")[None]
    logits = keras.ops.convert_to_numpy(model(pixels))[0].astype("float64")
    probabilities = np.exp(logits - logits.max())
    return probabilities / probabilities.sum()


def _backed_up_epoch(backup: Path) -> int:
    try:
        return json.loads((backup / "training_metadata.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def test_a_killed_worker_restarted_resumes_from_the_chiefs_backup(colour_data, tmp_path):
    output = tmp_path / "run"
    epochs = 3
    ports = free_ports(2)
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [
        start(_train_command(colour_data, output, epochs), tf_config(ports, i), logs[i])
        for i in range(2)
    ]
    deadline = time.monotonic() + 240
    while _backed_up_epoch(output / "backup") < 1:
        if any(w.poll() is not None for w in workers) or time.monotonic() > deadline:
            finish(workers, timeout=1)
            pytest.fail("no epoch backed up within 240 s: " + read_log(logs[0])[-3000:])
        time.sleep(0.05)
    workers[1].kill()  # SIGKILL, as when a node goes away
    # The chief notices that its peer is gone and stops with a clear message.
    codes = finish(workers, timeout=180)
    assert codes[1] != 0
    if codes[0] == 0:
        pytest.fail("the chief finished although its peer was killed: " + read_log(logs[0]))
    assert "a worker of the multi-worker cluster went away" in read_log(logs[0])
    resumed_at = _backed_up_epoch(output / "backup")
    assert 1 <= resumed_at < epochs

    # The same two commands again (new ports: the old ones may linger in TIME_WAIT).
    ports = free_ports(2)
    restarted = [
        start(_train_command(colour_data, output, epochs), tf_config(ports, i), logs[i])
        for i in range(2)
    ]
    codes = finish(restarted, timeout=300)
    texts = [read_log(log) for log in logs]
    assert codes == [0, 0], texts[0][-3000:] + texts[1][-3000:]
    for text in texts:
        assert "Resuming from the backup" in text
        assert f"Epoch {resumed_at + 1}/{epochs}" in text
    _assert_same_weights(output / "model.keras", output / ".worker-1" / "model.keras")
    history = read_history(str(output / "history.csv"))
    assert [row["epoch"] for row in history] == list(range(1, epochs + 1))
