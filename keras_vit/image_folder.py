"""Image folders (``root/<class>/**/<image>``) listed and read without TensorFlow.

Training wraps the listing in a ``tf.data`` pipeline
(:func:`keras_vit.training.data.list_image_folder`); ``keras-vit evaluate --server``
reads the files here and sends their bytes, so that a command whose model runs in a
server never imports TensorFlow. Files are read with :mod:`serving.image_files`
(regular files only, size-capped, never a symlink leading out of the folder).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving.file_formats import describe, image_format
from serving.image_files import ImageFileError, listing_problem, read_image_file

# What the one decoder (keras_vit/decode.py) reads, in training and serving alike.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
# How many file names a warning or error lists before it only counts.
MAX_LISTED = 10


class DataError(ValueError):
    """The data cannot be used as given; the message says why and what to do."""


def listing_text(problems: Sequence[tuple[str, str]]) -> str:
    """``path: reason; ...`` for at most :data:`MAX_LISTED` problems, then a count."""
    shown = "; ".join(f"{path}: {reason}" for path, reason in problems[:MAX_LISTED])
    more = len(problems) - MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


@dataclass
class FolderListing:
    """The image files of a folder with the class index of each, and what was left out."""

    root: str
    paths: list[str]
    labels: np.ndarray
    class_names: list[str]
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.paths)

    @property
    def description(self) -> str:
        return f"image folder {self.root}"

    def without_non_images(self) -> tuple[FolderListing, list[tuple[str, str]]]:
        """This listing less the files whose first bytes are no image format the decoder
        reads (named by format, never by content), and those files with their reasons."""
        keep, dropped = [], []
        for index, path in enumerate(self.paths):
            try:
                with open(path, "rb", opener=_nonblocking) as handle:
                    head = handle.read(16)
            except OSError as error:
                dropped.append((path, error.strerror or str(error)))
                continue
            if image_format(head):
                keep.append(index)
            else:
                dropped.append((path, f"not an image ({describe(head)})"))
        listing = FolderListing(
            self.root,
            [self.paths[i] for i in keep],
            self.labels[np.asarray(keep, dtype=np.int64)],
            self.class_names,
            self.unreadable,
        )
        return listing, dropped

    def batches(self, batch_size: int) -> Iterator[tuple[list[bytes], np.ndarray]]:
        """``(encoded images, labels)`` of ``batch_size`` files at a time, in order."""
        for start in range(0, self.size, batch_size):
            paths = self.paths[start : start + batch_size]
            try:
                encoded = [read_image_file(path, within=self.root) for path in paths]
            except ImageFileError as error:  # changed on disk since it was listed
                raise DataError(str(error)) from None
            yield encoded, self.labels[start : start + batch_size]


def _nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK)


def list_folder(root: str | os.PathLike, class_names: Sequence[str] | None = None) -> FolderListing:
    """Lists ``root/<class>/**/<image>`` files (sorted) with the class index of their folder.

    ``class_names`` fixes the classes and their order (e.g. those of the training
    folder when listing a validation folder); by default they are the
    sub-folder names, sorted. Files with other extensions are ignored; hidden
    files and folders too. Pipes, devices, oversized files and symlinks leading out
    of the folder are never read: they are listed in ``unreadable``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Image folder {str(root)!r} does not exist or is not a folder")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_names is None:
        class_names = folders
    else:
        class_names = [str(c) for c in class_names]
        unknown = sorted(set(folders) - set(class_names))
        if unknown:
            raise DataError(
                f"{root} has class folders that the training data does not have: {unknown}"
            )
    if len(class_names) < 2:
        raise DataError(
            f"Image folder {str(root)!r} needs one sub-folder per class and at least two "
            f"classes; found {folders or 'none'}"
        )
    paths, labels, unreadable = [], [], []
    for index, name in enumerate(class_names):
        folder = root / name
        if not folder.is_dir():
            continue
        found = sorted(
            p
            for p in folder.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS
            and not p.is_dir()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        for p in found:
            problem = listing_problem(p, root)
            if problem is None:
                paths.append(str(p))
                labels.append(index)
            else:
                unreadable.append((str(p), problem))
    if not paths:
        raise DataError(
            f"No images ({', '.join(IMAGE_EXTENSIONS)}) found under the class folders of {root}"
            + (f"; not read: {listing_text(unreadable)}" if unreadable else "")
        )
    return FolderListing(
        str(root), paths, np.asarray(labels, dtype=np.int32), list(class_names), unreadable
    )
