"""Parameter counts of every preset: ours, the closed form, transformers and published numbers."""

from __future__ import annotations

import json

import pytest

from keras_vit import ViTClassifier
from keras_vit.presets import PRESETS, VIT_SIZES

# Published counts with a 1000-class head: B/16 is the vision_transformer
# models_test value (also HF's ViTForImageClassification); the others are
# timm's vit_*_patch*_{224,384} model cards.
PUBLISHED = {
    "vit-base-patch16-224": 86_567_656,
    "vit-base-patch16-384": 86_859_496,
    "vit-base-patch32-224": 88_224_232,
    "vit-tiny-patch16-224": 5_717_416,
    "vit-small-patch16-224": 22_050_664,
    "vit-large-patch16-224": 304_326_632,
}


def closed_form(image_size, patch_size, num_layers, num_heads, hidden_dim, mlp_dim, classes=1000):
    d, m, p = hidden_dim, mlp_dim, patch_size
    tokens = (image_size // p) ** 2 + 1
    embedding = p * p * 3 * d + d + d + tokens * d  # conv kernel + bias, class token, positions
    block = 2 * 2 * d + 4 * (d * d + d) + (d * m + m) + (m * d + d)  # 2 LN, q/k/v/out, MLP
    return embedding + num_layers * block + 2 * d + d * classes + classes


@pytest.fixture(scope="module")
def block_params():
    """Parameters of one encoder block per width, measured on real models (2 - 1 layers)."""
    out = {}
    for hidden, _, heads, mlp in VIT_SIZES.values():
        args = dict(image_size=32, patch_size=16, num_heads=heads, hidden_dim=hidden, mlp_dim=mlp)
        out[hidden] = (
            ViTClassifier(num_layers=2, **args).count_params()
            - ViTClassifier(num_layers=1, **args).count_params()
        )
    return out


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_count_matches_closed_form(name, block_params):
    config = PRESETS[name]
    # A one-layer model with the preset's embedding and head, plus the measured blocks:
    # the full 24/32-layer models would take seconds and gigabytes each.
    one_layer = ViTClassifier(**dict(config, num_layers=1)).count_params()
    ours = one_layer + (config["num_layers"] - 1) * block_params[config["hidden_dim"]]
    assert ours == closed_form(**config)
    if name in PUBLISHED:
        assert ours == PUBLISHED[name]


def test_default_model_is_vit_b16_with_86_567_656_parameters():
    model = ViTClassifier()
    assert model.count_params() == 86_567_656
    assert model.count_params() - 768 * 1000 - 1000 == 85_798_656  # keras-hub backbone count


def test_transformers_counts_agree_for_every_preset(hf_reference):
    counts = json.loads((hf_reference / "preset_param_counts.json").read_text())
    assert set(counts) == set(PRESETS)
    for name, config in PRESETS.items():
        assert counts[name] == closed_form(**config), name


def test_presets_parameter_count_is_the_closed_form():
    from keras_vit.presets import parameter_count

    for name, config in PRESETS.items():
        assert parameter_count(name) == closed_form(**config), name
        assert parameter_count(name, num_classes=10) == closed_form(**config, classes=10), name
    for name, count in PUBLISHED.items():
        assert parameter_count(name) == count, name
