"""The callbacks of a training run: best checkpoint, history, backup, early stop, TensorBoard.

All are Keras' own, the backup through :mod:`keras_vit.training.backup`.
What a resumed run needs beyond them lives in the trainer: it cuts
``history.csv`` back to the epochs the backup holds (so
``CSVLogger(append=True)`` adds no duplicate rows) and starts
``ModelCheckpoint`` at the best value of the rows kept
(``initial_value_threshold``).
"""

from __future__ import annotations

import csv
import math
import os

import keras

from keras_vit.training.backup import Backup, ResumableBackup
from keras_vit.training.freeze import UnfreezeBackbone

BEST_WEIGHTS = "best.weights.h5"


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimizer's learning rate at the end of each epoch to the logs."""

    def on_epoch_end(self, epoch, logs=None):
        optimizer = getattr(self.model, "optimizer", None)
        if logs is not None and optimizer is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def read_history(path: str) -> list[dict]:
    """The rows of ``CSVLogger``'s file as dicts of floats, ``epoch`` 1-based; [] if absent.

    ``CSVLogger`` writes Keras' 0-based epoch index, and ``NA`` for a value an
    epoch did not log (e.g. ``val_*`` without validation data); those are left out.
    """
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row = {k: float(v) for k, v in raw.items() if v not in ("", "NA", None)}
            row["epoch"] = int(row["epoch"]) + 1
            rows.append(row)
    return rows


def trim_history(path: str, epochs: int) -> None:
    """Keeps the header and the rows of the first ``epochs`` epochs of a CSVLogger file."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        lines = f.read().splitlines(keepends=True)
    kept = lines[:1] + [line for line in lines[1:] if _epoch_of(line) < epochs]
    partial = path + ".tmp"
    with open(partial, "w", newline="") as f:
        f.writelines(kept)
    os.replace(partial, path)


def _epoch_of(line: str) -> float:
    """The epoch of a CSV row; a row torn by a kill (no line end, no number) counts as never."""
    try:
        return float(line.split(",", 1)[0]) if line.endswith("\n") else math.inf
    except ValueError:
        return math.inf


def monitor_mode(monitor: str | None) -> str:
    return "max" if monitor is None or "acc" in monitor else "min"


def best_epoch(history: list[dict], monitor: str | None) -> tuple[int | None, float | None]:
    """``(epoch, value)`` that ``ModelCheckpoint`` kept: the first best, or the last epoch.

    ``ModelCheckpoint`` saves on a strict improvement only, so of equal values
    the earliest epoch is kept.
    """
    if not history:
        return None, None
    if monitor is None:
        return history[-1]["epoch"], float(history[-1]["epoch"])
    sign = 1.0 if monitor_mode(monitor) == "max" else -1.0
    best = None
    for row in history:
        value = row.get(monitor)
        if value is None or not math.isfinite(value):
            continue
        if best is None or sign * value > sign * best[1]:
            best = (row["epoch"], value)
    return best if best is not None else (None, None)


def build_callbacks(
    output_dir: str,
    backup_dir: str | None,
    backup: Backup | None = None,
    monitor: str | None = "val_accuracy",
    best_so_far: float | None = None,
    early_stopping_patience: int | None = None,
    tensorboard: bool = True,
    unfreeze_at_epoch: int | None = None,
) -> list[keras.callbacks.Callback]:
    """The callbacks ``trainer.train`` passes to ``fit``, ``BackupAndRestore`` last.

    Last, because at the end of an epoch the history row and the best
    checkpoint must be on disk before the backup says the epoch is done: a
    kill in between then trains that epoch again (its row is cut on resume).
    ``backup`` is the backup to resume from (loaded by ``backup.restore``).
    ``monitor=None`` keeps the last epoch; ``best_so_far`` is the best value of
    the epochs a resumed run already trained.
    """

    callbacks: list[keras.callbacks.Callback] = []
    if unfreeze_at_epoch is not None:
        callbacks.append(UnfreezeBackbone(unfreeze_at_epoch))
    callbacks.append(LearningRateLogger())
    callbacks.append(
        keras.callbacks.ModelCheckpoint(
            os.path.join(output_dir, "checkpoints", BEST_WEIGHTS),
            monitor=monitor or "loss",
            mode=monitor_mode(monitor),
            save_best_only=monitor is not None,
            save_weights_only=True,
            initial_value_threshold=best_so_far if monitor is not None else None,
        )
    )
    history = os.path.join(output_dir, "history.csv")
    callbacks.append(keras.callbacks.CSVLogger(history, append=True))
    callbacks.append(keras.callbacks.TerminateOnNaN())
    if early_stopping_patience:
        if monitor is None:
            raise ValueError("early stopping needs a metric to monitor")
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor, patience=early_stopping_patience, mode="auto", verbose=1
            )
        )
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(output_dir, "logs")))
    if backup_dir:
        # Written atomically: a kill while the backup is being written leaves the previous one.
        callbacks.append(ResumableBackup(backup_dir, backup))
    return callbacks
