"""Fixtures for the explain tests: a tiny transformers checkpoint with its attentions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.cache import cached_output

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def hf_attentions(tmp_path_factory) -> Path:
    """``OUT`` with ``pt/`` (a transformers checkpoint) and ``ref.npz`` (see hf_attentions.py)."""
    for module in ("transformers", "torch", "safetensors"):
        pytest.importorskip(module, reason=f"{module} writes the reference checkpoint")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", USE_TF="0")
    out = cached_output(
        "hf_attentions", HERE / "hf_attentions.py", [], tmp_path_factory.mktemp("hf_attentions"),
        key_files=[HERE.parent / "convert" / "hf_reference.py"], env=env, timeout=300,
    )  # fmt: skip
    if not (out / "done").exists():
        pytest.fail(f"hf_attentions.py wrote no {out / 'done'}")
    return out
