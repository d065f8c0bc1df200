"""Google JAX ``.npz``: round trip through ``save_npz``, the documented key layout, variants."""

from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_vit import ViTClassifier, load_pretrained
from keras_vit.convert import CheckpointError, CheckpointMismatchError, save_npz

DOC = Path(__file__).resolve().parents[2] / "docs" / "checkpoints.md"
TINY = dict(
    image_size=32,
    patch_size=8,
    num_layers=2,
    num_heads=3,
    hidden_dim=48,
    mlp_dim=72,
    num_classes=7,
    layer_norm_epsilon=1e-6,
)


def _randomised(model, seed=0):
    """Every variable random (zeros and ones would hide swapped or missing tensors)."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        v.assign(rng.normal(0, 0.1, v.shape).astype("float32") + (1 if "gamma" in v.path else 0))
    return model


def _images(size, n=2, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype("float32")


def _logits(model, images):
    return keras.ops.convert_to_numpy(model(images))


@pytest.mark.parametrize("representation_size", [None, 40])
def test_round_trip_gives_identical_logits(tmp_path, representation_size):
    model = _randomised(ViTClassifier(**TINY, representation_size=representation_size))
    save_npz(model, tmp_path / "vit.npz")
    loaded = load_pretrained(tmp_path / "vit.npz")
    config = {k: v for k, v in loaded.get_config().items() if k in TINY}
    assert config == {**TINY, "image_size": (32, 32)}
    assert loaded.representation_size == representation_size
    assert loaded.labels == [f"LABEL_{i}" for i in range(7)]
    assert loaded.image_mean == loaded.image_std == (0.5, 0.5, 0.5)
    np.testing.assert_array_equal(_logits(loaded, _images(32)), _logits(model, _images(32)))


def _doc_layout(num_layers, with_pre_logits, **dims):
    """(key -> shape) from the table between the npz-layout markers of docs/checkpoints.md."""
    text = DOC.read_text()
    table = text.split("<!-- npz-layout:begin -->")[1].split("<!-- npz-layout:end -->")[0]
    layout = {}
    for key, shape, _, note in re.findall(
        r"^\| `([^`]+)` \| `([^`]+)` \| `([^`]+)` \|([^|]*)\|$", table, re.M
    ):
        if "pre-logits models only" in note and not with_pre_logits:
            continue
        value = eval(shape.replace("/", "//"), {}, dims)  # e.g. "(D, H, D/H)"
        for i in range(num_layers) if "{i}" in key else [None]:
            layout[key.replace("{i}", str(i))] = tuple(value)
    return layout


@pytest.mark.parametrize("representation_size", [None, 40])
def test_saved_keys_and_shapes_are_the_documented_layout(tmp_path, representation_size):
    model = ViTClassifier(**TINY, representation_size=representation_size)
    save_npz(model, tmp_path / "vit.npz")
    with np.load(tmp_path / "vit.npz") as data:
        saved = {key: data[key].shape for key in data.files}
    d, h, m, p, c = 48, 3, 72, 8, 7
    documented = _doc_layout(
        2,
        bool(representation_size),
        D=d,
        H=h,
        M=m,
        P=p,
        N=(32 // p) ** 2,
        C=c,
        R=representation_size or d,
    )
    assert saved == documented
    # The vit_jax B/16 names quoted by timm's loader are among them.
    assert "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/out/kernel" in saved
    assert "Transformer/encoderblock_0/MlpBlock_3/Dense_1/bias" in saved


def test_the_table_has_every_b16_tensor():
    layout = _doc_layout(12, False, D=768, H=12, M=3072, P=16, N=196, C=1000, R=768)
    assert sum(int(np.prod(s)) for s in layout.values()) == 86_567_656


def test_old_opt_target_prefix_and_image_size_option(tmp_path):
    model = _randomised(ViTClassifier(**TINY))
    save_npz(model, tmp_path / "vit.npz")
    with np.load(tmp_path / "vit.npz") as data:
        np.savez(tmp_path / "old.npz", **{f"opt/target/{k}": data[k] for k in data.files})
    np.testing.assert_array_equal(
        _logits(load_pretrained(tmp_path / "old.npz"), _images(32)), _logits(model, _images(32))
    )
    bigger = load_pretrained(tmp_path / "old.npz", image_size=48)
    assert bigger.get_layer("position_embedding").position_embedding.shape == (1, 37, 48)


def test_big_vision_layout_scanned_with_params_prefix(tmp_path):
    """big_vision: other module indices, posemb without class slot, a scanned encoder."""
    model = _randomised(ViTClassifier(**TINY))
    posemb = model.get_layer("position_embedding").position_embedding
    values = keras.ops.convert_to_numpy(posemb)
    values[:, 0] = 0  # big_vision's class token gets no position embedding
    posemb.assign(values)
    w = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    names = {
        "LayerNorm_0/scale": "norm_1/gamma",
        "LayerNorm_0/bias": "norm_1/beta",
        "LayerNorm_1/scale": "norm_2/gamma",
        "LayerNorm_1/bias": "norm_2/beta",
        "MlpBlock_0/Dense_0/kernel": "mlp_dense_1/kernel",
        "MlpBlock_0/Dense_0/bias": "mlp_dense_1/bias",
        "MlpBlock_0/Dense_1/kernel": "mlp_dense_2/kernel",
        "MlpBlock_0/Dense_1/bias": "mlp_dense_2/bias",
        "MultiHeadDotProductAttention_0/out/kernel": "attention/attention_output/kernel",
        "MultiHeadDotProductAttention_0/out/bias": "attention/attention_output/bias",
    }
    for n in ("query", "key", "value"):
        for t in ("kernel", "bias"):
            names[f"MultiHeadDotProductAttention_0/{n}/{t}"] = f"attention/{n}/{t}"
    arrays = {
        "params/cls": w["class_token/class_token"],
        "params/embedding/kernel": w["patch_embedding/projection/kernel"],
        "params/embedding/bias": w["patch_embedding/projection/bias"],
        "params/pos_embedding": values[:, 1:],  # (1, N, D): no class slot
        "params/Transformer/encoder_norm/scale": w["encoder_norm/gamma"],
        "params/Transformer/encoder_norm/bias": w["encoder_norm/beta"],
        "params/head/kernel": w["head/kernel"],
        "params/head/bias": w["head/bias"],
    }
    for theirs, ours in names.items():
        # Scanned: one array with a leading depth axis for all blocks.
        arrays[f"params/Transformer/encoderblock/{theirs}"] = np.stack(
            [w[f"encoder_block_{i}/{ours}"] for i in range(2)]
        )
    np.savez(tmp_path / "bv.npz", **arrays)
    loaded = load_pretrained(tmp_path / "bv.npz")
    assert loaded.num_layers == 2 and loaded.image_size == (32, 32)
    np.testing.assert_allclose(
        _logits(loaded, _images(32)), _logits(model, _images(32)), atol=1e-6, rtol=0
    )


def test_preset_option_checks_the_architecture(tmp_path):
    model = ViTClassifier.from_preset(
        "Ti/16", load_weights=False, num_classes=10, layer_norm_epsilon=1e-6
    )
    save_npz(model, tmp_path / "ti16.npz")
    loaded = load_pretrained(tmp_path / "ti16.npz", preset="Ti/16")
    assert loaded.count_params() == model.count_params()
    with pytest.raises(CheckpointMismatchError, match="wrongly shaped"):
        load_pretrained(tmp_path / "ti16.npz", preset="S/16")


def test_dropping_pre_logits_on_request(tmp_path):
    model = _randomised(ViTClassifier(**TINY, representation_size=40))
    save_npz(model, tmp_path / "vit.npz")
    loaded = load_pretrained(tmp_path / "vit.npz", representation_size=None, num_classes=3)
    assert loaded.representation_size is None and "pre_logits" not in [
        layer.name for layer in loaded.layers
    ]


def test_unsupported_npz_layouts_are_named(tmp_path):
    model = ViTClassifier(**TINY)
    save_npz(model, tmp_path / "vit.npz")
    with np.load(tmp_path / "vit.npz") as data:
        arrays = {k: data[k] for k in data.files if k != "cls"}
    np.savez(tmp_path / "gap.npz", **arrays)
    with pytest.raises(CheckpointError, match="no 'cls' token"):
        load_pretrained(tmp_path / "gap.npz")
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a ViT .npz"):
        load_pretrained(tmp_path / "other.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="garbage.npz is not a readable .npz"):
        load_pretrained(tmp_path / "garbage.npz")
