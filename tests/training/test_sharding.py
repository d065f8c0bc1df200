"""File shards of multi-worker training (keras_vit.training.sharding) without a cluster:
TensorFlow's own InputContext objects of two workers, the real training pipeline, and
images whose pixels say which file they came from."""

from __future__ import annotations

import doctest
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_vit.training import sharding
from keras_vit.training.data import DataError, list_image_folder
from keras_vit.training.pipeline import AugmentConfig, train_pipeline

SIZE = (8, 8)
PLAIN = AugmentConfig(random_resized_crop=False, horizontal_flip=False)


@pytest.fixture
def numbered_folder(tmp_path):
    """23 lossless PNGs in 2 classes; file ``k``'s red channel is ``10 * k``."""
    for k in range(23):
        folder = tmp_path / ("even" if k % 2 == 0 else "odd")
        folder.mkdir(exist_ok=True)
        pixels = np.zeros((*SIZE, 3), np.uint8)
        pixels[..., 0] = 10 * k
        Image.fromarray(pixels).save(folder / f"{k:02d}.png")
    return list_image_folder(tmp_path)


def _cluster(workers: int, replicas_per_worker: int = 1):
    """A strategy stand-in that builds every worker's dataset, as each worker would."""
    replicas = workers * replicas_per_worker

    def distribute_datasets_from_function(dataset_fn):
        contexts = [tf.distribute.InputContext(workers, i, replicas) for i in range(workers)]
        return [dataset_fn(context) for context in contexts]

    return SimpleNamespace(
        num_replicas_in_sync=replicas,
        distribute_datasets_from_function=distribute_datasets_from_function,
    )


def _distribute(data, workers: int, global_batch: int, decoded: list | None = None):
    def make_dataset(shard, batch_size, index, batches):
        if decoded is not None:
            decoded.append(shard.paths)
        return train_pipeline(
            shard,
            SIZE,
            batch_size,
            augment=PLAIN,
            seed=sharding.shard_seed(0, index),
            batches=batches,
            auto_shard_policy=tf.data.experimental.AutoShardPolicy.OFF,
        )

    return sharding.distribute_files(_cluster(workers), data, global_batch, make_dataset)


def _file_numbers(images: tf.Tensor) -> list[int]:
    return [int(round(v / 10)) for v in images[:, 0, 0, 0].numpy()]


def test_two_workers_read_disjoint_shards_that_cover_the_folder(numbered_folder):
    read: list[list[str]] = []
    datasets, steps = _distribute(numbered_folder, workers=2, global_batch=6, decoded=read)
    # Each worker builds its pipeline on its own files only: nothing is read twice.
    shard_0, shard_1 = (set(paths) for paths in read)
    assert not shard_0 & shard_1 and shard_0 | shard_1 == set(numbered_folder.paths)
    assert abs(len(shard_0) - len(shard_1)) <= 1
    assert steps == (23 // 2) // 3  # the smaller shard's full batches of 6 / 2 workers
    numbers = {path: int(path[-6:-4]) for path in numbered_folder.paths}
    passes = []
    for shard, dataset in zip((shard_0, shard_1), datasets, strict=True):
        assert dataset.options().experimental_distribute.auto_shard_policy == (
            tf.data.experimental.AutoShardPolicy.OFF
        )
        batches = list(dataset.take(2 * steps))  # two epochs: the repeat is the next pass
        seen = [_file_numbers(images) for images, _ in batches]
        for (_, labels), files in zip(batches, seen, strict=True):
            # Labels follow their files (sorted class names: "even" is class 0).
            assert [int(np.argmax(row)) for row in labels.numpy()] == [n % 2 for n in files]
        first, second = sum(seen[:steps], []), sum(seen[steps:], [])
        mine = {numbers[p] for p in shard}
        for epoch in (first, second):
            assert len(epoch) == len(set(epoch)) == steps * 3  # every image at most once
            assert set(epoch) <= mine
        assert first != second  # reshuffled every epoch
        passes.append(set(first))
    assert not passes[0] & passes[1]  # within an epoch, no file on both workers


def test_shards_of_any_cluster_size_partition_the_listing(numbered_folder):
    for workers in (1, 2, 3, 5):
        shards = [sharding.shard_files(numbered_folder, workers, i).paths for i in range(workers)]
        flat = sum(shards, [])
        assert sorted(flat) == sorted(numbered_folder.paths) and len(set(flat)) == len(flat)
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(ValueError, match="outside"):
        sharding.shard_files(numbered_folder, 2, 2)


def test_uneven_shards_run_the_same_number_of_steps():
    # 23 images, 2 workers: shards of 12 and 11; per-replica batch 4 -> both run 2 steps.
    assert sharding.steps_per_epoch(23, num_shards=2, per_replica_batch=4) == 2
    assert sharding.steps_per_epoch(24, num_shards=2, per_replica_batch=4) == 3
    # Two replicas on each worker consume two batches per step.
    assert sharding.steps_per_epoch(24, 2, per_replica_batch=2, replicas_per_shard=2) == 3


def test_bad_sizes_are_explained(numbered_folder):
    with pytest.raises(DataError, match="not a multiple of the 2 replicas"):
        _distribute(numbered_folder, workers=2, global_batch=5)
    with pytest.raises(DataError, match="fewer than one batch"):
        _distribute(numbered_folder, workers=2, global_batch=32)


def test_shard_seeds_differ_and_are_fixed():
    assert sharding.shard_seed(0, 0) != sharding.shard_seed(0, 1)
    assert sharding.shard_seed(7, 1) == sharding.shard_seed(7, 1)


def test_single_process_pipelines_keep_data_sharding(numbered_folder):
    dataset = train_pipeline(numbered_folder, SIZE, 4, augment=PLAIN)
    assert dataset.options().experimental_distribute.auto_shard_policy == (
        tf.data.experimental.AutoShardPolicy.DATA
    )


def test_docstring_example_runs():
    result = doctest.testmod(sharding)
    assert result.attempted > 0 and result.failed == 0
