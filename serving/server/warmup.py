"""SavedModel warm-up: replay ``assets.extra/tf_serving_warmup_requests`` on load.

As ``saved_model_warmup.cc``/``saved_model_warmup_util.cc``: the file is a
TFRecord of serialized ``PredictionLog``; predict, classify, regress and
multi-inference logs are run against the version being loaded (their model
name and version are ignored, their signature name is used); at most 1000
records; any error fails the load.
"""

from __future__ import annotations

import os
import time

import tensorflow as tf
from tensorflow.python.util import deprecation
from tensorflow_serving.apis import prediction_log_pb2

from serving.server import inference
from serving.server.inference import InferenceContext
from serving.server.logs import get_logger
from serving.server.servable import Servable
from serving.server.status import Code, ServingError, from_tf_error, invalid_argument

log = get_logger()
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_RECORDS = 1000
# PredictionLog's log_type oneof: field numbers, used in the error message.
_LOG_TYPE_NUMBERS = {"session_run_log": 5, "predict_streamed_log": 7}


def _run_record(context: InferenceContext, servable: Servable, record) -> None:
    kind = record.WhichOneof("log_type")
    if kind is None:
        return
    if kind == "predict_log":
        request = record.predict_log.request
        inference.predict(
            context,
            servable,
            request.model_spec.name,
            request.model_spec.signature_name,
            request.inputs,
            request.output_filter,
        )
    elif kind in ("classify_log", "regress_log"):
        request = getattr(record, kind).request
        run = inference.classify if kind == "classify_log" else inference.regress
        run(
            context,
            servable,
            request.model_spec.name,
            request.model_spec.signature_name,
            request.input,
        )
    elif kind == "multi_inference_log":
        inference.multi_inference(context, servable, record.multi_inference_log.request)
    else:
        raise ServingError(
            Code.UNIMPLEMENTED,
            f"Unsupported log_type for warmup: {_LOG_TYPE_NUMBERS.get(kind, kind)}",
        )


def run_warmup(context: InferenceContext, servable: Servable, iterations: int = 1) -> None:
    """Replays the warm-up file of ``servable``; raises :class:`ServingError` on failure."""
    path = f"{servable.path.rstrip('/')}/{WARMUP_FILE}"
    if not tf.io.gfile.exists(path):
        log.info("No warmup data file found at %s", path)
        return
    log.info("Starting to read warmup data for model at %s", path)
    start = time.monotonic()
    count = 0
    status = "OK"
    try:
        try:
            with deprecation.silence():  # no "tf_record_iterator is deprecated" per load
                records = tf.compat.v1.io.tf_record_iterator(path)
            for raw in records:
                record = prediction_log_pb2.PredictionLog()
                try:
                    record.ParseFromString(raw)
                except Exception:  # noqa: BLE001 - protobuf raises DecodeError subclasses
                    raise invalid_argument(
                        f"Failed to parse warmup record: {raw!r} from {path}"
                    ) from None
                for _ in range(max(iterations, 1)):
                    _run_record(context, servable, record)
                count += 1
                if count > MAX_RECORDS:
                    raise invalid_argument(
                        f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}"
                    )
        except tf.errors.OpError as error:
            failure = from_tf_error(error)
            if failure.code == Code.DATA_LOSS:
                raise ServingError(
                    Code.DATA_LOSS,
                    f"{failure.message}. Please verify your warmup data is in TFRecord format.",
                ) from None
            raise failure from None
    except ServingError as error:
        status = str(error)
        raise
    finally:
        latency = (time.monotonic() - start) * 1e6
        context.metrics.warmup_latency.add(servable.path, status, value=latency)
    log.info(
        "Finished reading warmup data for model at %s. Number of warmup records read: %d. "
        "Elapsed time (microseconds): %d.",
        path,
        count,
        latency,
    )
