"""Writes a tiny transformers ViT checkpoint with its attentions and their gradients (test-only).

Run in its own process by the ``hf_attentions`` fixture (transformers and
torch stay out of the pytest process)::

    python tests/explain/hf_attentions.py OUT_DIR

Writes ``OUT/pt`` (``ViTForImageClassification.save_pretrained``, perturbed
random weights) and ``OUT/ref.npz``: ``images`` (NHWC, [0, 255]), ``logits``,
``attentions`` (``output_attentions=True``: layers x batch x heads x N x N),
``gradients`` (of each image's top-1 logit with respect to those attentions,
by torch autograd) and ``top1``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from tests.convert.hf_reference import _perturb, _pixel_values

CONFIG = dict(
    hidden_size=48,
    num_hidden_layers=3,
    num_attention_heads=3,
    intermediate_size=80,
    image_size=32,
    patch_size=8,
    num_labels=7,
)


def main(out: Path) -> None:
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(**CONFIG, attn_implementation="eager")
    model = ViTForImageClassification(config).eval()
    _perturb(model, seed=11)
    model.save_pretrained(out / "pt")
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(2, 32, 32, 3)).astype(np.float32)
    pixels = torch.from_numpy(_pixel_values(images, [0.5] * 3, [0.5] * 3))
    result = model(pixel_values=pixels, output_attentions=True)
    for attention in result.attentions:
        attention.retain_grad()
    top1 = result.logits.argmax(dim=-1)
    result.logits.gather(1, top1[:, None]).sum().backward()
    np.savez(
        out / "ref.npz",
        images=images,
        logits=result.logits.detach().numpy(),
        attentions=np.stack([a.detach().numpy() for a in result.attentions]),
        gradients=np.stack([a.grad.numpy() for a in result.attentions]),
        top1=top1.numpy(),
    )
    (out / "done").write_text("ok\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
