"""Bad requests against the exported SavedModel, run the way TF Serving runs it (TF1 session).

Each bad element must fail its request with INVALID_ARGUMENT naming the
element and the reason; the session must keep serving afterwards. A fuzzing
run in a child process checks that no input crashes the process.
"""

from __future__ import annotations

import base64
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.export.conftest import encode

# 24 CPU-s in all (tests/support/cpu_report.py): `make test` runs it, `make test-fast` not
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def good(photos) -> bytes:
    return encode(photos["chelsea"], "JPEG", quality=90)


def run_error(session_model, signature: str, **inputs) -> str:
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        session_model.run(signature, **inputs)
    return caught.value.message


def test_bad_elements_fail_the_request_with_index_and_reason(session_model, good, photos):
    png = encode(photos["coffee"], "PNG")
    jpeg_bomb = bytearray(good)
    sof = jpeg_bomb.index(b"\xff\xc0")
    jpeg_bomb[sof + 5 : sof + 9] = struct.pack(">HH", 50000, 50000)
    cases = {
        b"": "image_bytes[1]: empty string",
        good[: len(good) // 2]: "image_bytes[1]: truncated JPEG",
        png[: len(png) - 100]: "image_bytes[1]: truncated PNG",
        b"GET / HTTP/1.1\r\n\r\n": "image_bytes[1]: not a JPEG, PNG, GIF, BMP or WebP image",
        bytes(jpeg_bomb): "image_bytes[1]: the image declares 50000x50000 = 2500000000 pixels, "
        "more than the limit of 40000000 (decompression bomb guard)",
    }
    for data, expected in cases.items():
        message = run_error(session_model, "serving_default", image_bytes=np.array([good, data]))
        assert expected in message, message
    # The same process keeps serving.
    out = session_model.run("serving_default", image_bytes=np.array([good]))
    assert out["label"].shape == (1,)


def test_base64_text_in_either_alphabet_gives_the_same_answer_as_bytes(session_model, good):
    variants = [
        good,
        base64.b64encode(good),
        base64.b64encode(good).rstrip(b"="),
        base64.urlsafe_b64encode(good),
        base64.urlsafe_b64encode(good).rstrip(b"="),
    ]
    assert len({v[-2:] for v in variants[1:]}) > 1  # padding really differs
    out = session_model.run("serving_default", image_bytes=np.array(variants, dtype=object))
    assert len(set(out["label"])) == 1
    np.testing.assert_allclose(
        out["probabilities"], out["probabilities"][:1].repeat(5, 0), atol=1e-6
    )


def test_embedding_and_classify_name_the_bad_element(session_model, good):
    import tensorflow as tf

    message = run_error(session_model, "embedding", image_bytes=np.array([b"<x>", good]))
    assert "image_bytes[0]: not a JPEG" in message

    def example(data: bytes) -> bytes:
        feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))
        return tf.train.Example(
            features=tf.train.Features(feature={"image/encoded": feature})
        ).SerializeToString()

    message = run_error(session_model, "classify", inputs=np.array([example(good), example(b"<>")]))
    assert "inputs[1] (feature image/encoded): not a JPEG" in message
    missing = tf.train.Example().SerializeToString()
    message = run_error(session_model, "classify", inputs=np.array([missing]))
    assert "image/encoded" in message


def test_serving_pixels_rejects_empty_images(session_model):
    message = run_error(session_model, "serving_pixels", images=np.zeros((1, 0, 5, 3), np.uint8))
    assert "images: height and width must be at least 1, got 0x5" in message


FUZZ = textwrap.dedent(
    """
    import io, random, sys
    import numpy as np
    import tensorflow as tf
    from PIL import Image
    from skimage import data
    from keras_vit.decode import decode_images

    decode = tf.function(
        lambda x: decode_images(x, (32, 32), max_pixels=4_000_000),
        input_signature=[tf.TensorSpec([None], tf.string)],
        autograph=False,
    )
    photo = Image.fromarray(data.astronaut()).resize((96, 80))
    seeds = []
    for fmt, options in [("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {}),
                         ("GIF", {}), ("BMP", {}), ("WEBP", {}), ("WEBP", {"lossless": True})]:
        buffer = io.BytesIO()
        photo.save(buffer, fmt, **options)
        seeds.append(buffer.getvalue())
    rng = random.Random(1234)
    counts = {"ok": 0, "invalid": 0}
    for i in range(int(sys.argv[1])):
        data = bytearray(rng.choice(seeds))
        kind = i % 4
        if kind == 0:  # flip bytes in the header
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(min(len(data), 64))] = rng.randrange(256)
        elif kind == 1:  # flip bytes anywhere
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 2:  # truncate
            data = data[: rng.randrange(len(data))]
        else:  # splice two files
            other = rng.choice(seeds)
            cut = rng.randrange(len(data))
            data = data[:cut] + other[rng.randrange(len(other)):]
        try:
            out = decode(tf.constant([bytes(data)]))
            assert out.shape == (1, 32, 32, 3)
            counts["ok"] += 1
        except tf.errors.InvalidArgumentError:
            counts["invalid"] += 1
    print(counts["ok"], counts["invalid"])
    """
)


def test_mutated_images_never_crash_the_process(tmp_path):
    script = tmp_path / "fuzz.py"
    script.write_text(FUZZ)
    result = subprocess.run(
        [sys.executable, str(script), "240"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)},
    )
    # A crash (abort, segfault, double free) gives a negative return code.
    assert result.returncode == 0, result.stderr[-3000:]
    ok, invalid = map(int, result.stdout.split()[-2:])
    assert ok + invalid == 240
    assert invalid > 0 and ok > 0
