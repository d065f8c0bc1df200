"""Layers: exact get_config round trips, shapes, and the interpolation helper."""

import doctest
import inspect

import keras
import numpy as np
import pytest

import keras_vit.model
import keras_vit.preprocessing
from keras_vit import layers as L
from keras_vit.preprocessing import ViTImagePreprocessor

LAYERS = [
    (L.PatchEmbedding, dict(hidden_dim=12, patch_size=4), (2, 16, 16, 3)),
    (L.ClassToken, dict(), (2, 5, 12)),
    (L.PositionEmbedding, dict(sequence_length=5), (2, 5, 12)),
    (L.DropPath, dict(rate=0.2, seed=3), (2, 5, 12)),
    (
        L.EncoderBlock,
        dict(
            hidden_dim=12,
            num_heads=3,
            mlp_dim=20,
            dropout_rate=0.1,
            attention_dropout_rate=0.2,
            drop_path_rate=0.3,
            layer_norm_epsilon=1e-6,
        ),
        (2, 5, 12),
    ),
    (L.ClassTokenPooling, dict(), (2, 5, 12)),
    (
        ViTImagePreprocessor,
        dict(
            image_size=(8, 6),
            image_mean=(0.1, 0.2, 0.3),
            image_std=(0.4, 0.5, 0.6),
            rescale_factor=0.5,
            interpolation="bilinear",
            antialias=False,
        ),
        (2, 16, 16, 3),
    ),
]


@pytest.mark.parametrize("cls, args, shape", LAYERS, ids=[c.__name__ for c, _, _ in LAYERS])
def test_get_config_returns_the_constructor_arguments(cls, args, shape):
    layer = cls(**args, name="x")
    out = layer(np.random.default_rng(0).normal(size=shape).astype("float32"))
    assert tuple(out.shape) == tuple(layer.compute_output_shape(shape))
    config = layer.get_config()
    own = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    # Keras's own Layer arguments (name, dtype, trainable...) are Keras's to serialise.
    base = set(inspect.signature(keras.layers.Layer.__init__).parameters)
    for key in own & base:
        assert key in config, key
    for key in own - base:
        default = inspect.signature(cls.__init__).parameters[key].default
        assert key in args or default is not inspect.Parameter.empty, key
        expected = args[key] if key in args else default  # an argument left out: its default
        assert key in config
        assert config[key] == (tuple(expected) if isinstance(expected, list) else expected), key
    clone = cls.from_config(config)
    assert clone.get_config() == config


def test_preprocessor_matches_the_affine_formula():
    layer = ViTImagePreprocessor(
        image_size=(4, 4), image_mean=(0.485, 0.456, 0.406), image_std=(0.229, 0.224, 0.225)
    )
    pixels = np.random.default_rng(0).integers(0, 256, (1, 4, 4, 3)).astype("float32")
    expected = (pixels / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(layer(pixels), expected, atol=1e-5)


def test_preprocessor_refuses_bad_arguments():
    with pytest.raises(ValueError, match="zeros"):
        ViTImagePreprocessor(image_std=(0.5, 0.0, 0.5))
    with pytest.raises(ValueError, match="one value per RGB channel"):
        ViTImagePreprocessor(image_mean=(0.5, 0.5))


def test_interpolation_keeps_the_class_token_and_resizes_the_grid():
    rng = np.random.default_rng(0)
    posemb = rng.normal(size=(1, 1 + 4 * 4, 6)).astype("float32")
    resized = L.interpolate_position_embedding(posemb, (6, 6))
    assert resized.shape == (1, 37, 6)
    np.testing.assert_array_equal(resized[:, 0], posemb[:, 0])
    assert L.interpolate_position_embedding(posemb, (4, 4)) is not None
    np.testing.assert_array_equal(L.interpolate_position_embedding(posemb, (4, 4)), posemb)
    # A constant grid stays constant under bicubic resizing.
    constant = np.concatenate([posemb[:, :1], np.ones((1, 16, 6), "float32")], axis=1)
    np.testing.assert_allclose(
        L.interpolate_position_embedding(constant, (3, 5))[:, 1:], 1.0, atol=1e-5
    )
    with pytest.raises(ValueError, match="not square"):
        L.interpolate_position_embedding(posemb[:, :-1], (3, 3))


@pytest.mark.parametrize("module", [keras_vit.model, keras_vit.preprocessing])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
