"""Zero-downtime rollout (issue 10, section 3): version 2 arrives, version 1 retires,
8 clients keep calling, and not one request fails.

TF Serving promises this with its ``AvailabilityPreservingPolicy``: a new
version is loaded before the old one is unloaded, and a request holds its
version until it is answered. ``benchmarks/rollout.py`` measures the same on a
ViT export; this is the short version on ``half_plus_two``.
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import grpc
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.serving.half_plus_two import build_half_plus

CONCURRENCY = 8
AVAILABLE, END = 30, 50  # ModelVersionStatus.State


def _request() -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "rolling"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0]], dtype=tf.float32))
    return request


def test_rollout_under_load_fails_no_request(tmp_path, run_server, wait_for):
    base = tmp_path / "rolling"
    build_half_plus(base / "1")  # y = 0.5 x + 2
    with run_server(
        model_name="rolling", model_base_path=str(base), file_system_poll_wait_seconds=0.2
    ) as server:
        records: list[tuple[float, int, float | str]] = []  # (time, version, y or error)
        stop = threading.Event()

        def client():
            with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                while not stop.is_set():
                    try:
                        response = stub.Predict(_request(), timeout=10)
                        y = response.outputs["y"].float_val[0]
                        records.append((time.monotonic(), response.model_spec.version.value, y))
                    except grpc.RpcError as error:
                        records.append((time.monotonic(), 0, error.code().name))

        events: dict[str, float] = {}  # when the server reported each state change

        def monitor():
            while not stop.is_set():
                status = dict(server.core.model_status("rolling", None))
                if 2 in status and status[2].state == AVAILABLE:
                    events.setdefault("v2 available", time.monotonic())
                if status[1].state == END:
                    events.setdefault("v1 unloaded", time.monotonic())
                time.sleep(0.002)

        threads = [threading.Thread(target=client) for _ in range(CONCURRENCY)]
        threads.append(threading.Thread(target=monitor))
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.0)
            # Version 2 is written beside the base path and moved in whole, as exports are.
            staging = tmp_path / "staging"
            build_half_plus(staging, b=3.0)  # y = 0.5 x + 3
            written = time.monotonic()
            os.rename(staging, base / "2")

            wait_for(lambda: "v1 unloaded" in events, timeout=60, what="version 1 unloaded")
            shutil.rmtree(base / "1")  # retired: its directory goes too
            time.sleep(1.0)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)

    failures = [r for r in records if r[1] == 0]
    assert not failures, failures[:5]
    first_v2 = min(t for t, version, _ in records if version == 2)
    last_v1 = max(t for t, version, _ in records if version == 1)
    available, unloaded = events["v2 available"], events["v1 unloaded"]
    # Availability preserving: v2 serves before v1 goes; a v1 answer may still be on its way.
    assert written < available < unloaded
    assert first_v2 >= available - 0.01
    assert last_v1 <= unloaded + 0.5
    # Each version computed its own answer: no request saw a half-loaded model.
    assert {y for _, version, y in records if version == 1} == {2.5}
    assert {y for _, version, y in records if version == 2} == {3.5}
    after = [r for r in records if r[0] > unloaded + 0.5]
    assert after and all(version == 2 for _, version, _ in after)
    assert len(records) > 100
