"""The ViT variants, as plain data.

Sizes follow Dosovitskiy et al. (2021), Table 1, and the ViT-Ti/S variants of
Touvron et al. (DeiT) / Steiner et al. (AugReg). A preset name is
``vit-{size}-patch{P}-{resolution}``; the short aliases (``"B/16"``) name the
224-pixel variant. Every preset has a 1000-class ImageNet-1k head; those with
a published checkpoint name it in ``CHECKPOINTS`` (what
``ViTClassifier.from_preset`` loads).
"""

from __future__ import annotations

import difflib

# size -> (hidden_dim, num_layers, num_heads, mlp_dim)
VIT_SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (192, 12, 3, 768),
    "small": (384, 12, 6, 1536),
    "base": (768, 12, 12, 3072),
    "large": (1024, 24, 16, 4096),
    "huge": (1280, 32, 16, 5120),
}
_SHORT = {"tiny": "Ti", "small": "S", "base": "B", "large": "L", "huge": "H"}


def _build_presets() -> dict[str, dict]:
    presets = {}
    for size, (hidden_dim, num_layers, num_heads, mlp_dim) in VIT_SIZES.items():
        for patch_size in (14, 16, 32):
            if (patch_size == 14) != (size == "huge"):
                continue  # ViT-H is published with 14-pixel patches only
            for image_size in (224, 384):
                if image_size % patch_size:
                    continue  # 384 is no multiple of 14: ViTClassifier rejects such a grid
                presets[f"vit-{size}-patch{patch_size}-{image_size}"] = dict(
                    image_size=image_size,
                    patch_size=patch_size,
                    num_layers=num_layers,
                    num_heads=num_heads,
                    hidden_dim=hidden_dim,
                    mlp_dim=mlp_dim,
                )
    return presets


PRESETS: dict[str, dict] = _build_presets()
ALIASES: dict[str, str] = {
    f"{_SHORT[name.split('-')[1]]}/{name.split('-')[2][5:]}": name
    for name in PRESETS
    if name.endswith("-224")
}
DEFAULT_PRESET = "vit-base-patch16-224"
PRESET_NUM_CLASSES = 1000  # every preset: the ImageNet-1k head of the fine-tuned checkpoints

# The Hugging Face Hub checkpoints (ImageNet-21k pre-trained, ImageNet-1k fine-tuned)
# published by Google for these architectures; the other presets have none.
CHECKPOINTS: dict[str, str] = {
    "vit-base-patch16-224": "google/vit-base-patch16-224",
    "vit-base-patch16-384": "google/vit-base-patch16-384",
    "vit-base-patch32-384": "google/vit-base-patch32-384",
    "vit-large-patch16-224": "google/vit-large-patch16-224",
    "vit-large-patch16-384": "google/vit-large-patch16-384",
    "vit-large-patch32-384": "google/vit-large-patch32-384",
}


def resolve_preset(name: str) -> str | None:
    """The canonical preset name for ``name`` (a preset or an alias), else None."""
    key = ALIASES.get(name, name)
    return key if key in PRESETS else None


def suggest_presets(name: str, n: int = 3) -> list[str]:
    """The preset names (and aliases) closest to ``name``, best first (difflib).

    A name that starts like a preset (``vit-nano``) always gets the nearest one.
    """
    names = list(PRESETS) + list(ALIASES)
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.5)
    if not close and name.lower().startswith("vit"):
        close = difflib.get_close_matches(name, list(PRESETS), n=1, cutoff=0.0)
    return close


def unknown_preset_hint(name: str) -> str:
    """``did you mean ...?`` plus where the list of presets is, for error messages."""
    close = suggest_presets(name)
    hint = f"Did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return hint + "`keras-vit info --list-presets` lists every preset."


def get_preset(name: str) -> dict:
    """Returns a copy of the architecture arguments of preset ``name`` (or alias)."""
    key = resolve_preset(name)
    if key is None:
        raise ValueError(f"Unknown ViT preset {name!r}. {unknown_preset_hint(name)}")
    return dict(PRESETS[key])


def parameter_count(name: str, num_classes: int = PRESET_NUM_CLASSES) -> int:
    """The parameter count of preset ``name`` in closed form (no model is built).

    Patch embedding (kernel + bias), class token and position embeddings; per
    block two LayerNorms, q/k/v/output projections and the two MLP layers; the
    final LayerNorm and the head. ``tests/convert/test_param_counts.py`` checks
    it against built models, transformers and published numbers.
    """
    config = get_preset(name)
    d, m, p = config["hidden_dim"], config["mlp_dim"], config["patch_size"]
    tokens = (config["image_size"] // p) ** 2 + 1
    embedding = p * p * 3 * d + d + d + tokens * d
    block = 2 * 2 * d + 4 * (d * d + d) + (d * m + m) + (m * d + d)
    head = d * num_classes + num_classes
    return embedding + config["num_layers"] * block + 2 * d + head
