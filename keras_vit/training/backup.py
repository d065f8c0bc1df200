"""The training backup: written atomically, restored with a fall-back, explained when it cannot be.

Keras' ``BackupAndRestore`` (3.x up to at least 3.15) writes
``latest.weights.h5`` in place, so a kill while it writes leaves a truncated
file; its ``double_checkpoint`` copy (``.bkp``) is tried only when loading
raises ``OSError`` (keras-team/keras#20463, fixed by #20465 for that error
only), while a truncated HDF5 file raises ``ValueError`` ("Layer 'norm_1'
expected 2 variables, but received 0"). Every later run of the same command
then fails until the folder is deleted by hand.
``tests/training/test_backup_atomic.py`` checks that this is still so on the
installed Keras (see :data:`KERAS_FALLBACK_ON_OSERROR_ONLY`).

:class:`ResumableBackup` keeps Keras' callback (its hooks, ``save_freq``, the
``training_metadata.json`` that says how many epochs are done) and replaces
how the state is written and read:

- each backup is a new file, ``epoch-NNNN.weights.h5``, written under a
  temporary name, flushed to disk (fsync) and renamed (``os.replace``);
- ``training_metadata.json`` is the commit record: it is replaced atomically
  after the weights are on disk and names them, and the previous backup
  (``previous``); older files are deleted only after that;
- :func:`restore` (before ``fit``) loads the newest backup, falling back to
  the previous one on any error; when neither loads, a :class:`BackupError`
  names the folder and the way out (start over by deleting it, or
  ``--no-resume``).

A kill at any point therefore leaves either the old or the new backup whole.
Backups in Keras' own layout (``latest.weights.h5`` and ``.bkp``) are read too.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from dataclasses import dataclass, field

import keras
import tensorflow as tf
from keras.src.utils import file_utils
from packaging.version import Version

METADATA = "training_metadata.json"
_KERAS_WEIGHTS = "latest.weights.h5"  # Keras' own layout, read for older backups
_PARTIAL = ".partial"
_FORMAT = 2

# Keras versions whose BackupAndRestore falls back to the .bkp copy on OSError only: 3.6
# (double_checkpoint's first release) up to the installed 3.15; the end is the first version
# not checked.
KERAS_FALLBACK_ON_OSERROR_ONLY = (Version("3.6"), Version("3.16"))

# Test hook: "POINT[:SIGNAL[:COUNT]]" sends SIGNAL (default INT) to this process the COUNT-th
# time (default 1st) the backup writer reaches POINT (one of WRITE_POINTS), so that tests stop
# a run at each step of a write deterministically.
SIGNAL_HOOK_ENV = "KERAS_VIT_TEST_SIGNAL_AT"
WRITE_POINTS = (
    "epoch-end",  # the backup callback starts (history row and best checkpoint written)
    "write-start",  # the backup folder exists, nothing of this backup written yet
    "weights-partial",  # the weights are in the temporary file, not yet synced
    "weights-written",  # the weights file has its final name, the metadata is old
    "metadata-partial",  # the new metadata is in its temporary file
    "committed",  # the metadata names the new weights; older files not yet deleted
    "cleaned",  # older files deleted
)


class BackupError(RuntimeError):
    """The backup exists but cannot be used; the message says what to do."""


@dataclass
class Backup:
    """One usable backup: ``epochs`` finished (and ``batch`` of the next), in ``weights``."""

    directory: str
    epochs: int
    batch: int
    weights: str
    skipped: list[str] = field(default_factory=list)  # why newer backups were passed over

    def describe(self) -> str:
        return f"epoch {self.epochs}" if self.epochs else "no finished epoch"


def _hook(point: str) -> None:
    spec = os.environ.get(SIGNAL_HOOK_ENV)
    if not spec:
        return
    name, _, rest = spec.partition(":")
    if name != point:
        return
    signame, _, count = rest.partition(":")
    _hook_counts[point] = _hook_counts.get(point, 0) + 1
    if _hook_counts[point] == int(count or 1):
        os.kill(os.getpid(), getattr(signal, "SIG" + (signame or "INT").upper()))


_hook_counts: dict[str, int] = {}


def _join(directory: str, name: str) -> str:
    return file_utils.join(directory, name)


def _fsync_file(path: str) -> None:
    if file_utils.is_remote_path(path):
        return  # an object store makes an object visible whole, once written
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_dir(directory: str) -> None:
    if file_utils.is_remote_path(directory) or os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(source: str, target: str) -> None:
    if file_utils.is_remote_path(target):
        tf.io.gfile.rename(source, target, overwrite=True)
    else:
        os.replace(source, target)


def write_json_atomically(data: dict, path: str) -> None:
    partial = path + _PARTIAL
    with file_utils.File(partial, "w") as f:
        f.write(json.dumps(data))
    _fsync_file(partial)
    _hook("metadata-partial")
    _replace(partial, path)


def read_metadata(directory: str) -> dict | None:
    """The metadata of the backup in ``directory``; None without one; BackupError if unreadable."""
    path = _join(directory, METADATA)
    if not file_utils.exists(path):
        return None
    try:
        with file_utils.File(path, "r") as f:
            metadata = json.loads(f.read())
        int(metadata["epoch"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        reason = f"{METADATA} is unreadable: {error}"
        raise BackupError(unusable_message(directory, reason)) from error
    return metadata


def unusable_message(directory: str, reason: str) -> str:
    return (
        f"the training backup in {directory} cannot be used ({reason}). To start over, "
        f"delete {directory} or run the same command with --no-resume (which deletes it)"
    )


def _candidates(directory: str, metadata: dict) -> list[tuple[int, int, str]]:
    """``(epochs, batch, weights path)`` of the backups the metadata names, newest first."""
    if metadata.get("format") == _FORMAT:
        found = [metadata, *([metadata["previous"]] if metadata.get("previous") else [])]
        return [
            (int(m["epoch"]), int(m.get("batch", 0)), _join(directory, m["weights"])) for m in found
        ]
    # Keras' layout: latest.weights.h5 with the metadata, then the .bkp pair.
    candidates = [(int(metadata["epoch"]), 0, _join(directory, _KERAS_WEIGHTS))]
    previous = _join(directory, METADATA + ".bkp")
    if file_utils.exists(previous):
        try:
            with file_utils.File(previous, "r") as f:
                epoch = int(json.loads(f.read())["epoch"])
            candidates.append((epoch, 0, _join(directory, _KERAS_WEIGHTS + ".bkp")))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return candidates


def restore(model: keras.Model, directory: str) -> Backup | None:
    """Loads the newest backup in ``directory`` that loads, else the previous one.

    Returns None without a backup; raises :class:`BackupError` (naming the
    folder and the way out) when none loads: damaged, or written by another
    model or other settings. ``model`` must be compiled with its optimizer built.
    """
    metadata = read_metadata(directory)
    if metadata is None:
        return None
    skipped = []
    for epochs, batch, weights in _candidates(directory, metadata):
        try:
            if not file_utils.exists(weights):
                raise FileNotFoundError(f"{os.path.basename(weights)} is missing")
            _load_weights(model, weights)
        except Exception as error:  # noqa: BLE001 - h5py and Keras raise OSError, ValueError...
            skipped.append(f"the backup of epoch {epochs} does not load ({_first_line(error)})")
            continue
        return Backup(directory, epochs, batch, weights, skipped)
    raise BackupError(unusable_message(directory, "; ".join(skipped)))


def _load_weights(model: keras.Model, path: str) -> None:
    if path.endswith(".weights.h5"):
        model.load_weights(path)
        return
    # Keras' ".weights.h5.bkp": load_weights goes by the name, so a copy that ends right.
    with tempfile.TemporaryDirectory() as local:
        copy = os.path.join(local, "previous.weights.h5")
        file_utils.copy(path, copy)
        model.load_weights(copy)


def saved_epochs(directory: str) -> int | None:
    """Epochs the backup in ``directory`` holds (its metadata); None without a readable one."""
    try:
        metadata = read_metadata(directory)
    except BackupError:
        return None
    return None if metadata is None else int(metadata["epoch"])


def remove_backup(directory: str) -> bool:
    """Deletes the backup folder; whether there was one."""
    if not file_utils.exists(directory):
        return False
    file_utils.rmtree(directory)
    return True


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` with atomic writes and a restore that falls back or explains.

    ``backup`` is what :func:`restore` loaded before ``fit`` (None: start
    from scratch), whose epochs ``fit`` skips; ``is_chief=False`` (another
    worker of a cluster) restores but never writes or deletes. The backup is
    kept when training ends (``delete_checkpoint=False``): the trainer deletes
    it once the model directory is written, so that a stop in between loses
    no training.
    """

    def __init__(
        self,
        backup_dir: str,
        backup: Backup | None = None,
        is_chief: bool = True,
        save_freq="epoch",
        delete_checkpoint: bool = False,
    ):
        super().__init__(backup_dir, save_freq=save_freq, delete_checkpoint=delete_checkpoint)
        self.backup = backup
        self.is_chief = is_chief
        self._previous = (
            {
                "epoch": backup.epochs,
                "batch": backup.batch,
                "weights": os.path.basename(backup.weights),
            }
            if backup is not None
            else None
        )

    def on_train_begin(self, logs=None):
        if self.backup is not None:
            self.model._initial_epoch = self.backup.epochs  # what Keras' own restore sets

    def on_epoch_end(self, epoch, logs=None):
        _hook("epoch-end")
        super().on_epoch_end(epoch, logs)

    def _save_model(self):
        if not self.is_chief:
            return
        directory = self.backup_dir
        if not file_utils.exists(directory):
            file_utils.makedirs(directory)
        _hook("write-start")
        name = f"epoch-{self._current_epoch:04d}"
        if self._last_batch_seen and self.save_freq != "epoch":
            name += f"-batch-{self._last_batch_seen:06d}"
        name += ".weights.h5"
        final = _join(directory, name)
        if file_utils.is_remote_path(directory):
            # Written locally, copied up under a temporary name, then renamed.
            with tempfile.TemporaryDirectory() as local:
                self.model.save_weights(os.path.join(local, name), overwrite=True)
                _hook("weights-partial")
                file_utils.copy(os.path.join(local, name), final + _PARTIAL)
            _replace(final + _PARTIAL, final)
        else:
            # save_weights wants a name ending in .weights.h5: the temporary one does too.
            partial = _join(directory, "partial-" + name)
            self.model.save_weights(partial, overwrite=True)
            _hook("weights-partial")
            _fsync_file(partial)
            os.replace(partial, final)
            _fsync_dir(directory)
        _hook("weights-written")
        current = {"epoch": self._current_epoch, "batch": self._last_batch_seen, "weights": name}
        write_json_atomically(
            {"format": _FORMAT, **current, "previous": self._previous},
            _join(directory, METADATA),
        )
        _fsync_dir(directory)
        _hook("committed")
        keep = {name, self._previous["weights"] if self._previous else None, METADATA}
        self._previous = current
        for entry in file_utils.listdir(directory):
            if entry not in keep:
                try:
                    file_utils.remove(_join(directory, entry))
                except OSError:
                    pass  # a leftover is harmless: nothing names it
        _hook("cleaned")

    def on_train_end(self, logs=None):
        if self.is_chief:
            super().on_train_end(logs)
