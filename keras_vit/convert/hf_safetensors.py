"""transformers' ``model.safetensors`` in both naming layouts.

* PyTorch-named (``vit.embeddings.cls_token``…): what ``ViTForImageClassification``
  writes and what the hub ships. ViTModel checkpoints have no ``vit.`` prefix
  and add ``pooler.dense.*``; the prefix is read off the ``cls_token`` key.
* TF-named (``vit/embeddings/cls_token:0``…): what
  ``TFViTForImageClassification.save_pretrained(..., safe_serialization=True)``
  writes; it uses :func:`keras_vit.convert.hf_h5.tf_rows`.

The reader parses the format itself (8-byte header length, JSON header, raw
little-endian data) so bfloat16 tensors read as ``ml_dtypes.bfloat16`` instead
of failing in safetensors' numpy backend.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from keras_vit.convert import table
from keras_vit.convert.common import CheckpointError, Row, Shape

_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}


def _numpy_dtype(name: str, path: str) -> np.dtype:
    if name == "BF16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    if name not in _DTYPES:
        raise CheckpointError(f"{path}: unsupported safetensors dtype {name!r}")
    return np.dtype(_DTYPES[name])


class SafetensorsReader:
    """Lists and reads the tensors of one ``.safetensors`` file, or of the shards named by a
    ``model.safetensors.index.json``."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._entries: dict[str, tuple[str, dict, int]] = {}
        self.metadata: dict[str, str] = {}
        if self.path.endswith(".index.json"):
            files = self._shards(self.path)
        else:
            files = [self.path]
        for file in files:
            self._read_header(file)
        self.description = f"{self.path} (safetensors)"

    @staticmethod
    def _shards(index_path: str) -> list[str]:
        try:
            with open(index_path) as f:
                weight_map = json.load(f)["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{index_path} is not a safetensors index: {error}") from error
        folder = os.path.dirname(index_path)
        return [os.path.join(folder, name) for name in sorted(set(weight_map.values()))]

    def _read_header(self, file: str) -> None:
        try:
            size = os.path.getsize(file)
            with open(file, "rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                if length > size - 8:
                    raise ValueError(f"header length {length} exceeds the file size {size}")
                header = json.loads(f.read(length))
        except (OSError, ValueError, struct.error) as error:
            raise CheckpointError(f"{file} is not a readable safetensors file: {error}") from error
        if not isinstance(header, dict):
            raise CheckpointError(f"{file} is not a readable safetensors file: bad header")
        data_start = 8 + length
        self.metadata.update(header.pop("__metadata__", None) or {})
        for name, entry in header.items():
            try:
                begin, end = entry["data_offsets"]
                shape = [int(d) for d in entry["shape"]]
                dtype = _numpy_dtype(entry["dtype"], file)
            except (KeyError, TypeError, ValueError) as error:
                raise CheckpointError(f"{file}: bad header entry for {name!r}: {error}") from error
            if end - begin != int(np.prod(shape)) * dtype.itemsize or data_start + end > size:
                raise CheckpointError(f"{file}: tensor {name!r} lies outside the file")
            self._entries[name] = (
                file,
                {"shape": shape, "dtype": dtype, "begin": begin, "end": end},
                data_start,
            )

    def shapes(self) -> dict[str, Shape]:
        return {name: tuple(entry["shape"]) for name, (_, entry, _) in self._entries.items()}

    def read(self, key: str) -> np.ndarray:
        file, entry, data_start = self._entries[key]
        with open(file, "rb") as f:
            f.seek(data_start + entry["begin"])
            data = f.read(entry["end"] - entry["begin"])
        return np.frombuffer(data, dtype=entry["dtype"]).reshape(entry["shape"])

    def close(self) -> None:
        pass


def detect_layout(keys) -> tuple[str, str]:
    """Returns ``("pt", prefix)`` or ``("tf", prefix)`` from the class-token key's spelling."""
    for key in keys:
        if key.endswith("embeddings.cls_token"):
            return "pt", key[: -len("embeddings.cls_token")]
        if key.endswith("embeddings/cls_token:0"):
            return "tf", key[: -len("embeddings/cls_token:0")]
    raise CheckpointError(
        "no ViT class token found (looked for '…embeddings.cls_token' and "
        "'…embeddings/cls_token:0'): not a transformers ViT checkpoint"
    )


def pt_rows(num_layers: int, prefix: str = "vit.", pre_logits: bool = False) -> list[Row]:
    """transformers PyTorch names -> Keras paths (layout (b) of docs/checkpoints.md)."""
    return table.rows(table.hf_pt(prefix), num_layers, pre_logits)


def pt_pooler_keys(prefix: str = "vit.") -> tuple[str, str]:
    translation = table.hf_pt(prefix)
    return (translation.key("pre_logits", "kernel"), translation.key("pre_logits", "bias"))
