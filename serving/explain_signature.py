"""The ``explain`` signature: image bytes -> label, score, attention rollout map, overlay PNG.

``keras-vit export --with-explain`` adds it beside ``serving_default``, which
stays exactly as fast: the rollout runs only when a client calls ``explain``.

Outputs (one row per image):

- ``label`` (DT_STRING), ``score`` (DT_FLOAT): the top-1 class and its probability;
- ``attention_map`` (DT_FLOAT ``[-1, rows, cols]``): attention rollout (Abnar &
  Zuidema, 2020) of the class token over the patch grid, as
  :func:`keras_vit.explain.rollout.rollout` computes it in-process;
- ``overlay_bytes`` (DT_STRING): a PNG of the decoded, resized input with the
  map (min-max scaled, bilinear) on the ``inferno`` colormap at alpha 0.5; the
  ``_bytes`` suffix makes TF Serving's REST API send it as ``{"b64": ...}``
  (PNG bytes are not UTF-8).
"""

from __future__ import annotations

# First: keras_vit's import keeps TensorFlow's start-up lines quiet (keras_vit/quiet.py).
import keras_vit  # noqa: F401  # isort: skip

import tensorflow as tf

from keras_vit.explain.attention import forward_with_attention, patch_grid
from keras_vit.explain.overlay import DEFAULT_ALPHA, colormap_table
from keras_vit.explain.rollout import rollout

EXPLAIN = "explain"


def explain_function(
    model, labels: tf.Tensor, decode_bytes, image_size
) -> tf.types.experimental.GenericFunction:
    """A ``tf.function`` taking ``image_bytes`` (DT_STRING ``[-1]``), for the SavedModel."""

    grid = patch_grid(model)
    table = tf.constant(colormap_table() * 255.0, tf.float32)  # (256, 3)
    height, width = (int(s) for s in image_size)

    def overlays(pixels, maps):
        low = tf.reduce_min(maps, axis=[1, 2], keepdims=True)
        high = tf.reduce_max(maps, axis=[1, 2], keepdims=True)
        scaled = tf.math.divide_no_nan(maps - low, high - low)[..., None]
        scaled = tf.image.resize(scaled, (height, width), method="bilinear")[..., 0]
        indices = tf.cast(tf.clip_by_value(tf.round(scaled * 255.0), 0.0, 255.0), tf.int32)
        colours = tf.gather(table, indices)  # (B, H, W, 3)
        blended = (1.0 - DEFAULT_ALPHA) * pixels + DEFAULT_ALPHA * colours
        blended = tf.cast(tf.clip_by_value(tf.round(blended), 0.0, 255.0), tf.uint8)
        return tf.map_fn(
            tf.io.encode_png, blended, fn_output_signature=tf.TensorSpec([], tf.string)
        )

    def explain(image_bytes):
        pixels = decode_bytes(image_bytes)
        logits, attentions = forward_with_attention(model, pixels)
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        maps = tf.cast(rollout(attentions, grid), tf.float32)
        return {
            "label": tf.gather(labels, tf.argmax(probabilities, axis=-1)),
            "score": tf.reduce_max(probabilities, axis=-1),
            "attention_map": maps,
            "overlay_bytes": overlays(pixels, maps),
        }

    return tf.function(
        explain,
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
        autograph=False,
    )
