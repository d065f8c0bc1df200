"""keras-vit: Vision Transformers in Keras 3, from checkpoint to TF Serving.

Attributes are imported lazily so that the command line (and the REST client
in ``serving``) start without importing TensorFlow.
"""

import importlib
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from keras_vit import quiet as _quiet  # noqa: E402

_quiet.install()  # TensorFlow's C++ start-up lines stay off the terminal (see quiet.py)

__version__ = "0.1.0"

_EXPORTS = {
    "ViTClassifier": "keras_vit.model",
    "ViTImagePreprocessor": "keras_vit.preprocessing",
    "ClassToken": "keras_vit.layers",
    "ClassTokenPooling": "keras_vit.layers",
    "DropPath": "keras_vit.layers",
    "EncoderBlock": "keras_vit.layers",
    "PatchEmbedding": "keras_vit.layers",
    "PositionEmbedding": "keras_vit.layers",
    "interpolate_position_embedding": "keras_vit.layers",
    "load_pretrained": "keras_vit.loading",
    "PRESETS": "keras_vit.presets",
    "ALIASES": "keras_vit.presets",
    "get_preset": "keras_vit.presets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'keras_vit' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
