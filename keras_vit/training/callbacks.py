"""The callbacks of a training run: backup, best checkpoint, history, early stop, TensorBoard.

``BackupAndRestore`` is Keras' own; the best checkpoint and the CSV history
are small callbacks of ours because Keras' ``ModelCheckpoint`` and
``CSVLogger`` forget the best value and duplicate rows when a killed run is
resumed from its backup.
"""

from __future__ import annotations

import csv
import json
import math
import os

import keras

BEST_WEIGHTS = "best.weights.h5"
BEST_STATE = "best.json"


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the weights whenever ``monitor`` improves; remembers the best across restarts.

    ``monitor=None`` keeps the last epoch instead (the weights at the end of
    the schedule). Files: ``directory/best.weights.h5`` and ``directory/best.json``
    (``{"monitor", "mode", "value", "epoch"}``, epoch 1-based). The weights are
    written to a temporary file and renamed, so a kill never leaves a torn
    best checkpoint.
    """

    def __init__(self, directory: str, monitor: str | None = "val_accuracy", mode: str = "auto"):
        super().__init__()
        if mode == "auto":
            mode = "max" if monitor is None or "acc" in monitor else "min"
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max', 'min' or 'auto', got {mode!r}")
        self.directory = directory
        self.monitor = monitor
        self.mode = mode
        self.weights_path = os.path.join(directory, BEST_WEIGHTS)
        self.state_path = os.path.join(directory, BEST_STATE)
        self.best: float | None = None
        self.best_epoch: int | None = None

    def on_train_begin(self, logs=None):
        if os.path.exists(self.state_path) and os.path.exists(self.weights_path):
            with open(self.state_path) as f:
                state = json.load(f)
            if state.get("monitor") == self.monitor:
                self.best, self.best_epoch = state["value"], state["epoch"]

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor is None:
            value = float(epoch + 1)  # the last epoch is the best
        else:
            value = (logs or {}).get(self.monitor)
            if value is None or not math.isfinite(float(value)):
                return
            value = float(value)
        if self.best is not None:
            # Ties go to the later epoch: trained longer, at a lower learning rate.
            better = value >= self.best if self.mode == "max" else value <= self.best
            if not better:
                return
        os.makedirs(self.directory, exist_ok=True)
        partial = self.weights_path + ".tmp.weights.h5"
        self.model.save_weights(partial, overwrite=True)
        os.replace(partial, self.weights_path)
        self.best, self.best_epoch = value, epoch + 1
        state = {"monitor": self.monitor, "mode": self.mode, "value": value, "epoch": epoch + 1}
        _write_json_atomically(self.state_path, state)


class HistoryCSV(keras.callbacks.Callback):
    """Writes one row per epoch to a CSV file (``epoch`` 1-based, then the logs, sorted).

    A resumed run replaces the rows of the epochs it trains again instead of
    appending duplicates; the learning rate at the end of the epoch is logged
    as ``learning_rate``.
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        row = {k: float(v) for k, v in (logs or {}).items() if _is_scalar(v)}
        if "learning_rate" not in row:
            rate = _current_learning_rate(self.model)
            if rate is not None:
                row["learning_rate"] = rate
        rows = [r for r in read_history(self.path) if int(r["epoch"]) < epoch + 1]
        rows.append({"epoch": epoch + 1, **row})
        columns = ["epoch"] + sorted({k for r in rows for k in r if k != "epoch"})
        partial = self.path + ".tmp"
        with open(partial, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(partial, self.path)


def read_history(path: str) -> list[dict]:
    """The rows of a history CSV as dicts of floats (``epoch`` as int); [] if absent."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        rows = []
        for raw in csv.DictReader(f):
            row = {k: float(v) for k, v in raw.items() if v not in ("", None)}
            row["epoch"] = int(row["epoch"])
            rows.append(row)
        return rows


def build_callbacks(
    output_dir: str,
    backup_dir: str | None,
    monitor: str | None = "val_accuracy",
    early_stopping_patience: int | None = None,
    tensorboard: bool = True,
    unfreeze_at_epoch: int | None = None,
) -> list[keras.callbacks.Callback]:
    """The callbacks ``trainer.train`` passes to ``fit``, ``BackupAndRestore`` last.

    Last, because at the end of an epoch the history row and the best
    checkpoint must be on disk before the backup says the epoch is done: a
    kill in between then trains that epoch again instead of losing its row.
    None of the others needs the restored state in ``on_train_begin``.
    """
    from keras_vit.training.freeze import UnfreezeBackbone

    callbacks: list[keras.callbacks.Callback] = []
    if unfreeze_at_epoch is not None:
        callbacks.append(UnfreezeBackbone(unfreeze_at_epoch))
    callbacks.append(BestCheckpoint(os.path.join(output_dir, "checkpoints"), monitor=monitor))
    callbacks.append(HistoryCSV(os.path.join(output_dir, "history.csv")))
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
        # double_checkpoint: a kill while the backup is being written leaves the previous one.
        callbacks.append(keras.callbacks.BackupAndRestore(backup_dir, double_checkpoint=True))
    return callbacks


def _is_scalar(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _current_learning_rate(model) -> float | None:
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return None
    try:
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    except (TypeError, ValueError, AttributeError):
        return None


def _write_json_atomically(path: str, data: dict) -> None:
    partial = path + ".tmp"
    with open(partial, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(partial, path)
