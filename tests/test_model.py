"""ViTClassifier: configuration, naming, serialisation and input handling."""

import inspect

import keras
import numpy as np
import pytest

from keras_vit import ViTClassifier
from keras_vit.presets import ALIASES, PRESETS, get_preset


def test_get_config_is_exactly_the_constructor_arguments(tiny_config):
    model = ViTClassifier(**tiny_config, labels=list("abcdefg"))
    config = model.get_config()
    params = set(inspect.signature(ViTClassifier.__init__).parameters) - {"self", "kwargs"}
    assert set(config) == params | {"name", "trainable"}
    clone = ViTClassifier.from_config(config)
    assert clone.get_config() == config
    assert clone.labels == list("abcdefg")


def test_layers_are_named_after_the_paper(tiny_config):
    model = ViTClassifier(**tiny_config)
    names = [layer.name for layer in model.layers]
    for name in [
        "preprocessing",
        "patch_embedding",
        "class_token",
        "position_embedding",
        "encoder_block_0",
        "encoder_block_1",
        "encoder_norm",
        "pooling",
        "head",
    ]:
        assert name in names
    assert "pre_logits" not in names
    paths = {w.path: tuple(w.shape) for w in model.weights}
    assert paths["encoder_block_1/attention/query/kernel"] == (48, 3, 16)
    assert paths["encoder_block_1/attention/attention_output/kernel"] == (3, 16, 48)
    assert paths["position_embedding/position_embedding"] == (1, 17, 48)
    assert paths["head/kernel"] == (48, 7)


def test_representation_size_adds_tanh_pre_logits(tiny_config):
    model = ViTClassifier(**tiny_config, representation_size=24)
    assert model.get_layer("pre_logits").activation is keras.activations.tanh
    assert tuple(model.get_layer("head").kernel.shape) == (24, 7)


def test_call_accepts_uint8_and_float_of_any_size(tiny_config):
    model = ViTClassifier(**tiny_config)
    rng = np.random.default_rng(0)
    for shape in [(1, 32, 32, 3), (2, 45, 17, 3), (3, 300, 200, 3)]:
        pixels = rng.integers(0, 256, shape).astype("uint8")
        from_uint8 = model(pixels)
        from_float = model(pixels.astype("float32"))
        assert from_uint8.shape == (shape[0], 7)
        np.testing.assert_allclose(from_uint8, from_float, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 32, 32), (2, 32, 32, 4), (32, 32, 3)])
def test_wrong_image_shapes_are_refused_with_a_clear_error(tiny_config, shape):
    model = ViTClassifier(**tiny_config)
    with pytest.raises(ValueError, match="NHWC|shape|dimension|ndim|rank"):
        model(np.zeros(shape, "float32"))


@pytest.mark.parametrize(
    "override, message",
    [
        (dict(image_size=30), "multiple of patch_size"),
        (dict(hidden_dim=50), "divisible by num_heads"),
        (dict(labels=["a", "b"]), "2 labels given for num_classes=7"),
    ],
)
def test_inconsistent_configurations_are_refused(tiny_config, override, message):
    with pytest.raises(ValueError, match=message):
        ViTClassifier(**{**tiny_config, **override})


def test_keras_file_round_trip_keeps_weights_labels_and_preprocessing(tiny_config, tmp_path):
    model = ViTClassifier(
        **tiny_config,
        labels=[f"class {i}" for i in range(7)],
        image_mean=(0.485, 0.456, 0.406),
        image_std=(0.229, 0.224, 0.225),
        drop_path_rate=0.1,
    )
    path = tmp_path / "vit.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, ViTClassifier)
    assert loaded.get_config() == model.get_config()
    assert loaded.labels == model.labels
    pixels = np.random.default_rng(1).integers(0, 256, (2, 50, 40, 3)).astype("uint8")
    np.testing.assert_array_equal(model(pixels), loaded(pixels))


def test_embedding_model_shares_weights_and_returns_the_class_token(tiny_config):
    model = ViTClassifier(**tiny_config)
    pixels = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    embedding = model.embedding_model()(pixels)
    assert embedding.shape == (2, 48)
    head = model.get_layer("head")
    logits = np.asarray(embedding) @ np.asarray(head.kernel) + np.asarray(head.bias)
    np.testing.assert_allclose(logits, model(pixels), atol=1e-5)


def test_dropout_and_stochastic_depth_only_act_in_training(tiny_config):
    model = ViTClassifier(**tiny_config, dropout_rate=0.3, drop_path_rate=0.5)
    pixels = np.random.default_rng(3).integers(0, 256, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(model(pixels), model(pixels))
    assert not np.allclose(model(pixels, training=True), model(pixels, training=True))
    rates = [model.get_layer(f"encoder_block_{i}").drop_path_rate for i in range(2)]
    assert rates == [0.0, 0.5]


def test_mixed_precision_keeps_variables_in_float32(tiny_config):
    model = ViTClassifier(**tiny_config, dtype="mixed_bfloat16")
    out = model(np.zeros((1, 32, 32, 3), "uint8"))
    assert model.get_layer("encoder_block_1").compute_dtype == "bfloat16"
    assert out.dtype == "float32"  # logits in float32 for a stable loss
    assert {w.dtype for w in model.weights} == {"float32"}
    clone = ViTClassifier.from_config(model.get_config())
    assert clone.get_layer("encoder_block_0").dtype_policy.name == "mixed_bfloat16"
    assert clone.get_config() == model.get_config()


def test_default_is_vit_b16_with_the_published_parameter_count():
    # 86,567,656: vision_transformer's models_test and HF ViTForImageClassification.
    assert ViTClassifier.from_preset(load_weights=False).count_params() == 86_567_656
    assert (
        ViTClassifier.from_preset("B/16", load_weights=False, num_classes=1000).count_params()
        == 86_567_656
    )


def test_presets_cover_ti_s_b_l_at_patch_16_and_32_and_two_resolutions():
    for size in ("tiny", "small", "base", "large"):
        for patch in (16, 32):
            for resolution in (224, 384):
                assert f"vit-{size}-patch{patch}-{resolution}" in PRESETS
    assert ALIASES["B/16"] == "vit-base-patch16-224"
    assert get_preset("L/32")["num_layers"] == 24
    with pytest.raises(ValueError, match="Unknown ViT preset 'vit-gigantic'"):
        get_preset("vit-gigantic")
