"""Multi-worker test helpers: free ports, TF_CONFIG, worker processes with bounded waits."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tf_config(ports: list[int], index: int) -> str:
    """TF_CONFIG of worker ``index`` in a cluster of workers on 127.0.0.1 (worker 0 is chief)."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def environment(config: str | None = None) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    # Two workers share the machine's cores: one thread pool each keeps them from fighting.
    env.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    env.setdefault("TF_NUM_INTEROP_THREADS", "1")
    if config is None:
        env.pop("TF_CONFIG", None)
    else:
        env["TF_CONFIG"] = config
    return env


def start(command: list[str], config: str | None, log: Path) -> subprocess.Popen:
    handle = open(log, "a")  # noqa: SIM115 - closed with the process by finish()
    process = subprocess.Popen(
        command, cwd=ROOT, env=environment(config), stdout=handle, stderr=subprocess.STDOUT
    )
    process.log_handle = handle
    return process


def finish(processes: list[subprocess.Popen], timeout: float) -> list[int]:
    """Waits (bounded) for every process; kills them all on timeout and says so."""
    deadline = time.monotonic() + timeout
    try:
        return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in processes]
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"a worker did not finish within {timeout:.0f} s") from error
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
            p.log_handle.close()


def read_log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
