"""The client against the real local server (``serving.server``, as ``keras-vit serve`` runs it).

The model is a tiny SavedModel that follows the serving contract
(docs/serving-contract.md): ``serving_default`` and ``embedding`` take encoded
``image_bytes`` and decode them with ``tf.io.decode_image``; ``classify`` reads
``tf.Example``s with ``image/encoded``. The reference is the same SavedModel's
signatures called in-process.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from serving.client import InvalidArgumentError, NotFoundError, ServingClient
from tests.serving.client_support import encode, solid

CLASSES = ["red", "green", "blue"]


def _server_available() -> bool:
    try:
        return importlib.util.find_spec("serving.server.server") is not None
    except ImportError:
        return False


pytestmark = pytest.mark.skipif(
    not _server_available(),
    reason="the local server (serving.server) is not in this checkout",
)


def build_contract_model(base_path: Path) -> Path:
    """Version 1 of a tiny colour classifier with the contract's signatures and names."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    classes = tf.constant(CLASSES)

    def probabilities(image_bytes):
        def one(data):
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
            image = tf.image.resize(tf.cast(image, tf.float32), [8, 8])
            means = tf.reduce_mean(image, axis=[0, 1]) + 1.0
            return means / tf.reduce_sum(means)

        return tf.map_fn(one, image_bytes, fn_output_signature=tf.float32)

    def top(probs):
        best = tf.math.top_k(probs, k=3)
        return tf.gather(classes, best.indices), best.values

    class ColourModel(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes):
            probs = probabilities(image_bytes)
            labels, scores = top(probs)
            return {
                "label": labels[:, 0],
                "score": scores[:, 0],
                "top_k_labels": labels,
                "top_k_scores": scores,
                "probabilities": probs,
            }

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def embed(self, image_bytes):
            return {"embedding": probabilities(image_bytes) * 10.0}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string)}
            features = tf.io.parse_example(inputs, spec)
            labels, scores = top(probabilities(features["image/encoded"]))
            return {"classes": labels, "scores": scores}

    module = ColourModel()
    export_dir = base_path / "1"
    tf.saved_model.save(
        module,
        str(export_dir),
        signatures={
            "serving_default": module.serve,
            "embedding": module.embed,
            "classify": module.classify,
        },
    )
    # TF2 saves every signature as a predict signature; the Classify API needs this one tagged.
    pb_path = export_dir / "saved_model.pb"
    saved = saved_model_pb2.SavedModel.FromString(pb_path.read_bytes())
    saved.meta_graphs[0].signature_def["classify"].method_name = "tensorflow/serving/classify"
    pb_path.write_bytes(saved.SerializeToString())
    return export_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("models") / "vit"
    build_contract_model(base)
    return base


@pytest.fixture(scope="module")
def server(model_dir, start_server):
    """The local server (tests/serving/conftest.py runs it in this process) serving ``vit``."""
    running = start_server(model_name="vit", model_base_path=str(model_dir))
    targets = {"grpc": f"127.0.0.1:{running.grpc_port}", "rest": f"127.0.0.1:{running.rest_port}"}
    with ServingClient(targets["rest"], protocol="rest") as probe:
        probe.wait_until_available(timeout=60)
    return targets


@pytest.fixture(scope="module")
def reference(model_dir):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(model_dir / "1"))

    def call(signature: str, images: list[bytes]) -> dict[str, np.ndarray]:
        outputs = loaded.signatures[signature](image_bytes=tf.constant(images))
        return {name: value.numpy() for name, value in outputs.items()}

    return call


IMAGES = [
    encode(solid((220, 30, 40), (50, 40)), "JPEG"),
    encode(solid((20, 30, 240), (31, 64)), "PNG"),
    encode(solid((20, 230, 40), (64, 64)), "PNG"),
]


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_predict_embed_classify_match_the_saved_model(server, reference, protocol):
    with ServingClient(server[protocol], protocol=protocol, batch_size=2) as client:
        predictions = client.predict(IMAGES)
        vectors = client.embed(IMAGES)
        classes = client.classify(IMAGES)
    expected = reference("serving_default", IMAGES)
    assert [p.label for p in predictions] == [x.decode() for x in expected["label"]]
    assert [p.label for p in predictions] == ["red", "blue", "green"]
    for i, p in enumerate(predictions):
        assert p.score == pytest.approx(float(expected["score"][i]), rel=1e-6)
        assert [label for label, _ in p.top_k] == [x.decode() for x in expected["top_k_labels"][i]]
        np.testing.assert_allclose(p.probabilities, expected["probabilities"][i], rtol=1e-6)
    np.testing.assert_allclose(vectors, reference("embedding", IMAGES)["embedding"], rtol=1e-6)
    assert [row[0][0] for row in classes] == ["red", "blue", "green"]


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_errors_and_metadata_from_the_server(server, protocol):
    with ServingClient(server[protocol], protocol=protocol) as client:
        (status,) = client.status()
        assert (status.version, status.state) == (1, "AVAILABLE")
        signatures = client.signatures()
        assert {"serving_default", "embedding", "classify"} <= set(signatures)
        inputs = signatures["serving_default"]["inputs"]
        assert inputs["image_bytes"]["dtype"] == "DT_STRING"
        with pytest.raises(InvalidArgumentError) as info:
            client.predict([IMAGES[0], b"definitely not an image"])
        assert info.value.message  # the server's text, unchanged
        if protocol == "rest":
            assert info.value.http_status == 400
    with ServingClient(server[protocol], model_name="nope", protocol=protocol) as other:
        with pytest.raises(NotFoundError, match=r"Latest\(nope\)"):
            other.predict(IMAGES[0])


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_cli_predict_through_the_server(server, protocol, tmp_path, capsys):
    from serving.client import cli_predict

    path = tmp_path / "blue.png"
    path.write_bytes(IMAGES[1])
    assert cli_predict(server[protocol], [str(path)], protocol=protocol, output_json=True) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["label"] == "blue" and [x[0] for x in record["top_k"]] == [
        "blue",
        "green",
        "red",
    ]


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_a_bad_image_fails_only_itself(server, protocol):
    """tf.io.decode_image names no element: the client splits the request to find it."""
    images = [IMAGES[0], IMAGES[1], b"definitely not an image", IMAGES[2], IMAGES[1]]
    with ServingClient(server[protocol], protocol=protocol, batch_size=8) as client:
        outcomes = client.predict(images, return_errors=True)
    labels = [o.label if not isinstance(o, Exception) else None for o in outcomes]
    assert labels == ["red", "blue", None, "green", "blue"]
    error = outcomes[2]
    assert isinstance(error, InvalidArgumentError) and error.indices == [2]
    assert "[[" not in error.message and "{{" not in error.message
    assert "input image 2" in str(error)


def test_cli_names_the_failed_file(server, tmp_path, capsys, monkeypatch):
    from serving.client import cli_predict

    monkeypatch.chdir(tmp_path)
    Path("good.png").write_bytes(IMAGES[1])
    Path("notes.txt").write_text("hello notes file\n")
    code = cli_predict(server["grpc"], ["good.png", "notes.txt", "missing.png"], protocol="grpc")
    out, err = capsys.readouterr()
    assert code == 1
    assert out.startswith("good.png\tblue\t") and len(out.splitlines()) == 1
    assert "error: missing.png: no such file or directory" in err
    assert "error: notes.txt: " in err and "function_node" not in err
