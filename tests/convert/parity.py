"""The precision every parity test holds our outputs to, and the checks they share.

``TOLERANCE`` bounds ``max |ours - reference|`` over fp32 logits (and class-token
and pooler outputs) against transformers' TF and PyTorch ViT on the same
weights. Measured (2 CPUs, TF 2.21, transformers 4.57, torch 2.13): 6.6e-7 to
1.73e-6 over every classifier, file format, the vit_jax .npz, the backbone
outputs, the 32->48 px position interpolation and HF-processed photos. The
bound leaves ~3x headroom above that and sits below the smallest real bug
measured by ``test_mutations.py`` (LayerNorm epsilon 1e-6 for 1e-12: 1.7e-5);
``benchmarks/results/mutations.md`` holds the table. README.md quotes it.
"""

from __future__ import annotations

import keras
import numpy as np

TOLERANCE = 5e-6


def max_error(ours, reference) -> float:
    """``max |ours - reference|`` as a float (ours may be a tensor)."""
    return float(np.abs(keras.ops.convert_to_numpy(ours) - np.asarray(reference)).max())
