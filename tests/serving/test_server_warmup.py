"""Warm-up replay of ``assets.extra/tf_serving_warmup_requests`` (``tfserving-protocol.md``
3.6, from TF Serving's ``saved_model_warmup_util.cc``): allowed log types, the
1000-record limit, and any error failing the load."""

from __future__ import annotations

import shutil

import pytest
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import prediction_log_pb2

from serving.server.status import ServingError
from tests.serving.half_plus_two import build_half_plus, write_warmup


def predict_record(value: float = 1.0) -> prediction_log_pb2.PredictionLog:
    record = prediction_log_pb2.PredictionLog()
    request = record.predict_log.request
    request.model_spec.name = "ignored"  # warm-up runs on the version being loaded
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[value]], dtype=tf.float32))
    return record


def examples_record(kind: str) -> prediction_log_pb2.PredictionLog:
    record = prediction_log_pb2.PredictionLog()
    request = getattr(record, f"{kind}_log").request
    request.model_spec.signature_name = f"{kind}_x_to_y"
    example = example_pb2.Example()
    example.features.feature["x"].float_list.value.append(3.0)
    request.input.example_list.examples.add().CopyFrom(example)
    return record


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("warmup") / "template" / "1"
    build_half_plus(path)
    return path


def model_with_warmup(tmp_path, model_dir, records=None, raw: bytes | None = None):
    base = tmp_path / "m"
    shutil.copytree(model_dir, base / "1")
    if raw is not None:
        path = base / "1" / "assets.extra" / "tf_serving_warmup_requests"
        path.parent.mkdir(parents=True)
        path.write_bytes(raw)
    else:
        write_warmup(base / "1", records)
    return base


@pytest.fixture
def start(run_server):
    def start_model(base, **fields):
        return run_server(model_name="m", model_base_path=str(base), **fields)

    return start_model


def test_good_warmup_file_is_replayed_on_load(tmp_path, model_dir, start):
    records = [predict_record(), examples_record("classify"), examples_record("regress")]
    multi = prediction_log_pb2.PredictionLog()
    task = multi.multi_inference_log.request.tasks.add(method_name="tensorflow/serving/regress")
    task.model_spec.name = "m"
    task.model_spec.signature_name = "regress_x_to_y"
    multi.multi_inference_log.request.input.CopyFrom(records[2].regress_log.request.input)
    records.append(multi)
    records.append(prediction_log_pb2.PredictionLog())  # no log type: skipped
    base = model_with_warmup(tmp_path, model_dir, records)
    with start(base, num_request_iterations_for_warmup=2) as server:
        version_dir = str(base / "1")
        assert server.metrics.warmup_latency.count(version_dir, "OK") == 1
        # Each record ran twice: one runtime sample per run and API.
        assert server.metrics.runtime_latency.count("ignored", "Predict", "TF1") == 2
        assert server.metrics.runtime_latency.count("", "Classify", "TF1") == 2


@pytest.mark.parametrize("kind,number", [("session_run_log", 5), ("predict_streamed_log", 7)])
def test_unsupported_log_types_fail_the_load(tmp_path, model_dir, start, kind, number):
    record = prediction_log_pb2.PredictionLog()
    getattr(record, kind).SetInParent()
    base = model_with_warmup(tmp_path, model_dir, [record])
    with pytest.raises(ServingError) as raised:
        with start(base):
            pass
    assert raised.value.message == (
        "1 model(s) did not become available: {{{name: m version: 1} due to error: "
        f"UNIMPLEMENTED: Unsupported log_type for warmup: {number}}}, }}"
    )


def test_more_than_1000_records_fail_the_load(tmp_path, model_dir, start):
    base = model_with_warmup(tmp_path, model_dir, [predict_record()] * 1001)
    with pytest.raises(ServingError) as raised:
        with start(base):
            pass
    path = base / "1" / "assets.extra" / "tf_serving_warmup_requests"
    assert (
        f"INVALID_ARGUMENT: Number of warmup records exceeds the maximum (1000) at {path}"
        in raised.value.message
    )


def test_exactly_1000_records_load(tmp_path, model_dir, start):
    base = model_with_warmup(tmp_path, model_dir, [predict_record()] * 1000)
    with start(base) as server:
        assert server.metrics.warmup_latency.count(str(base / "1"), "OK") == 1


def test_failing_record_fails_the_load(tmp_path, model_dir, start):
    record = predict_record()
    record.predict_log.request.inputs["x"].CopyFrom(tf.make_tensor_proto([True]))
    base = model_with_warmup(tmp_path, model_dir, [record])
    with pytest.raises(ServingError) as raised:
        with start(base):
            pass
    assert "INVALID_ARGUMENT: Expects arg[0] to be float but bool is provided" in (
        raised.value.message
    )


def test_not_a_tfrecord_file(tmp_path, model_dir, start):
    base = model_with_warmup(tmp_path, model_dir, raw=b"this is not a TFRecord file at all")
    with pytest.raises(ServingError) as raised:
        with start(base):
            pass
    assert "DATA_LOSS: " in raised.value.message
    assert "Please verify your warmup data is in TFRecord format." in raised.value.message


def test_warmup_can_be_disabled(tmp_path, model_dir, start):
    record = prediction_log_pb2.PredictionLog()
    record.session_run_log.SetInParent()
    base = model_with_warmup(tmp_path, model_dir, [record])
    with start(base, enable_model_warmup=False) as server:
        assert server.metrics.warmup_latency.count(str(base / "1"), "OK") == 0
