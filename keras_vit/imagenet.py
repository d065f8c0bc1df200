"""The ImageNet-1k class names, as Google's ViT checkpoints label their 1000 outputs.

They ship as package data, ``keras_vit/data/imagenet-1k-id2label.json``, in
the ``id2label`` layout of a transformers ``config.json`` (the names of
``google/vit-base-patch16-224``: 0 "tench, Tinca tinca", 285 "Egyptian cat",
999 "toilet tissue, toilet paper, bathroom tissue").
"""

from __future__ import annotations

import functools
import json
from importlib import resources

IMAGENET_1K_FILE = "imagenet-1k-id2label.json"


@functools.cache
def _imagenet_1k_labels() -> tuple[str, ...]:
    text = resources.files("keras_vit").joinpath("data", IMAGENET_1K_FILE).read_text("utf-8")
    id2label = json.loads(text)["id2label"]
    return tuple(id2label[str(i)] for i in range(len(id2label)))


def imagenet_1k_labels() -> list[str]:
    """The 1000 ImageNet-1k class names, index ``i`` naming logit ``i``."""
    return list(_imagenet_1k_labels())
