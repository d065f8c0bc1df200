"""The ``explain`` signature: the served map equals the in-process map, over gRPC and REST."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

from tests.conftest import TINY_LABELS as LABELS
from tests.explain.serve_helpers import png

# 18 CPU-s in all (tests/support/cpu_report.py): `make test` runs it, `make test-fast` not
pytestmark = pytest.mark.slow


# The session's tiny model, its export (with_explain=True) and the server for it (conftest.py).
@pytest.fixture
def model(tiny_model):
    return tiny_model


@pytest.fixture
def exported(tiny_export):
    return tiny_export


@pytest.fixture
def server(vit_server):
    return vit_server


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(3)
    # At the model's 32x32 the decoder does not resize: both sides see the same pixels.
    return [rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8) for _ in range(3)]


def _bytes(value) -> bytes:
    if isinstance(value, list):
        (value,) = value
    if isinstance(value, dict):
        return base64.b64decode(value["b64"])
    return bytes(np.asarray(value, dtype=object).reshape(-1)[0])


def test_export_lists_explain_next_to_the_default_signatures(exported):
    import json

    settings = json.loads((exported / "assets.extra" / "keras_vit_export.json").read_text())
    assert settings["signatures"] == [
        "serving_default",
        "serving_pixels",
        "embedding",
        "classify",
        "explain",
    ]


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_served_map_equals_in_process_map(model, server, images, protocol):
    from PIL import Image

    from keras_vit.explain.rollout import attention_rollout
    from serving.client import ServingClient

    port = server.grpc_port if protocol == "grpc" else server.rest_port
    with ServingClient(f"127.0.0.1:{port}", protocol=protocol, image_size=32) as client:
        explained = client.predict([png(p) for p in images], signature_name="explain")
        plain = client.predict([png(p) for p in images])
        signatures = client.signatures()
    outputs = signatures["explain"]["outputs"]
    assert sorted(outputs) == ["attention_map", "label", "overlay_bytes", "score"]
    dims = [int(d["size"]) for d in outputs["attention_map"]["tensor_shape"]["dim"]]
    assert dims == [-1, 4, 4]

    logits, expected = attention_rollout(model, np.stack(images).astype(np.float32))
    expected = np.asarray(expected)
    for i, prediction in enumerate(explained):
        served = np.asarray(prediction.outputs["attention_map"], dtype=np.float32).reshape(4, 4)
        np.testing.assert_allclose(served, expected[i], atol=1e-5)
        assert prediction.label == plain[i].label == LABELS[int(np.argmax(logits[i]))]
        assert prediction.score == pytest.approx(plain[i].score, abs=1e-5)
        with Image.open(io.BytesIO(_bytes(prediction.outputs["overlay_bytes"]))) as overlay:
            assert overlay.format == "PNG"
            assert overlay.size == (32, 32)
            blended = np.asarray(overlay.convert("RGB"))
        # Half image, half colormap: neither the input nor a flat colour.
        assert not np.array_equal(blended, images[i])
        assert blended.std() > 1.0
