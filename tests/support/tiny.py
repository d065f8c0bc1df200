"""The tiny ViT of the tests and the benchmarks: its configuration in one place.

Small enough to build and run in milliseconds, odd enough to catch layout bugs:
3 heads, a hidden size that is not a power of two, a non-square label count.
"""

from __future__ import annotations

TINY_CONFIG = dict(
    image_size=32,
    patch_size=8,
    num_layers=2,
    num_heads=3,
    hidden_dim=48,
    mlp_dim=96,
    num_classes=7,
)

# Named labels, as many as TINY_CONFIG's classes.
TINY_LABELS = ["tabby cat", "tiger", "lynx", "astronaut", "rocket", "coffee mug", "espresso"]


def tiny_vit(**overrides):
    """A labelled ``ViTClassifier`` of :data:`TINY_CONFIG` (random weights); ``overrides``
    change its constructor arguments (``num_classes`` without ``labels`` drops the labels)."""
    from keras_vit import ViTClassifier

    config = {**TINY_CONFIG, "labels": TINY_LABELS, **overrides}
    if "num_classes" in overrides and "labels" not in overrides:
        config.pop("labels")
    return ViTClassifier(**config)
