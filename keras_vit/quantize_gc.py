"""``model.quantize()`` without one full garbage collection per replaced kernel.

Keras' ``Layer.__delattr__`` runs ``gc.collect()`` each time it deletes a variable
(added with keras-team/keras#19954, so that a device buffer is freed at once), and
``Dense``/``EinsumDense.quantize`` deletes each layer's float kernel. ViT-B/16 and
Ti/16 have 73 such kernels, and one full collection in a process holding TensorFlow
and a model takes 0.2-0.3 s: ``quantize("int8")`` on ViT-Ti/16 took 18 s, of which
17.5 s in ``gc.collect`` (cProfile, Keras 3.15). The variables are unreachable once
deleted (nothing else holds them), so :func:`collect_once` skips those collections
and runs one at the end, which frees the same buffers.

It applies to the Keras versions in :data:`AFFECTED_KERAS`: from 3.5 (the first release
with that change, by its date) through 3.15 (the installed one, the only one measured).
``tests/test_quantize_lora.py`` checks that the
installed Keras still collects in ``__delattr__``, and fails once upstream stops, so
that this module can go.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import warnings
from collections.abc import Iterator

import keras
from packaging.version import Version

AFFECTED_KERAS = (Version("3.5"), Version("3.16"))
# Model.quantize warns for every layer kind without weights to quantize (the
# preprocessing, LayerNormalization, Dropout...): ten lines that ask nothing of the user.
_NOTHING_TO_QUANTIZE = r"Layer \w+ does not have a `quantize` method implemented\."
_lock = threading.Lock()


def keras_affected(version: str | None = None) -> bool:
    found = Version(version or keras.__version__)
    return AFFECTED_KERAS[0] <= found < AFFECTED_KERAS[1]


@contextlib.contextmanager
def collect_once() -> Iterator[None]:
    """Inside: ``gc.collect()`` does nothing (on affected Keras versions) and Keras'
    "nothing to quantize" warnings are dropped; on leaving, one collection."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NOTHING_TO_QUANTIZE, category=UserWarning)
        if not keras_affected():
            yield
            return
        with _lock:
            collect = gc.collect
            gc.collect = lambda generation=2: 0
            try:
                yield
            finally:
                gc.collect = collect
        gc.collect()
