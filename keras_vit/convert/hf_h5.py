"""transformers' TensorFlow ViT checkpoints: the legacy Keras-2 HDF5 ``tf_model.h5``.

The converter table here is also the one for TF-named safetensors files
(``TFViTForImageClassification.save_pretrained(..., safe_serialization=True)``),
which hold the same names as the HDF5 file after its first path component is
stripped.
"""

from __future__ import annotations

import os

import numpy as np

from keras_vit.convert import table
from keras_vit.convert.common import CheckpointError, Row, Shape


def _text(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


class LegacyH5Reader:
    """Lists and reads the weights of a Keras-2 HDF5 file under HF's names.

    Each layer group lists its datasets in the ``weight_names`` attribute, as
    ``<model name>/<path>:0``. Like transformers' ``load_tf_weights_from_h5`` we
    drop the first component, because the model name varies
    (``tf_vi_t_for_image_classification``, ``..._4``, ``tf_vi_t_model``).
    """

    def __init__(self, path: str | os.PathLike):
        import h5py

        self.path = os.fspath(path)
        self.description = f"{self.path} (transformers TF HDF5)"
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as error:
            raise CheckpointError(f"{self.path} is not a readable HDF5 file: {error}") from error
        if "layer_names" not in self._file.attrs:
            self._file.close()
            raise CheckpointError(
                f"{self.path} is an HDF5 file without the root attribute 'layer_names', so not a "
                "Keras-2 tf_model.h5 as transformers writes it (Keras 3 .weights.h5 files are not "
                "checkpoints here: load the .keras file instead)."
            )
        self._datasets: dict[str, object] = {}
        for layer in self._file.attrs["layer_names"]:
            group = self._file[_text(layer)]
            for weight in group.attrs.get("weight_names", []):
                weight = _text(weight)
                name = "/".join(weight.split("/")[1:])
                self._datasets[name] = group[weight]

    def shapes(self) -> dict[str, Shape]:
        return {name: tuple(dataset.shape) for name, dataset in self._datasets.items()}

    def read(self, key: str) -> np.ndarray:
        return np.asarray(self._datasets[key][()])

    def close(self) -> None:
        self._file.close()


def tf_prefix(keys) -> str:
    """The prefix before ``embeddings/cls_token:0`` (``"vit/"`` for every TF ViT class)."""
    for key in keys:
        if key.endswith("embeddings/cls_token:0"):
            return key[: -len("embeddings/cls_token:0")]
    return "vit/"


def tf_rows(num_layers: int, prefix: str = "vit/", pre_logits: bool = False) -> list[Row]:
    """transformers TF names -> Keras paths (layout (a) of docs/checkpoints.md)."""
    return table.rows(table.hf_tf(prefix), num_layers, pre_logits)


def tf_pooler_keys(prefix: str = "vit/") -> tuple[str, str]:
    translation = table.hf_tf(prefix)
    return (translation.key("pre_logits", "kernel"), translation.key("pre_logits", "bias"))
