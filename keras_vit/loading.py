"""``load_pretrained`` and ``adapt_model``: the public names of the checkpoint loader.

The work is in :mod:`keras_vit.convert.loader`, which takes the model class (as
keras-hub's converters do) so that the model and the loader do not import each
other: this module, above both, binds them to :class:`keras_vit.ViTClassifier`.
"""

from __future__ import annotations

import os

from keras_vit.convert.loader import adapt_model
from keras_vit.model import ViTClassifier


def load_pretrained(source: str | os.PathLike, **kwargs) -> ViTClassifier:
    """Builds a ViTClassifier and loads a checkpoint into it.

    ``source``: a local HF-format directory (or its weights file), a hub id, a Google
    ``.npz``, a ``.keras`` file, a directory with ``model.keras``, or a preset name with a
    published checkpoint. The options (``num_classes``, ``labels``, ``image_size``,
    ``strict``, ``dtype``, ``preset``, hub arguments, ViTClassifier overrides) are
    :func:`keras_vit.convert.loader.load_checkpoint`'s.
    """
    return ViTClassifier.from_pretrained(source, **kwargs)


__all__ = ["adapt_model", "load_pretrained"]
