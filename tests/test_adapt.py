"""The one adapt path (new head, labels, resolution, dtype) and the model's own dtype policy."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_vit import ViTClassifier
from keras_vit.loading import adapt_model, load_pretrained


def _weights(model) -> dict[str, np.ndarray]:
    return {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}


def _model(tiny_config, **kwargs) -> ViTClassifier:
    config = dict(tiny_config, num_classes=3, labels=["a", "b", "c"], **kwargs)
    model = ViTClassifier(**config)
    for variable in model.weights:  # non-zero everywhere, so a zeroed head shows
        variable.assign(np.random.default_rng(0).normal(size=variable.shape).astype("float32"))
    return model


def test_same_labels_keep_the_model_and_other_labels_get_a_zero_head(tiny_config):
    model = _model(tiny_config)
    assert adapt_model(model, ["a", "b", "c"]) is model
    before = _weights(model)
    for adapted in (adapt_model(model, ["b", "a", "c"]), adapt_model(model, ["x", "y"])):
        after = _weights(adapted)
        assert adapted.labels != model.labels
        for path, value in before.items():
            if path.startswith("head/"):
                assert not after[path].any() and after[path].shape[-1] == adapted.num_classes
            else:
                np.testing.assert_array_equal(after[path], value, err_msg=path)
    rebuilt = adapt_model(model, rebuild=True)
    assert rebuilt is not model
    for path, value in _weights(rebuilt).items():
        np.testing.assert_array_equal(value, before[path], err_msg=path)


def test_reloading_with_the_checkpoints_labels_keeps_its_head(tiny_config, tmp_path):
    model = _model(tiny_config)
    model.save(tmp_path / "m.keras")
    same = load_pretrained(tmp_path / "m.keras", labels=["a", "b", "c"])
    np.testing.assert_array_equal(_weights(same)["head/kernel"], _weights(model)["head/kernel"])
    other = load_pretrained(tmp_path / "m.keras", labels=["a", "b", "z"])
    assert not _weights(other)["head/kernel"].any()
    # num_classes= asks for a new head even when the count is the same.
    assert not _weights(load_pretrained(tmp_path / "m.keras", num_classes=3))["head/bias"].any()


def test_adapting_something_else_is_a_type_error():
    with pytest.raises(TypeError, match="ViTClassifier"):
        adapt_model(keras.Sequential([keras.layers.Dense(2)]))


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_a_mixed_policy_survives_save_and_load_with_and_without_options(
    policy, tiny_config, tmp_path
):
    model = _model(tiny_config, dtype=policy)
    assert model.dtype_policy.name == policy
    assert keras.dtype_policies.get(model.get_config()["dtype"]).name == policy
    path = tmp_path / "mixed.keras"
    model.save(path)
    compute = policy.split("_")[1]
    reloaded = [
        keras.saving.load_model(path),
        load_pretrained(path),
        load_pretrained(path, num_classes=4),
        load_pretrained(path, labels=["x", "y"]),
        load_pretrained(path, image_size=40),
        adapt_model(model, ["x", "y"]),
    ]
    for again in reloaded:
        assert again.dtype_policy.name == policy
        assert again.get_layer("encoder_block_1").compute_dtype == compute
        assert {w.dtype for w in again.weights} == {"float32"}
    # Asking for another policy changes it, on the model and on its layers.
    other = load_pretrained(path, dtype="float32")
    assert other.dtype_policy.name == "float32"
    assert other.get_layer("encoder_block_0").compute_dtype == "float32"


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_preprocessing_computes_in_float32_under_any_policy(policy, tiny_config):
    mixed = _model(tiny_config, dtype=policy)
    plain = _model(tiny_config)
    layer = mixed.get_layer("preprocessing")
    assert layer.compute_dtype == "float32"
    images = np.random.default_rng(1).uniform(0, 255, (2, 45, 37, 3)).astype("float32")
    pixels = keras.ops.convert_to_numpy(layer(images))
    assert pixels.dtype == np.float32
    np.testing.assert_array_equal(
        pixels, keras.ops.convert_to_numpy(plain.get_layer("preprocessing")(images))
    )
    assert mixed(images).dtype == "float32"  # the logits too
