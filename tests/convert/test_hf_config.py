"""config.json <-> ViTClassifier arguments, checked against transformers' ViTConfig."""

from __future__ import annotations

import pytest

from keras_vit import ViTClassifier
from keras_vit.convert import CheckpointError
from keras_vit.convert.hf_config import hf_config_from_vit, vit_args_from_hf_config

transformers = pytest.importorskip("transformers", reason="ViTConfig is the reference")


def test_defaults_are_vit_b16_like_transformers():
    args = vit_args_from_hf_config(transformers.ViTConfig().to_dict())
    assert args["hidden_dim"] == 768 and args["num_layers"] == 12 and args["num_heads"] == 12
    assert args["mlp_dim"] == 3072 and args["patch_size"] == 16
    assert args["image_size"] == (224, 224) and args["layer_norm_epsilon"] == 1e-12
    model_args = {k: v for k, v in args.items() if k not in ("labels", "num_classes")}
    assert ViTClassifier(num_classes=1000, **model_args).count_params() == 86_567_656


def test_round_trip_through_transformers_vit_config():
    model = ViTClassifier(
        image_size=(40, 40),
        patch_size=4,
        num_layers=3,
        num_heads=3,
        hidden_dim=72,
        mlp_dim=144,
        num_classes=3,
        layer_norm_epsilon=1e-6,
        dropout_rate=0.1,
        labels=["cat", "dog", "emu"],
    )
    hf = transformers.ViTConfig(**hf_config_from_vit(model)).to_dict()
    assert hf["id2label"] == {0: "cat", 1: "dog", 2: "emu"}
    args = vit_args_from_hf_config(hf)
    config = model.get_config()
    for key, value in args.items():
        assert config[key] == (list(value) if key == "labels" else value), key


def test_labels_are_ordered_by_id_not_by_json_order():
    args = vit_args_from_hf_config(
        {
            "id2label": {
                "2": "c",
                "0": "a",
                "10": "k",
                "1": "b",
                **{str(i): f"x{i}" for i in range(3, 10)},
            }
        }
    )
    assert args["labels"][:3] == ["a", "b", "c"] and args["labels"][10] == "k"
    assert args["num_classes"] == 11


@pytest.mark.parametrize(
    "change, message",
    [
        ({"hidden_act": "gelu_new"}, "hidden_act 'gelu_new'"),
        ({"qkv_bias": False}, "qkv_bias is false"),
        ({"model_type": "deit"}, "model_type 'deit'"),
        ({"num_channels": 1}, "num_channels 1"),
        ({"hidden_size": 100, "num_attention_heads": 12}, "not divisible"),
        ({"patch_size": [16, 8]}, "not square"),
        ({"id2label": {"0": "a", "2": "c"}}, "without gaps"),
    ],
)
def test_unsupported_configs_are_named(change, message):
    with pytest.raises(CheckpointError, match=message):
        vit_args_from_hf_config({"model_type": "vit", **change}, source="x/config.json")


def test_several_problems_in_one_error():
    with pytest.raises(CheckpointError) as info:
        vit_args_from_hf_config({"hidden_act": "relu", "qkv_bias": False}, source="c.json")
    assert "c.json" in str(info.value)
    assert "hidden_act" in str(info.value) and "qkv_bias" in str(info.value)


def test_encoder_stride_is_ignored_and_pre_logits_cannot_be_written():
    args = vit_args_from_hf_config({"encoder_stride": 7})
    assert "encoder_stride" not in str(args)
    with pytest.raises(ValueError, match="pre-logits"):
        hf_config_from_vit({"representation_size": 8})
