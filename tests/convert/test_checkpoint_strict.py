"""Strict loading: one error names every problem, nothing is assigned; head replacement."""

from __future__ import annotations

import shutil

import keras
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from keras_vit import load_pretrained
from keras_vit.convert import CheckpointMismatchError, load_weights
from keras_vit.convert.hf_safetensors import SafetensorsReader, pt_rows
from tests.convert.hf_reference import reference

NAME = "h48_p8_s32"
MISSING = "vit.encoder.layer.1.output.dense.bias"
EXTRA = "vit.encoder.layer.1.extra_adapter.weight"
WRONG = "vit.encoder.layer.0.intermediate.dense.weight"


@pytest.fixture(scope="module")
def broken_dir(hf_reference, tmp_path_factory):
    """The 7-class checkpoint with one tensor removed, one added and one mis-shaped."""
    folder = tmp_path_factory.mktemp("broken")
    for file in ("config.json", "preprocessor_config.json"):
        shutil.copy(hf_reference / NAME / "pt" / file, folder / file)
    tensors = load_file(hf_reference / NAME / "pt" / "model.safetensors")
    del tensors[MISSING]
    tensors[EXTRA] = np.ones((4, 4), np.float32)
    tensors[WRONG] = tensors[WRONG][:-1]  # (80, 48) -> (79, 48)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def _weights(model):
    return {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.weights}


def test_one_error_names_missing_unexpected_and_misshaped(broken_dir):
    with pytest.raises(CheckpointMismatchError) as info:
        load_pretrained(broken_dir)
    message = str(info.value)
    assert "1 missing" in message and MISSING in message
    assert "encoder_block_1/mlp_dense_2/bias" in message
    assert "1 unexpected" in message and EXTRA in message
    assert "1 wrongly shaped" in message and WRONG in message
    assert "(79, 48)" in message and "(80, 48)" in message
    assert "strict=False" in message


def test_nothing_is_assigned_before_the_check(broken_dir, hf_reference):
    from keras_vit import ViTClassifier

    model = ViTClassifier(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=3,
        hidden_dim=48,
        mlp_dim=80,
        num_classes=7,
    )
    before = _weights(model)
    reader = SafetensorsReader(broken_dir / "model.safetensors")
    with pytest.raises(CheckpointMismatchError):
        load_weights(model, reader, pt_rows(2, "vit."))
    after = _weights(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_non_strict_loads_what_matches(broken_dir, hf_reference):
    with pytest.warns(UserWarning, match=MISSING):
        model = load_pretrained(broken_dir, strict=False)
    good = load_pretrained(hf_reference / NAME / "pt")
    theirs, ours = _weights(good), _weights(model)
    assert np.array_equal(
        theirs["encoder_block_1/norm_2/gamma"], ours["encoder_block_1/norm_2/gamma"]
    )
    assert not np.array_equal(
        theirs["encoder_block_0/mlp_dense_1/kernel"], ours["encoder_block_0/mlp_dense_1/kernel"]
    )


def test_wrong_head_size_suggests_num_classes(hf_reference, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(hf_reference / NAME / "tf_h5", folder)
    config = (folder / "config.json").read_text()
    # A config claiming 3 labels for a 7-class head.
    import json

    data = json.loads(config)
    data["id2label"] = {"0": "a", "1": "b", "2": "c"}
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointMismatchError, match="classifier/kernel:0") as info:
        load_pretrained(folder)
    assert "num_classes= or labels=" in str(info.value)


@pytest.mark.parametrize("folder", ["pt", "tf_h5"])
def test_new_num_classes_reinitialises_only_the_head(hf_reference, folder):
    path = hf_reference / NAME / folder
    original = _weights(load_pretrained(path))
    model = load_pretrained(path, num_classes=3)
    new = _weights(model)
    assert new["head/kernel"].shape == (48, 3) and new["head/bias"].shape == (3,)
    assert model.labels == ["LABEL_0", "LABEL_1", "LABEL_2"]
    for key, value in original.items():
        if not key.startswith("head/"):
            np.testing.assert_array_equal(new[key], value, err_msg=key)
    images = reference(hf_reference, NAME)["images"]
    assert keras.ops.convert_to_numpy(model(images)).shape == (3, 3)


def test_new_labels_set_classes_and_names(hf_reference):
    model = load_pretrained(hf_reference / NAME / "tf_st", labels=["yes", "no"])
    assert model.labels == ["yes", "no"] and model.num_classes == 2
    with pytest.raises(ValueError, match="num_classes=3 but 2 labels"):
        load_pretrained(hf_reference / NAME / "tf_st", labels=["yes", "no"], num_classes=3)


def test_unknown_override_is_a_clear_type_error(hf_reference):
    with pytest.raises(TypeError, match="hidden_size"):
        load_pretrained(hf_reference / NAME / "pt", hidden_size=3)


def test_fine_tuning_overrides_reach_the_model(hf_reference):
    model = load_pretrained(hf_reference / NAME / "pt", dropout_rate=0.1, drop_path_rate=0.2)
    assert model.dropout_rate == 0.1 and model.drop_path_rate == 0.2
    assert model.get_layer("encoder_block_1").drop_path_rate == pytest.approx(0.2)
