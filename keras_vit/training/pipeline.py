"""``tf.data`` input pipelines: decode in parallel, augment, cache, batch, prefetch.

Both pipelines yield ``(images, one_hot_labels)`` with images float32 in
``[0, 255]``, NHWC at the model's ``image_size``; the model's in-graph
``preprocessing`` layer normalises them (and its resize is the identity at
that size).

Evaluation decodes and resizes with exactly the op of the in-graph layer
(``keras.ops.image.resize``, bilinear, antialiased, float32), so an image
scores the same through this pipeline as when the model gets it raw, as in
serving. Training replaces the resize by a random resized crop (Szegedy et al.,
2015) and a horizontal flip; RandAugment and MixUp (Keras' layers) are optional.

The crop and flip are stateless ops seeded from ``seed`` and the example's
position in the epoch, and Keras' RandAugment and MixUp layers are seeded from
``seed``: the same seed gives the same batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import tensorflow as tf

from keras_vit.decode import resize
from keras_vit.training.data import ImageDataset, decode_image

AUTOTUNE = tf.data.AUTOTUNE
_DATA = tf.data.experimental.AutoShardPolicy.DATA


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation. The defaults are the ViT/DeiT fine-tuning crop and flip.

    ``crop_scale`` is the range of the crop's share of the image area and
    ``crop_ratio`` of its aspect ratio; ``random_resized_crop=False`` resizes
    the whole image instead. ``randaugment_ops`` random RandAugment
    operations of strength ``randaugment_factor`` (0..1) are applied per image
    when > 0; ``mixup_alpha`` > 0 mixes each image and its label with another
    of the batch with a Beta(alpha, alpha) weight (``keras.layers.MixUp``).
    """

    random_resized_crop: bool = True
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    horizontal_flip: bool = True
    randaugment_ops: int = 0
    randaugment_factor: float = 0.5
    mixup_alpha: float = 0.0

    def __post_init__(self):
        low, high = self.crop_scale
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        low, high = self.crop_ratio
        if not 0.0 < low <= high:
            raise ValueError(f"crop_ratio must satisfy 0 < low <= high, got {self.crop_ratio}")
        if self.randaugment_ops < 0 or not 0.0 <= self.randaugment_factor <= 1.0:
            raise ValueError("randaugment_ops must be >= 0 and randaugment_factor in [0, 1]")
        if self.mixup_alpha < 0:
            raise ValueError(f"mixup_alpha must be >= 0, got {self.mixup_alpha}")


def resize_like_model(image: tf.Tensor, image_size: Sequence[int]) -> tf.Tensor:
    """Resizes ``(H, W, 3)`` or ``(N, H, W, 3)`` pixels as serving does, to float32.

    The serving decoder's resize (``keras_vit.decode.resize``): the in-graph layer's op
    (bilinear, antialiased), skipped at the same size.
    """
    return resize(image, image_size)


def eval_pipeline(
    data: ImageDataset,
    image_size: Sequence[int],
    batch_size: int,
    cache: bool | str = False,
) -> tf.data.Dataset:
    """Decode, resize exactly like the model's preprocessing layer, batch, prefetch."""
    num_classes = len(data.class_names)
    image_size = tuple(image_size)

    def prepare(encoded, label):
        image = resize_like_model(decode_image(encoded, image_size), image_size)
        return tf.ensure_shape(image, (*image_size, 3)), tf.one_hot(label, num_classes)

    dataset = data.to_tf_dataset().map(prepare, num_parallel_calls=AUTOTUNE)
    dataset = _cache(dataset, cache)
    return _with_options(dataset.batch(batch_size).prefetch(AUTOTUNE))


def train_pipeline(
    data: ImageDataset,
    image_size: Sequence[int],
    batch_size: int,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    cache: bool | str = False,
    shuffle_buffer: int = 10_000,
    drop_remainder: bool = True,
    batches: int | None = None,
    auto_shard_policy: tf.data.experimental.AutoShardPolicy = _DATA,
) -> tf.data.Dataset:
    """Decode (cached), shuffle, augment per image, batch, mix up, prefetch.

    ``cache=True`` keeps the decoded images in memory after the first epoch; a
    string caches them in files with that prefix. The shuffle and the
    augmentation change every epoch and are fixed by ``seed``. ``batches``
    keeps only that many batches per pass (a multi-worker file shard, see
    :mod:`keras_vit.training.sharding`, which also turns auto-sharding ``OFF``).
    """
    augment = augment or AugmentConfig()
    num_classes = len(data.class_names)
    image_size = tuple(image_size)

    dataset = data.to_tf_dataset().map(
        lambda encoded, label: (decode_image(encoded, image_size), label),
        num_parallel_calls=AUTOTUNE,
    )
    dataset = _cache(dataset, cache)
    size = data.size or shuffle_buffer
    dataset = dataset.shuffle(min(size, shuffle_buffer), seed=seed, reshuffle_each_iteration=True)
    # One fresh random pair per example and epoch, fixed by `seed`: stateless ops need it.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    dataset = tf.data.Dataset.zip((dataset, seeds))
    randaugment = _randaugment(augment, seed) if augment.randaugment_ops else None

    def augment_one(example, pair_seed):
        image, label = example
        crop_seed, flip_seed = tf.unstack(
            tf.random.experimental.stateless_split(tf.cast(pair_seed, tf.int64), num=2)
        )
        if augment.random_resized_crop:
            image = random_resized_crop(image, image_size, augment, crop_seed)
        else:
            image = resize_like_model(image, image_size)
        # Slicing by a computed box loses the static channel count; the model checks it.
        image = tf.ensure_shape(image, (*image_size, 3))
        if augment.horizontal_flip:
            image = tf.image.stateless_random_flip_left_right(image, flip_seed)
        if randaugment is not None:
            image = tf.clip_by_value(randaugment(image), 0.0, 255.0)
        return image, tf.one_hot(label, num_classes)

    dataset = dataset.map(augment_one, num_parallel_calls=AUTOTUNE)
    drop = drop_remainder and (data.size is None or data.size >= batch_size)
    dataset = dataset.batch(batch_size, drop_remainder=drop)
    if augment.mixup_alpha > 0:
        dataset = _mixup(dataset, augment.mixup_alpha, seed)
    if batches is not None:
        dataset = dataset.take(batches)
    return _with_options(dataset.prefetch(AUTOTUNE), auto_shard_policy)


def random_resized_crop(
    image: tf.Tensor, image_size: Sequence[int], augment: AugmentConfig, seed: tf.Tensor
) -> tf.Tensor:
    """Crops a random box of ``crop_scale`` area and ``crop_ratio`` shape, resized to the size."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=augment.crop_ratio,
        area_range=augment.crop_scale,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, size)
    return resize_like_model(crop, image_size)


def _randaugment(augment: AugmentConfig, seed: int):
    layer = keras.layers.RandAugment(
        value_range=(0, 255),
        num_ops=augment.randaugment_ops,
        factor=augment.randaugment_factor,
        seed=seed,
    )
    return lambda image: layer(image, training=True)


def _mixup(dataset: tf.data.Dataset, alpha: float, seed: int) -> tf.data.Dataset:
    """Keras' ``MixUp``: each image and label mixed with another of its batch, Beta(a, a)."""
    layer = keras.layers.MixUp(alpha=alpha, seed=seed + 1, dtype="float32")

    def mix(images, labels):
        mixed = layer({"images": images, "labels": labels}, training=True)
        return mixed["images"], mixed["labels"]

    # Sequential: the layer's seed state then advances in the same order every run.
    return dataset.map(mix)


def _cache(dataset: tf.data.Dataset, cache: bool | str) -> tf.data.Dataset:
    if cache is True:
        return dataset.cache()
    if isinstance(cache, str) and cache:
        return dataset.cache(cache)
    return dataset


def _with_options(
    dataset: tf.data.Dataset, auto_shard_policy: tf.data.experimental.AutoShardPolicy = _DATA
) -> tf.data.Dataset:
    options = tf.data.Options()
    # By default split by element: tf.data's FILE policy does not recognise our file lists
    # (only reader datasets), and in-memory rows have no files. Multi-worker runs shard
    # image files themselves before reading them (sharding.py) and pass OFF.
    options.experimental_distribute.auto_shard_policy = auto_shard_policy
    return dataset.with_options(options)
