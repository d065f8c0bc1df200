"""The warm-up file, read the way TF Serving reads it (saved_model_warmup.md).

TF Serving reads ``assets.extra/tf_serving_warmup_requests`` as a TFRecord of
``tensorflow.serving.PredictionLog`` and replays each ``predict_log.request``
on the signature named in its ``model_spec``; any failure fails the model load.
"""

from __future__ import annotations

import io

import numpy as np


def records(exported):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = exported / "assets.extra" / "tf_serving_warmup_requests"
    logs = []
    for record in tf.data.TFRecordDataset(str(path)):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        logs.append(log)
    return logs


def test_warmup_records_are_predict_logs_with_real_images(exported):
    from PIL import Image

    logs = records(exported)
    assert 2 <= len(logs) <= 1000  # TF Serving refuses more than 1000 records
    formats = set()
    for log in logs:
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        assert request.model_spec.signature_name == "serving_default"
        assert list(request.inputs) == ["image_bytes"]
        tensor = request.inputs["image_bytes"]
        assert tensor.dtype == 7  # DT_STRING
        for data in tensor.string_val:
            image = Image.open(io.BytesIO(data))
            image.load()
            formats.add(image.format)
            assert min(image.size) >= 100  # real photos, not placeholders
    assert formats == {"JPEG", "PNG"}
    batch_sizes = [len(log.predict_log.request.inputs["image_bytes"].string_val) for log in logs]
    assert 1 in batch_sizes and max(batch_sizes) > 1


def test_every_warmup_record_replays_through_the_signature(exported, session_model):
    import tensorflow as tf

    for log in records(exported):
        request = log.predict_log.request
        inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        out = session_model.run(request.model_spec.signature_name, **inputs)
        batch = len(inputs["image_bytes"])
        assert out["label"].shape == (batch,)
        assert np.all(np.isfinite(out["probabilities"]))
        np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, atol=1e-5)


def test_custom_warmup_images_are_written(tmp_path, photos):
    from serving.warmup import read_warmup_file, write_warmup_file
    from tests.export.conftest import encode

    images = [encode(photos["coffee"], "JPEG"), encode(photos["astronaut"], "PNG")]
    path = write_warmup_file(tmp_path / "assets.extra" / "tf_serving_warmup_requests", images)
    logs = read_warmup_file(path)
    sent = [list(log.predict_log.request.inputs["image_bytes"].string_val) for log in logs]
    assert sent == [[images[0]], [images[1]], images]
