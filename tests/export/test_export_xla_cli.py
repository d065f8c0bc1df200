"""``--xla`` (only the model part is compiled) and the ``keras-vit export`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.export.conftest import LABELS, SessionModel, encode

# 15 CPU-s in all (tests/support/cpu_report.py): `make test` runs it, `make test-fast` not
pytestmark = pytest.mark.slow

STRING_OPS = {
    "DecodeJpeg", "DecodePng", "DecodeGif", "DecodeBmp", "DecodeWebP", "DecodeBase64",
    "Substr", "StringJoin", "StringFormat", "StaticRegexFullMatch", "StaticRegexReplace",
    "ParseExampleV2", "StringSplitV2",
}  # fmt: skip


def functions_by_xla(export_dir):
    """``(compiled, not compiled)`` FunctionDefs of a SavedModel, by ``_XlaMustCompile``."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    library = saved_model.meta_graphs[0].graph_def.library
    compiled, plain = [], []
    for function in library.function:
        xla = function.attr.get("_XlaMustCompile")
        (compiled if xla is not None and xla.b else plain).append(function)
    return compiled, plain


def op_types(function) -> set[str]:
    return {node.op for node in function.node_def}


@pytest.fixture(scope="module")
def exported_xla(tiny_model, tmp_path_factory):
    from serving.export import export_saved_model

    base = tmp_path_factory.mktemp("xla") / "vit"
    return export_saved_model(tiny_model, base, xla=True, with_probabilities=True)


def test_xla_compiles_the_model_and_never_the_string_decoding(exported_xla, exported):
    compiled, plain = functions_by_xla(exported_xla)
    assert compiled, "no function is marked for XLA compilation"
    compiled_ops = set().union(*map(op_types, compiled))
    assert {"Softmax", "TopKV2"} <= compiled_ops
    assert not compiled_ops & STRING_OPS
    assert "DecodeJpeg" in set().union(*map(op_types, plain))
    assert not functions_by_xla(exported)[0]  # without --xla nothing is compiled
    settings = json.loads((exported_xla / "assets.extra" / "keras_vit_export.json").read_text())
    assert settings["xla"] is True


def test_the_xla_export_gives_the_same_answers(exported_xla, session_model, photos):
    batch = np.array([encode(photos["chelsea"], "PNG"), encode(photos["coffee"], "JPEG")])
    xla = SessionModel(exported_xla).run("serving_default", image_bytes=batch)
    plain = session_model.run("serving_default", image_bytes=batch)
    np.testing.assert_array_equal(xla["label"], plain["label"])
    np.testing.assert_allclose(xla["probabilities"], plain["probabilities"], atol=1e-5)


@pytest.fixture(scope="module")
def model_file(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("keras") / "tiny.keras"
    tiny_model.save(path)
    return path


def test_cli_exports_a_keras_file_with_the_given_options(model_file, tmp_path, capsys):
    from tensorflow.core.protobuf import saved_model_pb2

    from keras_vit.cli import main

    base = tmp_path / "models" / "vit"
    argv = ["export", "--model", str(model_file), "--output", str(base), "--version", "3"]
    argv += ["--top-k", "2", "--max-pixels", "1000000"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert f"exported {base / '3'}" in out
    # The slow steps are announced as they start (stderr: stdout stays the result).
    assert err.index(f"loading {model_file} ...") < err.index("tracing the signatures")
    settings = json.loads((base / "3" / "assets.extra" / "keras_vit_export.json").read_text())
    assert settings["top_k"] == 2 and settings["max_pixels"] == 1_000_000
    assert not settings["with_probabilities"]
    assert (base / "3" / "assets" / "labels.txt").read_text().splitlines() == LABELS
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((base / "3" / "saved_model.pb").read_bytes())
    outputs = saved_model.meta_graphs[0].signature_def["serving_default"].outputs
    assert set(outputs) == {"label", "score", "top_k_labels", "top_k_scores"}
    assert [d.size for d in outputs["top_k_labels"].tensor_shape.dim] == [-1, 2]
    # --max-pixels is enforced by the exported graph: an image of exactly N pixels is
    # classified, one of N + 1000 pixels is refused (before it is decoded).
    import tensorflow as tf

    graph = SessionModel(base / "3")
    gray = np.full((1000, 1000, 3), 128, np.uint8)
    answer = graph.run("serving_default", image_bytes=np.array([encode(gray, "PNG")]))
    assert answer["label"][0].decode() in LABELS
    too_big = np.array([encode(np.full((1001, 1000, 3), 128, np.uint8), "PNG")])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[0\]: .*1000000"):
        graph.run("serving_default", image_bytes=too_big)

    # The same version again is refused, before the model is even loaded.
    assert main(argv) == 1
    assert "version 3 already exists" in capsys.readouterr().err
    assert sorted(p.name for p in base.iterdir()) == ["3"]


def test_cli_reports_bad_arguments_and_missing_models(tmp_path, capsys):
    from keras_vit.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["export", "--model", "x", "--output", str(tmp_path), "--top-k", "0"])
    assert exit_.value.code == 2
    assert main(["export", "--model", str(tmp_path / "nope.keras"), "--output", str(tmp_path)]) == 1
    assert "cannot load model" in capsys.readouterr().err
