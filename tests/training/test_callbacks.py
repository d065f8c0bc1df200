"""The history file Keras' CSVLogger writes, as a resumed run cuts and reads it."""

from __future__ import annotations

from keras_vit.training.callbacks import best_epoch, read_history, trim_history


def test_trim_keeps_the_backed_up_epochs_and_drops_a_torn_row(tmp_path):
    path = tmp_path / "history.csv"
    # CSVLogger's layout: Keras' 0-based epoch, NA for what an epoch did not log.
    path.write_text("epoch,accuracy,val_accuracy\n0,0.5,NA\n1,0.7,0.6\n2,0.8,0.9\n3,0.")
    trim_history(str(path), 9)
    assert path.read_text().endswith("2,0.8,0.9\n")  # the torn row (no line end) is gone
    trim_history(str(path), 2)
    assert read_history(str(path)) == [
        {"epoch": 1, "accuracy": 0.5},
        {"epoch": 2, "accuracy": 0.7, "val_accuracy": 0.6},
    ]
    trim_history(str(tmp_path / "absent.csv"), 1)  # nothing to cut: no error
    assert read_history(str(tmp_path / "absent.csv")) == []


def test_best_epoch_is_the_one_model_checkpoint_kept():
    history = [
        {"epoch": 1, "val_accuracy": 0.5, "val_loss": 0.9},
        {"epoch": 2, "val_accuracy": 0.8, "val_loss": 0.4},
        {"epoch": 3, "val_accuracy": 0.8, "val_loss": 0.4},  # a tie: the earlier epoch stays
        {"epoch": 4, "val_accuracy": 0.7, "val_loss": 0.5},
    ]
    assert best_epoch(history, "val_accuracy") == (2, 0.8)
    assert best_epoch(history, "val_loss") == (2, 0.4)
    assert best_epoch(history, None) == (4, 4.0)  # the last epoch
    assert best_epoch([], "val_accuracy") == (None, None)
