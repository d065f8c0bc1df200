"""Training data sources: an image folder, a TFDS name or a Hugging Face ``datasets`` id.

Every source becomes an :class:`ImageDataset`: *encoded* images (JPEG/PNG/
GIF/BMP bytes) with integer labels and the class names. Decoding and
augmentation happen later, in :mod:`keras_vit.training.pipeline`, so that
every source goes through the same decoder as the exported model's serving
signature.

Data specifications, as ``keras-vit train --data`` takes them:

- ``DIR``: an image folder with one sub-folder per class (``DIR/cat/1.jpg``);
  the class names are the sub-folder names in sorted order.
- ``tfds:NAME`` or ``tfds:NAME:SPLIT``: a TensorFlow Datasets builder
  (``pip install tensorflow-datasets``; downloads need the network).
- ``hf:ID`` or ``hf:ID:SPLIT``: a Hugging Face dataset with an image column and
  a ``ClassLabel`` column (``pip install datasets``): a hub id (downloads need
  the network), a folder written by ``Dataset.save_to_disk`` /
  ``DatasetDict.save_to_disk``, or a local imagefolder.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_vit.decode import decode_image as decode
from keras_vit.decode import traced
from keras_vit.image_folder import MAX_LISTED as _MAX_LISTED
from keras_vit.image_folder import DataError, list_folder
from keras_vit.image_folder import listing_text as _listing

logger = logging.getLogger(__name__)


class ImageDataset(ABC):
    """Encoded images with integer labels in ``[0, len(class_names))``.

    ``to_tf_dataset()`` yields ``(encoded_image: tf.string, label: tf.int32)``
    scalars in a fixed order. ``labels`` holds every label when the source can
    list them without reading the images (folders, HF datasets); then
    ``subset()`` selects examples by index, which is what the stratified
    validation split uses.
    """

    class_names: list[str]
    description: str

    @property
    @abstractmethod
    def size(self) -> int | None:
        """Number of examples, or None when unknown."""

    @property
    def labels(self) -> np.ndarray | None:
        return None

    @property
    def encoded_bytes(self) -> int | None:
        """Total size of the encoded images when cheap to know (decides on caching)."""
        return None

    @abstractmethod
    def to_tf_dataset(self) -> tf.data.Dataset:
        """The examples as a ``tf.data.Dataset`` of ``(encoded image, label)``."""

    def batches(self, batch_size: int):
        """``(encoded images, labels)`` numpy batches of :meth:`to_tf_dataset`."""
        for encoded, labels in self.to_tf_dataset().batch(batch_size).as_numpy_iterator():
            yield [bytes(item) for item in encoded], labels

    def subset(self, indices: np.ndarray) -> ImageDataset:
        raise DataError(f"{self.description} cannot be split by index")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}: {self.size} images, " + (
            f"{len(self.class_names)} classes>"
        )


class FileImageDataset(ImageDataset):
    """Image files on disk with their labels (an image folder, or any list of files)."""

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int],
        class_names: Sequence[str],
        description: str = "image files",
        unreadable: Sequence[tuple[str, str]] = (),
    ):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = [str(p) for p in paths]
        self._labels = np.asarray(labels, dtype=np.int32)
        self.class_names = list(class_names)
        self.description = description
        # (path, reason) of files a listing left out without reading them.
        self.unreadable = list(unreadable)

    @property
    def size(self) -> int:
        return len(self.paths)

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def encoded_bytes(self) -> int:
        return sum(os.path.getsize(p) for p in self.paths)

    def to_tf_dataset(self) -> tf.data.Dataset:
        files = tf.data.Dataset.from_tensor_slices((self.paths, self._labels))
        return files.map(
            lambda path, label: (tf.io.read_file(path), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    def subset(self, indices: np.ndarray) -> FileImageDataset:
        indices = np.asarray(indices, dtype=np.int64)
        return FileImageDataset(
            [self.paths[i] for i in indices],
            self._labels[indices],
            self.class_names,
            self.description,
        )

    def find_corrupt(self) -> list[str]:
        """The files that the image decoder rejects (decodes each file once, at a reduced scale)."""
        indices = tf.data.Dataset.range(len(self.paths))
        decoded = indices.map(_decode_checked(tf.constant(self.paths)), num_parallel_calls=8)
        # A file that fails to decode drops out of the stream; the survivors name the good ones.
        decoded = decoded.ignore_errors()
        good = {int(i) for i, _ in decoded.as_numpy_iterator()}
        return [p for i, p in enumerate(self.paths) if i not in good]

    def without(self, bad_paths: Sequence[str]) -> FileImageDataset:
        bad = set(bad_paths)
        keep = [i for i, p in enumerate(self.paths) if p not in bad]
        return self.subset(np.asarray(keep, dtype=np.int64))


def _decode_checked(paths: tf.Tensor):
    def decode_or_fail(index):
        # A small target lets big JPEGs decode at 1/8 scale: every byte is still checked.
        image = decode_image(tf.io.read_file(paths[index]), (16, 16))
        # Depending on the shape makes the decode run even though nobody reads the pixels.
        return index, tf.shape(image)[0]

    return decode_or_fail


def decode_image(encoded: tf.Tensor, image_size: Sequence[int]) -> tf.Tensor:
    """Decodes image bytes (a scalar string) to uint8 RGB ``(H, W, 3)`` for a model of
    ``image_size``.

    The exported signatures' decoder (``keras_vit.decode.decode_image``): the same
    IDCT and reduced JPEG scale, so training sees the pixels serving sees.
    """

    return traced(decode, image_size, ())(encoded)


def list_image_folder(
    root: str | os.PathLike, class_names: Sequence[str] | None = None
) -> FileImageDataset:
    """Lists ``root/<class>/**/<image>`` files (sorted) with the class index of their folder
    (:func:`keras_vit.image_folder.list_folder`, which reads no file and needs no TensorFlow).

    ``class_names`` fixes the classes and their order (e.g. those of the training
    folder when listing a validation folder); by default they are the
    sub-folder names, sorted. Pipes, devices, oversized files and symlinks leading out
    of the folder are never handed to ``tf.io.read_file``: they are listed as unreadable.
    """
    listing = list_folder(root, class_names)
    return FileImageDataset(
        listing.paths,
        listing.labels,
        listing.class_names,
        description=listing.description,
        unreadable=listing.unreadable,
    )


def image_folder(
    root: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    verify: bool = True,
    on_corrupt: str = "skip",
) -> FileImageDataset:
    """An image folder, with every file checked by the decoder first when ``verify``.

    Files that cannot be read (a pipe, a device, a socket, over 64 MiB, a symlink
    leading out of ``root``: see ``serving.image_files``) and files that do not
    decode (truncated, empty, not an image) are skipped with
    one warning naming them when ``on_corrupt="skip"``, or make a
    :class:`DataError` naming them when ``on_corrupt="error"``. Checking costs
    one decode per image before training; with ``verify=False`` a bad file
    stops training with an error instead (see ``trainer.train``).
    """
    if on_corrupt not in ("skip", "error"):
        raise ValueError(f"on_corrupt must be 'skip' or 'error', got {on_corrupt!r}")
    dataset = list_image_folder(root, class_names)
    if dataset.unreadable:
        listed = _listing(dataset.unreadable)
        if on_corrupt == "error":
            raise DataError(f"{len(dataset.unreadable)} files in {root} cannot be read: {listed}")
        logger.warning("Skipping %d files that cannot be read: %s", len(dataset.unreadable), listed)
    if not verify:
        return dataset
    corrupt = dataset.find_corrupt()
    if not corrupt:
        return dataset
    listed = ", ".join(corrupt[:_MAX_LISTED]) + (
        f" and {len(corrupt) - _MAX_LISTED} more" if len(corrupt) > _MAX_LISTED else ""
    )
    if on_corrupt == "error" or len(corrupt) == dataset.size:
        raise DataError(
            f"{len(corrupt)} of {dataset.size} files in {root} are not decodable images: {listed}"
        )
    logger.warning("Skipping %d files that are not decodable images: %s", len(corrupt), listed)
    return dataset.without(corrupt)


def stratified_split(
    dataset: ImageDataset, fraction: float, seed: int = 0
) -> tuple[ImageDataset, ImageDataset]:
    """Splits off ``round(fraction * n_c)`` examples of every class ``c`` (seeded, stable).

    Every class with at least two examples keeps at least one on each side.
    Returns ``(train, validation)``, each in the original order.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"validation_split must be in (0, 1), got {fraction}")
    labels = dataset.labels
    if labels is None:
        raise DataError(f"{dataset.description} has no label list to split by")
    rng = np.random.default_rng(seed)
    validation = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = int(round(fraction * len(members)))
        if len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        validation[rng.permutation(members)[:count]] = True
    if not validation.any():
        raise DataError(f"validation_split={fraction} leaves no validation examples")
    return dataset.subset(np.flatnonzero(~validation)), dataset.subset(np.flatnonzero(validation))


@dataclass
class DataSplits:
    """The training, validation and (optional) test data of one run."""

    train: ImageDataset
    validation: ImageDataset | None
    test: ImageDataset | None
    class_names: list[str]


def load_data(
    spec: str | os.PathLike | ImageDataset,
    validation: str | os.PathLike | ImageDataset | None = None,
    validation_split: float = 0.1,
    test: str | os.PathLike | ImageDataset | None = None,
    seed: int = 0,
    verify: bool = True,
    on_corrupt: str = "skip",
) -> DataSplits:
    """Resolves ``--data``, ``--validation-data`` and ``--test-data`` into datasets.

    Without ``validation``, a stratified ``validation_split`` of the training
    data (seeded) is held out; ``validation_split=0`` trains without
    validation. ``test`` is an image folder, or for ``tfds:``/``hf:`` data a
    split name (default: their ``test`` split when there is one). TFDS and HF
    sources use their own ``validation`` split when they have one; TFDS
    slices ``train[:90%]``/``train[90%:]`` otherwise (deterministic, not
    stratified).
    """
    if isinstance(spec, ImageDataset):
        train = spec
    else:
        spec = str(spec)
        if spec.startswith("tfds:"):
            return _load_tfds(spec[5:], validation_split, test)
        if spec.startswith("hf:"):
            return _load_hf(spec[3:], validation_split, test, seed)
        train = image_folder(spec, verify=verify, on_corrupt=on_corrupt)

    class_names = train.class_names

    def _other(source):
        if source is None or isinstance(source, ImageDataset):
            return source
        return image_folder(source, class_names, verify=verify, on_corrupt=on_corrupt)

    validation_data = _other(validation)
    if validation_data is None and validation_split:
        train, validation_data = stratified_split(train, validation_split, seed)
    return DataSplits(train, validation_data, _other(test), class_names)


# === TensorFlow Datasets ===


class TFDSImageDataset(ImageDataset):
    """One split of a TFDS builder with an ``image`` and a ``label`` feature, kept encoded."""

    def __init__(self, builder, split: str, image_key: str, label_key: str):
        self.builder = builder
        self.split = split
        self.image_key = image_key
        self.label_key = label_key
        self.class_names = list(builder.info.features[label_key].names)
        self.description = f"tfds:{builder.name}:{split}"
        try:
            self._size = int(builder.info.splits[split].num_examples)
        except (KeyError, ValueError, TypeError):
            self._size = None

    @property
    def size(self) -> int | None:
        return self._size

    def to_tf_dataset(self) -> tf.data.Dataset:
        import tensorflow_datasets as tfds

        dataset = self.builder.as_dataset(
            split=self.split,
            shuffle_files=False,
            decoders={self.image_key: tfds.decode.SkipDecoding()},
        )
        image_key, label_key = self.image_key, self.label_key
        return dataset.map(
            lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int32)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )


def _load_tfds(name: str, validation_split: float, test) -> DataSplits:
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise DataError(
            "tfds: data needs TensorFlow Datasets: pip install tensorflow-datasets"
        ) from error
    name, _, split = name.partition(":")
    try:
        builder = tfds.builder(name)
        builder.download_and_prepare()
    except Exception as error:  # noqa: BLE001 - tfds raises many types (network, unknown name)
        raise DataError(
            f"Could not load TFDS dataset {name!r} ({type(error).__name__}: {error}). "
            "Downloading needs network access; check the name on "
            "https://www.tensorflow.org/datasets/catalog/overview"
        ) from error
    features = builder.info.features
    image_key = _first_key(features, lambda f: type(f).__name__ == "Image", "image", name)
    label_key = _first_key(features, lambda f: type(f).__name__ == "ClassLabel", "label", name)
    splits = set(builder.info.splits.keys())
    split = split or "train"
    if validation_split and "validation" in splits and split == "train":
        train_split, validation = "train", "validation"
    elif validation_split:
        # TFDS slices are deterministic but not stratified.
        percent = int(round(100 * (1 - validation_split)))
        train_split, validation = f"{split}[:{percent}%]", f"{split}[{percent}%:]"
    else:
        train_split, validation = split, None

    def _make(split_name):
        return TFDSImageDataset(builder, split_name, image_key, label_key)

    test_split = test if isinstance(test, str) else ("test" if "test" in splits else None)
    if test_split is not None and test_split.split("[")[0] not in splits:
        raise DataError(f"TFDS dataset {name!r} has no split {test_split!r}; splits: {splits}")
    train = _make(train_split)
    return DataSplits(
        train,
        _make(validation) if validation else None,
        _make(test_split) if test_split else None,
        train.class_names,
    )


def _first_key(features, predicate, preferred: str, name: str) -> str:
    if preferred in features and predicate(features[preferred]):
        return preferred
    for key, feature in features.items():
        if predicate(feature):
            return key
    raise DataError(f"Dataset {name!r} has no {preferred} feature; features: {list(features)}")


# === Hugging Face datasets ===


class HFImageDataset(ImageDataset):
    """Rows of a Hugging Face ``datasets.Dataset`` with an ``Image`` and a ``ClassLabel`` column."""

    def __init__(self, hf_dataset, image_column: str, label_column: str, description: str):
        from datasets import Image

        # Encoded bytes (or a path) instead of PIL images: the TF decoder does the work.
        self.hf = hf_dataset.cast_column(image_column, Image(decode=False))
        self.image_column = image_column
        self.label_column = label_column
        self.class_names = list(hf_dataset.features[label_column].names)
        self.description = description
        self._labels = np.asarray(self.hf[label_column], dtype=np.int32)

    @property
    def size(self) -> int:
        return len(self.hf)

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    def subset(self, indices: np.ndarray) -> HFImageDataset:
        subset = HFImageDataset.__new__(HFImageDataset)
        subset.hf = self.hf.select(np.asarray(indices, dtype=np.int64))
        subset.image_column, subset.label_column = self.image_column, self.label_column
        subset.class_names, subset.description = self.class_names, self.description
        subset._labels = self._labels[np.asarray(indices, dtype=np.int64)]
        return subset

    def to_tf_dataset(self) -> tf.data.Dataset:
        rows, image_column, label_column = self.hf, self.image_column, self.label_column

        def generate():
            for row in rows:
                image = row[image_column]
                data = image.get("bytes")
                if data is None:
                    with open(image["path"], "rb") as f:
                        data = f.read()
                yield data, row[label_column]

        return tf.data.Dataset.from_generator(
            generate,
            output_signature=(
                tf.TensorSpec((), tf.string),
                tf.TensorSpec((), tf.int32),
            ),
        )


def _load_hf(name: str, validation_split: float, test, seed: int) -> DataSplits:
    try:
        import datasets
    except ImportError as error:
        raise DataError("hf: data needs Hugging Face datasets: pip install datasets") from error
    name, _, split = name.partition(":")
    try:
        loaded = _open_hf(datasets, name)
    except Exception as error:  # noqa: BLE001 - network, unknown id, auth, bad files, ...
        raise DataError(
            f"Could not load Hugging Face dataset {name!r} ({type(error).__name__}: {error}). "
            "A hub id needs network access (or HF_DATASETS_OFFLINE=1 with a local cache); "
            "a local folder must hold what Dataset.save_to_disk writes, or an imagefolder."
        ) from error
    split = split or "train"
    if split not in loaded:
        raise DataError(f"Dataset {name!r} has no split {split!r}; splits: {list(loaded)}")
    features = loaded[split].features
    image_column = _first_key(features, lambda f: type(f).__name__ == "Image", "image", name)
    label_column = _first_key(features, lambda f: type(f).__name__ == "ClassLabel", "label", name)

    def _make(split_name):
        return HFImageDataset(
            loaded[split_name], image_column, label_column, f"hf:{name}:{split_name}"
        )

    train = _make(split)
    validation = None
    if validation_split:
        if "validation" in loaded and split != "validation":
            validation = _make("validation")
        else:
            train, validation = stratified_split(train, validation_split, seed)
    test_split = test if isinstance(test, str) else ("test" if "test" in loaded else None)
    if test_split is not None and test_split not in loaded:
        raise DataError(f"Dataset {name!r} has no split {test_split!r}; splits: {list(loaded)}")
    test_data = _make(test_split) if test_split and test_split != split else None
    return DataSplits(train, validation, test_data, train.class_names)


def _open_hf(datasets, name: str):
    """A ``DatasetDict`` from a hub id, a ``save_to_disk`` folder or a local imagefolder."""
    path = Path(name).expanduser()
    saved = path / "dataset_dict.json", path / "state.json"
    if path.is_dir() and any(marker.is_file() for marker in saved):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.Dataset):  # one split saved on its own
            loaded = datasets.DatasetDict({"train": loaded})
        return loaded
    # A hub id, or a local folder that load_dataset reads itself (imagefolder, parquet, ...).
    return datasets.load_dataset(str(path) if path.is_dir() else name)
