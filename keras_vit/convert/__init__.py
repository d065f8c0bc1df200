"""Checkpoint conversion: one declarative table per source format, plain numpy.

* :mod:`~keras_vit.convert.common` — rows, named transforms, the strict diff.
* :mod:`~keras_vit.convert.hf_h5` — transformers' TF ``tf_model.h5`` (and TF names).
* :mod:`~keras_vit.convert.hf_safetensors` — ``model.safetensors``, PyTorch or TF names.
* :mod:`~keras_vit.convert.jax_npz` — Google's vit_jax / AugReg / big_vision ``.npz``
  and :func:`save_npz`.
* :mod:`~keras_vit.convert.keras_file` — our own ``.keras`` models.
"""

from keras_vit.convert.common import (
    TRANSFORMS,
    ArrayReader,
    CheckpointError,
    CheckpointMismatchError,
    Context,
    Plan,
    Row,
    load_weights,
    plan_conversion,
)
from keras_vit.convert.jax_npz import save_npz

__all__ = [
    "TRANSFORMS",
    "ArrayReader",
    "CheckpointError",
    "CheckpointMismatchError",
    "Context",
    "Plan",
    "Row",
    "load_weights",
    "plan_conversion",
    "save_npz",
]
