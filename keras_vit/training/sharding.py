"""Per-worker file shards of the training images under MultiWorkerMirroredStrategy.

Keras distributes a plain ``tf.data.Dataset`` with auto-sharding. For our image lists
that means ``AutoShardPolicy.DATA``: every worker reads and decodes every image and
keeps 1/N of them. tf.data's ``FILE`` policy cannot help, because it only recognises
reader datasets (``TFRecordDataset`` and the like), not ``tf.io.read_file`` in a map.
So files are sharded here, before anything is read:

- :func:`shard_files` gives worker ``i`` of ``N`` the files ``i, i+N, i+2N, ...`` of
  the sorted listing. The shards are disjoint, together they are the whole listing,
  their sizes differ by at most one, and each keeps the class mix.
- :func:`distribute_files` builds each worker's pipeline on its own shard through
  ``strategy.distribute_datasets_from_function``, batched at the per-replica batch
  size. The datasets are already sharded, so their auto-shard policy is ``OFF``.
- All workers must run the same number of steps, or the gradient all-reduce of the
  longer one waits forever. Every worker therefore runs :func:`steps_per_epoch` steps,
  counted on the smallest shard. A pass over a shard takes exactly that many batches
  and ``repeat()`` starts the next pass, which is the next epoch, so ``fit`` is given
  ``steps_per_epoch``. Per epoch, each worker drops at most one image plus a partial
  batch, and the shuffle changes every pass.
- Each shard's shuffle and augmentation get their own seed (:func:`shard_seed`),
  derived from the run's seed and the shard index, so workers do not crop their k-th
  images alike.

In-memory sources (TFDS, Hugging Face rows) keep ``AutoShardPolicy.DATA``: see
:mod:`keras_vit.training.pipeline`.

Example (two workers' input contexts, 10 files):
    >>> import tensorflow as tf
    >>> from keras_vit.training.data import FileImageDataset
    >>> files = FileImageDataset([f"{i}.jpg" for i in range(10)], [i % 2 for i in range(10)],
    ...                          ["a", "b"])
    >>> contexts = [tf.distribute.InputContext(2, i, 2) for i in range(2)]
    >>> [shard_files(files, c.num_input_pipelines, c.input_pipeline_id).paths[:3]
    ...  for c in contexts]
    [['0.jpg', '2.jpg', '4.jpg'], ['1.jpg', '3.jpg', '5.jpg']]
    >>> steps_per_epoch(10, num_shards=2, per_replica_batch=2)
    2
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from keras_vit.training.data import DataError, FileImageDataset


def shard_files(data: FileImageDataset, num_shards: int, index: int) -> FileImageDataset:
    """Shard ``index`` of ``num_shards``: every ``num_shards``-th file, from ``index`` on."""
    if num_shards < 1 or not 0 <= index < num_shards:
        raise ValueError(f"shard index {index} is outside 0..{num_shards - 1}")
    return data.subset(np.arange(index, data.size, num_shards))


def steps_per_epoch(
    size: int, num_shards: int, per_replica_batch: int, replicas_per_shard: int = 1
) -> int:
    """Steps every worker can run: full batches of the smallest shard (``size // num_shards``)."""
    smallest = size // num_shards
    steps = smallest // (per_replica_batch * replicas_per_shard)
    if steps < 1:
        raise DataError(
            f"{size} training images give {num_shards} workers {smallest} each, fewer than one "
            f"batch of {per_replica_batch * replicas_per_shard} per worker: use a smaller "
            "--batch-size or more images"
        )
    return steps


def shard_seed(seed: int, index: int) -> int:
    """A seed for shard ``index``'s shuffle and augmentation, fixed by the run's ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] % 2**31)


def distribute_files(
    strategy: tf.distribute.Strategy,
    data: FileImageDataset,
    global_batch_size: int,
    make_dataset: Callable[[FileImageDataset, int, int, int], tf.data.Dataset],
) -> tuple[tf.distribute.DistributedDataset, int]:
    """Each worker's pipeline on its own file shard; returns it and the steps per epoch.

    ``make_dataset(shard, per_replica_batch, shard_index, batches)`` builds one
    worker's finite pipeline of exactly ``batches`` per-replica batches. It is
    repeated here; the next pass is the next epoch.
    """
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise DataError(
            f"--batch-size {global_batch_size} is not a multiple of the {replicas} replicas "
            "of the cluster: every replica must get the same number of images"
        )
    per_replica = global_batch_size // replicas
    counted: list[int] = []

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        shards = context.num_input_pipelines
        replicas_here = context.num_replicas_in_sync // shards
        steps = steps_per_epoch(data.size, shards, per_replica, replicas_here)
        counted.append(steps)
        shard = shard_files(data, shards, context.input_pipeline_id)
        dataset = make_dataset(shard, per_replica, context.input_pipeline_id, steps * replicas_here)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF  # sharded by file above
        )
        return dataset.repeat().with_options(options)

    distributed = strategy.distribute_datasets_from_function(dataset_fn)
    # MultiWorkerMirroredStrategy calls dataset_fn once, right away, for this worker.
    (steps,) = set(counted)
    return distributed, steps
