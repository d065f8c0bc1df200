"""Shared test set-up: quiet TensorFlow logs and a tiny ViT configuration."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

# Small enough to build and run in milliseconds, odd enough to catch layout bugs:
# 3 heads, a hidden size that is not a power of two, a non-square label count.
TINY_CONFIG = dict(
    image_size=32,
    patch_size=8,
    num_layers=2,
    num_heads=3,
    hidden_dim=48,
    mlp_dim=96,
    num_classes=7,
)


@pytest.fixture
def tiny_config():
    return dict(TINY_CONFIG)
