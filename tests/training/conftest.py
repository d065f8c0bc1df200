"""Fixtures for the training tests: small synthetic image folders and a very small ViT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

# Three colours that a 4-token ViT tells apart after a few steps.
COLOURS = {"blue": (30, 60, 220), "green": (40, 200, 60), "red": (220, 40, 40)}

# 4 tokens of 24 dimensions: builds and steps in milliseconds.
SMALL_VIT = dict(
    image_size=16,
    patch_size=8,
    num_layers=1,
    num_heads=2,
    hidden_dim=24,
    mlp_dim=48,
    layer_norm_epsilon=1e-6,
)


def write_colour_folder(
    root: Path, per_class: int = 12, seed: int = 0, size: tuple[int, int] = (20, 28)
) -> Path:
    """``root/<colour>/<i>.png|jpg``: noisy images of one dominant colour per class.

    Sizes vary around ``size`` so that decoding and resizing see odd shapes;
    every third file is a JPEG.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            height = size[0] + int(rng.integers(0, 6))
            width = size[1] + int(rng.integers(0, 6))
            noise = rng.normal(0, 25, (height, width, 3))
            pixels = np.clip(np.asarray(colour) + noise, 0, 255).astype(np.uint8)
            suffix = "jpg" if i % 3 == 0 else "png"
            Image.fromarray(pixels).save(folder / f"{i:03d}.{suffix}")
    return root


@pytest.fixture
def colour_folder(tmp_path) -> Path:
    return write_colour_folder(tmp_path / "colours")


@pytest.fixture
def small_vit_config() -> dict:
    return dict(SMALL_VIT)
