"""The ViT variants, as plain data.

Sizes follow Dosovitskiy et al. (2021), Table 1, and the ViT-Ti/S variants of
Touvron et al. (DeiT) / Steiner et al. (AugReg). A preset name is
``vit-{size}-patch{P}-{resolution}``; the short aliases (``"B/16"``) name the
224-pixel variant.
"""

from __future__ import annotations

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


def get_preset(name: str) -> dict:
    """Returns a copy of the architecture arguments of preset ``name`` (or alias)."""
    key = ALIASES.get(name, name)
    if key not in PRESETS:
        known = ", ".join(sorted(PRESETS) + sorted(ALIASES))
        raise ValueError(f"Unknown ViT preset {name!r}. Known presets: {known}")
    return dict(PRESETS[key])
