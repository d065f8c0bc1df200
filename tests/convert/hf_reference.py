"""Writes tiny ViT checkpoints and reference outputs with transformers (test-only).

Run as a script, in its own process, by the ``hf_reference`` fixture::

    python tests/convert/hf_reference.py OUT_DIR SPECS.json [PRESETS.json]

transformers' TF classes need ``tf-keras`` and set ``TF_USE_LEGACY_KERAS=1``
for the whole process, which would turn ``tf.keras`` into Keras 2 for every
later test; a subprocess keeps that (and torch) out of the pytest process.

For each spec it writes, with the *same* weights:

* ``OUT/<name>/pt``    — ``ViTForImageClassification.save_pretrained`` (PyTorch-named
  ``model.safetensors``; random weights, every tensor perturbed so that a
  swapped gamma/beta or a missing transpose cannot go unnoticed);
* ``OUT/<name>/tf_h5`` — ``TFViTForImageClassification.from_pretrained(pt, from_pt=True)``
  then ``save_pretrained`` (legacy ``tf_model.h5``);
* ``OUT/<name>/tf_st`` — the same TF model with ``safe_serialization=True``
  (TF-named ``model.safetensors``);
* ``OUT/<name>/ref.npz`` — inputs and logits of both reference models;
* ``OUT/<name>/pt_bf16_shards`` (spec ``bf16_shards``) — the same model in
  bfloat16, sharded (``model.safetensors.index.json``).

Extras per spec: ``interpolate`` (logits at another resolution with
``interpolate_pos_encoding=True``), ``npz`` (a vit_jax-layout ``.npz`` written
from the PyTorch state dict with the documented mapping), ``backbone`` (a
``ViTModel`` with pooler instead of a classifier), ``photos`` (``ViTImageProcessor``
outputs and logits for skimage photos). With ``PRESETS.json`` it also writes
``OUT/preset_param_counts.json``: transformers' parameter count of every preset.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

# Tiny configurations that exercise what a power-of-two B/16 would hide: 3 and
# 4 heads, hidden sizes 48/60/72, head_dim 15/16/24, patch 4 and 8, 2-4 layers,
# 32/40/48-pixel images, 5/7/13 classes, two normalisations and two epsilons.
SPECS = [
    dict(
        name="h48_p8_s32",
        seed=1,
        config=dict(
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=3,
            intermediate_size=80,
            image_size=32,
            patch_size=8,
            num_labels=7,
        ),
        interpolate=48,
        bf16_shards=True,
    ),
    dict(
        name="h72_p4_s40",
        seed=2,
        config=dict(
            hidden_size=72,
            num_hidden_layers=3,
            num_attention_heads=3,
            intermediate_size=144,
            image_size=40,
            patch_size=4,
            num_labels=13,
        ),
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        photos=True,
    ),
    dict(
        name="h60_p8_s48",
        seed=3,
        config=dict(
            hidden_size=60,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=120,
            image_size=48,
            patch_size=8,
            layer_norm_eps=1e-6,
            id2label={0: "cat", 1: "dog", 2: "bird", 3: "fish", 4: "frog"},
        ),
        npz=True,
    ),
    dict(
        name="backbone_h48",
        seed=4,
        config=dict(
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=3,
            intermediate_size=96,
            image_size=32,
            patch_size=8,
        ),
        backbone=True,
    ),
]
CLASSIFIERS = [s["name"] for s in SPECS if not s.get("backbone")]
HF_FOLDERS = ("pt", "tf_h5", "tf_st")  # PyTorch-named safetensors, TF HDF5, TF-named safetensors


def reference(root: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(root / name / "ref.npz") as data:
        return dict(data)


def spec(name: str) -> dict:
    return next(s for s in SPECS if s["name"] == name)


def _perturb(model, seed):
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            noise = torch.randn(tensor.shape, generator=generator) * 0.1
            base = 1.0 if ("layernorm" in name and name.endswith("weight")) else 0.0
            tensor.copy_(noise + base)


def _pixel_values(images_nhwc, mean, std):
    """[0, 255] NHWC -> transformers' normalised NCHW pixel_values (float32)."""
    x = images_nhwc.astype(np.float64) / 255.0
    x = (x - np.asarray(mean)) / np.asarray(std)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).astype(np.float32)


def _vit_jax_npz(state, num_layers, num_heads, path):
    """The documented vit_jax layout, written from a PyTorch ViT state dict."""
    d = state["vit.embeddings.cls_token"].shape[-1]
    hd = d // num_heads
    out = {
        "cls": state["vit.embeddings.cls_token"],
        # (O, I, H, W) -> (H, W, I, O)
        "embedding/kernel": state["vit.embeddings.patch_embeddings.projection.weight"].transpose(
            2, 3, 1, 0
        ),
        "embedding/bias": state["vit.embeddings.patch_embeddings.projection.bias"],
        "Transformer/posembed_input/pos_embedding": state["vit.embeddings.position_embeddings"],
        "Transformer/encoder_norm/scale": state["vit.layernorm.weight"],
        "Transformer/encoder_norm/bias": state["vit.layernorm.bias"],
        "head/kernel": state["classifier.weight"].T,
        "head/bias": state["classifier.bias"],
    }
    for i in range(num_layers):
        p, b = f"vit.encoder.layer.{i}.", f"Transformer/encoderblock_{i}/"
        out[b + "LayerNorm_0/scale"] = state[p + "layernorm_before.weight"]
        out[b + "LayerNorm_0/bias"] = state[p + "layernorm_before.bias"]
        out[b + "LayerNorm_2/scale"] = state[p + "layernorm_after.weight"]
        out[b + "LayerNorm_2/bias"] = state[p + "layernorm_after.bias"]
        for name in ("query", "key", "value"):
            w = state[f"{p}attention.attention.{name}.weight"]  # (out, in)
            out[f"{b}MultiHeadDotProductAttention_1/{name}/kernel"] = w.T.reshape(d, num_heads, hd)
            out[f"{b}MultiHeadDotProductAttention_1/{name}/bias"] = state[
                f"{p}attention.attention.{name}.bias"
            ].reshape(num_heads, hd)
        w = state[p + "attention.output.dense.weight"]  # (out=D, in=heads*hd)
        out[b + "MultiHeadDotProductAttention_1/out/kernel"] = w.T.reshape(num_heads, hd, d)
        out[b + "MultiHeadDotProductAttention_1/out/bias"] = state[
            p + "attention.output.dense.bias"
        ]
        out[b + "MlpBlock_3/Dense_0/kernel"] = state[p + "intermediate.dense.weight"].T
        out[b + "MlpBlock_3/Dense_0/bias"] = state[p + "intermediate.dense.bias"]
        out[b + "MlpBlock_3/Dense_1/kernel"] = state[p + "output.dense.weight"].T
        out[b + "MlpBlock_3/Dense_1/bias"] = state[p + "output.dense.bias"]
    np.savez(path, **out)


def _photos():
    import skimage.data

    return {name: getattr(skimage.data, name)() for name in ("astronaut", "chelsea", "coffee")}


def build(out: Path, spec: dict) -> None:
    import torch
    from transformers import (
        TFViTForImageClassification,
        TFViTModel,
        ViTConfig,
        ViTForImageClassification,
        ViTImageProcessor,
        ViTModel,
    )

    name, size = spec["name"], spec["config"]["image_size"]
    mean, std = spec.get("image_mean", [0.5] * 3), spec.get("image_std", [0.5] * 3)
    root = out / name
    config = ViTConfig(**spec["config"])
    processor = ViTImageProcessor(
        size={"height": size, "width": size}, image_mean=mean, image_std=std
    )
    rng = np.random.default_rng(spec["seed"])
    images = rng.integers(0, 256, size=(3, size, size, 3)).astype(np.float32)
    pixels = _pixel_values(images, mean, std)
    ref = {"images": images}

    if spec.get("backbone"):
        pt = ViTModel(config).eval()
        _perturb(pt, spec["seed"])
        pt.save_pretrained(root / "pt")
        tf = TFViTModel.from_pretrained(root / "pt", from_pt=True)
        tf.save_pretrained(root / "tf_h5")
        tf.save_pretrained(root / "tf_st", safe_serialization=True)
        with torch.no_grad():
            result = pt(torch.from_numpy(pixels))
        ref["cls_pt"] = result.last_hidden_state[:, 0].numpy()
        ref["pooler_pt"] = result.pooler_output.numpy()
        tf_result = tf(pixel_values=pixels)
        ref["cls_tf"] = tf_result.last_hidden_state[:, 0].numpy()
        ref["pooler_tf"] = tf_result.pooler_output.numpy()
    else:
        pt = ViTForImageClassification(config).eval()
        _perturb(pt, spec["seed"])
        pt.save_pretrained(root / "pt")
        tf = TFViTForImageClassification.from_pretrained(root / "pt", from_pt=True)
        tf.save_pretrained(root / "tf_h5")
        tf.save_pretrained(root / "tf_st", safe_serialization=True)
        with torch.no_grad():
            ref["logits_pt"] = pt(torch.from_numpy(pixels)).logits.numpy()
        ref["logits_tf"] = tf(pixel_values=pixels).logits.numpy()
        if spec.get("interpolate"):
            new = spec["interpolate"]
            big = rng.integers(0, 256, size=(2, new, new, 3)).astype(np.float32)
            big_pixels = _pixel_values(big, mean, std)
            ref["interp_images"] = big
            with torch.no_grad():
                ref["interp_logits_pt"] = pt(
                    torch.from_numpy(big_pixels), interpolate_pos_encoding=True
                ).logits.numpy()
            ref["interp_logits_tf"] = tf(
                pixel_values=big_pixels, interpolate_pos_encoding=True
            ).logits.numpy()
        if spec.get("npz"):
            state = {k: v.numpy() for k, v in pt.state_dict().items()}
            _vit_jax_npz(
                state, config.num_hidden_layers, config.num_attention_heads, root / "vit_jax.npz"
            )
        if spec.get("photos"):
            for photo_name, photo in _photos().items():
                for res in (size, 224):
                    proc = ViTImageProcessor(
                        size={"height": res, "width": res}, image_mean=mean, image_std=std
                    )
                    values = proc(images=photo, return_tensors="np")["pixel_values"]
                    ref[f"photo_{photo_name}_{res}"] = values.astype(np.float32)
                    if res == size:
                        with torch.no_grad():
                            ref[f"photo_{photo_name}_logits_pt"] = pt(
                                torch.from_numpy(values.astype(np.float32))
                            ).logits.numpy()
    for folder in ("pt", "tf_h5", "tf_st"):
        processor.save_pretrained(root / folder)
    if spec.get("bf16_shards"):
        # Last: converts the model in place. Small shards force an index file.
        pt.to(torch.bfloat16).save_pretrained(root / "pt_bf16_shards", max_shard_size="20KB")
    np.savez(root / "ref.npz", **ref)


def count_presets(presets: dict, path: Path) -> None:
    """transformers' ViTForImageClassification parameter counts (1000 classes), on the meta
    device so that nothing is allocated."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    counts = {}
    for name, c in presets.items():
        config = ViTConfig(
            hidden_size=c["hidden_dim"],
            num_hidden_layers=c["num_layers"],
            num_attention_heads=c["num_heads"],
            intermediate_size=c["mlp_dim"],
            image_size=c["image_size"],
            patch_size=c["patch_size"],
            num_labels=1000,
        )
        with torch.device("meta"):
            model = ViTForImageClassification(config)
        counts[name] = sum(p.numel() for p in model.parameters())
    path.write_text(json.dumps(counts, indent=1))


def main(argv: list[str]) -> int:
    out, specs = Path(argv[1]), json.loads(Path(argv[2]).read_text())
    if len(argv) > 3:
        count_presets(json.loads(Path(argv[3]).read_text()), out / "preset_param_counts.json")
    for spec in specs:
        if (out / spec["name"]).exists():
            shutil.rmtree(out / spec["name"])
        build(out, spec)
    (out / "done").write_text("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
