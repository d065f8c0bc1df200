"""Session fixtures: tiny checkpoints and reference outputs written by transformers.

The checkpoints are written by ``hf_reference.py`` in a subprocess (transformers'
TF classes switch ``tf.keras`` to Keras 2 process-wide), once per change of that
script or of transformers: ``tests/support/cache.py`` keeps them across runs.
Tests skip with a reason when transformers/torch/tf-keras are not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent
from keras_vit.presets import PRESETS  # noqa: E402
from tests.convert.hf_reference import SPECS  # noqa: E402
from tests.support.cache import cached_output  # noqa: E402


def _missing_reference_packages() -> list[str]:
    return [m for m in ("transformers", "torch", "tf_keras") if importlib.util.find_spec(m) is None]


@pytest.fixture(scope="session")
def hf_reference(tmp_path_factory) -> Path:
    """Directory with one folder per spec (``pt``, ``tf_h5``, ``tf_st``, ``ref.npz``)."""
    missing = _missing_reference_packages()
    if missing:
        pytest.skip(f"reference checkpoints need {', '.join(missing)} (requirements-dev.txt)")
    scratch = tmp_path_factory.mktemp("hf_reference_inputs")
    specs = scratch / "specs.json"
    specs.write_text(json.dumps(SPECS))
    presets = scratch / "presets.json"
    presets.write_text(json.dumps(PRESETS))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    out = cached_output(
        "hf_reference", HERE / "hf_reference.py", [str(specs), str(presets)],
        tmp_path_factory.mktemp("hf_reference"), env=env, timeout=600,
    )  # fmt: skip
    if not (out / "done").exists():
        raise RuntimeError(f"hf_reference.py wrote no {out / 'done'}")
    return out
