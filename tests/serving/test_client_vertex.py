"""VertexClient against a local fake endpoint, with anonymous google-auth credentials."""

from __future__ import annotations

import json

import pytest
from google.auth.credentials import AnonymousCredentials

from serving.client import (
    VERTEX_MAX_REQUEST_BYTES,
    InvalidArgumentError,
    PermissionDeniedError,
    RetryPolicy,
    VertexClient,
)
from serving.client.vertex import vertex_predict_url
from tests.serving.client_support import FakeRestServer, big_photo_jpeg, encode, solid

FAST_RETRY = RetryPolicy(retries=2, initial_backoff=0.001, max_backoff=0.01)
URL = "https://europe-west4-aiplatform.googleapis.com/v1/projects/p1/locations/europe-west4/endpoints/123:predict"  # noqa: E501


def test_endpoint_forms():
    assert vertex_predict_url(URL) == URL
    assert vertex_predict_url(URL.removesuffix(":predict")) == URL
    assert vertex_predict_url("123", "p1", "europe-west4") == URL
    assert vertex_predict_url("projects/p1/locations/europe-west4/endpoints/123") == URL
    local = vertex_predict_url("123", "p1", "europe-west4", base_url="http://127.0.0.1:9/")
    assert local == "http://127.0.0.1:9/v1/projects/p1/locations/europe-west4/endpoints/123:predict"
    with pytest.raises(ValueError, match="project and region"):
        vertex_predict_url("123", project="p1")
    with pytest.raises(ValueError, match=":predict"):
        vertex_predict_url(URL.replace(":predict", ":explain"))
    with pytest.raises(ValueError, match="looks like"):
        vertex_predict_url("https://example.com/v1/models/vit:predict")


@pytest.fixture
def server():
    with FakeRestServer() as fake:
        yield fake


@pytest.fixture
def client(server):
    with VertexClient(
        "123",
        "p1",
        "europe-west4",
        credentials=AnonymousCredentials(),
        base_url=server.url,
        retry_policy=FAST_RETRY,
    ) as c:
        yield c


def test_predict_through_an_authorized_session(server, client):
    images = [solid((200, 0, 0)), encode(solid((0, 0, 200)), "JPEG")]
    got = client.predict(images)
    assert [p.label for p in got] == ["red", "blue"]
    (request,) = server.requests
    assert request["path"] == "/v1/projects/p1/locations/europe-west4/endpoints/123:predict"
    assert "Authorization" not in request["headers"]  # anonymous credentials add no token
    body = json.loads(request["body"])
    assert list(body) == ["instances"] and set(body["instances"][0]) == {"b64"}
    assert client.last_deployed_model_id == "4242"


def test_google_error_objects_are_typed(server, client):
    google_error = {
        "error": {
            "code": 403,
            "message": "Permission 'aiplatform.endpoints.predict' denied",
            "status": "PERMISSION_DENIED",
        }
    }
    server.script = [(403, json.dumps(google_error))]
    with pytest.raises(PermissionDeniedError, match="aiplatform.endpoints.predict"):
        client.predict(solid((200, 0, 0)))
    # TF Serving's own error text, passed through by the prebuilt container.
    server.script = [(400, json.dumps({"error": "Failed to process element: 0"}))]
    with pytest.raises(InvalidArgumentError, match="Failed to process element: 0"):
        client.predict(solid((200, 0, 0)))
    assert len(server.requests) == 2


def test_503_is_retried(server, client):
    unavailable = {"error": {"code": 503, "message": "scaling up", "status": "UNAVAILABLE"}}
    server.script = [(503, json.dumps(unavailable))]
    assert client.predict(solid((0, 200, 0)))[0].label == "green"
    assert len(server.requests) == 2


def test_requests_stay_under_1_5_mb(server, client):
    photo = big_photo_jpeg()
    assert len(photo) > VERTEX_MAX_REQUEST_BYTES
    got = client.predict([photo, solid((0, 200, 0))])
    assert len(got) == 2 and got[1].label == "green"
    assert all(r["bytes"] <= VERTEX_MAX_REQUEST_BYTES for r in server.requests)
    assert min(server.received_sizes[0]) >= 224


def test_vertex_is_a_transport_of_serving_client(server, client):
    from serving.client import ServingClient, UnimplementedError

    assert isinstance(client, ServingClient) and client.protocol == "vertex"
    images = [solid((200, 0, 0)), b"not an image", solid((0, 200, 0))]
    outcomes = client.predict(images, return_errors=True)
    assert [getattr(o, "label", None) for o in outcomes] == ["red", None, "green"]
    assert isinstance(outcomes[1], InvalidArgumentError) and outcomes[1].indices == [1]
    server.requests.clear()
    for call in (client.classify, client.embed):
        with pytest.raises(UnimplementedError, match="Vertex AI endpoint"):
            call(solid((200, 0, 0)))
    with pytest.raises(UnimplementedError, match=":predict only"):
        client.status()
    assert server.requests == []  # refused before anything was sent
