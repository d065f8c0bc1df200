"""BackupAndRestore: a run killed with SIGKILL resumes where it stopped when started again."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.training.conftest import SMALL_VIT, write_colour_folder

pytestmark = pytest.mark.slow  # training runs killed and resumed

EPOCHS = 8
BATCH = 4
ROOT = Path(__file__).resolve().parents[2]


def _command(data: Path, output: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "keras_vit",
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
        str(BATCH),
        "--lr",
        "3e-3",
        "--validation-split",
        "0.25",
        "--no-tensorboard",
        "--verbose",
        "2",
    ]


def _environment() -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _backed_up_epoch(backup: Path) -> int:
    try:
        return json.loads((backup / "training_metadata.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def test_killed_run_resumes_from_its_last_backed_up_epoch(tmp_path):
    data = write_colour_folder(tmp_path / "data", per_class=16)
    output = tmp_path / "run"
    backup = output / "backup"
    first = subprocess.Popen(
        _command(data, output),
        cwd=ROOT,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while _backed_up_epoch(backup) < 2 and first.poll() is None:
            if time.monotonic() > deadline:
                pytest.fail("the first run backed up no second epoch within 240 s")
            time.sleep(0.02)
        if first.poll() is not None:
            pytest.fail(f"the first run ended before it was killed:\n{first.stdout.read()}")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == -signal.SIGKILL
    done = _backed_up_epoch(backup)
    assert 2 <= done < EPOCHS
    assert not (output / "model.keras").exists()  # it really did not finish

    second = subprocess.run(
        _command(data, output),
        cwd=ROOT,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = second.stdout + second.stderr
    assert second.returncode == 0, log
    assert "Resuming from the backup" in log
    epochs = [int(n) for n in re.findall(rf"^Epoch (\d+)/{EPOCHS}$", log, flags=re.MULTILINE)]
    assert epochs == list(range(done + 1, EPOCHS + 1)), log

    # One history row per epoch, whatever was trained twice.
    from keras_vit.training.callbacks import read_history
    from keras_vit.training.optim import build_schedule

    history = read_history(str(output / "history.csv"))
    assert [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))
    # The optimizer's step counter came back too: the learning rate continues the schedule.
    steps_per_epoch = 36 // BATCH  # 48 images, 12 held out for validation
    total = steps_per_epoch * EPOCHS
    schedule = build_schedule(3e-3, total, round(0.05 * total))
    resumed = history[done]  # the first epoch of the second run
    expected = float(schedule(steps_per_epoch * (done + 1)))
    assert resumed["learning_rate"] == pytest.approx(expected, rel=1e-4)
    assert (output / "model.keras").is_file()
    assert not backup.exists()  # removed once training finished
