"""A narrow workaround that lets Keras 3 ``model.fit`` run under MultiWorkerMirroredStrategy.

On Keras 3.x (checked: 3.15 with TensorFlow 2.21) ``fit``/``evaluate`` fail
as soon as more than one worker is in the cluster, in two places of
``keras/src/backend/tensorflow/trainer.py``:

1. ``TensorFlowTrainer._maybe_symbolic_build`` builds the model from one
   batch and, to get an ordinary tensor out of the distributed batch, calls
   ``strategy.reduce("MEAN", (x, y), axis=None)``. The collective strategy's
   ``reduce`` takes one value, not a structure, so it fails with
   "Attempt to convert a value (PerReplica...) ... to a Tensor". The build
   only needs the shapes and dtypes of a batch, which the first local replica's
   values have; no cross-worker reduction is needed at all.
2. ``reduce_per_replica(..., reduction="mean")`` reduces every log value with
   ``strategy.reduce("MEAN", v, axis=0)`` in multi-worker mode. The logs are
   scalars (loss, metric results), and a reduction over axis 0 of a scalar fails
   with "Invalid reduction dimension 0 for input with 0 dimensions". A scalar is
   averaged across the workers with ``axis=None``.

Upstream: keras-team/keras#20585 and tensorflow/tensorflow#72388.

:func:`patch_keras_for_multi_worker` wraps both functions so that only those
failing cases (a collective strategy in multi-worker mode; a scalar mean)
take the new path; everything else calls Keras' own code unchanged. It is
applied only on the Keras versions in :data:`AFFECTED_KERAS`;
``tests/training/test_multi_worker.py`` runs the unpatched code on the
installed version and fails once upstream behaviour changes, so that the
workaround (or its version range) gets revisited.
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf
from packaging.version import Version

from keras_vit.training.backup import ResumableBackup

# Keras versions given the workaround: Keras 3 up to the installed 3.15, where both
# failures were reproduced; the end is the first version not checked.
AFFECTED_KERAS = (Version("3.0"), Version("3.16"))

_PATCHED_FLAG = "_keras_vit_multi_worker_patch"


def keras_affected(version: str | None = None) -> bool:
    """Whether this Keras version (default: the installed one) needs the workaround."""
    found = Version(version or keras.__version__)
    return AFFECTED_KERAS[0] <= found < AFFECTED_KERAS[1]


def in_multi_worker_mode(strategy) -> bool:
    """A MultiWorkerMirroredStrategy whose cluster has more than one worker."""
    return (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and strategy.extended._in_multi_worker_mode()
    )


def patch_keras_for_multi_worker(force: bool = False) -> bool:
    """Installs the two wrappers (once); returns whether they are installed.

    ``force`` installs them on a Keras version outside :data:`AFFECTED_KERAS`.
    """
    # Keras' private module: a Keras that moves it fails multi-worker training only.
    from keras.src.backend.tensorflow import trainer as tf_trainer  # noqa: PLC0415

    if getattr(tf_trainer, _PATCHED_FLAG, False):
        return True
    if not (force or keras_affected()):
        return False

    original_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build
    original_reduce = tf_trainer.reduce_per_replica

    @functools.wraps(original_build)
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is None or not in_multi_worker_mode(strategy):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, batches in iterator:
            data_batch = next(batches)
            break
        # Shapes and dtypes of one replica's batch are all the symbolic build reads.
        data_batch = tf.nest.map_structure(
            lambda value: (
                strategy.experimental_local_results(value)[0]
                if isinstance(value, tf.distribute.DistributedValues)
                else value
            ),
            data_batch,
        )
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    @functools.wraps(original_reduce)
    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not in_multi_worker_mode(strategy):
            return original_reduce(values, strategy, reduction)

        def _reduce(value):
            local = strategy.experimental_local_results(value)[0] if value is not None else None
            if local is not None and local.shape.rank == 0:
                return strategy.reduce("MEAN", value, axis=None)  # a scalar: across workers
            return original_reduce(value, strategy, reduction)

        return tf.nest.map_structure(_reduce, values)

    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    setattr(tf_trainer, _PATCHED_FLAG, True)
    return True


PEER_LOST = (
    "a worker of the multi-worker cluster went away ({reason}). Start the same command "
    "again on every worker: training resumes from the last backed-up epoch"
)


def cluster_callbacks(callbacks: list, strategy, is_chief: bool) -> list:
    """``callbacks``, the backup made chief-aware under a multi-worker strategy.

    All workers must resume from the same epoch and weights, so they all read
    the chief's backup directory (storage every worker sees: a shared volume,
    or ``gs://`` on Vertex AI); the others never write or delete it, which
    keeps two processes from writing one file.
    """
    if in_multi_worker_mode(strategy):
        for callback in callbacks:
            if isinstance(callback, ResumableBackup):
                callback.is_chief = is_chief
    return list(callbacks)
