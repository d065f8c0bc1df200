"""Source kinds other than HF files: our .keras models, weight-file paths, and bad input."""

from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pytest

from keras_vit import ViTClassifier, load_pretrained
from keras_vit.convert import CheckpointError
from tests.convert.hf_reference import reference
from tests.convert.parity import TOLERANCE

NAME = "h48_p8_s32"


@pytest.fixture(scope="module")
def fine_tuned(hf_reference, tmp_path_factory):
    """A loaded checkpoint saved the way our trainer does: DIR/model.keras + labels.txt."""
    model = load_pretrained(hf_reference / NAME / "pt", labels=list("abcde"))
    folder = tmp_path_factory.mktemp("run")
    model.save(folder / "model.keras")
    (folder / "labels.txt").write_text("\n".join(model.labels) + "\n")
    return model, folder


def _logits(model, images):
    return keras.ops.convert_to_numpy(model(images))


def test_keras_file_and_model_directory_round_trip(fine_tuned, hf_reference):
    model, folder = fine_tuned
    images = reference(hf_reference, NAME)["images"]
    for source in (folder / "model.keras", folder, str(folder)):
        loaded = load_pretrained(source)
        assert isinstance(loaded, ViTClassifier)
        assert loaded.labels == list("abcde")
        np.testing.assert_array_equal(_logits(loaded, images), _logits(model, images))


def test_keras_model_with_options_keeps_the_backbone(fine_tuned, hf_reference):
    model, folder = fine_tuned
    resized = load_pretrained(folder, num_classes=2, image_size=48)
    assert resized.labels == ["LABEL_0", "LABEL_1"] and resized.image_size == (48, 48)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(resized.get_layer("encoder_norm").gamma),
        keras.ops.convert_to_numpy(model.get_layer("encoder_norm").gamma),
    )
    assert resized.get_layer("position_embedding").position_embedding.shape == (1, 37, 48)


def test_weights_file_path_inside_hf_directory(hf_reference):
    images = reference(hf_reference, NAME)["images"]
    for file in ("pt/model.safetensors", "tf_h5/tf_model.h5", "pt/config.json"):
        model = load_pretrained(hf_reference / NAME / file)
        assert (
            np.abs(_logits(model, images) - reference(hf_reference, NAME)["logits_tf"]).max()
            <= TOLERANCE
        )


def test_mixed_precision_dtype_option(hf_reference):
    model = load_pretrained(hf_reference / NAME / "pt", dtype="mixed_bfloat16")
    assert model.get_layer("encoder_block_0").dtype_policy.name == "mixed_bfloat16"
    assert model.get_config()["dtype"]["config"]["name"] == "mixed_bfloat16"
    assert model.get_layer("encoder_block_0").attention.query_dense.kernel.dtype == "float32"
    images = reference(hf_reference, NAME)["images"]
    logits = _logits(model, images).astype("float32")
    # bfloat16 keeps ~3 significant digits: close to, not equal to, the fp32 reference.
    assert np.abs(logits - reference(hf_reference, NAME)["logits_tf"]).max() < 0.1


def test_missing_path_that_is_no_hub_id():
    with pytest.raises(CheckpointError, match="not an existing file or directory") as info:
        load_pretrained("no/such/checkpoint/dir")
    assert "hub id" in str(info.value)


def test_directory_without_checkpoint_lists_its_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="neither model.keras .* nor config.json") as info:
        load_pretrained(tmp_path)
    assert "notes.txt" in str(info.value)


def test_pytorch_bin_only_directory_explains_the_conversion(hf_reference, tmp_path):
    shutil.copy(hf_reference / NAME / "pt" / "config.json", tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x02pickle")
    with pytest.raises(CheckpointError, match="pytorch_model.bin cannot be read") as info:
        load_pretrained(tmp_path)
    assert "safe_serialization=True" in str(info.value)


@pytest.mark.parametrize(
    "file, content, message",
    [
        ("model.safetensors", b"\xff" * 64, "not a readable safetensors file"),
        ("model.safetensors", b"\x02\x00\x00\x00\x00\x00\x00\x00{}", "no ViT class token"),
        ("tf_model.h5", b"garbage, not HDF5", "not a readable HDF5 file"),
        ("config.json", b"{not json", "config.json is not a readable JSON file"),
    ],
)
def test_garbage_files_get_a_clear_error(hf_reference, tmp_path, file, content, message):
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copy(hf_reference / NAME / "pt" / name, tmp_path / name)
    (tmp_path / file).write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_pretrained(tmp_path)


def test_garbage_keras_file(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(CheckpointError, match="as a Keras model"):
        load_pretrained(tmp_path / "model.keras")


def test_unknown_file_type(tmp_path):
    (tmp_path / "weights.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unsupported file type"):
        load_pretrained(tmp_path / "weights.pt")


def test_unsupported_config_is_refused_before_reading_weights(hf_reference, tmp_path):
    shutil.copytree(hf_reference / NAME / "pt", tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config["hidden_act"] = "gelu_pytorch_tanh"
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="hidden_act 'gelu_pytorch_tanh'"):
        load_pretrained(tmp_path / "ckpt")


def test_bfloat16_sharded_safetensors(hf_reference):
    """transformers' bfloat16 save with an index file and several shards."""
    import ml_dtypes

    folder = hf_reference / NAME / "pt_bf16_shards"
    assert (folder / "model.safetensors.index.json").is_file()
    assert len(list(folder.glob("model-*.safetensors"))) > 1
    model = load_pretrained(folder)
    full = load_pretrained(hf_reference / NAME / "pt")
    for a, b in zip(full.weights, model.weights, strict=True):
        rounded = keras.ops.convert_to_numpy(a).astype(ml_dtypes.bfloat16).astype("float32")
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(b), rounded, err_msg=a.path)
