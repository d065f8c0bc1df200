"""Google's JAX ``.npz`` checkpoints (vit_jax, AugReg, big_vision) and a writer for them.

Keys are '/'-joined Flax parameter paths. Two module-index conventions exist:
vit_jax and AugReg files use the pre-linen indices ``LayerNorm_0``,
``MultiHeadDotProductAttention_1``, ``LayerNorm_2``, ``MlpBlock_3``; big_vision
uses ``LayerNorm_0``, ``MultiHeadDotProductAttention_0``, ``LayerNorm_1``,
``MlpBlock_0`` and keeps its position embedding at the top level without a
class-token slot. Flax's attention layout equals Keras', so every transform
except the position embedding is the identity.
"""

from __future__ import annotations

import os
import re
import zipfile

import numpy as np

from keras_vit.convert import table
from keras_vit.convert.common import CheckpointError, Row, Shape

_PREFIXES = ("opt/target/", "params/")
_BLOCK = re.compile(r"^Transformer/encoderblock_(\d+)/")
_SUBMODULES = table.NPZ_SUBMODULES
VIT_JAX_POSEMB = table.VIT_JAX_POSEMB
BIG_VISION_POSEMB = table.BIG_VISION_POSEMB
# Flax's LayerNorm default, which every Google ViT checkpoint was trained with.
FLAX_LAYER_NORM_EPSILON = 1e-6


class NpzReader:
    """Lists and reads the arrays of a Google ``.npz`` under normalised names.

    The ``opt/target/`` (old vit_jax) and ``params/`` (big_vision) prefixes are
    dropped, and a scanned encoder (``Transformer/encoderblock/…`` with a
    leading depth axis) is presented as ``Transformer/encoderblock_{i}/…``.
    Shapes come from the ``.npy`` headers, so listing reads no data.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.description = f"{self.path} (JAX npz)"
        try:
            self._zip = zipfile.ZipFile(self.path)
            raw = {}
            for member in self._zip.namelist():
                if member.endswith(".npy"):
                    raw[member[: -len(".npy")]] = self._header(member)
        except (OSError, zipfile.BadZipFile, ValueError) as error:
            raise CheckpointError(f"{self.path} is not a readable .npz file: {error}") from error
        if not raw:
            raise CheckpointError(f"{self.path} holds no arrays")
        prefix = next((p for p in _PREFIXES if all(k.startswith(p) for k in raw)), "")
        # normalised name -> (member name, index along the scanned depth axis or None)
        self._names: dict[str, tuple[str, int | None]] = {}
        self._shapes: dict[str, Shape] = {}
        for key, shape in raw.items():
            name = key[len(prefix) :]
            if name.startswith("Transformer/encoderblock/"):
                rest = name[len("Transformer/encoderblock/") :]
                for i in range(shape[0]):
                    # (depth, ...) -> one (...) array per block.
                    self._names[f"Transformer/encoderblock_{i}/{rest}"] = (key, i)
                    self._shapes[f"Transformer/encoderblock_{i}/{rest}"] = tuple(shape[1:])
            else:
                self._names[name] = (key, None)
                self._shapes[name] = tuple(shape)

    def _header(self, member: str) -> Shape:
        with self._zip.open(member) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, _ = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, _ = np.lib.format.read_array_header_2_0(f)
        return tuple(shape)

    def shapes(self) -> dict[str, Shape]:
        return dict(self._shapes)

    def read(self, key: str) -> np.ndarray:
        member, index = self._names[key]
        with self._zip.open(member + ".npy") as f:
            array = np.lib.format.read_array(f, allow_pickle=False)
        return array if index is None else array[index]

    def close(self) -> None:
        self._zip.close()


def detect_variant(keys) -> str:
    """``"vit_jax"`` or ``"big_vision"``, with a clear error for layouts we cannot load."""
    keys = set(keys)
    if "embedding/kernel" not in keys:
        if any("conv_root" in k or k.startswith("block") for k in keys):
            raise CheckpointError("hybrid ResNet+ViT checkpoints (R50+ViT) are not supported")
        raise CheckpointError("no 'embedding/kernel' (patch embedding): not a ViT .npz checkpoint")
    if "cls" not in keys:
        raise CheckpointError(
            "this checkpoint has no 'cls' token: it pools by global average or attention "
            "(big_vision pool_type gap/map), while ViTClassifier classifies the class token"
        )
    for variant, (attention, _, _) in _SUBMODULES.items():
        if f"Transformer/encoderblock_0/{attention}/query/kernel" in keys:
            return variant
    raise CheckpointError(
        "no 'Transformer/encoderblock_0/MultiHeadDotProductAttention_{0,1}/query/kernel': "
        "unknown ViT .npz layout"
    )


def count_layers(keys) -> int:
    indices = {int(m.group(1)) for m in map(_BLOCK.match, keys) if m}
    if not indices:
        raise CheckpointError("no 'Transformer/encoderblock_{i}/' tensors found")
    return max(indices) + 1


def npz_rows(num_layers: int, variant: str = "vit_jax", pre_logits: bool = False) -> list[Row]:
    """Google JAX names -> Keras paths (layout (c) of docs/checkpoints.md)."""
    return table.rows(table.jax_npz(variant), num_layers, pre_logits)


PRE_LOGITS_KEYS = ("pre_logits/kernel", "pre_logits/bias")


def infer_config(shapes: dict[str, Shape]) -> dict:
    """ViTClassifier arguments read off the tensor shapes of a normalised ``.npz``.

    ``num_classes`` is ``None`` when the file has no head.
    """
    variant = detect_variant(shapes)
    attention, _, mlp = _SUBMODULES[variant]
    patch, patch_w, channels, hidden = shapes["embedding/kernel"]
    if patch != patch_w or channels != 3:
        raise CheckpointError(
            f"embedding/kernel has shape {shapes['embedding/kernel']}: only square patches of RGB "
            "images are supported"
        )
    block = "Transformer/encoderblock_0/"
    _, num_heads, _ = shapes[f"{block}{attention}/query/kernel"]
    _, mlp_dim = shapes[f"{block}{mlp}/Dense_0/kernel"]
    posemb_key = VIT_JAX_POSEMB if variant == "vit_jax" else BIG_VISION_POSEMB
    if posemb_key not in shapes:
        raise CheckpointError(f"no position embedding {posemb_key!r}")
    tokens = shapes[posemb_key][1] - (1 if variant == "vit_jax" else 0)
    side = int(round(tokens**0.5))
    if side * side != tokens:
        raise CheckpointError(f"{posemb_key} {shapes[posemb_key]} is not a square patch grid")
    config = dict(
        image_size=side * patch,
        patch_size=patch,
        num_layers=count_layers(shapes),
        num_heads=num_heads,
        hidden_dim=hidden,
        mlp_dim=mlp_dim,
        num_classes=shapes["head/kernel"][1] if "head/kernel" in shapes else None,
        representation_size=(
            shapes["pre_logits/kernel"][1] if "pre_logits/kernel" in shapes else None
        ),
        layer_norm_epsilon=FLAX_LAYER_NORM_EPSILON,
    )
    return config


def save_npz(model, path: str | os.PathLike) -> None:
    """Writes ``model``'s weights as a vit_jax-layout ``.npz`` (``np.savez``, float32).

    The keys are exactly those of :func:`npz_rows` for the ``"vit_jax"``
    variant, so the file loads back here, and in other vit_jax readers.
    Labels and preprocessing are not part of the format.
    """
    from keras import ops  # noqa: PLC0415 - the readers are plain numpy

    variables = {v.path: v for v in model.weights}
    rows = npz_rows(model.num_layers, "vit_jax", pre_logits=bool(model.representation_size))
    arrays = {
        row.source_key: np.asarray(ops.convert_to_numpy(variables[row.keras_path]), np.float32)
        for row in rows
    }
    path = os.fspath(path)
    with open(path, "wb") as f:  # a file object keeps np.savez from appending ".npz"
        np.savez(f, **arrays)
