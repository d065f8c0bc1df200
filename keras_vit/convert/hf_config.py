"""transformers' ViT ``config.json`` <-> ViTClassifier constructor arguments."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from keras_vit.convert.common import CheckpointError

# transformers' ViTConfig defaults, used when a key is absent from config.json.
_HF_DEFAULTS = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "layer_norm_eps": 1e-12,
    "patch_size": 16,
    "num_channels": 3,
    "qkv_bias": True,
}


def read_hf_config(path: str | os.PathLike) -> dict:
    """Reads a ``config.json`` with an error that names the file when it is not JSON."""
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{os.fspath(path)} is not a readable JSON file: {error}") from error
    if not isinstance(config, dict):
        raise CheckpointError(f"{os.fspath(path)} does not hold a JSON object")
    return config


def vit_args_from_hf_config(config: Mapping, source: str = "config.json") -> dict:
    """ViTClassifier arguments for a transformers ViT ``config.json``.

    Returns the architecture (``image_size`` only when the config has one),
    ``layer_norm_epsilon``, dropout rates and, when ``id2label`` is present,
    ``labels`` ordered by id with ``num_classes``. Raises
    :class:`~keras_vit.convert.CheckpointError` for configurations ViTClassifier
    cannot reproduce exactly. ``encoder_stride`` (masked-image modelling only)
    is ignored.
    """
    c = dict(_HF_DEFAULTS)
    c.update(config)
    problems = []
    model_type = config.get("model_type", "vit")
    if model_type != "vit":
        problems.append(f"model_type {model_type!r} is not 'vit'")
    if c["hidden_act"] != "gelu":
        problems.append(
            f"hidden_act {c['hidden_act']!r} is not 'gelu' (ViTClassifier uses exact erf GELU)"
        )
    if c["qkv_bias"] is not True:
        problems.append("qkv_bias is false (ViTClassifier's attention has query/key/value biases)")
    if c["num_channels"] != 3:
        problems.append(f"num_channels {c['num_channels']} is not 3 (RGB)")
    patch = c["patch_size"]
    if isinstance(patch, (list, tuple)):
        if len(patch) != 2 or patch[0] != patch[1]:
            problems.append(f"patch_size {patch!r} is not square")
        patch = patch[0]
    hidden, heads = c["hidden_size"], c["num_attention_heads"]
    if heads <= 0 or hidden % heads:
        problems.append(f"hidden_size {hidden} is not divisible by num_attention_heads {heads}")
    if problems:
        raise CheckpointError(f"{source}: unsupported ViT configuration: " + "; ".join(problems))

    args = dict(
        patch_size=int(patch),
        num_layers=int(c["num_hidden_layers"]),
        num_heads=int(heads),
        hidden_dim=int(hidden),
        mlp_dim=int(c["intermediate_size"]),
        layer_norm_epsilon=float(c["layer_norm_eps"]),
        dropout_rate=float(c["hidden_dropout_prob"]),
        attention_dropout_rate=float(c["attention_probs_dropout_prob"]),
    )
    if "image_size" in config:
        size = config["image_size"]
        args["image_size"] = (
            (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
        )
    if config.get("id2label"):
        args["labels"] = _labels(config["id2label"], source)
        args["num_classes"] = len(args["labels"])
    return args


def _labels(id2label: Mapping, source: str) -> list[str]:
    try:
        by_id = {int(k): str(v) for k, v in id2label.items()}
    except (AttributeError, TypeError, ValueError) as error:
        raise CheckpointError(f"{source}: id2label keys must be integers: {error}") from error
    if sorted(by_id) != list(range(len(by_id))):
        raise CheckpointError(
            f"{source}: id2label ids must be 0..{len(by_id) - 1} without gaps, got {sorted(by_id)}"
        )
    return [by_id[i] for i in range(len(by_id))]


def hf_config_from_vit(model) -> dict:
    """A transformers ``config.json`` dict (``ViTForImageClassification``) for a ViTClassifier.

    ``model`` may be a ViTClassifier or its ``get_config()``. Models with a
    ``representation_size`` (pre-logits layer) have no transformers equivalent.
    """
    config = model if isinstance(model, Mapping) else model.get_config()
    if config.get("representation_size"):
        raise ValueError(
            "transformers' ViTForImageClassification has no pre-logits layer; a model with "
            "representation_size cannot be written as an HF config"
        )
    height, width = (
        (config["image_size"],) * 2
        if isinstance(config["image_size"], int)
        else tuple(config["image_size"])
    )
    labels = list(config.get("labels") or [f"LABEL_{i}" for i in range(config["num_classes"])])
    return {
        "architectures": ["ViTForImageClassification"],
        "model_type": "vit",
        "hidden_size": config["hidden_dim"],
        "num_hidden_layers": config["num_layers"],
        "num_attention_heads": config["num_heads"],
        "intermediate_size": config["mlp_dim"],
        "hidden_act": "gelu",
        "hidden_dropout_prob": config.get("dropout_rate", 0.0),
        "attention_probs_dropout_prob": config.get("attention_dropout_rate", 0.0),
        "layer_norm_eps": config["layer_norm_epsilon"],
        "image_size": height if height == width else [height, width],
        "patch_size": config["patch_size"],
        "num_channels": 3,
        "qkv_bias": True,
        "encoder_stride": config["patch_size"],
        "id2label": {str(i): label for i, label in enumerate(labels)},
        "label2id": {label: i for i, label in enumerate(labels)},
    }
