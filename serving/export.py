"""Export a ViT classifier as one TF Serving model version whose signatures take image bytes.

``export_saved_model(model, "models/vit")`` writes ``models/vit/<version>/``
with ``saved_model.pb``, ``variables/``, ``assets/labels.txt`` and
``assets.extra/`` (TF Serving warm-up requests and the export settings). The
signatures follow ``docs/serving-contract.md``:

- ``serving_default``: ``image_bytes`` (DT_STRING ``[-1]``) -> ``label``,
  ``score``, ``top_k_labels``, ``top_k_scores`` (+ ``probabilities``);
- ``serving_pixels``: ``images`` (DT_UINT8 ``[-1, -1, -1, 3]``) -> the same;
- ``embedding``: ``image_bytes`` -> ``embedding`` (``[-1, hidden_dim]``);
- ``classify`` (method ``tensorflow/serving/classify``): ``inputs``
  (serialized ``tf.train.Example`` with the image under ``image/encoded``) ->
  ``classes``, ``scores`` (``[-1, k]``);
- ``explain`` (only with ``with_explain=True``): ``image_bytes`` -> ``label``,
  ``score``, ``attention_map`` (``[-1, rows, cols]``), ``overlay_bytes`` (PNG);
  see :mod:`serving.explain_signature`.

The version appears atomically: everything is written to a hidden temporary
directory beside it and renamed into place, so a server polling the base path
never sees half a version.
"""

from __future__ import annotations

# First: keras_vit's import keeps TensorFlow's start-up lines quiet (keras_vit/quiet.py).
import keras_vit  # noqa: F401  # isort: skip

import ctypes
import ctypes.util
import errno
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting

from keras_vit import __version__
from keras_vit.decode import DEFAULT_MAX_PIXELS, decode_images, traced
from serving import int8_export, warmup
from serving import int8_runtime as rt
from serving import precision as precision_lib
from serving.explain_signature import EXPLAIN, explain_function
from serving.int8_export import Int8CPUWarning, int8_cpu_warning
from serving.int8_runtime import RUNTIME_DIR
from serving.precision import (
    BFLOAT16,
    DEFAULT_PRECISION,
    INT8,
    BF16CPUWarning,
    bf16_cpu_warning,
    check_precision,
    model_for_precision,
)

logger = logging.getLogger(__name__)

SERVING_DEFAULT = "serving_default"
SERVING_PIXELS = "serving_pixels"
EMBEDDING = "embedding"
CLASSIFY = "classify"
SIGNATURES = (SERVING_DEFAULT, SERVING_PIXELS, EMBEDDING, CLASSIFY)
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
EXAMPLE_FEATURE = "image/encoded"
LABELS_FILE = "labels.txt"
SETTINGS_FILE = "keras_vit_export.json"
WARMUP_FILE = "tf_serving_warmup_requests"

# TF Serving treats children of the base path whose names parse as integers as versions.
_VERSION_NAME = re.compile(r"^[0-9]+$")


class ExportError(RuntimeError):
    """The export cannot be written (existing version, unusable path, ...)."""


def export_saved_model(
    model,
    base_path: str | os.PathLike,
    version: int | None = None,
    *,
    top_k: int = 5,
    with_probabilities: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_request_pixels: int | None = None,
    xla: bool = False,
    overwrite: bool = False,
    warmup_images: Sequence[bytes] | None = None,
    with_explain: bool = False,
    precision: str = DEFAULT_PRECISION,
    calibration_images: Sequence[bytes] | None = None,
    calibration_source: str | None = None,
    mixed_base_path: bool = False,
) -> Path:
    """Writes ``model`` as SavedModel version ``base_path/<version>/`` and returns that path.

    Args:
        model: a ``keras_vit.ViTClassifier`` (any Keras model with its
            ``image_size``, ``labels``, ``hidden_dim`` and ``embedding_model()``).
        base_path: the model's base path, as given to TF Serving
            (``--model_base_path``); created if missing.
        version: the version number; by default one more than the highest
            existing version (1 for an empty base path).
        top_k: how many classes ``top_k_labels``/``top_k_scores`` and the
            classify signature return (at most the number of classes).
        with_probabilities: also return ``probabilities`` (every class).
        max_pixels: images whose header declares more pixels are rejected before
            decoding (decompression bomb guard).
        max_request_pixels: the pixels one request may decode in all (a JPEG
            counts those of its reduced DCT scale); by default ``max_pixels``.
        xla: compile the model part (not the image decoding) with XLA; TF Serving
            then needs ``--xla_cpu_compilation_enabled=true`` on CPU.
        overwrite: replace an existing version (atomically, where the OS allows).
        warmup_images: encoded images for the warm-up requests; by default a
            few photos from ``skimage.data``.
        with_explain: also write the ``explain`` signature (attention rollout).
        precision: ``"float32"`` (default) or ``"bfloat16"``: the encoder computes
            in bfloat16 (Keras ``mixed_bfloat16``; see :mod:`serving.precision`),
            preprocessing, logits, softmax, top-k and every output stay float32.
            The signatures are the same. Warns (:class:`BF16CPUWarning`) when
            this CPU has neither AVX512_BF16 nor AMX-BF16. ``"int8"``: the
            transformer body is quantized to int8 with NNCF and runs in OpenVINO;
            decoding, softmax and top-k stay in TensorFlow and the signatures are
            the same (:mod:`serving.int8_runtime` has the layout). Only
            ``keras-vit serve`` serves it: ``tensorflow_model_server`` refuses the
            version (:class:`Int8ServingWarning` says so).
        calibration_images: encoded images the int8 activations are calibrated on
            (decoded as the served version decodes them); by default the sample
            photos of :func:`serving.int8_export.sample_photos`.
        calibration_source: what ``calibration_images`` are, for the settings file.
        mixed_base_path: allow an int8 version into a base path that holds
            SavedModel versions (``tensorflow_model_server`` would fail to load it
            when it becomes the latest); refused by default.

    Raises:
        ExportError: the version exists and ``overwrite`` is false, or the base
            path is unusable.
        ValueError: invalid arguments or a model without the needed attributes.
    """
    _check_model(model)
    check_precision(precision)
    if precision == INT8:
        _check_int8_arguments(model, with_explain=with_explain, xla=xla)

        message = int8_cpu_warning(precision_lib.cpu_flags())  # the module's: tests patch it
        if message:
            warnings.warn(message, Int8CPUWarning, stacklevel=2)
    elif calibration_images is not None:
        raise ValueError("calibration_images are only used by precision='int8'")
    if precision == BFLOAT16:
        message = bf16_cpu_warning()
        if message:
            warnings.warn(message, BF16CPUWarning, stacklevel=2)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    if max_request_pixels is None:
        max_request_pixels = max_pixels
    if (
        isinstance(max_request_pixels, bool)
        or not isinstance(max_request_pixels, int)
        or max_request_pixels < 1
    ):
        raise ValueError(
            f"max_request_pixels must be a positive integer, got {max_request_pixels!r}"
        )
    if top_k > model.num_classes:
        logger.warning(
            "top_k=%d is more than the %d classes: using top_k=%d",
            top_k,
            model.num_classes,
            model.num_classes,
        )
        top_k = model.num_classes
    if warmup_images is not None:
        warmup_images = [bytes(image) for image in warmup_images]
        if not warmup_images:
            raise ValueError("warmup_images is empty; pass None for the default photos")

    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 0
    ):
        raise ValueError(f"version must be a non-negative integer, got {version!r}")
    base = Path(base_path).expanduser()
    if base.exists() and not base.is_dir():
        raise ExportError(f"The base path {base} exists and is not a directory")
    base.mkdir(parents=True, exist_ok=True)
    versions = existing_versions(base)
    if version is None:
        version = max(versions, default=0) + 1
    target = versions.get(version, base / str(version))
    if version not in versions and target.exists():
        raise ExportError(f"{target} exists and is not a version directory")
    if version in versions and not overwrite:
        raise ExportError(
            f"Version {version} already exists at {target}; pass overwrite=True (--overwrite) "
            "to replace it, or choose another version"
        )

    if precision == INT8:
        _check_int8_base_path(base, versions, version, mixed_base_path)
        warnings.warn(TF_SERVING_INT8_MESSAGE, Int8ServingWarning, stacklevel=2)
        if getattr(model, "lora_enabled", False):
            model = model.merge_lora()
    else:
        model = model_for_precision(model, precision)

    started = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.partial-", dir=base))
    try:
        with tempfile.TemporaryDirectory() as scratch:
            # The asset keeps its file name inside assets/.
            labels_source = Path(scratch) / LABELS_FILE
            labels_source.write_text("".join(_label_line(label) for label in model.labels))
            int8 = precision == INT8
            module = ServingModule(
                _Int8BodyStub(model) if int8 else model,
                top_k=top_k,
                with_probabilities=with_probabilities,
                max_pixels=max_pixels,
                max_request_pixels=max_request_pixels,
                xla=xla,
                labels_file=str(labels_source),
                with_explain=with_explain,
                int8_helpers=int8,
            )
            tf_dir = staging / RUNTIME_DIR if int8 else staging
            tf.saved_model.save(module, str(tf_dir), signatures=module.signatures())
        set_method_names(tf_dir, {CLASSIFY: CLASSIFY_METHOD})
        int8_settings = (
            _write_int8_body(model, module, staging, calibration_images, calibration_source)
            if int8
            else None
        )
        extra = staging / "assets.extra"
        extra.mkdir(exist_ok=True)
        warmup.write_warmup_file(extra / WARMUP_FILE, warmup_images)
        settings = {
            "keras_vit_version": __version__,
            "signatures": list(SIGNATURES) + (["explain"] if with_explain else []),
            "image_size": list(model.image_size),
            "num_classes": int(model.num_classes),
            "hidden_dim": int(model.hidden_dim),
            "top_k": top_k,
            "with_probabilities": bool(with_probabilities),
            "max_pixels": max_pixels,
            "max_request_pixels": max_request_pixels,
            "xla": bool(xla),
            "precision": precision,
            "example_feature": EXAMPLE_FEATURE,
        }
        if int8_settings is not None:
            settings["int8"] = int8_settings
        (extra / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        _sync_tree(staging)
        _publish(staging, target, replace=version in versions)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info(
        "Exported version %d to %s in %.1f s", version, target, time.perf_counter() - started
    )
    return target


class Int8ServingWarning(UserWarning):
    """An int8 version: ``keras-vit serve`` serves it, ``tensorflow_model_server`` cannot."""


TF_SERVING_INT8_MESSAGE = (
    "the int8 version runs its transformer body in OpenVINO: `keras-vit serve` serves it "
    "with the whole TF Serving API, but tensorflow_model_server (and the TF Serving images, "
    "Vertex AI's prebuilt TensorFlow containers) cannot load it: it has no saved_model.pb "
    "at its top level, so TF Serving reports the version as failed to load"
)


def _check_int8_arguments(model, *, with_explain: bool, xla: bool) -> None:
    if with_explain:
        raise ValueError(
            "precision='int8' cannot write the 'explain' signature (the attention rollout "
            "needs the float model): export float32 or bfloat16 with --with-explain"
        )
    if xla:
        raise ValueError(
            "precision='int8' cannot be compiled with XLA: the int8 body runs in OpenVINO "
            "(drop --xla)"
        )
    if any(getattr(layer, "quantization_mode", None) for layer in model._flatten_layers()):
        raise ValueError(
            "precision='int8' quantizes the float model itself (static int8, OpenVINO): "
            "export the float model, not one quantized with --quantize / model.quantize()"
        )


def _check_int8_base_path(base: Path, versions: dict, version: int, mixed: bool) -> None:
    saved_models = sorted(
        number
        for number, path in versions.items()
        if number != version and (path / "saved_model.pb").is_file()
    )
    if saved_models and not mixed:
        raise ExportError(
            f"{base} holds SavedModel versions ({', '.join(map(str, saved_models))}) that "
            "tensorflow_model_server may be serving; it cannot load an int8 version, and "
            "would report the new latest version as failed. Export int8 to its own base "
            "path, or pass mixed_base_path=True (--mixed-base-path) if only `keras-vit "
            "serve` serves this base path"
        )
    if saved_models:
        logger.warning(
            "%s mixes SavedModel versions (%s) with int8 versions: only `keras-vit serve` "
            "can serve every version of it",
            base,
            ", ".join(map(str, saved_models)),
        )


def _write_int8_body(model, module, staging: Path, calibration_images, calibration_source) -> dict:
    """Calibrates, quantizes and writes the OpenVINO body; returns its settings entry."""
    import nncf
    import openvino as ov

    if calibration_images is None:
        photos = int8_export.sample_photos()
        calibration_images = [tf.io.encode_jpeg(p, quality=95).numpy() for p in photos]
        calibration_source = calibration_source or (
            f"sample photos: scikit-image and scikit-learn, {len(photos)} views (flips and crops)"
        )
    else:
        calibration_images = [bytes(image) for image in calibration_images]
        if not calibration_images:
            raise ValueError("calibration_images is empty; pass None for the sample photos")
    pixels = np.concatenate(
        [_decode_calibration_image(module, image, i) for i, image in enumerate(calibration_images)]
    )
    started = time.perf_counter()
    quantized = int8_export.quantized_body(model, pixels)
    int8_export.write_body(quantized, staging)
    logger.info("Quantized the body to int8 in %.1f s", time.perf_counter() - started)
    return {
        "runtime": int8_export.RUNTIME,
        "runtime_version": ov.get_version(),
        "nncf_version": nncf.__version__,
        "scheme": int8_export.SCHEME,
        "body": f"{RUNTIME_DIR}/body.xml",
        "calibration": {
            "source": calibration_source or "caller-supplied images",
            "images": len(calibration_images),
            "sha256": int8_export.calibration_digest(calibration_images),
        },
        "tensorflow_model_server": "cannot load this version (no top-level saved_model.pb)",
    }


def _decode_calibration_image(module, image: bytes, index: int) -> np.ndarray:
    """The served decoder's pixels of one calibration image; a file it refuses is named."""
    try:
        return module.decode(tf.constant([image])).numpy()
    except tf.errors.InvalidArgumentError as error:
        first_line = error.message.split("\n", 1)[0]
        reason = first_line.split("assertion failed: [", 1)[-1].removesuffix("]")
        reason = reason.removeprefix("image_bytes[0]: ")
        raise ValueError(f"calibration image {index + 1} cannot be decoded: {reason}") from None


def existing_versions(base_path: str | os.PathLike) -> dict[int, Path]:
    """The version directories under a base path, as TF Serving sees them (``{number: path}``)."""
    base = Path(base_path)
    if not base.is_dir():
        return {}
    found = {}
    for child in sorted(base.iterdir()):
        if _VERSION_NAME.match(child.name) and child.is_dir():
            found.setdefault(int(child.name), child)
    return found


def set_method_names(export_dir: str | os.PathLike, method_names: dict[str, str]) -> None:
    """Sets the ``method_name`` of signatures in a written SavedModel.

    ``tf.saved_model.save`` marks every signature ``tensorflow/serving/predict``;
    TF Serving's Classify API only accepts ``tensorflow/serving/classify``. The
    fingerprint (a checksum of ``saved_model.pb``) is rewritten to match.
    """

    path = Path(export_dir) / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(path.read_bytes())
    for meta_graph in saved_model.meta_graphs:
        for name, method in method_names.items():
            if name not in meta_graph.signature_def:
                raise ValueError(f"No signature {name!r} in {export_dir}")
            meta_graph.signature_def[name].method_name = method
    path.write_bytes(saved_model.SerializeToString())
    fingerprint = Path(export_dir) / "fingerprint.pb"
    if fingerprint.exists():
        fingerprint.write_bytes(fingerprinting.CreateFingerprintDef(str(export_dir)))


class ServingModule(tf.Module):
    """The exported object: the model's variables, the label file and the signature functions.

    Only the variables are tracked (once, shared by every signature); the Keras
    model is captured by the functions, so its Python-side state is not saved.
    """

    def __init__(
        self,
        model,
        *,
        top_k: int = 5,
        with_probabilities: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_request_pixels: int | None = None,
        xla: bool = False,
        labels_file: str | None = None,
        with_explain: bool = False,
        int8_helpers: bool = False,
    ):
        super().__init__(name="keras_vit_serving")
        _check_model(model)
        self.model_variables = [getattr(v, "value", v) for v in model.variables]
        if labels_file is not None:
            self.labels_file = tf.saved_model.Asset(labels_file)
        image_size = tuple(int(s) for s in model.image_size)
        labels = tf.constant([str(label) for label in model.labels])
        embedding_model = model.embedding_model()

        def scores(pixels):
            logits = model(pixels, training=False)
            probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
            top_scores, top_indices = tf.math.top_k(probabilities, k=top_k)
            return probabilities, top_scores, top_indices

        def embed(pixels):
            return tf.cast(embedding_model(pixels, training=False), tf.float32)

        # With --xla only these two are compiled: strings never enter XLA.
        scores = tf.function(scores, jit_compile=xla or None, autograph=False)
        embed = tf.function(embed, jit_compile=xla or None, autograph=False)

        def predictions(pixels):
            return _prediction_outputs(labels, *scores(pixels), with_probabilities)

        def decoder(input_name):
            # One traced function per input name, shared by the signatures using it.
            return traced(
                decode_images,
                image_size,
                [None],
                max_pixels=max_pixels,
                max_request_pixels=max_request_pixels,
                input_name=input_name,
            )

        decode_bytes = decoder("image_bytes")
        # Saved with the model: the pixels the signatures see (``loaded.decode(bytes)``).
        self.decode = decode_bytes
        decode_examples = decoder(f"inputs[{{}}] (feature {EXAMPLE_FEATURE})")

        def serving_default(image_bytes):
            return predictions(decode_bytes(image_bytes))

        def uint8_pixels(images):
            shape = tf.shape(images)
            message = tf.strings.format(
                "images: height and width must be at least 1, got {}x{}", (shape[1], shape[2])
            )
            check = tf.debugging.Assert(tf.reduce_all(shape[1:3] > 0), [message])
            with tf.control_dependencies([check]):
                pixels = tf.cond(
                    tf.reduce_all(tf.equal(shape[1:3], image_size)),
                    lambda: tf.cast(images, tf.float32),
                    lambda: tf.image.resize(images, image_size, antialias=True),
                )
            pixels.set_shape([None, *image_size, 3])
            return pixels

        def serving_pixels(images):
            return predictions(uint8_pixels(images))

        def embedding(image_bytes):
            return {"embedding": embed(decode_bytes(image_bytes))}

        def classify(inputs):
            features = tf.io.parse_example(
                inputs, {EXAMPLE_FEATURE: tf.io.FixedLenFeature([], tf.string)}
            )
            _, top_scores, top_indices = scores(decode_examples(features[EXAMPLE_FEATURE]))
            return {"classes": tf.gather(labels, top_indices), "scores": top_scores}

        self._signatures = {
            SERVING_DEFAULT: tf.function(
                serving_default,
                input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
                autograph=False,
            ),
            SERVING_PIXELS: tf.function(
                serving_pixels,
                input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
                autograph=False,
            ),
            EMBEDDING: tf.function(
                embedding,
                input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
                autograph=False,
            ),
            CLASSIFY: tf.function(
                classify,
                input_signature=[tf.TensorSpec([None], tf.string, name="inputs")],
                autograph=False,
            ),
        }

        if int8_helpers:
            self._signatures.update(
                _int8_helpers(
                    decode_bytes, decode_examples, uint8_pixels, labels, top_k, with_probabilities
                )
            )

        if with_explain:
            if any(getattr(layer, "quantization_mode", None) for layer in model._flatten_layers()):
                # The rollout reads the attention kernels as floats; int8 kernels need their
                # scales, which the explain path does not apply.
                raise ExportError(
                    "the 'explain' signature needs float attention kernels: "
                    "export a quantized model without --with-explain"
                )

            self._signatures[EXPLAIN] = explain_function(model, labels, decode_bytes, image_size)

    @property
    def signature_names(self) -> list[str]:
        return list(self._signatures)

    def signatures(self) -> dict:
        """The signature functions by name, for ``tf.saved_model.save(..., signatures=...)``."""
        return {name: fn.get_concrete_function() for name, fn in self._signatures.items()}


def _prediction_outputs(labels, probabilities, top_scores, top_indices, with_probabilities):
    """``serving_default``'s outputs from the softmax and its top-k (float32 and int8 alike)."""
    outputs = {
        "label": tf.gather(labels, top_indices[:, 0]),
        "score": top_scores[:, 0],
        "top_k_labels": tf.gather(labels, top_indices),
        "top_k_scores": top_scores,
    }
    if with_probabilities:
        outputs["probabilities"] = probabilities
    return outputs


def _int8_helpers(
    decode_bytes, decode_examples, uint8_pixels, labels, top_k: int, with_probabilities: bool
) -> dict:
    """The helper signatures of an int8 version's TF part (see :mod:`serving.int8_runtime`):
    the public signatures' decoding up to the pixels, and the logits to their outputs."""

    def from_logits(logits):
        probabilities = tf.nn.softmax(logits, axis=-1)
        top_scores, top_indices = tf.math.top_k(probabilities, k=top_k)
        return probabilities, top_scores, top_indices

    def predictions(logits):
        return _prediction_outputs(labels, *from_logits(logits), with_probabilities)

    def classes(logits):
        _, top_scores, top_indices = from_logits(logits)
        return {"classes": tf.gather(labels, top_indices), "scores": top_scores}

    def examples_pixels(inputs):
        features = tf.io.parse_example(
            inputs, {EXAMPLE_FEATURE: tf.io.FixedLenFeature([], tf.string)}
        )
        return decode_examples(features[EXAMPLE_FEATURE])

    def signature(fn, spec):
        return tf.function(fn, input_signature=[spec], autograph=False)

    def front(fn):
        return lambda value: {rt.PIXELS: fn(value)}

    num_classes = int(labels.shape[0])
    logits_spec = tf.TensorSpec([None, num_classes], tf.float32, name=rt.LOGITS)
    return {
        rt.FRONT + SERVING_DEFAULT: signature(
            front(decode_bytes), tf.TensorSpec([None], tf.string, name="image_bytes")
        ),
        rt.FRONT + EMBEDDING: signature(
            front(decode_bytes), tf.TensorSpec([None], tf.string, name="image_bytes")
        ),
        rt.FRONT + SERVING_PIXELS: signature(
            front(uint8_pixels), tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")
        ),
        rt.FRONT + CLASSIFY: signature(
            front(examples_pixels), tf.TensorSpec([None], tf.string, name="inputs")
        ),
        rt.PREDICTIONS: signature(predictions, logits_spec),
        rt.CLASSES: signature(classes, logits_spec),
    }


class _Int8BodyStub:
    """Stands in for the model in an int8 version's TF part: the public signatures keep the
    float32 export's SignatureDefs, and running them in TensorFlow (as
    ``tensorflow_model_server`` or ``tf.saved_model.load`` would) fails with a clear error,
    since the body is the OpenVINO file beside it."""

    _MESSAGE = (
        "this is an int8 keras-vit version: its transformer body is an OpenVINO model "
        "(keras_vit_int8/body.xml) that TensorFlow cannot run; serve it with "
        "`keras-vit serve` (or export float32/bfloat16 for tensorflow_model_server)"
    )

    def __init__(self, model) -> None:
        self.image_size = tuple(model.image_size)
        self.labels = list(model.labels)
        self.num_classes = int(model.num_classes)
        self.hidden_dim = int(model.hidden_dim)
        self.variables: list = []

    def _fail(self, pixels, width: int):
        check = tf.debugging.Assert(False, [self._MESSAGE])
        with tf.control_dependencies([check]):
            return tf.zeros([tf.shape(pixels)[0], width], tf.float32)

    def __call__(self, pixels, training=False):
        return self._fail(pixels, self.num_classes)

    def embedding_model(self):
        return lambda pixels, training=False: self._fail(pixels, self.hidden_dim)


def _check_model(model) -> None:
    missing = [
        name
        for name in ("image_size", "labels", "num_classes", "hidden_dim", "embedding_model")
        if not hasattr(model, name)
    ]
    if missing:
        raise ValueError(
            f"export_saved_model needs a keras_vit.ViTClassifier; {type(model).__name__} "
            f"lacks {', '.join(missing)}"
        )
    if len(model.labels) != model.num_classes:
        raise ValueError(f"{len(model.labels)} labels for {model.num_classes} classes")


def _label_line(label) -> str:
    # One label per line, line i = class i: a line break inside a label would shift the rest.
    return str(label).replace("\r", " ").replace("\n", " ") + "\n"


def _sync_tree(root: Path) -> None:
    """Flushes every file to disk, so the renamed version is complete even after a crash."""
    for directory, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _publish(staging: Path, target: Path, *, replace: bool) -> None:
    """Renames the finished ``staging`` directory to ``target`` in one step."""
    if not replace:
        # Plain rename(2) would silently replace an empty directory of that name.
        try:
            renamed = _renameat2(staging, target, _RENAME_NOREPLACE)
        except FileExistsError:
            raise ExportError(f"{target} appeared while exporting; it was left as it is") from None
        if not renamed:
            if target.exists():
                raise ExportError(f"{target} appeared while exporting; it was left as it is")
            os.rename(staging, target)
    elif _renameat2(staging, target, _RENAME_EXCHANGE):
        shutil.rmtree(staging)  # it now holds the previous version
    else:
        # No atomic exchange on this system: the version is briefly absent, never partial.
        old = staging.with_name(staging.name + ".old")
        os.rename(target, old)
        os.rename(staging, target)
        shutil.rmtree(old)
    _sync_directory(target.parent)


_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2


def _renameat2(source: Path, destination: Path, flags: int) -> bool:
    """Linux ``renameat2(2)``; False where the C library or file system lacks it."""
    libc_name = ctypes.util.find_library("c")
    renameat2 = (
        getattr(ctypes.CDLL(libc_name, use_errno=True), "renameat2", None) if libc_name else None
    )
    if renameat2 is None:
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(source), at_fdcwd, os.fsencode(destination), flags) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), str(destination))


def _sync_directory(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory
    finally:
        os.close(fd)
