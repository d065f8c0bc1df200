"""Connections that cannot take the server down: idle floods, slowloris, slow bodies.

The REST port reads every connection in one loop thread (tornado, ``http_server.py``),
so the server's thread count must not grow with the connections, a normal
client must still get its answer while hundreds of connections sit idle or
trickle bytes, and each kind of slow connection must be cut at its deadline:
idle ones after ``--rest_api_idle_timeout_in_ms``, headers at
``--rest_api_header_timeout_in_ms`` (408), bodies at ``--rest_api_timeout_in_ms``
in total (408). The gRPC port gets the same idle flood (raw TCP and HTTP/2
connections that never send a call). The full numbers, with 2,000 connections,
are in ``benchmarks/abuse.py``.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.serving.half_plus_two import build_half_plus

CAP = 50
IDLE_S, HEADER_S, BODY_S = 1.5, 1.0, 2.0
WORKERS = 2
PREDICT = b'{"instances": [1.0, 2.0]}'
# An HTTP/2 client preface and an empty SETTINGS frame, then the SETTINGS ack.
H2_PREFACE = (
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    + b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory, start_server):
    root = tmp_path_factory.mktemp("connections")
    build_half_plus(root / "half" / "1")
    return start_server(
        model_name="half",
        model_base_path=str(root / "half"),
        rest_api_num_threads=WORKERS,
        rest_api_max_connections=CAP,
        rest_api_idle_timeout_in_ms=int(IDLE_S * 1000),
        rest_api_header_timeout_in_ms=int(HEADER_S * 1000),
        rest_api_timeout_in_ms=int(BODY_S * 1000),
        grpc_channel_arguments=(
            "grpc.server_handshake_timeout_ms=1000,grpc.max_connection_idle_ms=1000,"
            "grpc.max_allowed_incoming_connections=400"
        ),
    )


def _predict(server, timeout: float = 10.0) -> tuple[int, dict, float]:
    start = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=timeout)
    try:
        connection.request("POST", "/v1/models/half:predict", PREDICT)
        response = connection.getresponse()
        return response.status, json.loads(response.read()), time.monotonic() - start
    finally:
        connection.close()


def _open(port: int, count: int, first: bytes = b"") -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if first:
            sock.sendall(first)
        sockets.append(sock)
    return sockets


def _closed_by_server(sock: socket.socket) -> tuple[bool, bytes]:
    """(True, what it sent last) if the server closed ``sock``; never blocks."""
    sock.setblocking(False)
    received = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True, received
            received += chunk
    except BlockingIOError:
        return False, received
    except OSError:
        return True, received


def _wait_closed(sockets, seconds: float) -> list[bytes]:
    """Waits up to ``seconds`` for the server to close every socket; their last bytes."""
    deadline = time.monotonic() + seconds
    pending = {id(s): s for s in sockets}
    answers = {}
    while pending and time.monotonic() < deadline:
        for key, sock in list(pending.items()):
            closed, data = _closed_by_server(sock)
            answers[key] = answers.get(key, b"") + data
            if closed:
                del pending[key]
        time.sleep(0.05)
    assert not pending, f"{len(pending)} of {len(sockets)} connections still open"
    return [answers[id(s)] for s in sockets]


def _close_all(sockets) -> None:
    for sock in sockets:
        sock.close()


def _closed(server, reason: str) -> int:
    return server.metrics.rest_connections_closed.value(reason)


def _threads_after_warm_up(server) -> int:
    for _ in range(2 * WORKERS):  # every worker thread exists
        assert _predict(server)[0] == 200
    return threading.active_count()


def test_idle_flood_beyond_the_cap_leaves_room_for_a_normal_client(server, wait_for):
    threads = _threads_after_warm_up(server)
    evicted = _closed(server, "evicted")
    idle = _open(server.rest_port, 4 * CAP)
    try:
        # Polled on the server's own counter (a fixed sleep raced it on a loaded machine).
        wait_for(lambda: _closed(server, "evicted") - evicted >= 3 * CAP, what="evictions")
        assert threading.active_count() <= threads  # no thread per connection
        assert server.metrics.rest_open_connections.value() <= CAP
        status, reply, seconds = _predict(server)
        assert (status, reply) == (200, {"predictions": [2.5, 3.0]})
        assert seconds < 1.0
        # The oldest idle connections made room: closed by the server, without an answer.
        assert _closed(server, "evicted") - evicted >= 3 * CAP
        assert _wait_closed(idle[:CAP], 1.0) == [b""] * CAP
    finally:
        _close_all(idle)


def test_a_flood_of_requests_beyond_the_cap_gets_answers_not_silent_closes(server):
    # Each connection sends its request at once: the cap makes room by closing connections
    # that were answered (kept alive, idle), never one whose request is waiting unread.
    status = b"GET /v1/models/half HTTP/1.1\r\nHost: x\r\n\r\n"
    flood = _open(server.rest_port, 3 * CAP, status)
    try:
        answers = _wait_closed(flood[: 2 * CAP], 3.0)  # room for the last CAP connections
    finally:
        _close_all(flood)
    assert all(a.startswith((b"HTTP/1.1 200 OK", b"HTTP/1.1 503 ")) for a in answers), [
        a[:20] for a in answers if not a.startswith(b"HTTP/1.1 200 OK")
    ][:3]


def test_idle_and_kept_alive_connections_close_after_the_idle_timeout(server):
    before = _closed(server, "idle_timeout")
    idle = _open(server.rest_port, 20)
    kept = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
    try:
        kept.request("POST", "/v1/models/half:predict", PREDICT)
        response = kept.getresponse()
        assert response.status == 200 and response.getheader("Connection") != "close"
        response.read()
        start = time.monotonic()
        _wait_closed([*idle, kept.sock], IDLE_S + 2.0)
        assert time.monotonic() - start > IDLE_S - 0.5
        assert _closed(server, "idle_timeout") - before == 21
    finally:
        _close_all(idle)
        kept.close()


def test_slowloris_headers_are_cut_at_the_header_deadline(server):
    threads = _threads_after_warm_up(server)
    before = _closed(server, "header_timeout")
    slow = _open(server.rest_port, 30, b"POST /v1/models/half:predict HTTP/1.1\r\n")
    start = time.monotonic()
    try:
        latencies = []
        while time.monotonic() - start < HEADER_S * 0.8:  # one header byte each, often
            for sock in slow:
                sock.send(b"X")
            latencies.append(_predict(server)[2])
            time.sleep(0.1)
        assert threading.active_count() <= threads
        assert max(latencies) < 1.0
        answers = _wait_closed(slow, HEADER_S + 1.5)
        assert time.monotonic() - start < HEADER_S + 1.5
        assert all(a.startswith(b"HTTP/1.1 408 Request Timeout\r\n") for a in answers), answers[0]
        assert _closed(server, "header_timeout") - before == 30
    finally:
        _close_all(slow)


def test_slow_bodies_are_cut_at_the_rest_timeout_and_hold_no_worker(server):
    threads = _threads_after_warm_up(server)
    head = b"POST /v1/models/half:predict HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n"
    slow = _open(server.rest_port, 4 * WORKERS, head)  # more than there are workers
    start = time.monotonic()
    try:
        latencies = []
        while time.monotonic() - start < BODY_S * 0.8:  # 10 bytes at a time
            for sock in slow:
                sock.send(b" " * 10)
            latencies.append(_predict(server)[2])
            time.sleep(0.1)
        assert threading.active_count() <= threads
        assert max(latencies) < 1.0
        answers = _wait_closed(slow, BODY_S + 1.5)
        assert time.monotonic() - start < BODY_S + 1.5
        for answer in answers:
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
            assert answer.endswith(b'{"error": "The request body did not arrive in time"}')
    finally:
        _close_all(slow)
    assert _predict(server)[0] == 200  # their bytes in flight are given back


def test_announcing_large_bodies_without_sending_them_holds_no_budget(server, wait_for):
    # Ten 60 MB bodies announced (more than the 512 MiB of bytes in flight), none sent:
    # bodies take their budget as they arrive, so a normal request is not refused.
    head = b"POST /v1/models/half:predict HTTP/1.1\r\nContent-Length: 62914560\r\n\r\n"
    announced = _open(server.rest_port, 10, head)
    try:
        open_now = server.metrics.rest_open_connections.value
        wait_for(lambda: open_now() >= 10, what="the ten connections to be accepted")
        status, reply, seconds = _predict(server)
        assert (status, reply) == (200, {"predictions": [2.5, 3.0]})
        assert seconds < 1.0
    finally:
        _close_all(announced)


def test_at_the_cap_with_every_connection_sending_a_body_a_new_one_gets_503(server, wait_for):
    before = _closed(server, "refused")
    head = b"POST /v1/models/half:predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"
    sending = _open(server.rest_port, CAP, head)
    open_now = server.metrics.rest_open_connections.value
    try:
        wait_for(lambda: open_now() == CAP, what="every connection to be accepted")
        status, reply, _ = _predict(server)
        assert status == 503
        assert "--rest_api_max_connections" in reply["error"]
        assert _closed(server, "refused") - before == 1
    finally:
        _close_all(sending)
    wait_for(lambda: open_now() < CAP, what="the closed connections to be let go")
    assert _predict(server)[0] == 200


def test_expect_continue_pipelining_and_chunked_bodies(server):
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            + f"Content-Length: {len(PREDICT)}\r\n\r\n".encode()
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(PREDICT), PREDICT)
        # The body, then two more requests in the same write: answered in order.
        sock.sendall(
            PREDICT
            + b"GET /v1/models/half HTTP/1.1\r\nHost: x\r\n\r\n"
            + b"POST /v1/models/half:predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunked
        )
        reader = sock.makefile("rb")
        statuses = []
        for _ in range(3):  # status line, headers, Content-Length bytes
            status = int(reader.readline().split()[1])
            headers = http.client.parse_headers(reader)
            statuses.append((status, json.loads(reader.read(int(headers["Content-Length"])))))
        assert statuses[0] == (200, {"predictions": [2.5, 3.0]})
        assert statuses[1][1]["model_version_status"][0]["state"] == "AVAILABLE"
        assert statuses[2] == (200, {"predictions": [2.5, 3.0]})


def test_headers_over_the_size_limit_get_431(server):
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as sock:
        sock.sendall(b"GET /v1/models/half HTTP/1.1\r\n" + b"X-Pad: " + b"x" * 70000 + b"\r\n")
        answer = _wait_closed([sock], 2.0)[0]
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


def _tasks() -> int:
    return len(os.listdir("/proc/self/task"))  # every thread, gRPC core's included


def _grpc_predict(server) -> float:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0], dtype=tf.float32))
    start = time.monotonic()
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert list(stub.Predict(request, timeout=10).outputs["y"].float_val) == [2.5]
    return time.monotonic() - start


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_grpc_idle_flood_holds_no_threads_and_is_closed(server):
    _grpc_predict(server)
    tasks = _tasks()
    silent = _open(server.grpc_port, 200)  # TCP only: no HTTP/2 preface
    idle = _open(server.grpc_port, 100, H2_PREFACE)  # HTTP/2, but never a call
    try:
        time.sleep(0.3)
        assert _tasks() <= tasks + 2
        assert _grpc_predict(server) < 1.0
        # Closed by the handshake deadline and the idle timeout (1 s each here).
        _wait_closed(silent + idle, 4.0)
        assert _grpc_predict(server) < 1.0
    finally:
        _close_all(silent + idle)


def test_grpc_and_rest_are_served_by_one_loop_thread(server):
    # grpc.aio and tornado on the server's one asyncio loop: no thread of their own.
    assert isinstance(server._grpc_server, grpc.aio.Server)
    assert server._rest_server._loop is server._network.loop
    _grpc_predict(server)
    names = [thread.name for thread in threading.enumerate()]
    assert "rest_server" not in names  # the REST port's former loop thread
    assert server._network._thread.name == "serving_loop" and server._network._thread.is_alive()


def test_grpc_channel_arguments_replace_the_defaults():
    from serving.server.server import GRPC_SERVER_DEFAULTS, _grpc_options

    options = dict(_grpc_options("grpc.max_connection_idle_ms=5,grpc.lb_policy_name=x"))
    assert options["grpc.max_connection_idle_ms"] == 5
    assert options["grpc.lb_policy_name"] == "x"
    assert (
        options["grpc.max_concurrent_streams"]
        == GRPC_SERVER_DEFAULTS["grpc.max_concurrent_streams"]
    )
    # The connection cap fits what the open-files limit leaves after the REST port.
    capped = dict(_grpc_options("", open_files=2048, rest_connections=1024))
    assert capped["grpc.max_allowed_incoming_connections"] == 2048 - 1024 - 256
