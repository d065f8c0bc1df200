"""A version that fails to load, as GetModelStatus (gRPC) and GET /v1/models/NAME (REST) show it.

TF Serving's behaviour, from its source (tensorflow/serving @ the commit in
tfserving-cases.json): ``BasicManager::ExecuteLoad`` publishes ``kLoading`` once, then
``LoaderHarness::Load`` runs ``Retry`` (``util/retrier.cc``: ``--max_num_load_retries``
more attempts, ``--load_retry_interval_micros`` apart) publishing nothing in between, so
the version stays LOADING with an OK status while it is retried; when the last attempt
fails, the harness's error callback publishes ``kEnd`` with the load error, and
``get_model_status_impl.cc`` reports it as state END with that ``error_code`` and
``error_message``. A version that stops being aspired has its retries cancelled
(``BasicManager::CancelLoadServableRetry``) and ends the same way. Meanwhile the serving
version stays (``AvailabilityPreservingPolicy``).

The codes and texts are those of TF's C++ loader (``LoadSavedModel``), which TF Serving
runs: ``env.cc`` ``ReadBinaryProto`` (DATA_LOSS), ``reader.cc`` ``FindMetaGraphDef``
(NOT_FOUND) and the restore op's own error (OUT_OF_RANGE).
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import grpc
import pytest
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from tests.serving.half_plus_two import build_half_plus

MODEL = "default"


def empty_graph(version: Path) -> None:
    (version / "saved_model.pb").write_bytes(b"")


def truncated_graph(version: Path) -> None:
    data = (version / "saved_model.pb").read_bytes()
    (version / "saved_model.pb").write_bytes(data[: len(data) // 2])


def truncated_variables(version: Path) -> None:
    for shard in (version / "variables").glob("variables.data-*"):
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) // 2])


CASES = {
    "empty saved_model.pb": (
        empty_graph,
        "NOT_FOUND",
        "Could not find meta graph def matching supplied tags: { serve }. To inspect "
        "available tag-sets in the SavedModel, please use the SavedModel CLI: `saved_model_cli`",
    ),
    "truncated saved_model.pb": (
        truncated_graph,
        "DATA_LOSS",
        "Can't parse {version}/saved_model.pb as binary proto",
    ),
    "truncated variables": (truncated_variables, "OUT_OF_RANGE", "Read less bytes than requested"),
}


def rest_status(server) -> dict[int, dict]:
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/{MODEL}"
    with urllib.request.urlopen(url, timeout=30) as response:
        body = json.loads(response.read())
    return {int(v["version"]): v for v in body["model_version_status"]}


def grpc_status(server) -> dict[int, get_model_status_pb2.ModelVersionStatus]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            request, timeout=30
        )
    return {v.version: v for v in response.model_version_status}


def predict(server) -> list[float]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.rest_port}/v1/models/{MODEL}:predict",
        data=json.dumps({"instances": [1.0]}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["predictions"]


def add_broken_version(base: Path, staging: Path, breaker) -> Path:
    build_half_plus(staging, b=3.0)
    breaker(staging)
    shutil.move(staging, base / "2")  # appears whole
    return base / "2"


@pytest.mark.parametrize("case", list(CASES))
def test_a_failed_version_is_loading_while_retried_then_end_with_its_error(
    tmp_path, run_server, wait_for, case
):
    breaker, code, message = CASES[case]
    base = tmp_path / "model"
    build_half_plus(base / "1")
    with run_server(
        model_base_path=str(base),
        file_system_poll_wait_seconds=0.1,
        max_num_load_retries=1,
        load_retry_interval_micros=2_000_000,
    ) as server:
        version = add_broken_version(base, tmp_path / "staging", breaker)
        wait_for(lambda: 2 in rest_status(server), what="version 2 to be seen")
        # Between the attempts: LOADING, status OK (TF Serving publishes nothing then).
        loading = rest_status(server)[2]
        assert loading["state"] == "LOADING"
        assert loading["status"] == {"error_code": "OK", "error_message": ""}
        assert grpc_status(server)[2].state == get_model_status_pb2.ModelVersionStatus.LOADING

        wait_for(lambda: rest_status(server)[2]["state"] == "END", what="version 2 to fail")
        expected = message.replace("{version}", str(version))
        statuses = rest_status(server)
        assert statuses[2]["status"] == {"error_code": code, "error_message": expected}
        assert statuses[1]["state"] == "AVAILABLE"
        by_grpc = grpc_status(server)
        assert by_grpc[2].state == get_model_status_pb2.ModelVersionStatus.END
        assert by_grpc[2].status.error_code == grpc.StatusCode[code].value[0]
        assert by_grpc[2].status.error_message == expected
        assert by_grpc[1].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
        assert predict(server) == [2.5]  # version 1 (0.5x + 2) still serves


def test_removing_a_version_being_retried_ends_it_with_its_error(tmp_path, run_server, wait_for):
    base = tmp_path / "model"
    build_half_plus(base / "1")
    with run_server(
        model_base_path=str(base),
        file_system_poll_wait_seconds=0.1,
        max_num_load_retries=100,  # 50 s of retries if nothing cancelled them
        load_retry_interval_micros=500_000,
    ) as server:
        add_broken_version(base, tmp_path / "staging", empty_graph)
        wait_for(lambda: rest_status(server).get(2, {}).get("state") == "LOADING", what="v2")
        shutil.rmtree(base / "2")
        wait_for(lambda: rest_status(server)[2]["state"] == "END", timeout=10, what="v2 ends")
        status = rest_status(server)[2]["status"]
        assert status["error_code"] != "OK" and status["error_message"]
        assert rest_status(server)[1]["state"] == "AVAILABLE"
        assert predict(server) == [2.5]
