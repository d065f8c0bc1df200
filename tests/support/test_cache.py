"""The reference cache writes once per input, hands out private copies, and serialises writers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.cache import cached_output

ROOT = Path(__file__).resolve().parents[2]
# A writer that counts its runs (in $RUNS_FILE, not an argument: arguments are part of the
# key) and takes a moment.
WRITER = textwrap.dedent(
    """\
    import os, sys, time
    from pathlib import Path
    out, counter = Path(sys.argv[1]), Path(os.environ["RUNS_FILE"])
    with open(counter, "a") as f:
        f.write("run\\n")
    time.sleep(0.5)
    out.mkdir(parents=True, exist_ok=True)
    (out / "weights.txt").write_text("VERSION")
    """
)


def _writer(tmp_path: Path, version: str) -> Path:
    script = tmp_path / "writer.py"
    script.write_text(WRITER.replace("VERSION", version))
    return script


def test_written_once_per_input_and_every_copy_is_private(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_VIT_TEST_CACHE", str(tmp_path / "cache"))
    counter = tmp_path / "runs.txt"
    monkeypatch.setenv("RUNS_FILE", str(counter))
    script = _writer(tmp_path, "v1")
    first = cached_output("demo", script, ["x"], tmp_path / "a")
    (first / "weights.txt").write_text("changed by a test")
    second = cached_output("demo", script, ["x"], tmp_path / "b")
    assert (second / "weights.txt").read_text() == "v1"
    assert counter.read_text().count("run") == 1
    assert not (second / ".complete").exists()
    # A changed writer is a new key: written again.
    third = cached_output("demo", _writer(tmp_path, "v2"), ["x"], tmp_path / "c")
    assert (third / "weights.txt").read_text() == "v2"
    assert counter.read_text().count("run") == 2


def test_off_writes_afresh_every_time(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_VIT_TEST_CACHE", "off")
    counter = tmp_path / "runs.txt"
    monkeypatch.setenv("RUNS_FILE", str(counter))
    script = _writer(tmp_path, "v1")
    for name in ("a", "b"):
        cached_output("demo", script, ["x"], tmp_path / name)
    assert counter.read_text().count("run") == 2


def test_concurrent_processes_write_once(tmp_path):
    """Two processes (as two pytest-xdist workers) asking at once: one writes, one waits."""
    counter = tmp_path / "runs.txt"
    script = _writer(tmp_path, "v1")
    call = (
        "import sys; from pathlib import Path; from tests.support.cache import cached_output; "
        f"cached_output('demo', Path({str(script)!r}), ['x'], Path(sys.argv[1]))"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), KERAS_VIT_TEST_CACHE=str(tmp_path / "cache"))
    env["RUNS_FILE"] = str(counter)
    processes = [
        subprocess.Popen([sys.executable, "-c", call, str(tmp_path / name)], env=env)
        for name in ("a", "b")
    ]
    assert [p.wait(60) for p in processes] == [0, 0]
    assert counter.read_text().count("run") == 1
    for name in ("a", "b"):
        assert (tmp_path / name / "weights.txt").read_text() == "v1"
