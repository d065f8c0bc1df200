"""TF Serving warm-up requests: ``assets.extra/tf_serving_warmup_requests``.

TF Serving replays these requests when it loads a version, before the version
serves traffic, so the first real requests do not pay for graph optimisation,
memory allocation or XLA compilation (tensorflow/serving#385, #1414). The file
is a TFRecord of serialized ``tensorflow.serving.PredictionLog`` messages,
each holding a ``PredictRequest`` for ``serving_default``
(``g3doc/saved_model_warmup.md``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

logger = logging.getLogger(__name__)

MODEL_NAME = "vit"
SIGNATURE = "serving_default"
INPUT = "image_bytes"
# TF Serving refuses a warm-up file of more than 1000 records.
MAX_RECORDS = 1000


def default_images() -> list[bytes]:
    """A few encoded photos: JPEG (colour and grayscale) and PNG, small sizes.

    They come from ``skimage.data`` (public-domain photos). Without
    scikit-image, smooth synthetic images in the same formats are used: the
    warm-up only needs valid images that run every op of the graph.
    """

    try:
        from skimage import data
    except ImportError:
        logger.info("scikit-image is not installed: warm-up uses synthetic images")
        y, x = np.mgrid[0:240, 0:320]
        photos = [
            np.stack([x * 255 // 319, y * 255 // 239, (x + y) * 255 // 558], -1),
            np.stack([(x * y) % 256, 255 - x * 255 // 319, y * 255 // 239], -1),
        ]
        photos = [photo.astype(np.uint8) for photo in photos]
    else:
        photos = [data.astronaut(), data.chelsea(), data.coffee()]
    images = [
        tf.io.encode_jpeg(photos[0], quality=90).numpy(),
        tf.io.encode_jpeg(tf.image.rgb_to_grayscale(photos[1]), quality=85).numpy(),
        tf.io.encode_png(
            tf.cast(tf.image.resize(photos[-1], (150, 225), antialias=True) + 0.5, tf.uint8)
        ).numpy(),
    ]
    return images


def build_requests(
    images: Sequence[bytes],
    *,
    model_name: str = MODEL_NAME,
    signature_name: str = SIGNATURE,
) -> list:
    """``PredictionLog`` messages: each image alone (batch 1), then all together.

    Both batch sizes are warmed up, which matters with ``--xla`` (one
    compilation per batch size) and with server-side batching.
    """

    images = [bytes(image) for image in images]
    if not images:
        raise ValueError("no warm-up images")
    batches = [[image] for image in images]
    if len(images) > 1:
        batches.append(images)
    if len(batches) > MAX_RECORDS:
        raise ValueError(f"{len(batches)} warm-up records; TF Serving accepts {MAX_RECORDS}")
    logs = []
    for batch in batches:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature_name
        request.inputs[INPUT].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.string))
        logs.append(
            prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
        )
    return logs


def write_warmup_file(
    path: str | os.PathLike, images: Sequence[bytes] | None = None, **request_options
) -> Path:
    """Writes the warm-up TFRecord at ``path`` and returns it.

    ``path`` is ``<version>/assets.extra/tf_serving_warmup_requests``; ``images``
    are encoded images (default: :func:`default_images`).
    """

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    logs = build_requests(default_images() if images is None else images, **request_options)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def read_warmup_file(path: str | os.PathLike) -> list:
    """The ``PredictionLog`` records of a warm-up file (raises on a malformed file)."""

    logs = []
    for record in tf.data.TFRecordDataset(str(path)):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        logs.append(log)
    return logs
