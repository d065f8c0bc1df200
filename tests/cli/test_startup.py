"""The commands that need no model in this process never import TensorFlow or Keras.

``--help``, ``info --list-presets``, ``predict --server``, ``evaluate --server`` (a folder),
``ui --server`` and argument
errors start in well under a second without them; importing TensorFlow costs ~5 s and
~800 MB. Times are benchmarks/client_startup.py's; here only what was imported.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Runs the command in-process, then reports which heavy modules it imported.
PROBE = (
    "import json, sys\n"
    "from keras_vit.cli import main\n"
    "try:\n"
    "    code = main(sys.argv[1:])\n"
    "except SystemExit as exit_:\n"
    "    code = exit_.code\n"
    "heavy = ('tensorflow', 'keras', 'torch', 'jax', 'matplotlib')\n"
    "print(json.dumps(sorted(m for m in heavy if m in sys.modules)), file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def _closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    """cat.png, in a labelled folder beside a dog (``evaluate --data`` takes the folder)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    for label, colour in (("cat", "orange"), ("dog", "brown")):
        (root / "labelled" / label).mkdir(parents=True)
        Image.new("RGB", (8, 8), colour).save(root / "labelled" / label / f"{label}.png")
    Image.new("RGB", (8, 8), "orange").save(root / "cat.png")
    return str(root / "cat.png")


def _imported(*argv: str, root: Path = ROOT) -> tuple[int, list[str], str]:
    # A user's environment: the suite's TF_CPP_MIN_LOG_LEVEL once made the CLI skip its import.
    quiet_settings = ("TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY", "KERAS_VIT_TF_LOGS")
    env = {k: v for k, v in os.environ.items() if k not in quiet_settings}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        env={**env, "PYTHONPATH": str(root)},
        capture_output=True, text=True, timeout=300, cwd=root,
    )  # fmt: skip
    return done.returncode, json.loads(done.stderr.strip().splitlines()[-1]), done.stderr


CASES = {
    "help": lambda port, image: ["--help"],
    "predict help": lambda port, image: ["predict", "--help"],
    "list presets": lambda port, image: ["info", "--list-presets"],
    "predict grpc": lambda port, image: ["predict", "--server", f"127.0.0.1:{port}",
                                         "--protocol", "grpc", image],
    "predict rest": lambda port, image: ["predict", "--server", f"http://127.0.0.1:{port}", image],
    "predict, protocol unknown": lambda port, image: ["predict", "--server", f"127.0.0.1:{port}",
                                                      image],
    "evaluate grpc": lambda port, image: [
        "evaluate", "--server", f"127.0.0.1:{port}", "--protocol", "grpc",
        "--data", str(Path(image).parent / "labelled"), "--output", str(Path(image).parent / "ev"),
    ],
    "ui grpc": lambda port, image: ["ui", "--server", f"127.0.0.1:{port}", "--protocol", "grpc",
                                    "--port", "0"],
    "unknown option": lambda port, image: ["predict", "--no-such-option", image],
    "missing argument": lambda port, image: ["train"],
    "bad value": lambda port, image: ["predict", "--top-k", "many", image],
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_commands_without_a_model_here_import_no_tensorflow(case, image):
    code, heavy, stderr = _imported(*CASES[case](_closed_port(), image))
    assert heavy == [], stderr
    assert "Traceback" not in stderr, stderr
    # Each ran to its end: a listing, a usage error, or the refused connection, reported.
    if "help" in case or case == "list presets":
        assert code == 0, stderr
    else:
        assert code != 0, stderr
