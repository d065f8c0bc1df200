"""``fit``'s progress output: a bar on a terminal, plain lines (no ANSI codes) in a log file."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from keras_vit.training.progress import fit_verbosity

# 11 CPU-s in all (tests/support/cpu_report.py): `make test` runs it, `make test-fast` not
pytestmark = pytest.mark.slow


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_auto_and_1_give_the_bar_only_on_a_terminal():
    assert fit_verbosity("auto", _Terminal()) == 1
    assert fit_verbosity(1, _Terminal()) == 1
    assert fit_verbosity("auto", io.StringIO()) == 2
    assert fit_verbosity(1, io.StringIO()) == 2
    assert fit_verbosity(0, _Terminal()) == 0
    assert fit_verbosity(2, _Terminal()) == 2
    with pytest.raises(ValueError, match="verbose"):
        fit_verbosity(3)


FIT = """
import numpy as np, keras
from keras_vit.training.progress import fit_verbosity
model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
model.compile("sgd", "mse")
model.fit(np.zeros((8, 2)), np.zeros((8, 1)), epochs=2, batch_size=4,
          verbose=VERBOSE)
"""


@pytest.mark.parametrize("verbose, ansi", [("1", True), ("fit_verbosity(1)", False)])
def test_keras_writes_ansi_codes_into_files_and_fit_verbosity_avoids_them(tmp_path, verbose, ansi):
    # The first case documents the Keras behaviour we work around; should a Keras release
    # stop colouring non-terminal output, it fails and fit_verbosity can go.
    log = tmp_path / "fit.log"
    with open(log, "w") as out:
        done = subprocess.run(
            [sys.executable, "-c", FIT.replace("VERBOSE", verbose)],
            stdout=out, stderr=subprocess.PIPE, text=True, timeout=120,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    text = log.read_text()
    assert "Epoch 2/2" in text
    assert ("\x1b[" in text) is ansi
