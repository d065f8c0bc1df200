"""Our vit_jax ``.npz`` files read by an implementation nobody here wrote: vit-keras.

vit-keras (faustomorales/vit-keras, on PyPI) has its own ViT and its own reader
of Google's vit_jax/AugReg ``.npz`` checkpoints (``utils.load_weights_numpy``:
keys ``Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/...``,
LayerNorm epsilon 1e-6, exact GELU). So a layout error that ``save_npz`` and
our npz reader share, and that the round trip in test_npz.py cannot see, shows
here as a logit difference against transformers.

timm's loader (which also reads big_vision files) would be the second reader,
but timm imports torchvision, whose PyPI wheels are CUDA builds that cannot
load beside the CPU torch of requirements-dev.txt; big_vision's layout keeps
only the hand-built check of test_npz.py.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
from vit_keras import utils as vit_keras_utils
from vit_keras import vit as vit_keras

from keras_vit import ViTClassifier, load_pretrained
from keras_vit.convert import save_npz
from tests.convert.hf_reference import reference
from tests.convert.parity import TOLERANCE, max_error

NAME = "h60_p8_s48"  # eps 1e-6, mean = std = 0.5: what a vit_jax checkpoint has


def _vit_keras(path, model: ViTClassifier):
    """vit-keras's model with its own reader's weights from ``path``; no warnings allowed."""
    reference_model = vit_keras.build_model(
        image_size=model.image_size,
        patch_size=model.patch_size,
        num_layers=model.num_layers,
        hidden_size=model.hidden_dim,
        num_heads=model.num_heads,
        name="vit_keras",
        mlp_dim=model.mlp_dim,
        classes=model.num_classes,
        dropout=0.0,
        representation_size=model.representation_size,
    )
    grid = [s // model.patch_size for s in model.image_size]
    with warnings.catch_warnings():
        # It warns about unused tensors and unset weights: both would be layout errors.
        warnings.simplefilter("error")
        vit_keras_utils.load_weights_numpy(
            reference_model, str(path), True, num_x_patches=grid[1], num_y_patches=grid[0]
        )
    return reference_model


def _pixels(images):
    """[0, 255] -> vit_jax's [-1, 1] inputs (vit-keras has no preprocessing in the model)."""
    return images / 127.5 - 1.0


def test_the_reference_npz_of_the_tests_is_read_alike(hf_reference):
    """hf_reference.py's vit_jax.npz (our mapping, written from the PyTorch state dict)."""
    ref = reference(hf_reference, NAME)
    path = hf_reference / NAME / "vit_jax.npz"
    model = load_pretrained(path)
    theirs = _vit_keras(path, model)(_pixels(ref["images"]))
    diff = max_error(theirs, ref["logits_pt"])
    print(f"vit-keras on hf_reference's vit_jax.npz: max|vit-keras - PT ViT| = {diff:.2e}")
    assert diff <= TOLERANCE
    assert np.ptp(ref["logits_pt"]) > 0.1


def test_save_npz_of_a_transformers_checkpoint_is_read_alike(hf_reference, tmp_path):
    """transformers checkpoint -> our model -> save_npz -> vit-keras == transformers' logits."""
    ref = reference(hf_reference, NAME)
    ours = load_pretrained(hf_reference / NAME / "pt")
    save_npz(ours, tmp_path / "vit.npz")
    theirs = _vit_keras(tmp_path / "vit.npz", ours)(_pixels(ref["images"]))
    diff = max_error(theirs, ref["logits_pt"])
    print(f"save_npz read by vit-keras: max|vit-keras - PT ViT| = {diff:.2e}")
    assert diff <= TOLERANCE


def test_pre_logits_and_non_square_heads_are_read_alike(tmp_path):
    """A pre-logits model (vit_jax's ``pre_logits`` layer) with 3 heads of 16: ours vs theirs."""
    model = ViTClassifier(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=3,
        hidden_dim=48,
        mlp_dim=72,
        num_classes=7,
        layer_norm_epsilon=1e-6,
        representation_size=40,
    )
    rng = np.random.default_rng(0)
    for v in model.weights:
        v.assign(rng.normal(0, 0.1, v.shape).astype("float32") + (1 if "gamma" in v.path else 0))
    save_npz(model, tmp_path / "vit.npz")
    images = rng.integers(0, 256, (3, 32, 32, 3)).astype("float32")
    ours = load_pretrained(tmp_path / "vit.npz")(images)
    theirs = _vit_keras(tmp_path / "vit.npz", model)(_pixels(images))
    diff = max_error(ours, theirs)
    print(f"pre-logits model: max|ours - vit-keras| = {diff:.2e}")
    assert diff <= TOLERANCE
    assert np.ptp(keras.ops.convert_to_numpy(theirs)) > 0.1
