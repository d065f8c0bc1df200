"""Fixtures for the explain tests: a tiny transformers checkpoint with its attentions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def hf_attentions(tmp_path_factory) -> Path:
    """``OUT`` with ``pt/`` (a transformers checkpoint) and ``ref.npz`` (see hf_attentions.py)."""
    for module in ("transformers", "torch", "safetensors"):
        pytest.importorskip(module, reason=f"{module} writes the reference checkpoint")
    out = tmp_path_factory.mktemp("hf_attentions")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", USE_TF="0")
    result = subprocess.run(
        [sys.executable, str(HERE / "hf_attentions.py"), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if result.returncode != 0 or not (out / "done").exists():
        pytest.fail(f"hf_attentions.py failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return out
