"""Checkpoints written by transformers 4.57 load into ViTClassifier with the same logits.

The reference logits come from transformers' own TFViTForImageClassification
and ViTForImageClassification on the same weights (``hf_reference.py``). Our
model gets NHWC images in [0, 255] already at model resolution, transformers
the equivalent normalised NCHW ``pixel_values``, so the comparison isolates
the network (the resize is the identity; see test_preprocessing_parity.py).
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from keras_vit import ViTClassifier, load_pretrained
from tests.convert.hf_reference import CLASSIFIERS, HF_FOLDERS, reference, spec
from tests.convert.parity import TOLERANCE


@pytest.fixture(scope="module")
def loaded(hf_reference):
    """(spec name, folder) -> (model, logits on the reference images)."""
    out = {}
    for name in CLASSIFIERS:
        images = reference(hf_reference, name)["images"]
        for folder in HF_FOLDERS:
            model = load_pretrained(hf_reference / name / folder)
            out[name, folder] = (model, keras.ops.convert_to_numpy(model(images)))
    return out


@pytest.mark.parametrize("folder", HF_FOLDERS)
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_logits_match_transformers(loaded, hf_reference, name, folder):
    ref = reference(hf_reference, name)
    model, logits = loaded[name, folder]
    diff_tf = float(np.abs(logits - ref["logits_tf"]).max())
    diff_pt = float(np.abs(logits - ref["logits_pt"]).max())
    print(f"{name}/{folder}: max|ours - TFViT| = {diff_tf:.2e}, max|ours - PT ViT| = {diff_pt:.2e}")
    assert diff_tf <= TOLERANCE
    assert diff_pt <= TOLERANCE
    # The reference logits are not degenerate (a head of zeros would also "match").
    assert np.ptp(ref["logits_tf"]) > 0.1


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_three_files_hold_the_same_weights(loaded, name):
    """tf_model.h5, TF-named and PyTorch-named safetensors convert to identical variables."""
    reference_model = loaded[name, "pt"][0]
    for folder in ("tf_h5", "tf_st"):
        model = loaded[name, folder][0]
        for a, b in zip(reference_model.weights, model.weights, strict=True):
            assert a.path == b.path
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), err_msg=a.path
            )


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_config_labels_and_preprocessing_come_from_the_checkpoint(loaded, hf_reference, name):
    model = loaded[name, "pt"][0]
    hf = json.loads((hf_reference / name / "pt" / "config.json").read_text())
    s = spec(name)
    assert isinstance(model, ViTClassifier)
    assert model.hidden_dim == hf["hidden_size"]
    assert model.num_layers == hf["num_hidden_layers"]
    assert model.num_heads == hf["num_attention_heads"]
    assert model.mlp_dim == hf["intermediate_size"]
    assert model.patch_size == hf["patch_size"]
    assert model.image_size == (hf["image_size"],) * 2
    assert model.layer_norm_epsilon == hf["layer_norm_eps"]
    assert model.labels == [hf["id2label"][str(i)] for i in range(len(hf["id2label"]))]
    assert model.image_mean == pytest.approx(s.get("image_mean", [0.5] * 3))
    assert model.image_std == pytest.approx(s.get("image_std", [0.5] * 3))
    assert model.rescale_factor == pytest.approx(1 / 255)


def test_named_labels_travel_with_the_model(loaded):
    assert loaded["h60_p8_s48", "tf_h5"][0].labels == ["cat", "dog", "bird", "fish", "frog"]


def test_npz_written_from_the_same_weights_matches_transformers(hf_reference):
    """A vit_jax-layout .npz (written by the test helper from the PyTorch state dict)."""
    ref = reference(hf_reference, "h60_p8_s48")
    model = load_pretrained(hf_reference / "h60_p8_s48" / "vit_jax.npz")
    assert model.labels == [f"LABEL_{i}" for i in range(5)]
    assert model.layer_norm_epsilon == 1e-6  # Flax default, and this spec's layer_norm_eps
    logits = keras.ops.convert_to_numpy(model(ref["images"]))
    diff = float(np.abs(logits - ref["logits_pt"]).max())
    print(f"h60_p8_s48 vit_jax.npz: max|ours - PT ViT| = {diff:.2e}")
    assert diff <= TOLERANCE


@pytest.mark.parametrize("folder", HF_FOLDERS)
def test_backbone_checkpoint_needs_and_gets_a_new_head(hf_reference, folder):
    """ViTModel checkpoints (pooler, no classifier): embeddings and pooler match transformers."""
    path = hf_reference / "backbone_h48" / folder
    ref = reference(hf_reference, "backbone_h48")
    with pytest.raises(ValueError, match="num_classes= or labels="):
        load_pretrained(path)
    model = load_pretrained(path, num_classes=4)
    assert model.count_params() > 0 and model.representation_size is None
    cls = keras.ops.convert_to_numpy(model.embedding_model()(ref["images"]))
    assert np.abs(cls - ref["cls_pt"]).max() <= TOLERANCE
    assert np.abs(cls - ref["cls_tf"]).max() <= TOLERANCE
    # Mapping the pooler onto pre_logits on request reproduces ViTModel's pooler_output.
    pooled = load_pretrained(path, num_classes=4, representation_size=48)
    pre_logits = keras.Model(pooled.input, pooled.get_layer("pre_logits").output)
    out = keras.ops.convert_to_numpy(pre_logits(ref["images"]))
    assert np.abs(out - ref["pooler_pt"]).max() <= TOLERANCE
    assert np.abs(out - ref["pooler_tf"]).max() <= TOLERANCE
