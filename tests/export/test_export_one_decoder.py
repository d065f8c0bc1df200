"""One decoder everywhere: the same file gives the same pixels in training, in-process
prediction and the exported SavedModel.

Before, training decoded with ``tf.io.decode_image`` (fast IDCT, full scale) while the
export used the accurate IDCT at a reduced DCT scale: the photos here differed.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.export.conftest import encode
from tests.support.ports import free_port

# 12 CPU-s in all (tests/support/cpu_report.py): `make test` runs it, `make test-fast` not
pytestmark = pytest.mark.slow

FILES = {
    # 451x300: decoded at 1/4 scale for the tiny model's 32x32 input.
    "chelsea.jpg": lambda p: encode(p["chelsea"], "JPEG", quality=90),
    "coffee-progressive.jpg": lambda p: encode(p["coffee"], "JPEG", progressive=True),
    "astronaut.png": lambda p: encode(p["astronaut"][::3, ::3], "PNG"),
    "chelsea.gif": lambda p: encode(Image.fromarray(p["chelsea"]).convert("P"), "GIF"),
    "coffee.bmp": lambda p: encode(Image.fromarray(p["coffee"][::4, ::4]).convert("P"), "BMP"),
    "astronaut.webp": lambda p: encode(p["astronaut"][::5, ::5], "WEBP", quality=80),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, photos):
    root = tmp_path_factory.mktemp("images")
    paths = []
    for index, (name, make) in enumerate(FILES.items()):
        path = root / f"class{index % 2}" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(make(photos))
        paths.append(path)
    return paths


def test_training_in_process_and_exported_pixels_are_identical(folder, tiny_model, exported):
    import tensorflow as tf

    from keras_vit.images import read_image
    from keras_vit.training.data import FileImageDataset
    from keras_vit.training.pipeline import AugmentConfig, eval_pipeline, train_pipeline

    size = tuple(tiny_model.image_size)
    dataset = FileImageDataset(folder, [i % 2 for i in range(len(folder))], ["a", "b"])
    evaluated = np.concatenate([x for x, _ in eval_pipeline(dataset, size, 2).as_numpy_iterator()])
    plain = AugmentConfig(random_resized_crop=False, horizontal_flip=False)
    trained = train_pipeline(dataset, size, len(folder), plain, shuffle_buffer=1)
    trained = next(iter(trained.as_numpy_iterator()))[0]
    served = tf.saved_model.load(str(exported)).decode
    for i, path in enumerate(folder):
        exported_pixels = served(tf.constant([path.read_bytes()])).numpy()[0]
        assert exported_pixels.shape == (*size, 3)
        np.testing.assert_array_equal(read_image(path, size), exported_pixels, err_msg=path.name)
        np.testing.assert_array_equal(evaluated[i], exported_pixels, err_msg=path.name)
        np.testing.assert_array_equal(trained[i], exported_pixels, err_msg=path.name)


def test_the_jpeg_is_decoded_like_the_export_not_like_tf_decode_image(folder, tiny_model):
    # The reference the old training path used differs: the equality above is not vacuous.
    import tensorflow as tf

    from keras_vit.decode import resize
    from keras_vit.images import read_image

    size = tuple(tiny_model.image_size)
    old = tf.io.decode_image(folder[0].read_bytes(), channels=3, expand_animations=False)
    assert np.abs(resize(old, size).numpy() - read_image(folder[0], size)).max() > 1.0


def _predict(capsys, *args: str) -> dict:
    """``keras-vit predict ARGS --json``, one result per image by file name."""
    import json

    from keras_vit.cli import main

    capsys.readouterr()
    assert main(["predict", *args, "--json"]) == 0
    return {r["image"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}


@pytest.fixture(scope="module")
def served(exported):
    """``keras-vit serve`` on the export, in a subprocess; yields ``(grpc_port, rest_port)``."""
    import json
    import os
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    grpc_port, rest_port = free_port(), free_port()
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_vit", "serve", "--model_name=vit"]
        + [f"--model_base_path={exported.parent}", f"--port={grpc_port}"]
        + [f"--rest_api_port={rest_port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            if process.poll() is not None:
                pytest.fail(f"keras-vit serve exited: {process.stderr.read().decode()[-2000:]}")
            try:
                url = f"http://127.0.0.1:{rest_port}/v1/models/vit"
                with urllib.request.urlopen(url, timeout=5) as response:
                    states = [s["state"] for s in json.load(response)["model_version_status"]]
                if "AVAILABLE" in states:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the model did not become available in 240 s"
            time.sleep(0.5)
        yield grpc_port, rest_port
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_predict_in_process_and_through_the_server_agree(
    folder, tiny_model, served, tmp_path, capsys
):
    tiny_model.save(tmp_path / "model.keras")  # a run directory holds model.keras
    files = [str(path) for path in folder]
    local = _predict(capsys, "--model", str(tmp_path), *files)
    grpc_port, rest_port = served
    remote = {
        protocol: _predict(capsys, "--server", f"127.0.0.1:{port}", "--protocol", protocol, *files)
        for protocol, port in (("grpc", grpc_port), ("rest", rest_port))
    }
    worst = 0.0
    for protocol, results in remote.items():
        assert results.keys() == local.keys() == set(files), protocol
        for name in files:
            mine, theirs = local[name], results[name]
            assert [label for label, _ in mine["top_k"]] == [label for label, _ in theirs["top_k"]]
            scores = np.array([s for _, s in mine["top_k"]])
            served_scores = np.array([s for _, s in theirs["top_k"]])
            worst = max(worst, float(np.abs(scores - served_scores).max()))
    print(f"largest in-process vs served score difference: {worst:.2e}")
    assert worst <= 1e-5
