"""Optimiser, learning-rate schedule and loss for ViT fine-tuning.

The ViT paper fine-tunes with SGD with momentum 0.9, a linear warm-up and a
cosine decay, gradient clipping at global norm 1 and no weight decay; DeiT and
most later recipes use AdamW with decoupled weight decay (0.05) that skips
biases, LayerNorm scales and offsets, the class token and the position
embeddings. Both are here.
"""

from __future__ import annotations

import keras
import tensorflow as tf

# Variables that keep their values out of weight decay (matched on `variable.name`):
# biases and LayerNorm gamma/beta (all one-dimensional in spirit; the attention biases
# are 2-D), plus the learned embeddings that are not weight matrices.
NO_DECAY_NAMES = ("bias", "gamma", "beta", "class_token", "position_embedding")
# Keras matches the pattern against `variable.name` ("bias") in some code paths and, on
# the TensorFlow backend while applying the decay, against the tf.Variable's name
# ("encoder_block_0/norm_1/bias:0", ".../bias/replica_1:0" under MirroredStrategy).
# The last path component must be the name: a kernel called "bias_kernel" is decayed.
NO_DECAY_PATTERN = r"(^|/)(" + "|".join(NO_DECAY_NAMES) + r")(/replica_\d+)?(:\d+)?$"


def build_schedule(
    peak_learning_rate: float,
    total_steps: int,
    warmup_steps: int = 0,
    end_learning_rate: float = 0.0,
) -> keras.optimizers.schedules.CosineDecay:
    """Linear warm-up from 0 to ``peak_learning_rate``, then cosine decay to ``end_learning_rate``.

    Keras' ``CosineDecay`` with ``warmup_target``: ``lr(step) = peak * step /
    warmup_steps`` for ``step < warmup_steps``, then ``end + (peak - end) *
    (1 + cos(pi * t)) / 2`` with ``t = (step - warmup_steps) / (total_steps -
    warmup_steps)`` clipped to 1.

    Example:
    >>> schedule = build_schedule(1e-3, total_steps=100, warmup_steps=10)
    >>> [round(float(schedule(s)), 6) for s in (0, 5, 10, 55, 100, 200)]
    [0.0, 0.0005, 0.001, 0.0005, 0.0, 0.0]
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps], got {warmup_steps}")
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(total_steps - warmup_steps, 1),
        alpha=end_learning_rate / peak_learning_rate,
        warmup_target=peak_learning_rate,
        warmup_steps=warmup_steps,
    )


class AllReduceClipMixin:
    """Clips by the global norm of the gradient summed over replicas, as on one device.

    Keras clips each replica's own gradient before the replicas' gradients are
    summed, so under ``MirroredStrategy`` ``global_clipnorm`` bounds the wrong
    quantity (tensorflow/tensorflow#33929 explains why tf.keras disabled it).
    Here every replica sums the gradients first, measures the norm of the sum,
    and scales its own gradient by the factor that clips that sum; the
    optimizer's own all-reduce then adds up exactly the clipped total. It costs
    one more all-reduce per step, only when there are several replicas.
    """

    def _clip_gradients(self, grads):
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        if not self.global_clipnorm or replicas == 1:
            return super()._clip_gradients(grads)
        present = [g for g in grads if g is not None]
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, present)
        norm = tf.linalg.global_norm(total)
        clip = tf.cast(self.global_clipnorm, norm.dtype)
        scale = tf.minimum(1.0, clip / tf.maximum(norm, 1e-12))
        return [g * tf.cast(scale, g.dtype) if g is not None else None for g in grads]


@keras.saving.register_keras_serializable(package="keras_vit")
class AdamW(AllReduceClipMixin, keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` whose ``global_clipnorm`` is right under distribution."""


@keras.saving.register_keras_serializable(package="keras_vit")
class SGD(AllReduceClipMixin, keras.optimizers.SGD):
    """``keras.optimizers.SGD`` whose ``global_clipnorm`` is right under distribution."""


def build_optimizer(
    name: str = "adamw",
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 1e-3,
    weight_decay: float = 0.05,
    momentum: float = 0.9,
    global_clipnorm: float | None = 1.0,
) -> keras.optimizers.Optimizer:
    """AdamW (decoupled weight decay) or SGD with momentum, clipped by global norm.

    Weight decay skips :data:`NO_DECAY_NAMES`. For SGD the decay is the same
    decoupled ``w -= lr * wd * w`` (Keras' SGD ``weight_decay``), so
    ``weight_decay=0`` reproduces the paper's fine-tuning.
    """
    clip = global_clipnorm if global_clipnorm else None
    decay = weight_decay if weight_decay else None
    name = name.lower()
    if name == "adamw":
        optimizer = AdamW(
            learning_rate=learning_rate,
            weight_decay=decay or 0.0,
            beta_1=0.9,
            beta_2=0.999,
            epsilon=1e-8,
            global_clipnorm=clip,
        )
    elif name == "sgd":
        optimizer = SGD(
            learning_rate=learning_rate,
            momentum=momentum,
            weight_decay=decay,
            global_clipnorm=clip,
        )
    else:
        raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {name!r}")
    optimizer.exclude_from_weight_decay(var_names=[NO_DECAY_PATTERN])
    return optimizer


def decayed_variables(optimizer: keras.optimizers.Optimizer, variables) -> list:
    """The variables among ``variables`` that ``optimizer`` applies weight decay to."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    if not inner.weight_decay:
        return []
    return [v for v in variables if inner._use_weight_decay(v)]


def build_loss(label_smoothing: float = 0.0) -> keras.losses.Loss:
    """Cross-entropy on logits against one-hot (or mixed-up) labels, with label smoothing."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    return keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing)
