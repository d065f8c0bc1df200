"""One export, every client: gRPC raw bytes, REST ``{"b64"}`` (row, named, columnar), classify.

The export is served by the project's TF-Serving-compatible server
(``serving/server``), which loads versions and runs warm-up and signatures the
way ``tensorflow_model_server`` does and converts REST JSON with TF Serving's
rules (``{"b64": ...}`` becomes the raw bytes of a DT_STRING element). Every
route must give the answer of the SavedModel run directly in a TF1 session.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.export.conftest import LABELS, TOP_K, encode


@pytest.fixture
def server(vit_server):
    """The session's server (conftest.py): ``tiny_model`` exported with top 5, probabilities
    and explain; ``session_model`` runs the same weights' plain export."""
    return vit_server


def post(server, verb: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.rest_port}/v1/models/vit:{verb}",
        data=json.dumps(body).encode(),
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_rest_b64_forms_and_grpc_bytes_give_the_session_answer(server, session_model, photos):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    jpeg = encode(photos["chelsea"], "JPEG", quality=90)
    text = base64.b64encode(jpeg).decode()
    expected = session_model.run("serving_default", image_bytes=np.array([jpeg]))

    def check(label, score, top_labels, top_scores, probabilities):
        assert label == expected["label"][0].decode()
        assert score == pytest.approx(float(expected["score"][0]), abs=1e-5)
        assert top_labels == [v.decode() for v in expected["top_k_labels"][0]]
        np.testing.assert_allclose(top_scores, expected["top_k_scores"][0], atol=1e-5)
        np.testing.assert_allclose(probabilities, expected["probabilities"][0], atol=1e-5)

    for body in (
        {"instances": [{"b64": text}]},  # Vertex AI's instance format too
        {"instances": [{"image_bytes": {"b64": text}}]},
    ):
        status, reply = post(server, "predict", body)
        assert status == 200, reply
        (row,) = reply["predictions"]
        check(
            row["label"],
            row["score"],
            row["top_k_labels"],
            row["top_k_scores"],
            row["probabilities"],
        )

    status, reply = post(server, "predict", {"inputs": {"image_bytes": [{"b64": text}]}})
    assert status == 200, reply
    out = reply["outputs"]
    check(out["label"][0], out["score"][0], out["top_k_labels"][0], out["top_k_scores"][0],
          out["probabilities"][0])  # fmt: skip

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "vit"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([jpeg], dtype=tf.string))
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 30)
    outputs = {name: tf.make_ndarray(proto) for name, proto in reply.outputs.items()}
    check(
        outputs["label"][0].decode(),
        float(outputs["score"][0]),
        [v.decode() for v in outputs["top_k_labels"][0]],
        outputs["top_k_scores"][0],
        outputs["probabilities"][0],
    )


def test_rest_classify_returns_the_top_k_classes(server, session_model, photos):
    png = encode(photos["coffee"], "PNG")
    expected = session_model.run("serving_default", image_bytes=np.array([png]))
    body = {
        "signature_name": "classify",
        "examples": [{"image/encoded": {"b64": base64.b64encode(png).decode()}}],
    }
    status, reply = post(server, "classify", body)
    assert status == 200, reply
    (classes,) = reply["results"]
    assert len(classes) == TOP_K
    assert [label for label, _ in classes] == [v.decode() for v in expected["top_k_labels"][0]]
    np.testing.assert_allclose([s for _, s in classes], expected["top_k_scores"][0], atol=1e-5)
    assert {label for label, _ in classes} <= set(LABELS)


def test_a_bad_image_is_a_400_naming_the_element(server, photos):
    good = base64.b64encode(encode(photos["chelsea"], "PNG")).decode()
    truncated = base64.b64encode(encode(photos["chelsea"], "JPEG")[:5000]).decode()
    status, reply = post(server, "predict", {"instances": [{"b64": good}, {"b64": truncated}]})
    assert status == 400
    assert "image_bytes[1]: truncated JPEG" in reply["error"]
    status, _ = post(server, "predict", {"instances": [{"b64": good}]})
    assert status == 200  # the server keeps serving
