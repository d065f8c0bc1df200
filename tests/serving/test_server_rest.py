"""REST behaviour beyond the replayed TF Serving cases: strings and JPEG bytes, labels,
transport details (gzip, CORS, keep-alive, body limit), timeouts and concurrency.

Expected texts come from ``tfserving-protocol.md`` (TF Serving's source) unless noted.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import io
import json
import os
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from tests.serving.half_plus_two import build_half_plus, build_slow_model, build_string_model

MODEL = "half_plus_two"


@pytest.fixture(scope="module")
def server(tmp_path_factory, start_server):
    root = tmp_path_factory.mktemp("rest_models")
    build_half_plus(root / MODEL / "123")
    build_half_plus(root / MODEL / "124", b=3.0)
    build_string_model(root / "strings" / "1")
    build_slow_model(root / "slow" / "1")
    config = root / "models.config"
    config.write_text(
        f"""model_config_list {{
          config {{ name: "{MODEL}" base_path: "{root / MODEL}" model_platform: "tensorflow"
                   model_version_policy {{ specific {{ versions: 123 versions: 124 }} }}
                   version_labels {{ key: "stable" value: 123 }} }}
          config {{ name: "strings" base_path: "{root / "strings"}" model_platform: "tensorflow" }}
          config {{ name: "slow" base_path: "{root / "slow"}" model_platform: "tensorflow" }}
        }}"""
    )
    return start_server(
        model_config_file=str(config),
        file_system_poll_wait_seconds=0,
        rest_api_timeout_in_ms=500,
        rest_api_enable_cors_support=True,
        rest_api_max_request_bytes=2 * 1024 * 1024,
    )


def send(server, method, path, body=b"", headers=None, connection=None):
    own = connection is None
    connection = connection or http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
    try:
        payload = body.encode() if isinstance(body, str) else body
        connection.request(method, path, body=payload, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        if own:
            connection.close()


def post_json(server, path, document):
    status, _, body = send(server, "POST", path, json.dumps(document))
    return status, json.loads(body)


def jpeg_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_jpeg_bytes_as_b64_reach_a_string_input_intact(server):
    photo = jpeg_bytes(skimage_data.astronaut())
    small = jpeg_bytes(skimage_data.chelsea()[:100, :120])
    encoded = [base64.b64encode(b).decode() for b in (photo, small)]
    status, reply = post_json(
        server, "/v1/models/strings:predict", {"instances": [{"b64": e} for e in encoded]}
    )
    assert status == 200, reply
    first, second = reply["predictions"]
    assert first["length"] == len(photo) and second["length"] == len(small)
    assert (first["height"], first["width"]) == (512, 512)
    assert (second["height"], second["width"]) == (100, 120)
    # An output alias ending in _bytes comes back as {"b64": ...}, byte for byte.
    assert base64.b64decode(first["echo_bytes"]["b64"]) == photo
    assert base64.b64decode(second["echo_bytes"]["b64"]) == small


def test_named_row_objects_and_columnar_b64(server):
    data = jpeg_bytes(skimage_data.coffee())
    item = {"b64": base64.b64encode(data).decode()}
    body = {"signature_name": "length_only", "instances": [{"image_bytes": item}]}
    assert post_json(server, "/v1/models/strings:predict", body) == (
        200,
        {"predictions": [len(data)]},
    )
    body = {"signature_name": "length_only", "inputs": {"image_bytes": [item, item]}}
    assert post_json(server, "/v1/models/strings:predict", body) == (
        200,
        {"outputs": [len(data), len(data)]},
    )
    body = {"signature_name": "length_only", "instances": ["plain text", "é"]}
    assert post_json(server, "/v1/models/strings:predict", body) == (200, {"predictions": [10, 2]})


@pytest.mark.parametrize(
    "b64,message",
    [("aGVsbG8", None), ("aGVsbG8=", None), ("aGVsbG8==", "Unable to base64 decode")],
)
def test_base64_padding_rules(server, b64, message):
    body = {"signature_name": "length_only", "instances": [{"b64": b64}]}
    status, reply = post_json(server, "/v1/models/strings:predict", body)
    if message is None:
        assert (status, reply) == (200, {"predictions": [5]})
    else:
        assert status == 400 and message in reply["error"]


def test_versions_and_labels(server):
    body = {"instances": [1.0]}
    assert post_json(server, f"/v1/models/{MODEL}:predict", body)[1] == {"predictions": [3.5]}
    assert post_json(server, f"/v1/models/{MODEL}/versions/123:predict", body)[1] == {
        "predictions": [2.5]
    }
    assert post_json(server, f"/v1/models/{MODEL}/labels/stable:predict", body)[1] == {
        "predictions": [2.5]
    }
    status, reply = post_json(server, f"/v1/models/{MODEL}/labels/beta:predict", body)
    assert (status, reply["error"]) == (400, "Unrecognized servable version label: beta")
    # Status ignores the label: all versions, newest first.
    status, _, raw = send(server, "GET", f"/v1/models/{MODEL}/labels/beta")
    versions = [v["version"] for v in json.loads(raw)["model_version_status"]]
    assert (status, versions) == (200, ["124", "123"])
    status, _, raw = send(server, "GET", f"/v1/models/{MODEL}/labels/stable/metadata")
    assert status == 200 and json.loads(raw)["model_spec"]["version"] == "123"
    # A case-different subresource is a status request (compared case-sensitively).
    status, _, raw = send(server, "GET", f"/v1/models/{MODEL}/METADATA")
    assert status == 200 and "model_version_status" in json.loads(raw)
    status, _, raw = send(server, "POST", f"/v1/models/{MODEL}:PREDICT", json.dumps(body))
    assert (status, json.loads(raw)["error"]) == (
        400,
        f"Malformed request: POST /v1/models/{MODEL}:PREDICT",
    )


@pytest.mark.parametrize(
    "method,path",
    [
        ("PUT", f"/v1/models/{MODEL}:predict"),
        ("DELETE", f"/v1/models/{MODEL}"),
        ("POST", f"/v1/models/{MODEL}:predict?x=1"),  # the query string is part of the path
    ],
)
def test_malformed_requests(server, method, path):
    status, headers, body = send(server, method, path, '{"instances": [1.0]}')
    assert status == 400
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"error": f"Malformed request: {method} {path}"}


def test_query_string_becomes_part_of_the_model_name(server):
    # RE2 matches the raw path with its query: [^/:]+ takes "half_plus_two?verbose=1".
    status, _, body = send(server, "GET", f"/v1/models/{MODEL}?verbose=1")
    assert status == 404
    assert json.loads(body)["error"] == f"Could not find any versions of model {MODEL}?verbose=1"


def test_outside_v1_is_libevents_404_page(server):
    status, headers, body = send(server, "GET", "/v2/models")
    assert status == 404
    assert body == (
        b"<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n"
        b"</BODY></HTML>\n"
    )


def test_json_parse_rules(server):
    path = f"/v1/models/{MODEL}/versions/123:predict"
    cases = [
        ("instances = [1, 2]", 400, "JSON Parse error: Expecting value. at offset: 0"),
        ("", 400, "JSON Parse error: The document is empty"),
        ("   ", 400, "JSON Parse error: The document is empty."),
        ('{"instances": [1.0]} trailing garbage', 200, None),
        ('{"instances": [NaN, Infinity, -Infinity]}', 200, None),
        ('{"instances": [nan]}', 400, "JSON Parse error: Expecting value. at offset: 15"),
        ("[1.0]", 400, "JSON Value: [1.0] Is not object"),
        ('{"instances": [1]}', 200, None),  # an integer is fine for a float input
        ('{"instances": ["a"]}', 400, "not of expected type: float"),
    ]
    for body, status, message in cases:
        got, _, raw = send(server, "POST", path, body)
        assert got == status, body
        if message is not None:
            assert message in json.loads(raw)["error"], body
    _, _, raw = send(server, "POST", path, '{"instances": [NaN, Infinity, -Infinity]}')
    assert "".join(raw.decode().split()) == '{"predictions":[NaN,Infinity,-Infinity]}'


def test_gzip_request_body(server):
    body = gzip.compress(json.dumps({"instances": [1.0, 2.0]}).encode())
    status, _, raw = send(
        server,
        "POST",
        f"/v1/models/{MODEL}/versions/123:predict",
        body,
        {"Content-Encoding": "gzip"},
    )
    assert (status, json.loads(raw)) == (200, {"predictions": [2.5, 3.0]})


def test_oversized_bodies_get_413_with_a_json_error(server):
    big = json.dumps({"instances": [1.0] * 600_000}).encode()  # ~3.6 MB > 2 MiB limit
    status, headers, raw = send(server, "POST", f"/v1/models/{MODEL}:predict", big)
    assert status == 413
    assert "rest_api_max_request_bytes" in json.loads(raw)["error"]
    # A small gzip body that inflates past the limit is refused the same way.
    bomb = gzip.compress(b" " * (8 * 1024 * 1024))
    status, _, raw = send(
        server, "POST", f"/v1/models/{MODEL}:predict", bomb, {"Content-Encoding": "gzip"}
    )
    assert status == 413


def _rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").is_file(), reason="reads RSS from /proc")
def test_gzip_bomb_is_refused_without_being_inflated(server):
    """1.2 MB of gzip that inflates to 256 MiB: 413, and this process (the server runs in
    it) never holds more than a fraction of the inflated size."""
    deflate = zlib.compressobj(1, zlib.DEFLATED, 31)  # 31: gzip framing
    chunk = b" " * (1 << 20)
    bomb = b"".join([deflate.compress(chunk) for _ in range(256)] + [deflate.flush()])
    baseline, peak, done = _rss_bytes(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        status, _, raw = send(
            server, "POST", f"/v1/models/{MODEL}:predict", bomb, {"Content-Encoding": "gzip"}
        )
    finally:
        done.set()
        sampler.join()
    assert status == 413, raw
    growth = (peak[0] - baseline) / 2**20
    print(f"gzip bomb ({len(bomb) / 1e6:.1f} MB -> 256 MiB): RSS grew by {growth:.1f} MiB")
    assert growth < 64


def test_cors(server):
    status, headers, _ = send(server, "GET", f"/v1/models/{MODEL}")
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Access-Control-Allow-Methods"] == "POST, GET"
    assert headers["Access-Control-Allow-Headers"] == "Content-Type"
    status, headers, body = send(
        server, "OPTIONS", f"/v1/models/{MODEL}:predict", headers={"Origin": "https://app.test"}
    )
    assert (status, body) == (200, b"")
    assert headers["Access-Control-Allow-Origin"] == "*"
    status, _, body = send(server, "OPTIONS", f"/v1/models/{MODEL}:predict")
    assert (status, body) == (400, b"")


def test_keep_alive_connection_serves_many_requests(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
    try:
        for value in range(5):
            status, _, raw = send(
                server,
                "POST",
                f"/v1/models/{MODEL}/versions/123:predict",
                json.dumps({"instances": [float(value)]}),
                connection=connection,
            )
            assert (status, json.loads(raw)) == (200, {"predictions": [0.5 * value + 2]})
    finally:
        connection.close()


def test_rest_timeout_is_a_504_and_spares_other_requests(server):
    outcome = {}

    def run_slow():
        body = json.dumps({"inputs": 10**9})  # a scalar: the loop's bound
        outcome["slow"] = send(server, "POST", "/v1/models/slow:predict", body)

    thread = threading.Thread(target=run_slow)
    thread.start()
    fast = post_json(server, f"/v1/models/{MODEL}/versions/123:predict", {"instances": [4.0]})
    thread.join(60)
    status, _, raw = outcome["slow"]
    assert status == 504  # DEADLINE_EXCEEDED after --rest_api_timeout_in_ms
    assert json.loads(raw)["error"]
    assert fast == (200, {"predictions": [4.0]})


def test_many_clients_at_once_each_get_their_own_answer(server):
    results = {}

    def client(index: int):
        if index % 4 == 3:  # a failing request among the good ones
            results[index] = post_json(server, f"/v1/models/{MODEL}:predict", {"instances": ["x"]})
        else:
            body = {"instances": [[float(index)]] * (index % 3 + 1)}
            results[index] = post_json(server, f"/v1/models/{MODEL}/versions/123:predict", body)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for index in range(24):
        status, reply = results[index]
        if index % 4 == 3:
            assert status == 400 and "not of expected type: float" in reply["error"]
        else:
            assert status == 200
            assert reply == {"predictions": [[0.5 * index + 2]] * (index % 3 + 1)}
