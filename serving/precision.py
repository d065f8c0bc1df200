"""The numeric precision of an export: float32 (default) or bfloat16, and the CPU check for it.

``bfloat16`` rebuilds the model under Keras's ``mixed_bfloat16`` policy: the
variables stay float32 (so the weights are exact), the encoder computes in
bfloat16, and the preprocessing layer and the ``head`` (the logits) stay
float32 (see :class:`keras_vit.ViTClassifier`). The export casts the logits to
float32 before softmax and top-k, so every returned score is float32.

A pure ``bfloat16`` policy (weights stored in bf16) ran no faster than
``mixed_bfloat16`` (ViT-B/16, batch 8, graph mode: 1.75× vs 1.81× float32 in the
same run, benchmarks/results/precision-agreement.md), so the exact float32
weights are kept.

bfloat16 is only fast where oneDNN has bf16 kernels: CPUs with AVX512_BF16
(Intel Cooper Lake, Sapphire Rapids and later; AMD Zen 4 and later) or AMX-BF16
(Intel Sapphire Rapids and later). Elsewhere TensorFlow emulates it and the
bf16 graph runs several times slower than float32, so :func:`bf16_cpu_warning`
says so at export time.

Example:
>>> bf16_cpu_warning({"avx512f", "avx512_bf16"}) is None
True
>>> "several times slower" in bf16_cpu_warning({"avx2", "avx512f"})
True
"""

from __future__ import annotations

import os

FLOAT32 = "float32"
BFLOAT16 = "bfloat16"
# int8: the float model's body quantized by NNCF, run by OpenVINO (serving/int8_export.py).
INT8 = "int8"
PRECISIONS = (FLOAT32, BFLOAT16, INT8)
DEFAULT_PRECISION = FLOAT32
# The Keras dtype policy each precision exports the model with.
POLICIES = {FLOAT32: "float32", BFLOAT16: "mixed_bfloat16"}
# /proc/cpuinfo flags of the instructions oneDNN's bf16 matmul kernels use.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = "/proc/cpuinfo"

_ADVICE = (
    "Serve the float32 export on such CPUs, or schedule the bfloat16 version on nodes "
    "that have the feature: kubernetes/overlays/bf16 pins pods by Node Feature Discovery "
    "labels, `keras-vit deploy vertex --precision bfloat16` picks such machine types "
    "(docs/deployment.md)."
)


class BF16CPUWarning(UserWarning):
    """The CPU lacks (or could not be checked for) hardware bfloat16 matmuls."""


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return precision


def cpu_flags(path: str | os.PathLike = CPUINFO) -> set[str] | None:
    """The CPU feature flags of Linux's ``/proc/cpuinfo`` (x86 ``flags``, Arm ``Features``).

    None where the file is missing or unreadable (macOS, Windows, some sandboxes).
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as cpuinfo:
            text = cpuinfo.read(1 << 20)  # one core's block is a few kB; bounded read
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def bf16_cpu_warning(flags: set[str] | None = None) -> str | None:
    """A warning to show when the CPU has neither AVX512_BF16 nor AMX-BF16, else None.

    ``flags`` defaults to this machine's (:func:`cpu_flags`); when they cannot
    be read the warning says that the check was not possible.
    """
    if flags is None:
        flags = cpu_flags()
    if flags is None:
        return (
            f"could not read the CPU flags ({CPUINFO}) to check for AVX512_BF16 or AMX-BF16. "
            "The bfloat16 SavedModel is only fast on CPUs with one of them; without oneDNN's "
            "bf16 kernels it runs several times slower than float32. " + _ADVICE
        )
    if any(flag in flags for flag in BF16_CPU_FLAGS):
        return None
    return (
        "this CPU has neither AVX512_BF16 nor AMX-BF16 (/proc/cpuinfo flags "
        f"{' / '.join(BF16_CPU_FLAGS)}): if the bfloat16 SavedModel is served on a CPU like "
        "this one it runs several times slower than float32, because oneDNN has no bf16 "
        "kernels for it. " + _ADVICE
    )


def model_for_precision(model, precision: str):
    """``model`` itself when it already computes at ``precision``, else a copy that does.

    The copy has the same weights (variables stay float32 under
    ``mixed_bfloat16``). Quantized models are refused: their int8 kernels are
    not float weights to recast.
    """
    check_precision(precision)
    if precision == INT8:
        raise ValueError("precision='int8' is not a Keras dtype policy (serving/int8_export.py)")
    policy = POLICIES[precision]
    if model.dtype_policy.name == policy:
        return model
    if any(getattr(layer, "quantization_mode", None) for layer in model._flatten_layers()):
        raise ValueError(
            f"a quantized model cannot be exported with precision={precision!r} (its policy is "
            f"{model.dtype_policy.name}): export the float model at that precision, or the "
            "quantized one without a precision change"
        )
    if getattr(model, "lora_enabled", False):
        model = model.merge_lora()
    # `keras-vit export`'s parser imports this module: TensorFlow loads here.
    from keras_vit.loading import adapt_model  # noqa: PLC0415

    return adapt_model(model, dtype=policy)
