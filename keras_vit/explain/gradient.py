"""Gradient-weighted, class-specific attention rollout.

The rule of Chefer, Gur & Wolf (2021, "Generic Attention-model Explainability
for Interpreting Bi-Modal and Encoder-Decoder Transformers", Eq. 5-6): every
block's attention is weighted by the gradient of the chosen class's logit,
negative contributions are clipped and the heads averaged,
``A_bar = mean_h(relu(grad_A * A))``, and relevance accumulates as
``R <- R + A_bar R`` from ``R = I``. The class token's row over the patches is
the map: unlike plain rollout it differs from class to class.

Gradients need the backend's own tape: this file is TensorFlow-only.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_vit.explain.attention import forward_with_attention, patch_grid


def gradient_rollout(model, images, class_index=None):
    """``(logits, maps)`` with class-specific maps ``(batch, rows, cols)``.

    Args:
        model: a ``keras_vit.ViTClassifier``.
        images: NHWC RGB pixels in ``[0, 255]``.
        class_index: the class to explain: an int for every image, a sequence
            with one per image, or None for each image's top-1 class.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    batch = int(images.shape[0]) if images.shape[0] is not None else None
    if class_index is not None:
        chosen = np.broadcast_to(np.asarray(class_index, dtype=np.int64), (batch,))
        bad = [int(c) for c in chosen if not 0 <= c < model.num_classes]
        if bad:
            raise ValueError(
                f"class index {bad[0]} is out of range for {model.num_classes} classes"
            )
    with tf.GradientTape() as tape:
        logits, attentions = forward_with_attention(model, images)
        logits = tf.cast(logits, tf.float32)
        if class_index is None:
            target_class = tf.argmax(logits, axis=-1, output_type=tf.int32)
        else:
            target_class = tf.constant(chosen, tf.int32)
        target = tf.reduce_sum(logits * tf.one_hot(target_class, model.num_classes))
    gradients = tape.gradient(target, attentions)
    tokens = tf.shape(attentions[0])[-1]
    relevance = tf.eye(tokens, batch_shape=tf.shape(images)[:1])
    for probabilities, gradient in zip(attentions, gradients, strict=True):
        weighted = tf.reduce_mean(tf.nn.relu(gradient * probabilities), axis=1)  # (B, N, N)
        relevance = relevance + tf.matmul(weighted, relevance)
    rows, cols = patch_grid(model)
    return logits, tf.reshape(relevance[:, 0, 1:], (-1, rows, cols))
