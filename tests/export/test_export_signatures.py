"""The exported signatures, checked with TF's own tools: saved_model_cli and the TF1 loader.

References: ``saved_model_cli`` (TF's SavedModel inspector and runner, run as
a separate process), the Keras model called in-process on the same decoded
pixels, PIL's JPEG decoder (``Image.draft`` uses the same libjpeg DCT scaling)
and TF Serving's classify requirements (``classifier.cc``: one ``inputs``
DT_STRING input; ``classes`` DT_STRING and ``scores`` DT_FLOAT, both
``[batch, k]``).
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.export.conftest import LABELS, TOP_K, SessionModel, encode

# 22 CPU-s in all (tests/support/cpu_report.py): `make test` runs it, `make test-fast` not
pytestmark = pytest.mark.slow

SAVED_MODEL_CLI = str(Path(sys.executable).with_name("saved_model_cli"))
IMAGE_SIZE = 32


def saved_model_cli(*args: str) -> str:
    result = subprocess.run(
        [SAVED_MODEL_CLI, *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def keras_probabilities(model, pixels: np.ndarray) -> np.ndarray:
    return softmax(np.asarray(model(pixels[None].astype("float32")), dtype=np.float64))[0]


def pil_draft_pixels(jpeg: bytes, min_side: int) -> np.ndarray:
    """PIL's JPEG decode at the smallest DCT scale keeping ``min_side`` pixels per side."""
    from PIL import Image

    image = Image.open(io.BytesIO(jpeg))
    image.draft("RGB", (min_side, min_side))
    return np.asarray(image.convert("RGB"))


def test_saved_model_cli_lists_the_contract_signatures(exported):
    text = saved_model_cli("show", "--all", "--dir", str(exported))
    blocks = {block.split("']", 1)[0]: block for block in text.split("signature_def['")[1:]}
    assert {"serving_default", "serving_pixels", "embedding", "classify"} <= set(blocks)

    def io_names(block, kind):
        return {
            line.split(f"{kind}['", 1)[1].split("']", 1)[0]
            for line in block.splitlines()
            if line.strip().startswith(f"{kind}['")
        }

    outputs = {"label", "score", "top_k_labels", "top_k_scores", "probabilities"}
    assert io_names(blocks["serving_default"], "inputs") == {"image_bytes"}
    assert io_names(blocks["serving_default"], "outputs") == outputs
    assert io_names(blocks["serving_pixels"], "inputs") == {"images"}
    assert io_names(blocks["serving_pixels"], "outputs") == outputs
    assert io_names(blocks["embedding"], "inputs") == {"image_bytes"}
    assert io_names(blocks["embedding"], "outputs") == {"embedding"}
    assert io_names(blocks["classify"], "inputs") == {"inputs"}
    assert io_names(blocks["classify"], "outputs") == {"classes", "scores"}
    assert "Method name is: tensorflow/serving/classify" in blocks["classify"]
    for name in ("serving_default", "serving_pixels", "embedding"):
        assert "Method name is: tensorflow/serving/predict" in blocks[name]


def test_signature_defs_have_the_contract_dtypes_and_shapes(session_model):
    import tensorflow as tf

    def spec(tensor_info):
        dims = [d.size for d in tensor_info.tensor_shape.dim]
        return tf.dtypes.as_dtype(tensor_info.dtype).name, dims

    signatures = session_model.signatures
    default = signatures["serving_default"]
    assert spec(default.inputs["image_bytes"]) == ("string", [-1])
    assert spec(default.outputs["label"]) == ("string", [-1])
    assert spec(default.outputs["score"]) == ("float32", [-1])
    assert spec(default.outputs["top_k_labels"]) == ("string", [-1, TOP_K])
    assert spec(default.outputs["top_k_scores"]) == ("float32", [-1, TOP_K])
    assert spec(default.outputs["probabilities"]) == ("float32", [-1, len(LABELS)])
    assert spec(signatures["serving_pixels"].inputs["images"]) == ("uint8", [-1, -1, -1, 3])
    assert spec(signatures["embedding"].outputs["embedding"]) == ("float32", [-1, 48])
    classify = signatures["classify"]
    assert classify.method_name == "tensorflow/serving/classify"
    assert spec(classify.inputs["inputs"]) == ("string", [-1])
    assert spec(classify.outputs["classes"]) == ("string", [-1, TOP_K])
    assert spec(classify.outputs["scores"]) == ("float32", [-1, TOP_K])


def test_saved_model_cli_run_matches_the_keras_model_on_the_same_pixels(
    exported, tiny_model, photos, tmp_path
):
    png = encode(photos["chelsea"], "PNG")
    jpeg = encode(photos["coffee"], "JPEG", quality=90)
    batch = tmp_path / "batch.npy"
    np.save(batch, np.array([png, jpeg], dtype=object), allow_pickle=True)
    saved_model_cli(
        "run",
        "--dir", str(exported),
        "--tag_set", "serve",
        "--signature_def", "serving_default",
        "--inputs", f"image_bytes={batch}",
        "--outdir", str(tmp_path / "out"),
    )  # fmt: skip
    names = ("label", "score", "top_k_labels", "top_k_scores", "probabilities")
    out = {name: np.load(tmp_path / "out" / f"{name}.npy", allow_pickle=True) for name in names}
    # PNG is lossless: the decoded pixels are the photo itself. The large JPEG
    # is decoded at a reduced DCT scale keeping 2x the model resolution, which
    # PIL's draft mode reproduces.
    references = [
        photos["chelsea"],
        pil_draft_pixels(jpeg, 2 * IMAGE_SIZE),
    ]
    assert references[1].shape[0] < photos["coffee"].shape[0]  # really scaled
    for i, pixels in enumerate(references):
        expected = keras_probabilities(tiny_model, pixels)
        best = int(np.argmax(expected))
        assert out["label"][i].decode() == LABELS[best]
        np.testing.assert_allclose(out["score"][i], expected[best], atol=1e-5)
        np.testing.assert_allclose(out["probabilities"][i], expected, atol=1e-5)
        order = np.argsort(-expected)[:TOP_K]
        assert [label.decode() for label in out["top_k_labels"][i]] == [LABELS[j] for j in order]
        np.testing.assert_allclose(out["top_k_scores"][i], expected[order], atol=1e-5)


def test_saved_model_cli_runs_the_classify_signature_on_tf_examples(
    exported, tiny_model, photos, tmp_path
):
    import tensorflow as tf

    png = encode(photos["astronaut"], "PNG")
    example = tf.train.Example(
        features=tf.train.Features(
            feature={"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png]))}
        )
    )
    examples = tmp_path / "examples.npy"
    np.save(examples, np.array([example.SerializeToString()], dtype=object), allow_pickle=True)
    saved_model_cli(
        "run",
        "--dir", str(exported),
        "--tag_set", "serve",
        "--signature_def", "classify",
        "--inputs", f"inputs={examples}",
        "--outdir", str(tmp_path / "out"),
    )  # fmt: skip
    classes = np.load(tmp_path / "out" / "classes.npy", allow_pickle=True)
    scores = np.load(tmp_path / "out" / "scores.npy", allow_pickle=True)
    expected = keras_probabilities(tiny_model, photos["astronaut"])
    order = np.argsort(-expected)[:TOP_K]
    assert classes.shape == scores.shape == (1, TOP_K)
    assert [label.decode() for label in classes[0]] == [LABELS[j] for j in order]
    np.testing.assert_allclose(scores[0], expected[order], atol=1e-5)


def test_tf1_session_runs_every_signature_by_tensor_name(session_model, tiny_model, photos):
    import tensorflow as tf

    chelsea, astronaut = photos["chelsea"], photos["astronaut"]
    png = encode(chelsea, "PNG")
    default = session_model.run("serving_default", image_bytes=np.array([png, png]))
    expected = keras_probabilities(tiny_model, chelsea)
    np.testing.assert_allclose(default["probabilities"][0], expected, atol=1e-5)
    np.testing.assert_allclose(default["probabilities"][0], default["probabilities"][1], atol=1e-6)

    # serving_pixels: the same outputs from the decoded pixels, any size.
    pixels = session_model.run("serving_pixels", images=chelsea[None])
    for name in ("label", "top_k_labels"):
        np.testing.assert_array_equal(pixels[name][0], default[name][0])
    np.testing.assert_allclose(pixels["probabilities"][0], expected, atol=1e-5)
    square = session_model.run("serving_pixels", images=astronaut[None])
    np.testing.assert_allclose(
        square["probabilities"][0], keras_probabilities(tiny_model, astronaut), atol=1e-5
    )

    embedding = session_model.run("embedding", image_bytes=np.array([png]))["embedding"]
    reference = tiny_model.embedding_model()(chelsea[None].astype("float32"))
    assert embedding.shape == (1, 48)
    np.testing.assert_allclose(embedding, np.asarray(reference), atol=1e-5)

    example = tf.train.Example(
        features=tf.train.Features(
            feature={"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png]))}
        )
    ).SerializeToString()
    classified = session_model.run("classify", inputs=np.array([example]))
    np.testing.assert_array_equal(classified["classes"], default["top_k_labels"][:1])
    np.testing.assert_allclose(classified["scores"], default["top_k_scores"][:1], atol=1e-6)


def test_an_empty_batch_gives_empty_outputs(session_model):
    out = session_model.run("serving_default", image_bytes=np.array([], dtype=object))
    assert out["label"].shape == (0,)
    assert out["top_k_scores"].shape == (0, TOP_K)


def test_variables_are_saved_once_for_all_signatures(exported, tiny_model):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(exported / "variables" / "variables"))
    shapes = reader.get_variable_to_shape_map()
    saved = sorted(tuple(shape) for name, shape in shapes.items() if "VARIABLE_VALUE" in name)
    assert saved == sorted(tuple(v.shape) for v in tiny_model.variables)


def test_the_version_holds_labels_settings_and_the_tf_serving_layout(exported, tiny_model):
    import json

    assert (exported / "saved_model.pb").is_file()
    assert (exported / "variables" / "variables.index").is_file()
    assert (exported / "assets" / "labels.txt").read_text().splitlines() == LABELS
    assert (exported / "assets.extra" / "tf_serving_warmup_requests").is_file()
    settings = json.loads((exported / "assets.extra" / "keras_vit_export.json").read_text())
    assert settings["top_k"] == TOP_K
    assert settings["image_size"] == [IMAGE_SIZE, IMAGE_SIZE]
    assert settings["xla"] is False


def test_tf2_loads_the_export_and_its_fingerprint_matches_the_rewritten_file(exported):
    import tensorflow as tf
    from tensorflow.core.protobuf import fingerprint_pb2
    from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting

    loaded = tf.saved_model.load(str(exported))
    assert set(loaded.signatures) == {"serving_default", "serving_pixels", "embedding", "classify"}
    # saved_model.pb was rewritten (classify method name): the stored fingerprint
    # must be the one TF computes for the file as it is now.
    stored = tf.saved_model.experimental.read_fingerprint(str(exported))
    fresh = fingerprint_pb2.FingerprintDef()
    fresh.ParseFromString(fingerprinting.CreateFingerprintDef(str(exported)))
    assert stored.saved_model_checksum == fresh.saved_model_checksum


def test_exports_in_one_process_trace_the_decoder_once_and_answer_alike(
    tiny_model, tmp_path, photos
):
    """The signatures' decoder is traced once per process and settings: a second export
    reuses it, and its SavedModel, loaded as TF Serving loads it, answers as the first."""
    from keras_vit.decode import decode_images, traced
    from serving import export

    max_pixels = 12_345_678  # settings no other test exports with: this test traces first
    size = tuple(int(s) for s in tiny_model.image_size)
    decoder = traced(
        decode_images,
        size,
        [None],
        input_name="image_bytes",
        max_pixels=max_pixels,
        max_request_pixels=max_pixels,
    )
    versions, traces = [], []
    for name in ("first", "second"):
        versions.append(
            export.export_saved_model(tiny_model, tmp_path / name, max_pixels=max_pixels)
        )
        traces.append(decoder.experimental_get_tracing_count())
    # tf.saved_model.save traces a saved function once more in its save context.
    assert traces == [2, 2]
    jpeg = encode(photos["chelsea"], "JPEG", quality=90)
    first, second = (
        SessionModel(path).run("serving_default", image_bytes=[jpeg]) for path in versions
    )
    assert first["label"] == second["label"]
    np.testing.assert_array_equal(first["top_k_scores"], second["top_k_scores"])
