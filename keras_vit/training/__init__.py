"""Fine-tuning and training ViTs with Keras ``model.fit`` (see docs/training.md).

``train()`` is the entry point; the modules hold its parts: ``data``
(sources and splits), ``pipeline`` (tf.data), ``optim`` (optimiser,
schedule, loss), ``callbacks``, ``freeze``, ``adapt`` (new head, new
resolution), ``distribute`` (strategies, precision), ``output`` (the model
directory), ``recipes`` and ``digits`` (the offline digits image folder).

``train``, ``TrainingConfig`` and ``TrainResult`` are imported lazily, so that
``python -m keras_vit.training.digits`` starts without TensorFlow.
"""

import importlib

__all__ = ["TrainResult", "TrainingConfig", "train"]


def __getattr__(name):
    if name in __all__:
        return getattr(importlib.import_module("keras_vit.training.trainer"), name)
    raise AttributeError(f"module 'keras_vit.training' has no attribute {name!r}")
