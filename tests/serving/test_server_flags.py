"""The flags of docs/server.md that change behaviour, each run against TF Serving's semantics.

``--saved_model_tags`` (a meta graph is chosen by its exact tag set),
``--allow_version_labels_for_unavailable_models`` (a *new* label may name a
version not loaded yet; moving a label there still fails),
``--enable_signature_method_name_check`` (Predict accepts only predict,
classify and regress signatures), ``--enable_serialization_as_tensor_content``
(gRPC outputs packed into ``tensor_content``) and the TensorFlow thread-pool
flags (the pools the loaded session really gets).
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.server.status import ServingError
from tests.serving.half_plus_two import build_half_plus, build_half_plus_two_base

REPO = Path(__file__).resolve().parents[2]
v1 = tf.compat.v1


def _build(export_dir: Path, tags=("serve",), method="tensorflow/serving/predict") -> Path:
    """y = 0.5 * x + 2 under meta-graph ``tags``, its one signature of ``method``."""
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        x = v1.placeholder(tf.float32, [None, 1], name="x")
        y = tf.add(tf.multiply(0.5, x), 2.0, name="y")
        signature = v1.saved_model.signature_def_utils.build_signature_def(
            inputs={"x": v1.saved_model.utils.build_tensor_info(x)},
            outputs={"y": v1.saved_model.utils.build_tensor_info(y)},
            method_name=method,
        )
        builder = v1.saved_model.Builder(str(export_dir))
        builder.add_meta_graph_and_variables(
            session, list(tags), signature_def_map={"serving_default": signature}
        )
        builder.save()
    return export_dir


def _predict(server, name="m", signature="serving_default", **spec):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    for key, value in spec.items():
        setattr(request.model_spec, key, value)
    key = "inputs" if signature.startswith("classify") else "x"
    request.inputs[key].CopyFrom(tf.make_tensor_proto(np.array([[1.0], [2.0]], np.float32)))
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return stub.Predict(request, timeout=30)


def _rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


# --saved_model_tags ---------------------------------------------------------------------


def test_saved_model_tags_pick_the_meta_graph_by_its_exact_tag_set(tmp_path, run_server):
    _build(tmp_path / "m" / "1", tags=("serve", "gpu"))
    # The default tag set {serve} is not {serve, gpu}: the model does not load.
    with pytest.raises(ServingError) as raised:
        with run_server(model_name="m", model_base_path=str(tmp_path / "m")):
            pass
    assert "did not become available" in raised.value.message
    assert "serve" in raised.value.message and "tags" in raised.value.message
    # The same set in another order loads it.
    with run_server(
        model_name="m", model_base_path=str(tmp_path / "m"), saved_model_tags="gpu,serve"
    ) as server:
        assert list(_predict(server).outputs["y"].float_val) == [2.5, 3.0]


def test_saved_model_tags_other_than_serve(tmp_path, run_server):
    _build(tmp_path / "m" / "1", tags=("train",))
    with run_server(
        model_name="m", model_base_path=str(tmp_path / "m"), saved_model_tags="train"
    ) as server:
        assert list(_predict(server).outputs["y"].float_val) == [2.5, 3.0]


# --allow_version_labels_for_unavailable_models -------------------------------------------


def _labels_config(path: Path, base: Path, labels: dict[str, int]) -> Path:
    entries = " ".join(f'version_labels {{ key: "{k}" value: {v} }}' for k, v in labels.items())
    path.write_text(
        f'model_config_list {{ config {{ name: "m" base_path: "{base}" '
        f'model_platform: "tensorflow" model_version_policy {{ all {{}} }} {entries} }} }}'
    )
    return path


def test_label_for_an_unavailable_version_fails_startup_by_default(tmp_path, run_server):
    build_half_plus(tmp_path / "m" / "1")
    config = _labels_config(tmp_path / "models.config", tmp_path / "m", {"canary": 2})
    with pytest.raises(ServingError) as raised:
        with run_server(model_config_file=str(config)):
            pass
    assert raised.value.message == (
        "Request to assign label to version 2 of model m, which is not currently "
        "available for inference"
    )


def test_allowed_label_waits_for_its_version_but_a_moved_label_may_not(
    tmp_path, run_server, wait_for
):
    build_half_plus(tmp_path / "m" / "1")  # b = 2
    config = _labels_config(tmp_path / "models.config", tmp_path / "m", {"stable": 1, "canary": 2})
    with run_server(
        model_config_file=str(config),
        allow_version_labels_for_unavailable_models=True,
        file_system_poll_wait_seconds=0.2,
    ) as server:
        assert list(_predict(server, version_label="stable").outputs["y"].float_val) == [2.5, 3.0]
        error = _rpc_error(lambda: _predict(server, version_label="canary"))
        assert error.code() != grpc.StatusCode.OK
        build_half_plus(tmp_path / "m" / "2", b=3.0)

        def canary_serves_version_2():
            try:
                return list(_predict(server, version_label="canary").outputs["y"].float_val)
            except grpc.RpcError:
                return None

        wait_for(lambda: canary_serves_version_2() == [3.5, 4.0], what="version 2 via canary")
        # Moving an existing label to a version that is not available is refused even so.
        request = model_management_pb2.ReloadConfigRequest()
        moved = _labels_config(tmp_path / "moved.config", tmp_path / "m", {"stable": 7})
        text_format.Parse(moved.read_text(), request.config)
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            error = _rpc_error(lambda: stub.HandleReloadConfigRequest(request, timeout=60))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "version 7 of model m, which is not currently available" in error.details()


# --enable_signature_method_name_check -----------------------------------------------------


@pytest.fixture(scope="module")
def method_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    _build(root / "m" / "1", method="custom/method")
    build_half_plus(root / "h" / "1")  # has classify_x2_to_y3 (a classify signature on x2)
    config = root / "models.config"
    config.write_text(
        "model_config_list { "
        + " ".join(
            f'config {{ name: "{n}" base_path: "{root / n}" model_platform: "tensorflow" }}'
            for n in ("m", "h")
        )
        + " }"
    )
    return config


def test_without_the_check_predict_runs_any_signature(method_models, start_server):
    server = start_server(model_config_file=str(method_models))
    assert list(_predict(server).outputs["y"].float_val) == [2.5, 3.0]
    scores = _predict(server, name="h", signature="classify_x2_to_y3").outputs["scores"]
    assert list(scores.float_val) == [3.5, 4.0]


def test_with_the_check_predict_refuses_other_methods(method_models, start_server):
    server = start_server(
        model_config_file=str(method_models), enable_signature_method_name_check=True
    )
    error = _rpc_error(lambda: _predict(server))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == (
        "Expected prediction signature method_name to be one of {tensorflow/serving/predict, "
        "tensorflow/serving/classify, tensorflow/serving/regress}. Was: custom/method"
    )
    # Classify and regress signatures stay acceptable to Predict.
    scores = _predict(server, name="h", signature="classify_x2_to_y3").outputs["scores"]
    assert list(scores.float_val) == [3.5, 4.0]


# --enable_serialization_as_tensor_content -------------------------------------------------


def test_tensor_content_serialization(tmp_path, run_server):
    base = build_half_plus_two_base(tmp_path / "half_plus_two")
    for packed in (False, True):
        with run_server(
            model_name="m",
            model_base_path=str(base),
            enable_serialization_as_tensor_content=packed,
        ) as server:
            y = _predict(server).outputs["y"]
        assert bool(y.tensor_content) is packed
        assert len(y.float_val) == (0 if packed else 2)
        np.testing.assert_array_equal(tf.make_ndarray(y), [[2.5], [3.0]])


# TensorFlow thread pools ------------------------------------------------------------------


def _server_threads(base: Path, port: int, rest_port: int, *flags: str) -> collections.Counter:
    """Starts ``python -m serving.server`` with ``flags``, predicts once over REST, and
    counts the process's threads by name (/proc/PID/task/*/comm)."""
    command = [
        sys.executable, "-m", "serving.server", f"--port={port}",
        f"--rest_api_port={rest_port}", "--model_name=m", f"--model_base_path={base}", *flags,
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 240
        body = json.dumps({"instances": [[1.0], [2.0]]}).encode()
        while True:
            assert process.poll() is None, f"the server exited with {process.returncode}"
            try:
                url = f"http://127.0.0.1:{rest_port}/v1/models/m:predict"
                with urllib.request.urlopen(url, data=body, timeout=30) as response:
                    assert json.load(response) == {"predictions": [[2.5], [3.0]]}
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.2)
        tasks = Path(f"/proc/{process.pid}/task")
        names = collections.Counter()
        for task in tasks.iterdir():
            try:
                names[(task / "comm").read_text().strip()] += 1
            except FileNotFoundError:  # a thread that ended meanwhile
                pass
        return names
    finally:
        process.terminate()
        process.wait(60)


@pytest.mark.slow  # server processes per flag set: 15 CPU-s (tests/support/cpu_report.py)
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_thread_pool_flags_size_the_sessions_pools(tmp_path, free_port):
    base = build_half_plus_two_base(tmp_path / "half_plus_two")
    small = _server_threads(
        base, free_port(), free_port(),
        "--tensorflow_inter_op_parallelism=2", "--tensorflow_intra_op_parallelism=1",
    )  # fmt: skip
    large = _server_threads(
        base, free_port(), free_port(),
        "--tensorflow_inter_op_parallelism=5", "--tensorflow_intra_op_parallelism=4",
    )  # fmt: skip
    both = _server_threads(
        base, free_port(), free_port(), "--tensorflow_session_parallelism=3"
    )  # fmt: skip
    print(f"threads: {dict(small)} / {dict(large)} / {dict(both)}")
    # The inter-op pool is TensorFlow's "tf_Compute" threads, one per thread asked for.
    assert (small["tf_Compute"], large["tf_Compute"], both["tf_Compute"]) == (2, 5, 3)
    # The intra-op (Eigen) pool's threads carry the process's name: 3 more for 4 than for 1
    # (the caller's thread is the pool's last), everything else being the same.
    assert large["python"] - small["python"] == 3
    assert both["python"] - small["python"] == 2
