"""``keras-vit`` prints no TensorFlow C++ start-up lines unless asked (``--tf-logs``, own env).

One mechanism for all (keras_vit/quiet.py): the library, the commands, the demo and the server.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# 26 CPU-s in all (tests/support/cpu_report.py): `make test` runs it, `make test-fast` not
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# What a user would call noise: glog/absl-prefixed lines and absl's pre-init notice.
LOG_LINE = re.compile(r"^[IWE][0-9]{4} |absl::InitializeLog", re.M)


def _env(**extra) -> dict:
    quiet_settings = ("TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY", "KERAS_VIT_TF_LOGS")
    env = {k: v for k, v in os.environ.items() if k not in quiet_settings}
    env.update(PYTHONPATH=str(ROOT), KERAS_BACKEND="tensorflow", **extra)
    return env


def _run(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "keras_vit", *args],
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def _messages(text: str) -> set[str]:
    """The log lines' messages without their timestamps and thread ids."""
    return {line.split("] ", 1)[-1] for line in text.splitlines() if LOG_LINE.search(line)}


def test_info_prints_no_tensorflow_startup_lines_and_tf_logs_brings_them_back():
    quiet = _run("info", "--model", "vit-tiny-patch16-224", "--max-labels", "1")
    assert quiet.returncode == 0, quiet.stderr
    assert "parameters: 5,717,416" in quiet.stdout
    assert not LOG_LINE.search(quiet.stdout + quiet.stderr), quiet.stderr

    verbose = _run("--tf-logs", "info", "--model", "vit-tiny-patch16-224", "--max-labels", "1")
    assert verbose.returncode == 0, verbose.stderr
    # Whatever TensorFlow itself prints on this machine when imported and its devices listed.
    plain = subprocess.run(
        [sys.executable, "-c", "import tensorflow as tf; tf.config.list_physical_devices()"],
        env=_env(TF_CPP_MIN_LOG_LEVEL="0"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert _messages(plain.stderr) <= _messages(verbose.stderr)


@pytest.mark.xdist_group("quiet-env")
def test_the_users_own_choice_wins(monkeypatch):
    from keras_vit import quiet

    for name in ("TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY", quiet.TF_LOGS):
        # setenv first: monkeypatch then records the variable's state before this test, also
        # when it was unset (delenv(raising=False) of an unset variable records nothing, and
        # the KERAS_VIT_TF_LOGS=1 set below leaked into every later test's child processes).
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setattr(quiet, "_SET_GRPC_VERBOSITY", False)
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    quiet.for_program()
    # A program of ours: errors only at run time, gRPC's info lines off.
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == quiet.PROGRAM_LEVEL
    assert os.environ["GRPC_VERBOSITY"] == "ERROR"
    # --tf-logs: everything, for this process and those it starts.
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    quiet.for_program(tf_logs=True)
    assert os.environ[quiet.TF_LOGS] == "1" and quiet.logs_wanted()
    assert "GRPC_VERBOSITY" not in os.environ and "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    assert quiet._FINDER not in sys.meta_path
    # The user's own levels are kept as they are.
    monkeypatch.delenv(quiet.TF_LOGS)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    monkeypatch.setenv("GRPC_VERBOSITY", "DEBUG")
    quiet.for_program()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1" and os.environ["GRPC_VERBOSITY"] == "DEBUG"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    assert quiet.logs_wanted()


@pytest.mark.xdist_group("quiet-env")
def test_the_previous_test_left_no_tf_logs_switch_behind():
    """Runs after test_the_users_own_choice_wins (one xdist group: the same worker): what it
    set is gone, so the fresh processes that later tests start are quiet."""
    from keras_vit import quiet

    assert quiet.TF_LOGS not in os.environ


def test_filtered_stderr_keeps_everything_but_log_lines(capfd):
    from keras_vit.quiet import filtered_stderr

    with filtered_stderr():
        os.write(2, b"I0000 00:00:1.2 1 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called\n")
        os.write(2, b"E0000 00:00:1.3 1 cuda_platform.cc:52] failed call to cuInit\n")
        os.write(2, b"UserWarning: something a user must see\n")
        print("Python stderr line", file=sys.stderr)
    # (pytest's capture holds sys.stderr apart from file descriptor 2, hence no order here)
    lines = sorted(capfd.readouterr().err.splitlines())
    assert lines == ["Python stderr line", "UserWarning: something a user must see"]


PYTHON_API = (
    "import numpy as np\n"
    "from keras_vit import ViTClassifier\n"
    "model = ViTClassifier.from_preset('vit-tiny-patch16-224', load_weights=False)\n"
    "print(model(np.zeros((1, 32, 32, 3), 'uint8')).shape)\n"
)


def test_the_python_api_is_as_quiet_and_the_users_level_brings_the_lines_back():
    """A user's own script: importing keras_vit (or serving) filters TensorFlow's first import."""
    quiet = subprocess.run(
        [sys.executable, "-c", PYTHON_API], env=_env(), capture_output=True, text=True,
        timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip() == "(1, 1000)"
    assert not LOG_LINE.search(quiet.stderr), quiet.stderr
    assert "rebuild TensorFlow" not in quiet.stderr
    loud = subprocess.run(
        [sys.executable, "-c", PYTHON_API], env=_env(TF_CPP_MIN_LOG_LEVEL="0"),
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert loud.returncode == 0, loud.stderr
    # TensorFlow's own start-up notices, which the first run hid (not a vacuous check).
    assert _messages(loud.stderr), loud.stderr


GOAWAY = """
import time
from concurrent import futures
import keras_vit.cli  # noqa: F401  (the keras-vit command: ui, predict --server, before gRPC)
import grpc

server = grpc.server(futures.ThreadPoolExecutor(2), options=[("grpc.max_connection_idle_ms", 300)])
echo = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.S", {"M": echo}),))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
channel = grpc.insecure_channel(f"127.0.0.1:{port}")
print(channel.unary_unary("/t.S/M")(b"one", timeout=10))
time.sleep(1.5)  # the server closes the idle connection (GOAWAY "connection idle")
print(channel.unary_unary("/t.S/M")(b"two", timeout=10))
"""


def test_a_connection_closed_for_idling_prints_no_grpc_log_line():
    """The ui's terminal showed ``chttp2_transport.cc:1403] ... Got goaway ... connection idle``."""
    quiet = subprocess.run(
        [sys.executable, "-c", GOAWAY], env=_env(), capture_output=True, text=True, timeout=120,
        cwd=ROOT,
    )  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.split() == ["b'one'", "b'two'"]
    assert "goaway" not in quiet.stderr.lower(), quiet.stderr
    loud = subprocess.run(
        [sys.executable, "-c", GOAWAY], env=_env(KERAS_VIT_TF_LOGS="1"), capture_output=True,
        text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert loud.returncode == 0, loud.stderr
    # gRPC's own line, which the first run hid (not a vacuous check).
    assert "Got goaway" in loud.stderr, loud.stderr
