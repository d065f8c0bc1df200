"""Vertex AI's custom-container contract on our server (serving/server/vertex_routes.py):
AIP_HTTP_PORT, AIP_HEALTH_ROUTE, AIP_PREDICT_ROUTE and AIP_STORAGE_URI, answered by the
in-process server that serves the tiny export."""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json

import pytest
from PIL import Image

from serving.server.options import (
    apply_environment,
    build_parser,
    check_options,
    environment_problem,
    options_from_args,
)
from serving.server.vertex_routes import VertexRoutes
from tests.support.ports import free_port


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.linear_gradient("L").convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


def call(port: int, method: str, path: str, body: object = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        connection.request(method, path, body=data)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


@contextlib.contextmanager
def vertex_routes(server, health: str = "/health", predict: str = "/predict"):
    """The session's server with Vertex's routes on its REST port, for one test."""
    rest = server._rest_server
    rest.vertex = VertexRoutes(rest.rest_api, health, predict)
    try:
        yield server.rest_port
    finally:
        rest.vertex = None


def test_predict_route_takes_vertex_instances(vit_server) -> None:
    b64 = base64.b64encode(_jpeg()).decode()
    with vertex_routes(vit_server) as port:
        assert call(port, "GET", "/health") == (200, {})
        status, answer = call(
            port, "POST", "/predict", {"instances": [{"b64": b64}], "parameters": {}}
        )
        assert status == 200, answer
        (prediction,) = answer["predictions"]
        # The same answer as TF Serving's REST predict, and the named-input row format.
        status, direct = call(port, "POST", "/v1/models/vit:predict", {"instances": [{"b64": b64}]})
        assert status == 200 and direct["predictions"] == [prediction]
        named = {"instances": [{"image_bytes": {"b64": b64}}, {"image_bytes": {"b64": b64}}]}
        status, two = call(port, "POST", "/predict?trace=1", named)
        assert status == 200 and len(two["predictions"]) == 2
        for other in two["predictions"]:  # a batch of two: equal up to float rounding
            assert other["top_k_labels"] == prediction["top_k_labels"]
            assert other["score"] == pytest.approx(prediction["score"], abs=1e-5)
        assert prediction["label"] and 0.0 <= prediction["score"] <= 1.0


def test_predict_route_errors_are_json(vit_server) -> None:
    with vertex_routes(vit_server) as port:
        for body in (b"{not json", {"instances": [{"b64": "%%%"}]}, {"instances": []}):
            status, answer = call(port, "POST", "/predict", body)
            assert status == 400 and set(answer) == {"error"}, (body, answer)
        status, answer = call(port, "GET", "/predict")
        assert status == 405 and "POST" in answer["error"]
        # Everything else is as before: TF Serving's API, and 404 elsewhere.
        assert call(port, "GET", "/v1/models/vit")[0] == 200
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/health/more")
        assert connection.getresponse().status == 404
        connection.close()
    assert call(port, "GET", "/v1/models/vit")[0] == 200
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/health")  # routes off: not answered
    assert connection.getresponse().status == 404
    connection.close()


def test_health_is_503_while_the_model_cannot_serve(vit_server, monkeypatch) -> None:
    routes = VertexRoutes(vit_server._rest_server.rest_api, "/health", "/predict")
    assert routes.route("GET", "/health", b"")[0] == 200
    monkeypatch.setattr(routes, "model_name", lambda: "not-loaded")
    status, _, body = routes.route("GET", "/health", b"")
    assert status == 503 and "not-loaded cannot serve yet" in json.loads(body)["error"]


def test_routes_come_from_the_environment() -> None:
    assert VertexRoutes.from_environment(None, {}) is None
    routes = VertexRoutes.from_environment(
        None, {"AIP_HTTP_PORT": "8080", "AIP_HEALTH_ROUTE": "/h", "AIP_PREDICT_ROUTE": "/p"}
    )
    assert (routes.health_route, routes.predict_route) == ("/h", "/p")
    # Vertex's defaults for a model uploaded without routes.
    env = {"AIP_HTTP_PORT": "8080", "AIP_ENDPOINT_ID": "12", "AIP_DEPLOYED_MODEL_ID": "34"}
    routes = VertexRoutes.from_environment(None, env)
    assert routes.health_route == "/v1/endpoints/12/deployedModels/34"
    assert routes.predict_route == "/v1/endpoints/12/deployedModels/34:predict"


def test_port_and_model_location_come_from_the_environment(monkeypatch) -> None:
    args = build_parser().parse_args(["--rest_api_port=8501", "--model_config_file=/m.config"])
    assert apply_environment(options_from_args(args), {}).rest_api_port == 8501
    env = {"AIP_HTTP_PORT": "8080", "AIP_STORAGE_URI": "gs://bucket/vit"}
    options = apply_environment(options_from_args(args), env)
    assert options.rest_api_port == 8080
    assert (options.model_base_path, options.model_config_file) == ("gs://bucket/vit", "")
    for bad in ("http", "0", "70000", "-1"):
        assert "AIP_HTTP_PORT must be a port number" in environment_problem({"AIP_HTTP_PORT": bad})
    assert "must be a path" in environment_problem(
        {"AIP_HTTP_PORT": "8080", "AIP_PREDICT_ROUTE": "predict"}
    )
    monkeypatch.setenv("AIP_HTTP_PORT", "eighty")
    assert "AIP_HTTP_PORT" in check_options(options_from_args(args))


def test_server_started_the_way_vertex_starts_it(tiny_export, monkeypatch) -> None:
    """`keras-vit serve` under Vertex's variables: REST on AIP_HTTP_PORT, the model from
    AIP_STORAGE_URI, the routes answered."""
    from serving.server.server import Server

    port = free_port()
    monkeypatch.setenv("AIP_HTTP_PORT", str(port))
    monkeypatch.setenv("AIP_HEALTH_ROUTE", "/ping")
    monkeypatch.setenv("AIP_PREDICT_ROUTE", "/v1/endpoints/1/deployedModels/2:predict")
    monkeypatch.setenv("AIP_STORAGE_URI", str(tiny_export.parent))
    args = ["--port", str(free_port()), "--model_name=vit", "--model_base_path=/nowhere",
            "--max_num_load_retries=0", "--enable_model_warmup=false"]  # fmt: skip
    server = Server()
    server.build_and_start(options_from_args(build_parser().parse_args(args)))
    try:
        assert server.rest_port == port
        assert call(port, "GET", "/ping") == (200, {})
        b64 = base64.b64encode(_jpeg()).decode()
        route = "/v1/endpoints/1/deployedModels/2:predict"
        status, answer = call(port, "POST", route, {"instances": [{"b64": b64}]})
        assert status == 200 and len(answer["predictions"]) == 1
    finally:
        server.shutdown()


@pytest.mark.parametrize("route", ["/health", "/predict"])
def test_routes_are_off_without_aip_http_port(route) -> None:
    assert VertexRoutes.from_environment(object(), {"AIP_HEALTH_ROUTE": route}) is None
