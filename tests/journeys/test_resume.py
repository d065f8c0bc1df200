"""Journey 4: a ``keras-vit train`` killed mid-epoch resumes when the same command runs again.

The data is the photo folder read as a Hugging Face imagefolder (``--data
hf:FOLDER``, ``datasets.load_dataset`` offline), so that this journey also
covers the second way users hand ``datasets`` data to ``train``.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import pytest

from tests.journeys.conftest import (
    CLASS_PHOTOS,
    ROOT,
    children_cpu,
    environment,
    keras_vit_command,
)

pytestmark = pytest.mark.slow  # a journey: keras-vit in fresh processes

EPOCHS = 4


def _epochs_backed_up(backup) -> int:
    try:
        return json.loads((backup / "training_metadata.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def test_killed_fine_tune_resumes_and_finishes(checkpoints, photo_folder, tmp_path, journey):
    run_dir = tmp_path / "run"
    command = keras_vit_command(
        "train",
        "--model",
        str(checkpoints / "in21k_pt"),
        "--data",
        f"hf:{photo_folder}",
        "--output",
        str(run_dir),
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        "2",  # 9 steps an epoch: the kill lands inside an epoch
        "--validation-split",
        "0.25",
        "--no-tensorboard",
        "--verbose",
        "2",
    )
    pytest.importorskip("datasets", reason="the hf: source needs the datasets package")
    env = {**environment(), "HF_DATASETS_CACHE": str(tmp_path / "hf-cache")}
    started, cpu = time.monotonic(), children_cpu()
    stderr_path = tmp_path / "first.stderr"
    first = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr_path.open("w"),
    )
    try:
        deadline = time.monotonic() + 180
        while _epochs_backed_up(run_dir / "backup") < 1 and first.poll() is None:
            assert time.monotonic() < deadline, "no epoch was backed up within 180 s"
            time.sleep(0.02)
        assert first.poll() is None, "the first run ended before it was stopped"
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    journey.note("train (stopped by SIGTERM)", time.monotonic() - started, children_cpu() - cpu)
    done = _epochs_backed_up(run_dir / "backup")
    assert 1 <= done < EPOCHS and not (run_dir / "model.keras").exists()
    # One line says what was saved and how to go on; the exit status is the shell's for SIGTERM.
    assert first.returncode == 128 + signal.SIGTERM
    stopped = [line for line in stderr_path.read_text().splitlines() if "Stopped by" in line]
    assert stopped == [
        f"Stopped by SIGTERM: epochs 1-{done} of {EPOCHS} are saved in {run_dir / 'backup'}; "
        f"run the same command again to resume at epoch {done + 1}, or add --no-resume to "
        "start over."
    ]

    again = journey.run("train (same command)", *command[1:], timeout=240, env=env)
    log = again.stdout + again.stderr
    assert f"Resuming from the backup in {run_dir / 'backup'}: {done} of {EPOCHS}" in log
    epochs = [int(n) for n in re.findall(rf"^Epoch (\d+)/{EPOCHS}$", log, flags=re.MULTILINE)]
    assert epochs == list(range(done + 1, EPOCHS + 1)), log
    assert (run_dir / "model.keras").is_file() and not (run_dir / "backup").exists()
    # The imagefolder's ClassLabel names are the folder names.
    assert (run_dir / "labels.txt").read_text().splitlines() == sorted(CLASS_PHOTOS)
    rows = (run_dir / "history.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == list(range(EPOCHS))  # no duplicates
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_run"] == EPOCHS and metrics["best_epoch"] is not None
