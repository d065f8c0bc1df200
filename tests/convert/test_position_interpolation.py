"""A 32-pixel checkpoint loaded at 48 pixels vs transformers' ``interpolate_pos_encoding=True``.

TFViT resizes the position grid with ``tf.image.resize(..., "bicubic")`` (Keys
cubic, a = -0.5, half-pixel centres), the algorithm our
``interpolate_position_embedding`` uses, so the logits must match to fp32
precision. PyTorch's ViT uses ``F.interpolate(mode="bicubic")`` (a = -0.75), a
different kernel: that difference is measured and bounded, not hidden.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_vit import load_pretrained
from tests.convert.hf_reference import HF_FOLDERS, reference
from tests.convert.parity import TOLERANCE

NAME = "h48_p8_s32"


@pytest.mark.parametrize("folder", HF_FOLDERS)
def test_interpolated_logits_match_tf_vit(hf_reference, folder):
    ref = reference(hf_reference, NAME)
    model = load_pretrained(hf_reference / NAME / folder, image_size=48)
    assert model.image_size == (48, 48)
    assert model.get_layer("position_embedding").position_embedding.shape == (1, 37, 48)
    logits = keras.ops.convert_to_numpy(model(ref["interp_images"]))
    diff_tf = float(np.abs(logits - ref["interp_logits_tf"]).max())
    diff_pt = float(np.abs(logits - ref["interp_logits_pt"]).max())
    print(
        f"{folder} 32->48 px: max|ours - TFViT| = {diff_tf:.2e}, "
        f"max|ours - PT ViT (torch bicubic)| = {diff_pt:.2e}"
    )
    assert diff_tf <= TOLERANCE
    # Same grid, other cubic kernel: close but not equal.
    assert diff_pt < 0.1


def test_class_token_kept_aside_and_grid_resized(hf_reference):
    native = load_pretrained(hf_reference / NAME / "pt")
    resized = load_pretrained(hf_reference / NAME / "pt", image_size=(48, 64))
    old = keras.ops.convert_to_numpy(native.get_layer("position_embedding").position_embedding)
    new = keras.ops.convert_to_numpy(resized.get_layer("position_embedding").position_embedding)
    assert new.shape == (1, 1 + 6 * 8, 48)
    np.testing.assert_array_equal(new[:, 0], old[:, 0])
    # The grid is a smooth resize of the old one: its mean stays close, and its
    # corners are near the old corners (bicubic with half-pixel centres).
    old_grid, new_grid = old[0, 1:].reshape(4, 4, 48), new[0, 1:].reshape(6, 8, 48)
    assert np.abs(new_grid.mean((0, 1)) - old_grid.mean((0, 1))).max() < 0.05
    assert np.abs(new_grid[0, 0] - old_grid[0, 0]).max() < np.abs(old_grid).max()
    # Everything else is the checkpoint's.
    for a, b in zip(native.weights, resized.weights, strict=True):
        if not a.path.startswith("position_embedding"):
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), err_msg=a.path
            )


def test_without_image_size_a_grid_mismatch_is_an_error(hf_reference, tmp_path):
    import json
    import shutil

    folder = tmp_path / "ckpt"
    shutil.copytree(hf_reference / NAME / "pt", folder)
    data = json.loads((folder / "config.json").read_text())
    data["image_size"] = 48  # the config disagrees with the 4x4 grid of the weights
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="position_embeddings"):
        load_pretrained(folder)
