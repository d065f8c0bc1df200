"""Golden logits of the real ``google/vit-base-patch16-224`` on COCO val2017 image 000000039769.

transformers' own ViT tests (PyTorch and TF) assert
``logits[0, :3] ≈ [-0.2744, 0.8215, -0.0836]`` (atol 1e-4) and shape (1, 1000)
for this image. No weights can be downloaded here, so the test needs a local
copy: ``KERAS_VIT_GOLDEN_DIR`` must name a directory with the hub files
(``config.json``, ``preprocessor_config.json``, ``model.safetensors`` or
``tf_model.h5``) and ``000000039769.jpg``.

Preprocessing is HF's, as in HF's test: ``ViTImageProcessor`` (PIL resize to
224x224, rescale, normalise) gives NCHW values in [-1, 1]; we transpose them to
NHWC and map them back to [0, 255] (``x * std + mean) / rescale_factor``).
At 224x224 our in-graph resize is the identity (checked in
test_preprocessing_parity.py), so the network sees exactly HF's pixel values.
The full in-graph pipeline on the raw JPEG is checked for the same top-1 label.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_vit import load_pretrained

EXPECTED = np.array([-0.2744, 0.8215, -0.0836])
IMAGE = "000000039769.jpg"


def golden_dir() -> Path:
    folder = os.environ.get("KERAS_VIT_GOLDEN_DIR")
    if not folder:
        pytest.skip(
            "KERAS_VIT_GOLDEN_DIR is not set: it must name a local copy of "
            "google/vit-base-patch16-224 (config.json, preprocessor_config.json, "
            f"model.safetensors or tf_model.h5) plus COCO val2017 {IMAGE}; weights cannot be "
            "downloaded in this environment"
        )
    folder = Path(folder)
    missing = [n for n in ("config.json", IMAGE) if not (folder / n).is_file()]
    if not any((folder / n).is_file() for n in ("model.safetensors", "tf_model.h5")):
        missing.append("model.safetensors or tf_model.h5")
    if missing:
        pytest.skip(f"KERAS_VIT_GOLDEN_DIR={folder} lacks {', '.join(missing)}")
    return folder


def test_vit_b16_golden_logits():
    folder = golden_dir()
    transformers = pytest.importorskip("transformers", reason="HF's processor defines the input")
    from PIL import Image

    model = load_pretrained(folder)
    assert model.count_params() == 86_567_656
    image = Image.open(folder / IMAGE).convert("RGB")
    processor = transformers.ViTImageProcessor.from_pretrained(folder)
    pixels = processor(images=image, return_tensors="np")["pixel_values"]  # (1, 3, 224, 224)
    nhwc = pixels.transpose(0, 2, 3, 1)
    mean, std = np.asarray(processor.image_mean), np.asarray(processor.image_std)
    raw = (nhwc * std + mean) / processor.rescale_factor  # back to [0, 255]
    logits = keras.ops.convert_to_numpy(model(raw.astype("float32")))
    print(f"logits[0, :3] = {logits[0, :3]}, |diff| = {np.abs(logits[0, :3] - EXPECTED).max():.2e}")
    assert logits.shape == (1, 1000)
    np.testing.assert_allclose(logits[0, :3], EXPECTED, atol=1e-4, rtol=0)
    top1 = model.labels[int(logits[0].argmax())]
    assert top1 == "Egyptian cat"
    # The whole in-graph pipeline on the decoded JPEG agrees on the class.
    full = keras.ops.convert_to_numpy(model(np.asarray(image)[None]))
    print(
        f"in-graph pipeline: max |logit diff| vs HF preprocessing = "
        f"{np.abs(full - logits).max():.3f}"
    )
    assert model.labels[int(full[0].argmax())] == top1
