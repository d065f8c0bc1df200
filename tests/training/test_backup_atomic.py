"""The training backup survives Ctrl-C and SIGTERM at any point; a damaged one is explained.

The signal tests run ``keras-vit train`` in this process (``cli.main``), so
that each run takes seconds: the test hook ``KERAS_VIT_TEST_SIGNAL_AT`` sends
the signal from inside the backup writer at each step of a write, and a few
timers send it at arbitrary moments. Every run after a stop must either
resume or start over, say which, and end with one history row per epoch.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time

import keras
import numpy as np
import pytest
from packaging.version import Version

from keras_vit import cli
from keras_vit.training import backup as backup_lib
from tests.training.conftest import SMALL_VIT, write_colour_folder

# 125 CPU-s in all (tests/support/cpu_report.py): `make test` runs it, `make test-fast` not
pytestmark = pytest.mark.slow

EPOCHS = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_colour_folder(tmp_path_factory.mktemp("data") / "colours", per_class=6)


def _args(data, output, *more):
    return [
        "train",
        "--data",
        str(data),
        "--model-config",
        json.dumps(SMALL_VIT),
        "--output",
        str(output),
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        "4",
        "--validation-split",
        "0.25",
        "--no-tensorboard",
        "--no-verify-images",
        "--verbose",
        "2",
        *more,
    ]


def _train(data, output, capsys, *more) -> tuple[int, str, str]:
    rc = cli.main(_args(data, output, *more))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _history_epochs(output) -> list[int]:
    lines = (output / "history.csv").read_text().splitlines()[1:]
    return [int(line.split(",")[0]) for line in lines]


def _check_rerun(data, output, capsys, stopped_err: str):
    """The next run resumes or starts over as the stop message said, and finishes cleanly."""
    saved = re.search(r"epochs 1-(\d+)", stopped_err)
    rc, out, err = _train(data, output, capsys)
    assert rc == 0, out + err
    if saved:
        done = int(saved.group(1))
        assert f"Resuming from the backup in {output / 'backup'}: {done} of {EPOCHS}" in out
    elif "after the last epoch" in stopped_err:
        assert f"{EPOCHS} of {EPOCHS} epochs done" in out
        done = EPOCHS
    else:
        assert "Starting a new run" in out, out
        done = 0
    epochs = [int(n) for n in re.findall(rf"^Epoch (\d+)/{EPOCHS}$", out, flags=re.MULTILINE)]
    assert epochs == list(range(done + 1, EPOCHS + 1)), out
    assert _history_epochs(output) == list(range(EPOCHS))  # no duplicate, none missing
    assert (output / "model.keras").is_file() and not (output / "backup").exists()


# (point, signal, which time the writer reaches it): epoch ends and every step of a write.
HOOKS = [
    ("epoch-end", "INT", 1),
    ("weights-partial", "TERM", 1),
    ("weights-partial", "INT", 2),
    ("weights-written", "INT", 2),
    ("metadata-partial", "TERM", 2),
    ("committed", "INT", 2),
    ("cleaned", "TERM", 3),
]


def test_a_signal_at_any_step_of_a_backup_write_leaves_a_usable_backup(
    data, tmp_path, capsys, monkeypatch
):
    for point, name, count in HOOKS:
        output = tmp_path / f"{point}-{name}-{count}"
        monkeypatch.setenv(backup_lib.SIGNAL_HOOK_ENV, f"{point}:{name}:{count}")
        monkeypatch.setattr(backup_lib, "_hook_counts", {})
        rc, out, err = _train(data, output, capsys)
        signum = getattr(signal, "SIG" + name)
        assert rc == 128 + signum, (point, out, err)
        lines = [line for line in err.splitlines() if line.startswith("Stopped by")]
        assert len(lines) == 1 and lines[0].startswith(f"Stopped by SIG{name}"), err
        assert "Traceback" not in err
        monkeypatch.delenv(backup_lib.SIGNAL_HOOK_ENV)
        _check_rerun(data, output, capsys, lines[0])


@pytest.fixture(scope="module")
def seconds_to_train(data, tmp_path_factory) -> float:
    """How long a whole run takes on this machine now: the timers below land inside one.

    Fixed delays did not: once training took 3 s, a signal sent after 3.0 s found it done.
    The second of two runs is timed: the first in a process is slower (one-time traces).
    """
    folder = tmp_path_factory.mktemp("timing")
    assert cli.main(_args(data, folder / "warm-up")) == 0
    start = time.perf_counter()
    assert cli.main(_args(data, folder / "timed")) == 0
    return time.perf_counter() - start


@pytest.mark.parametrize("share", [0.1, 0.35, 0.6])
def test_a_signal_at_an_arbitrary_moment_leaves_a_usable_backup(
    data, tmp_path, capsys, seconds_to_train, share
):
    delay = share * seconds_to_train
    for attempt in range(4):
        output = tmp_path / f"run-{attempt}"
        timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        try:
            rc, out, err = _train(data, output, capsys)
        finally:
            timer.cancel()
        if rc != 0:
            break
        # It finished first (runs on a busy machine are uneven): send the signal sooner.
        assert "Stopped by" not in err, err
        delay /= 2
    assert rc == 130, out + err
    lines = [line for line in err.splitlines() if line.startswith("Stopped by SIGINT")]
    assert len(lines) == 1, err
    _check_rerun(data, output, capsys, lines[0])


def test_a_damaged_latest_backup_falls_back_to_the_previous_one(data, tmp_path, capsys):
    output = tmp_path / "run"
    backup = output / "backup"
    os.environ[backup_lib.SIGNAL_HOOK_ENV] = "cleaned:INT:2"
    backup_lib._hook_counts.clear()
    try:
        rc, _, err = _train(data, output, capsys)
    finally:
        del os.environ[backup_lib.SIGNAL_HOOK_ENV]
    assert rc == 130 and "epochs 1-2 of 3" in err
    metadata = json.loads((backup / backup_lib.METADATA).read_text())
    _drop_arrays(backup / metadata["weights"])  # as a write stopped half-way leaves it
    rc, out, err = _train(data, output, capsys)
    assert rc == 0, out + err
    assert "the backup of epoch 2 does not load" in out
    assert "Resuming from the backup" in out and "1 of 3 epochs done" in out
    assert _history_epochs(output) == [0, 1, 2]


def test_an_unusable_backup_names_the_folder_and_the_way_out(data, tmp_path, capsys):
    output = tmp_path / "run"
    backup = output / "backup"
    os.environ[backup_lib.SIGNAL_HOOK_ENV] = "cleaned:TERM:2"
    backup_lib._hook_counts.clear()
    try:
        assert _train(data, output, capsys)[0] == 128 + signal.SIGTERM
    finally:
        del os.environ[backup_lib.SIGNAL_HOOK_ENV]
    for weights in backup.glob("*.weights.h5"):
        weights.write_bytes(b"\0" * 100)
    rc, out, err = _train(data, output, capsys)
    assert rc == 1
    assert f"the training backup in {backup} cannot be used" in err
    assert "--no-resume" in err and f"delete {backup}" in err
    rc, out, err = _train(data, output, capsys, "--no-resume")
    assert rc == 0, out + err
    assert f"Deleted the backup in {backup} (--no-resume)" in out
    assert "Starting a new run" in out and _history_epochs(output) == [0, 1, 2]


def test_a_backup_of_another_model_is_explained(data, tmp_path, capsys):
    output = tmp_path / "run"
    os.environ[backup_lib.SIGNAL_HOOK_ENV] = "cleaned:INT:1"
    backup_lib._hook_counts.clear()
    try:
        assert _train(data, output, capsys)[0] == 130
    finally:
        del os.environ[backup_lib.SIGNAL_HOOK_ENV]
    bigger = dict(SMALL_VIT, hidden_dim=32)
    args = _args(data, output)
    args[args.index("--model-config") + 1] = json.dumps(bigger)
    rc = cli.main(args)
    err = capsys.readouterr().err
    assert rc == 1 and "the backup of epoch 1 does not load" in err
    assert "--no-resume" in err


def _drop_arrays(path):
    """What a write stopped half-way leaves: a readable file missing a layer's arrays."""
    import h5py

    groups = []
    with h5py.File(path, "a") as f:
        f.visititems(lambda name, item: groups.append(name) if name.endswith("/vars") else None)
        group = f[next(name for name in groups if len(f[name]) and name.startswith("layers"))]
        for key in list(group):
            del group[key]


def _tiny_model():
    # Named: weights files find layers by name.
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")], name="tiny")
    model.compile("adam", "mse")
    return model


@pytest.mark.skipif(
    not (
        backup_lib.KERAS_FALLBACK_ON_OSERROR_ONLY[0]
        <= Version(keras.__version__)
        < backup_lib.KERAS_FALLBACK_ON_OSERROR_ONLY[1]
    ),
    reason=f"Keras {keras.__version__} is outside the versions checked for the bug",
)
def test_keras_backup_and_restore_still_ignores_its_bkp_copy_on_a_truncated_file(tmp_path):
    """keras-team/keras#20463: the .bkp copy is tried on OSError only.

    When this fails, Keras falls back on the error a truncated file raises:
    revisit ``keras_vit.training.backup`` (its reading of Keras' layout, and
    KERAS_FALLBACK_ON_OSERROR_ONLY).
    """
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    callback = keras.callbacks.BackupAndRestore(
        str(tmp_path), double_checkpoint=True, delete_checkpoint=False
    )
    _tiny_model().fit(x, y, epochs=2, callbacks=[callback], verbose=0)
    assert (tmp_path / "latest.weights.h5.bkp").is_file()
    _drop_arrays(tmp_path / "latest.weights.h5")
    with pytest.raises(ValueError, match="expected 2 variables, but received 0"):
        _tiny_model().fit(x, y, epochs=3, callbacks=[callback], verbose=0)


def test_a_backup_in_keras_own_layout_is_restored_with_its_fallback(tmp_path):
    """Backups written by Keras' BackupAndRestore (earlier keras-vit versions) still resume."""
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    keras_callback = keras.callbacks.BackupAndRestore(
        str(tmp_path), double_checkpoint=True, delete_checkpoint=False
    )
    _tiny_model().fit(x, y, epochs=3, callbacks=[keras_callback], verbose=0)
    model = _tiny_model()
    model.optimizer.build(model.trainable_variables)
    found = backup_lib.restore(model, str(tmp_path))
    assert (found.epochs, found.skipped) == (3, [])
    assert int(model.optimizer.iterations) == 3  # one step an epoch
    _drop_arrays(tmp_path / "latest.weights.h5")
    model = _tiny_model()
    model.optimizer.build(model.trainable_variables)
    found = backup_lib.restore(model, str(tmp_path))
    assert found.epochs == 2 and found.weights.endswith(".bkp")
    assert "the backup of epoch 3 does not load" in found.skipped[0]
    assert int(model.optimizer.iterations) == 2
