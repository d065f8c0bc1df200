"""``precision="int8"`` / ``keras-vit export --precision int8``: an OpenVINO int8 body behind
the float32 export's contract, served by ``keras-vit serve`` (serving/int8_runtime.py).

References: the float32 export of the same tiny model (its GetModelMetadata and
its scores over the same server), and TF Serving's own loader for the refusal.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from tests.export.conftest import LABELS, TOP_K, encode

pytest.importorskip("openvino", reason="the int8 export needs openvino and nncf")
pytest.importorskip("nncf", reason="the int8 export needs openvino and nncf")

# The tests of the module's int8 export: its NNCF calibration and the servers over it cost
# ~60 CPU-s (tests/support/cpu_report.py), so `make test` runs them, `make test-fast` not.
INT8_EXPORT = pytest.mark.slow


@pytest.fixture(scope="module")
def calibration(photos) -> list[bytes]:
    return [encode(photo, "JPEG", quality=90) for photo in photos.values()]


@pytest.fixture(scope="module")
def int8_base(tmp_path_factory):
    return tmp_path_factory.mktemp("int8") / "vit"


@pytest.fixture(scope="module")
def exported_int8(tiny_model, int8_base, calibration):
    from serving.export import Int8ServingWarning, export_saved_model

    with pytest.warns(Int8ServingWarning, match="tensorflow_model_server .*cannot load it"):
        return export_saved_model(
            tiny_model,
            int8_base,
            top_k=TOP_K,
            with_probabilities=True,
            precision="int8",
            calibration_images=calibration,
            calibration_source="test photos",
        )


@pytest.fixture(scope="module")
def both_served(exported, exported_int8):
    """One server, two models: the float32 export as ``fp32`` and the int8 one as ``int8``."""
    from tests.support.servers import serving

    config = exported.parent.parent / "models.config"
    config.write_text(
        "model_config_list {\n"
        f"  config {{ name: 'fp32' base_path: '{exported.parent}' model_platform: 'tensorflow' }}\n"
        f"  config {{ name: 'int8' base_path: '{exported_int8.parent}' "
        "model_platform: 'tensorflow' }\n}\n"
    )
    with serving(None, model_config_file=config) as server:
        yield server


def _stub(server):
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@INT8_EXPORT
def test_layout_settings_and_size(exported, exported_int8):
    assert not (exported_int8 / "saved_model.pb").exists()  # TF Serving must refuse it
    assert (exported_int8 / "keras_vit_int8" / "body.xml").is_file()
    assert (exported_int8 / "assets.extra" / "tf_serving_warmup_requests").stat().st_size > 0
    settings = json.loads((exported_int8 / "assets.extra" / "keras_vit_export.json").read_text())
    assert settings["precision"] == "int8"
    assert settings["int8"]["runtime"] == "openvino"
    assert settings["int8"]["calibration"]["source"] == "test photos"
    assert settings["int8"]["calibration"]["images"] == 3
    assert len(settings["int8"]["calibration"]["sha256"]) == 64
    fp32 = json.loads((exported / "assets.extra" / "keras_vit_export.json").read_text())
    for key in ("signatures", "image_size", "top_k", "with_probabilities", "max_pixels"):
        assert settings[key] == fp32[key]


@INT8_EXPORT
def test_metadata_is_the_float32_exports(both_served):
    from tensorflow_serving.apis import get_model_metadata_pb2

    stub = _stub(both_served)
    maps = {}
    for name in ("fp32", "int8"):
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = name
        response = stub.GetModelMetadata(request, timeout=30)
        found = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(found)
        maps[name] = found
    assert sorted(maps["int8"].signature_def) == sorted(maps["fp32"].signature_def)
    # Names, dtypes, shapes, method names and even the tensor names are the same.
    assert maps["int8"] == maps["fp32"]


@INT8_EXPORT
def test_predict_classify_and_embedding_agree_with_float32(both_served, photos):
    import tensorflow as tf
    from tensorflow_serving.apis import classification_pb2, inference_pb2, predict_pb2

    stub = _stub(both_served)
    jpegs = [encode(photo, "JPEG", quality=90) for photo in photos.values()]
    answers = {}
    for name in ("fp32", "int8"):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(jpegs))
        reply = stub.Predict(request, timeout=60)
        answers[name] = {k: tf.make_ndarray(v) for k, v in reply.outputs.items()}
        assert reply.model_spec.version.value == 1
    fp32, int8 = answers["fp32"], answers["int8"]
    assert set(int8) == set(fp32) == {
        "label", "score", "top_k_labels", "top_k_scores", "probabilities",
    }  # fmt: skip
    for key in fp32:
        assert int8[key].dtype == fp32[key].dtype and int8[key].shape == fp32[key].shape
    assert {label.decode() for label in int8["label"]} <= set(LABELS)
    # A random tiny model has flat scores: int8 stays close to them.
    np.testing.assert_allclose(int8["probabilities"], fp32["probabilities"], atol=0.05)
    np.testing.assert_allclose(int8["probabilities"].sum(axis=1), 1.0, atol=1e-5)

    # Classify (tf.Example) and the embedding signature.
    example = tf.train.Example()
    example.features.feature["image/encoded"].bytes_list.value.append(jpegs[0])
    classes = {}
    for name in ("fp32", "int8"):
        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = name
        request.model_spec.signature_name = "classify"
        request.input.example_list.examples.append(example)
        reply = stub.Classify(request, timeout=60)
        classes[name] = [(c.label, c.score) for c in reply.result.classifications[0].classes]
    assert len(classes["int8"]) == TOP_K
    assert [s for _, s in classes["int8"]] == pytest.approx(
        [s for _, s in classes["fp32"]], abs=0.05
    )
    # MultiInference: the classify head through the same run.
    request = inference_pb2.MultiInferenceRequest()
    task = request.tasks.add()
    task.model_spec.name, task.model_spec.signature_name = "int8", "classify"
    task.method_name = "tensorflow/serving/classify"
    request.input.example_list.examples.append(example)
    reply = stub.MultiInference(request, timeout=60)
    multi = reply.results[0].classification_result.classifications[0].classes
    assert [c.label for c in multi] == [label for label, _ in classes["int8"]]
    assert [c.score for c in multi] == pytest.approx([s for _, s in classes["int8"]], abs=1e-6)
    embeddings = {}
    for name in ("fp32", "int8"):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        request.model_spec.signature_name = "embedding"
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(jpegs[:2]))
        embeddings[name] = tf.make_ndarray(stub.Predict(request, timeout=60).outputs["embedding"])
    assert embeddings["int8"].shape == embeddings["fp32"].shape
    cosine = np.sum(embeddings["int8"] * embeddings["fp32"], axis=1) / (
        np.linalg.norm(embeddings["int8"], axis=1) * np.linalg.norm(embeddings["fp32"], axis=1)
    )
    assert np.all(cosine > 0.98)


@INT8_EXPORT
def test_bad_bytes_fail_with_the_float32_message(both_served):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    stub = _stub(both_served)
    errors = {}
    for name in ("fp32", "int8"):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([b"not an image"]))
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(request, timeout=60)
        errors[name] = (caught.value.code(), caught.value.details())
    assert errors["int8"] == errors["fp32"]
    assert errors["int8"][0] == grpc.StatusCode.INVALID_ARGUMENT


@INT8_EXPORT
def test_tf_serving_loader_cannot_load_the_int8_version(exported_int8):
    """TF Serving's loader finds no SavedModel at the version's top level; the TF part on
    its own refuses to run the body (it lives in OpenVINO)."""
    import tensorflow as tf

    from tests.export.conftest import SessionModel

    with pytest.raises((OSError, RuntimeError), match="SavedModel"):
        SessionModel(exported_int8)
    part = SessionModel(exported_int8 / "keras_vit_int8")
    with pytest.raises(tf.errors.InvalidArgumentError, match="keras-vit serve"):
        part.run(
            "serving_default", image_bytes=np.array([encode(np.zeros((8, 8, 3), np.uint8), "PNG")])
        )


def test_refusals(tiny_model, exported, tmp_path):
    from serving.export import ExportError, Int8ServingWarning, export_saved_model

    with pytest.raises(ValueError, match="explain"):
        export_saved_model(tiny_model, tmp_path / "a", precision="int8", with_explain=True)
    with pytest.raises(ValueError, match="XLA"):
        export_saved_model(tiny_model, tmp_path / "b", precision="int8", xla=True)
    with pytest.raises(ValueError, match="only used by precision='int8'"):
        export_saved_model(tiny_model, tmp_path / "c", calibration_images=[b"x"])
    # A base path with SavedModel versions (TF Serving may serve it) is refused.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Int8ServingWarning)
        with pytest.raises(ExportError, match="holds SavedModel versions \\(1\\)"):
            export_saved_model(tiny_model, exported.parent, version=9, precision="int8")
    assert not (exported.parent / "9").exists()


def test_cli_refuses_int8_with_quantize_and_bfloat16(tmp_path, capsys):
    from keras_vit.cli import main

    code = main(["export", "--model", "none", "--output", str(tmp_path / "m"),
                 "--precision", "int8", "--quantize", "int8"])  # fmt: skip
    assert code == 2
    assert "--precision int8 cannot be combined with --quantize int8" in capsys.readouterr().err
    code = main(["export", "--model", "none", "--output", str(tmp_path / "m"),
                 "--calibration-data", str(tmp_path)])  # fmt: skip
    assert code == 2
    assert "--calibration-data is only used with --precision int8" in capsys.readouterr().err


@INT8_EXPORT
def test_batch_predict_runs_the_int8_version_and_names_bad_images(exported, exported_int8, photos):
    pytest.importorskip("apache_beam", reason="batch-predict needs apache-beam")
    from serving.batch.model_dir import resolve_model_dir
    from serving.batch.model_handler import ImageClassifier

    assert resolve_model_dir(str(exported_int8.parent)) == str(exported_int8)
    jpeg = encode(photos["coffee"][::2, ::2], "JPEG", quality=85)
    fp32 = ImageClassifier(str(exported)).classify([jpeg, b"not an image", jpeg])
    int8 = ImageClassifier(str(exported_int8)).classify([jpeg, b"not an image", jpeg])
    assert int8[1] == fp32[1] and "error" in int8[1]
    assert int8[0]["label"] in LABELS and len(int8[0]["top_k_scores"]) == TOP_K
    assert int8[0]["top_k_scores"] == pytest.approx(fp32[0]["top_k_scores"], abs=0.05)


@INT8_EXPORT
def test_predict_and_evaluate_model_say_how_to_use_an_int8_export(exported_int8):
    from keras_vit.cli.exports import export_problem

    message = export_problem(str(exported_int8.parent), "predict")
    assert message is not None and "is an int8 export (1/keras_vit_int8/)" in message
    assert "keras-vit serve --model_name=vit" in message
    assert "batch-predict --model-dir" in message


def test_cpu_warning_names_the_missing_int8_instructions():
    from serving.int8_export import int8_cpu_warning

    assert int8_cpu_warning({"avx2", "avx512f", "avx512_vnni"}) is None
    assert int8_cpu_warning({"avx2", "amx_int8"}) is None
    message = int8_cpu_warning({"avx2", "fma"})
    assert "neither AVX512_VNNI, AVX_VNNI nor AMX-INT8" in message
    assert "could not read the CPU flags" in int8_cpu_warning(None)


def test_export_warns_on_a_cpu_without_int8_instructions(tiny_model, tmp_path, monkeypatch):
    from serving.export import export_saved_model
    from serving.int8_export import Int8CPUWarning

    monkeypatch.setattr("serving.precision.cpu_flags", lambda: {"avx2", "fma"})
    with pytest.warns(Int8CPUWarning, match="neither AVX512_VNNI"):
        with pytest.raises(ValueError, match="top_k"):  # stops the export right after
            export_saved_model(tiny_model, tmp_path / "vit", precision="int8", top_k=0)


@INT8_EXPORT
def test_a_base_path_rolls_over_from_float32_to_int8(exported, exported_int8, tmp_path, photos):
    """keras-vit serve serves a base path holding both kinds (--mixed-base-path): the int8
    version, being the latest, replaces the float32 one for clients."""
    import shutil

    import tensorflow as tf
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc, predict_pb2

    from tests.support.servers import serving

    base = tmp_path / "vit"
    shutil.copytree(exported, base / "1")
    shutil.copytree(exported_int8, base / "2")
    with serving(base) as server:
        import grpc

        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        status_request = get_model_status_pb2.GetModelStatusRequest()
        status_request.model_spec.name = "vit"
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            status_request, timeout=30
        )
        available = [v.version for v in status.model_version_status if v.state == 30]
        assert available == [2]
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "vit"
        request.inputs["image_bytes"].CopyFrom(
            tf.make_tensor_proto([encode(photos["chelsea"], "JPEG", quality=90)])
        )
        reply = _stub(server).Predict(request, timeout=60)
        assert reply.model_spec.version.value == 2
        assert tf.make_ndarray(reply.outputs["label"])[0].decode() in LABELS


@pytest.mark.slow  # two int8 exports (NNCF calibration): 38 CPU-s
def test_cli_calibrates_on_the_runs_own_training_folder(tiny_model, photos, tmp_path, capsys):
    """`keras-vit export --model RUN_DIR --precision int8` without --calibration-data takes
    its calibration images from the image folder the run was trained on
    (training_config.json's "data"), spread over the classes."""
    from keras_vit.cli import main
    from keras_vit.training import output

    folder = tmp_path / "photos"
    for index, (name, photo) in enumerate(photos.items()):
        (folder / f"class{index % 2}").mkdir(parents=True, exist_ok=True)
        (folder / f"class{index % 2}" / f"{name}.jpg").write_bytes(encode(photo, "JPEG"))
    run = tmp_path / "run"
    output.write_model_dir(tiny_model, run)
    (run / output.CONFIG_FILE).write_text(json.dumps({"data": str(folder), "labels": LABELS}))
    base = tmp_path / "vit"
    code = main(["export", "--model", str(run), "--output", str(base), "--precision", "int8"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"Calibrating on {len(photos)} images of the run's training data ({folder})" in (
        captured.out
    )
    settings = json.loads((base / "1" / "assets.extra" / "keras_vit_export.json").read_text())
    assert settings["int8"]["calibration"]["images"] == len(photos)
    assert settings["int8"]["calibration"]["source"].startswith(f"{folder} (the run's training")

    # A run whose folder is gone falls back to the sample photos, and says so.
    (run / output.CONFIG_FILE).write_text(json.dumps({"data": str(tmp_path / "gone")}))
    code = main(["export", "--model", str(run), "--output", str(tmp_path / "vit2"),
                 "--precision", "int8"])  # fmt: skip
    assert code == 0
    assert "calibrating on the sample photos" in capsys.readouterr().err


def test_calibration_folder_names_a_non_image_and_skips_a_fifo(tmp_path, photos):
    """A careless --calibration-data: a text file named .jpg is named before any work (it
    used to stop the export mid-calibration with a TensorFlow traceback); a FIFO named
    .jpg is not opened (no hang)."""
    import os

    from serving.int8_export import read_calibration_folder

    (tmp_path / "cats").mkdir()
    os.mkfifo(tmp_path / "cats" / "pipe.jpg")
    (tmp_path / "cats" / "a.jpg").write_bytes(encode(photos["chelsea"], "JPEG"))
    images, names = read_calibration_folder(tmp_path, 10)
    assert names == ["cats/a.jpg"] and len(images) == 1
    (tmp_path / "cats" / "b.jpg").write_text("meeting notes, not an image\n")
    with pytest.raises(ValueError, match=r"cats/b\.jpg is not an image \(text\)"):
        read_calibration_folder(tmp_path, 10)


@pytest.mark.slow  # an NNCF calibration run: 7 CPU-s (tests/support/cpu_report.py)
def test_undecodable_calibration_bytes_are_a_clear_error(tiny_model, tmp_path):
    from serving.export import Int8ServingWarning, export_saved_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Int8ServingWarning)
        with pytest.raises(ValueError, match=r"calibration image 2 cannot be decoded: not a JPEG"):
            export_saved_model(tiny_model, tmp_path / "vit", precision="int8",
                               calibration_images=[encode(np.zeros((8, 8, 3), "uint8"), "PNG"),
                                                   b"garbage bytes"])  # fmt: skip
    assert not (tmp_path / "vit" / "1").exists()
