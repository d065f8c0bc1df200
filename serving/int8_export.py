"""The int8 body of ``keras-vit export --precision int8``: OpenVINO + NNCF static int8.

The transformer (pixels -> logits, embedding) is converted from the Keras
model's pixel-input function with ``openvino.convert_model`` and quantized
with NNCF's static post-training quantization (``nncf.quantize``,
``ModelType.TRANSFORMER``: SmoothQuant, int8 weights per channel, int8
activations calibrated on real images). The layout of the version and how it
runs are in :mod:`serving.int8_runtime`.

Calibration images are decoded by the export's own decoder (the pixels the
served model sees). By default they are the ``--calibration-data`` folder's
first :data:`DEFAULT_CALIBRATION_IMAGES` images; without one, photos shipped
by scikit-image and scikit-learn with flips and crops (:func:`sample_photos`),
which the settings file records as such.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_vit.layers import EncoderBlock
from serving.file_formats import describe, image_format
from serving.image_files import read_image_file
from serving.int8_runtime import BODY_XML, EMBEDDING, LOGITS, RUNTIME_DIR

DEFAULT_CALIBRATION_IMAGES = 300
# NNCF collects statistics per dataset item; one image an item, as its examples do.
CALIBRATION_BATCH = 1
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# /proc/cpuinfo flags of the int8 dot-product instructions oneDNN's int8 kernels use.
INT8_CPU_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
RUNTIME = "openvino"
SCHEME = (
    "NNCF static post-training quantization (ModelType.TRANSFORMER, SmoothQuant, preset "
    "performance): int8 symmetric per-channel weights, int8 activations calibrated on the "
    "calibration set"
)


class Int8CPUWarning(UserWarning):
    """The CPU lacks (or could not be checked for) int8 dot-product instructions."""


def int8_cpu_warning(flags: set[str] | None) -> str | None:
    """A warning for CPUs without VNNI/AMX-INT8 (None where they have one)."""
    if flags is not None and any(flag in flags for flag in INT8_CPU_FLAGS):
        return None
    which = (
        "could not read the CPU flags (/proc/cpuinfo) to check for VNNI or AMX-INT8"
        if flags is None
        else "this CPU has neither AVX512_VNNI, AVX_VNNI nor AMX-INT8"
    )
    return (
        f"{which}: the int8 version's matmuls then run on oneDNN's AVX2/AVX-512 int8 "
        "fallback (pairs of multiply-adds instead of one dot-product instruction). Its cost "
        "is not measured by this project (every machine it measured has VNNI, most AMX; "
        "benchmarks/results/precision.md): expect far less than the 1.8x over bfloat16 "
        "measured there, possibly nothing over float32, and measure before deploying. "
        "Serve it on VNNI or AMX nodes."
    )


def read_calibration_folder(
    root: str | os.PathLike, limit: int = DEFAULT_CALIBRATION_IMAGES
) -> tuple[list[bytes], list[str]]:
    """Up to ``limit`` image files under ``root`` (recursively, sorted): (bytes, names)."""

    base = Path(root)
    if not base.is_dir():
        raise ValueError(f"--calibration-data {root}: not a directory")
    paths = sorted(p for p in base.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise ValueError(
            f"--calibration-data {root}: no image files ({', '.join(IMAGE_SUFFIXES)}) under it"
        )
    # Spread over the folder (every class of an image folder), deterministic.
    step = max(1, len(paths) // limit)
    chosen = paths[::step][:limit]
    images = []
    for path in chosen:
        data = read_image_file(path)
        if image_format(data) is None:  # the decoder would refuse it mid-calibration
            raise ValueError(
                f"--calibration-data {root}: {path.relative_to(base)} is not an image "
                f"({describe(data)})"
            )
        images.append(data)
    return images, [str(p.relative_to(base)) for p in chosen]


def sample_photos() -> list[np.ndarray]:
    """The photos of scikit-image and scikit-learn (RGB uint8) with flips and crops."""
    photos = []
    with contextlib.suppress(ImportError):
        from skimage import data

        for name in (
            "astronaut",
            "chelsea",
            "coffee",
            "rocket",
            "motorcycle_left",
            "hubble_deep_field",
        ):
            with contextlib.suppress(Exception):
                photos.append(np.asarray(getattr(data, name)())[..., :3])
    with contextlib.suppress(Exception):
        from sklearn.datasets import load_sample_images

        photos.extend(np.asarray(image) for image in load_sample_images().images)
    if not photos:
        raise ValueError(
            "no calibration images: pass --calibration-data DIR (scikit-image / scikit-learn "
            "sample photos are not installed)"
        )
    views = []
    for photo in photos:
        height, width = photo.shape[:2]
        side = min(height, width)
        for crop in (
            photo,
            photo[:, ::-1],
            photo[:side, :side],
            photo[height - side :, width - side :],
            photo[height // 4 : height - height // 4, width // 4 : width - width // 4],
            photo[::-1, :][:side, :side],
        ):
            views.append(np.ascontiguousarray(crop))
    return views


def calibration_digest(images: Sequence[bytes]) -> str:
    digest = hashlib.sha256()
    for image in images:
        digest.update(hashlib.sha256(image).digest())
    return digest.hexdigest()


def _batches(pixels: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(pixels), size):
        yield pixels[start : start + size]


@contextlib.contextmanager
def openvino_friendly(model) -> Iterator[None]:
    """While tracing: LayerNormalization and the exact GELU in the textbook forms that
    OpenVINO fuses into its MVN and Gelu ops (the same math; Keras' own forms stay as
    separate reductions, Erf and multiplies, which took about a fifth of the int8 time)."""

    def layer_norm(layer):
        def call(inputs):
            x = tf.cast(inputs, tf.float32)
            centered = x - tf.reduce_mean(x, axis=[-1], keepdims=True)
            variance = tf.reduce_mean(centered * centered, axis=[-1], keepdims=True)
            normalized = centered / tf.sqrt(variance + layer.epsilon)
            return normalized * layer.gamma + layer.beta

        return call

    def gelu(x):
        return 0.5 * x * (1.0 + tf.math.erf(x / math.sqrt(2.0)))

    keras_attention = keras.ops.dot_product_attention

    def attention(query, key, value, bias=None, mask=None, scale=None, **options):
        # TF's backend writes it as einsums, which OpenVINO decomposes into broadcasts and
        # multiplies; matmul -> softmax -> matmul is its SDPA pattern.
        if bias is not None or mask is not None or scale is None or any(options.values()):
            return keras_attention(query, key, value, bias, mask, scale=scale, **options)
        q = tf.transpose(query, [0, 2, 1, 3]) * tf.cast(scale, query.dtype)  # (B, H, N, d)
        k = tf.transpose(key, [0, 2, 3, 1])  # (B, H, d, N)
        v = tf.transpose(value, [0, 2, 1, 3])  # (B, H, N, d)
        probabilities = tf.nn.softmax(tf.matmul(q, k), axis=-1)
        return tf.transpose(tf.matmul(probabilities, v), [0, 2, 1, 3])  # (B, N, H, d)

    def mlp(block):
        # (B, N, D) matmuls, no flattening reshape: the activations' quantize step then
        # fuses into the LayerNorm / GELU before it.
        def call(x, training=None):
            return block.mlp_dense_2(block.mlp_dense_1(x))

        return call

    def self_attention(block):
        mha = block.attention
        heads, head_dim = block.num_heads, block.hidden_dim // block.num_heads

        def call(x):
            batch, length = tf.shape(x)[0], tf.shape(x)[1]

            def project(dense):
                kernel = tf.reshape(tf.cast(dense.kernel, x.dtype), (block.hidden_dim, -1))
                y = tf.matmul(x, kernel) + tf.reshape(tf.cast(dense.bias, x.dtype), (-1,))
                return tf.reshape(y, (batch, length, heads, head_dim))

            query, key, value = (
                project(mha.query_dense),
                project(mha.key_dense),
                project(mha.value_dense),
            )
            context = attention(query, key, value, scale=1.0 / math.sqrt(head_dim))
            context = tf.reshape(context, (batch, length, heads * head_dim))
            kernel = tf.reshape(tf.cast(mha.output_dense.kernel, x.dtype), (heads * head_dim, -1))
            return tf.matmul(context, kernel) + tf.cast(mha.output_dense.bias, x.dtype)

        return call

    patched = []
    for layer in model._flatten_layers():
        if isinstance(layer, EncoderBlock) and layer._matmul_projections(False):
            patched.append((layer, "_mlp", None))
            layer._mlp = mlp(layer)
            patched.append((layer, "_self_attention", None))
            layer._self_attention = self_attention(layer)
        if isinstance(layer, keras.layers.LayerNormalization) and not layer.rms_scaling:
            patched.append((layer, "call", layer.__dict__.get("call")))
            layer.call = layer_norm(layer)
        elif getattr(layer, "activation", None) is keras.activations.gelu:
            patched.append((layer, "activation", keras.activations.gelu))
            layer.activation = gelu
    keras.ops.dot_product_attention = attention
    try:
        yield
    finally:
        keras.ops.dot_product_attention = keras_attention
        for layer, name, value in patched:
            if value is None:
                delattr(layer, name)
            else:
                setattr(layer, name, value)


def body_function(model, fused: bool = True):
    """The pixel-input ``tf.function``: float pixels -> {logits, embedding} (float32)."""

    body = keras.Model(model.input, [model.output, model.get_layer("pooling").output])

    def run(pixels):
        logits, embedding = body(pixels, training=False)
        return {LOGITS: tf.cast(logits, tf.float32), EMBEDDING: tf.cast(embedding, tf.float32)}

    spec = tf.TensorSpec([None, *(int(s) for s in model.image_size), 3], tf.float32)
    function = tf.function(run, autograph=False)
    with openvino_friendly(model) if fused else contextlib.nullcontext():
        return function.get_concrete_function(spec)


def float_body(model, fused: bool = True):
    """The OpenVINO model of the body (float32), outputs named logits and embedding."""
    import openvino as ov

    converted = ov.convert_model(body_function(model, fused))
    for output in converted.outputs:  # the structured names, whatever the converter kept
        names = output.get_names()
        name = EMBEDDING if any(EMBEDDING in n for n in names) else LOGITS
        output.get_tensor().set_names({name})
    return converted


def quantized_body(model, calibration_pixels: np.ndarray, fused: bool = True, preset=None):
    """The OpenVINO model of the body, int8-quantized by NNCF on ``calibration_pixels``."""

    import nncf

    converted = float_body(model, fused)
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)
    try:
        return nncf.quantize(
            converted,
            nncf.Dataset(list(_batches(calibration_pixels, CALIBRATION_BATCH))),
            preset=preset or nncf.QuantizationPreset.PERFORMANCE,
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=-(-len(calibration_pixels) // CALIBRATION_BATCH),
        )
    finally:
        nncf_logger.setLevel(level)


def write_body(quantized, directory: str | os.PathLike) -> Path:
    import openvino as ov

    target = Path(directory) / RUNTIME_DIR / BODY_XML
    target.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(target), compress_to_fp16=False)
    return target
