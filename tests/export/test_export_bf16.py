"""``precision="bfloat16"`` / ``keras-vit export --precision bfloat16``.

References: ``saved_model_cli show --all`` (TF's own inspector: clients see the
same signatures), the float32 export of the same model run the way TF Serving
runs it (a TF1 session by tensor names), and the graph's own op dtypes.
"""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest

from tests.export.conftest import SessionModel, encode
from tests.export.test_export_signatures import saved_model_cli

# 26 CPU-s in all (tests/support/cpu_report.py): `make test` runs it, `make test-fast` not
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported_bf16(tiny_model, tmp_path_factory):
    from serving.export import export_saved_model
    from serving.precision import BF16CPUWarning

    base = tmp_path_factory.mktemp("bf16") / "vit"
    with pytest.MonkeyPatch.context() as patch:  # this test runs on any CPU: no warning here
        patch.setattr("serving.precision.cpu_flags", lambda: {"avx512_bf16"})
        with warnings.catch_warnings():
            warnings.simplefilter("error", BF16CPUWarning)
            return export_saved_model(tiny_model, base, top_k=5, with_probabilities=True,
                                      precision="bfloat16")  # fmt: skip


def signature_text(export_dir) -> str:
    """``saved_model_cli show --all``: the SignatureDefs (the client contract), not the op list."""
    text = saved_model_cli("show", "--all", "--dir", str(export_dir)).split("Concrete Functions")[0]
    lines = text.splitlines()
    return "\n".join(line for line in lines if "contains the following ops" not in line)


def test_bf16_export_has_exactly_the_float32_signatures(exported, exported_bf16):
    fp32, bf16 = signature_text(exported), signature_text(exported_bf16)
    assert fp32 == bf16
    # Every float output is DT_FLOAT, none bfloat16.
    assert "DT_BFLOAT16" not in bf16
    assert re.search(r"outputs\['top_k_scores'\] tensor_info:\s+dtype: DT_FLOAT", bf16)
    assert re.search(r"outputs\['probabilities'\] tensor_info:\s+dtype: DT_FLOAT", bf16)
    settings = json.loads((exported_bf16 / "assets.extra" / "keras_vit_export.json").read_text())
    assert settings["precision"] == "bfloat16"
    assert (exported_bf16 / "assets.extra" / "tf_serving_warmup_requests").stat().st_size > 0


def _matmul_dtypes(export_dir) -> dict[str, set[int]]:
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    found: dict[str, set[int]] = {}
    for function in saved_model.meta_graphs[0].graph_def.library.function:
        for node in function.node_def:
            if node.op in ("MatMul", "BatchMatMulV2", "BatchMatMulV3", "Softmax", "TopKV2"):
                found.setdefault(node.op, set()).add(node.attr["T"].type if "T" in node.attr
                                                     else node.attr["Ta"].type)  # fmt: skip
    return found


def test_the_encoder_matmuls_run_in_bf16_and_softmax_in_float32(exported, exported_bf16):
    import tensorflow as tf

    bf16, fp32 = _matmul_dtypes(exported_bf16), _matmul_dtypes(exported)
    assert tf.bfloat16.as_datatype_enum in bf16["MatMul"]
    assert tf.bfloat16.as_datatype_enum not in fp32["MatMul"]
    # The head (logits) and the output softmax / top-k stay float32.
    assert tf.float32.as_datatype_enum in bf16["MatMul"]
    assert bf16["TopKV2"] == {tf.float32.as_datatype_enum}


def test_bf16_agrees_with_float32_on_photos_and_digits(exported_bf16, session_model, photos):
    from sklearn.datasets import load_digits

    digits = load_digits().images[:24]  # 8x8, 0..16
    images = [encode(p, "PNG") for p in photos.values()]
    images += [encode(np.repeat((d * 15).astype(np.uint8)[..., None], 3, -1), "PNG")
               for d in digits]  # fmt: skip
    batch = np.array(images)
    bf16 = SessionModel(exported_bf16).run("serving_default", image_bytes=batch)
    fp32 = session_model.run("serving_default", image_bytes=batch)
    assert bf16["probabilities"].dtype == np.float32 and bf16["score"].dtype == np.float32
    difference = np.abs(bf16["probabilities"] - fp32["probabilities"]).max()
    assert difference < 0.02, difference
    # Top-1 agrees wherever float32's own margin exceeds what bf16 can move (2x the diff).
    top2 = np.sort(fp32["probabilities"], axis=-1)[:, -2:]
    decisive = top2[:, 1] - top2[:, 0] > 2 * difference
    assert decisive.sum() >= len(batch) // 2
    np.testing.assert_array_equal(bf16["label"][decisive], fp32["label"][decisive])
    np.testing.assert_allclose(bf16["score"], fp32["score"], atol=0.02)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx512f", "avx512_bf16"}, None),
        ({"avx512f", "amx_bf16", "amx_tile"}, None),
        ({"avx2", "avx512f", "avx512_vnni"}, "neither AVX512_BF16 nor AMX-BF16"),
        (None, "could not read the CPU flags"),
    ],
)
def test_export_warns_without_hardware_bf16(
    tiny_model, exported, monkeypatch, capsys, flags, expected
):
    from keras_vit.cli import main
    from serving.export import ExportError, export_saved_model
    from serving.precision import BF16CPUWarning

    monkeypatch.setattr("serving.precision.cpu_flags", lambda: flags)
    base = exported.parent  # version 1 exists: the export stops right after the check
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ExportError, match="already exists"):
            export_saved_model(tiny_model, base, version=1, precision="bfloat16")
    messages = [str(w.message) for w in caught if issubclass(w.category, BF16CPUWarning)]
    argv = ["export", "--model", str(base / "missing.keras"), "--output", str(base)]
    assert main([*argv, "--precision", "bfloat16"]) == 1
    err = capsys.readouterr().err
    if expected is None:
        assert messages == [] and "warning:" not in err
    else:
        assert len(messages) == 1 and expected in messages[0]
        assert f"warning: {messages[0]}" in err
        # The warning names the fix.
        assert "Serve the float32 export" in messages[0]
        assert "kubernetes/overlays/bf16" in messages[0]
    assert "cannot load model" in err


def test_cpu_flags_reads_x86_and_arm_cpuinfo(tmp_path):
    from serving.precision import cpu_flags

    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16\n\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert {"avx512_bf16", "amx_bf16"} <= cpu_flags(x86)
    assert "bf16" in cpu_flags(arm)
    assert cpu_flags(tmp_path / "missing") is None


def test_bad_precision_combinations_are_refused(tiny_model, tmp_path, capsys):
    from keras_vit import ViTClassifier
    from keras_vit.cli import main
    from serving.export import export_saved_model
    from tests.conftest import TINY_CONFIG

    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16"):
        export_saved_model(tiny_model, tmp_path, precision="float16")
    quantized = ViTClassifier(**TINY_CONFIG, labels=tiny_model.labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras lists every layer without int8 kernels
        quantized.quantize("int8")
    with pytest.raises(ValueError, match="a quantized model cannot be exported"):
        export_saved_model(quantized, tmp_path, precision="bfloat16")
    assert not list(tmp_path.iterdir())  # nothing written

    argv = ["export", "--model", "x", "--output", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--precision", "fp16"])
    assert exit_.value.code == 2
    assert "invalid choice: 'fp16'" in capsys.readouterr().err
    assert main([*argv, "--precision", "bfloat16", "--quantize", "int8"]) == 2
    assert "cannot be combined with --quantize int8" in capsys.readouterr().err


def test_precision_docstring_example_runs() -> None:
    import doctest

    import serving.precision

    result = doctest.testmod(serving.precision)
    assert result.attempted >= 2 and result.failed == 0
