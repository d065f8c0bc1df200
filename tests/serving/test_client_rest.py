"""ServingClient over REST against a fake TF Serving REST server (and TF Serving's own replies)."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from serving.client import (
    DeadlineExceededError,
    InputImageError,
    InternalError,
    InvalidArgumentError,
    MalformedResponseError,
    NotFoundError,
    RetryPolicy,
    ServingClient,
    UnavailableError,
    cli_predict,
)
from serving.client.rest import RestTransport
from tests.serving.client_support import (
    METADATA,
    FakeRestServer,
    classify_pixels,
    encode,
    error_body,
    solid,
)

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
FAST_RETRY = RetryPolicy(retries=3, initial_backoff=0.001, max_backoff=0.01)


def tfserving_cases() -> list[dict]:
    path = SHARED_DATA / "tfserving-cases.json"
    if not path.exists():
        pytest.skip(f"TF Serving reference cases not found at {path}")
    return json.loads(path.read_text())["cases"]


def exact_samples() -> dict[str, str]:
    """``=== name`` sections of TF Serving's exact response bytes."""
    path = SHARED_DATA / "tfserving-exact-output-samples.txt"
    if not path.exists():
        pytest.skip(f"TF Serving reference samples not found at {path}")
    sections: dict[str, list[str]] = {}
    name = None
    for line in path.read_text().splitlines():
        if line.startswith("=== "):
            name = line[4:].strip()
            sections[name] = []
        elif name is not None:
            sections[name].append(line)
    return {key: "\n".join(lines).strip() for key, lines in sections.items()}


@pytest.fixture
def server():
    with FakeRestServer() as fake:
        yield fake


@pytest.fixture
def client(server):
    with ServingClient(server.target, protocol="rest", retry_policy=FAST_RETRY, timeout=10) as c:
        yield c


COLOURS = {"red": (200, 10, 10), "green": (10, 200, 10), "blue": (10, 10, 200)}


def test_predict_every_input_kind(server, client, tmp_path):
    from PIL import Image

    red, green, blue = (solid(COLOURS[c]) for c in ("red", "green", "blue"))
    path = tmp_path / "green.jpg"
    path.write_bytes(encode(green, "JPEG"))
    inputs = [
        str(path),  # str path
        path,  # pathlib.Path
        encode(blue, "JPEG"),  # encoded bytes
        Image.fromarray(red),  # PIL image
        green,  # HWC uint8 array
        np.full((20, 20), 90, np.uint8),  # HW grey array
    ]
    got = client.predict(inputs)
    assert [p.label for p in got[:5]] == ["green", "green", "blue", "red", "green"]
    for p in got:
        assert p.top_k[0] == (p.label, pytest.approx(p.score))
        assert len(p.top_k) == 3
        assert p.probabilities is not None and p.probabilities.shape == (3,)
    # One request of 6 images, each sent as {"b64": ...} under "instances".
    body = json.loads(server.requests[-1]["body"])
    assert body["signature_name"] == "serving_default"
    assert len(body["instances"]) == 6 and set(body["instances"][0]) == {"b64"}
    # Files and bytes go out unchanged; arrays are sent losslessly (PNG).
    assert base64.b64decode(body["instances"][0]["b64"]) == path.read_bytes()
    from tests.serving.client_support import decode

    assert np.array_equal(decode(base64.b64decode(body["instances"][4]["b64"])), green)
    # Scores are what the fake model computes on the decoded pixels.
    assert got[4].score == pytest.approx(classify_pixels(green)["score"])


def test_single_image_and_nhwc_batch(client):
    assert len(client.predict(solid(COLOURS["red"]))) == 1
    batch = np.stack([solid(COLOURS["blue"]), solid(COLOURS["red"])])
    assert [p.label for p in client.predict(batch)] == ["blue", "red"]
    assert client.predict([]) == []


@pytest.mark.parametrize(
    "bad, text",
    [
        (np.zeros((8, 8, 3), np.float32), "must be uint8"),
        (np.zeros((8, 8, 2), np.uint8), "HWC"),
        (b"", "empty bytes"),
        (12345, "unsupported type int"),
        ("/nonexistent/cat.jpg", "cannot read '/nonexistent/cat.jpg'"),
    ],
)
def test_bad_inputs_fail_before_sending(server, client, bad, text):
    with pytest.raises(InputImageError, match=text):
        client.predict([solid(COLOURS["red"]), bad])
    assert server.requests == []


def test_split_into_batches_in_order_and_concurrently(server):
    colours = ["red", "green", "blue"]
    images = [solid(COLOURS[colours[i % 3]], (8 + i, 8)) for i in range(23)]
    in_flight = 0
    peak = 0
    lock = threading.Lock()
    all_started = threading.Event()

    def hold(record):
        # The first three requests wait until three are in flight at once.
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
            if in_flight >= 3:
                all_started.set()
        all_started.wait(timeout=20)
        with lock:
            in_flight -= 1

    server.hook = hold
    with ServingClient(server.target, protocol="rest", batch_size=5, max_concurrency=3) as client:
        got = client.predict(images)
    assert [p.label for p in got] == [colours[i % 3] for i in range(23)]
    sizes = sorted(len(json.loads(r["body"])["instances"]) for r in server.requests)
    assert sizes == [3, 5, 5, 5, 5]
    assert all_started.is_set() and peak == 3
    # The server saw every image exactly once, with its own size.
    assert sorted(w for w, _ in server.received_sizes) == list(range(8, 31))


def test_requests_split_by_bytes_stay_under_the_limit(server):
    photos = [encode(solid(COLOURS["red"], (64 + i, 64)), "PNG") for i in range(10)]
    limit = 4 * 4 * max(len(p) for p in photos) // 3 + 300  # about 3 images per request
    with ServingClient(server.target, protocol="rest", max_request_bytes=limit) as client:
        got = client.predict(photos)
    assert len(got) == 10
    assert len(server.requests) >= 3
    assert max(r["bytes"] for r in server.requests) <= limit


def test_retries_503_then_succeeds(server, client):
    server.script = [(503, error_body("The batch scheduling queue is full"))] * 2
    got = client.predict(solid(COLOURS["blue"]))
    assert got[0].label == "blue"
    assert len(server.requests) == 3


def test_gives_up_after_the_retries(server, client):
    server.script = [(503, error_body("overloaded"))] * 10
    with pytest.raises(UnavailableError) as info:
        client.predict(solid(COLOURS["blue"]))
    assert len(server.requests) == 4  # 1 + 3 retries
    assert info.value.http_status == 503 and info.value.message == "overloaded"


@pytest.mark.parametrize(
    "status, error_type, code",
    [
        (400, InvalidArgumentError, "INVALID_ARGUMENT"),
        (404, NotFoundError, "NOT_FOUND"),
        (500, InternalError, "INTERNAL"),
        (504, DeadlineExceededError, "DEADLINE_EXCEEDED"),
    ],
)
def test_other_errors_are_typed_and_not_retried(server, client, status, error_type, code):
    server.script = [(status, error_body('Bad key: "key"'))]
    with pytest.raises(error_type) as info:
        client.predict(solid(COLOURS["blue"]))
    assert len(server.requests) == 1
    assert info.value.code == code and info.value.http_status == status
    assert info.value.message == 'Bad key: "key"'


def test_bad_image_error_names_the_failed_image(server):
    images = [encode(solid(COLOURS["red"])) for _ in range(10)]
    images[6] = b"this is not an image"
    with ServingClient(server.target, protocol="rest", batch_size=4, max_concurrency=1) as client:
        outcomes = client.predict(images, return_errors=True)
        # Requests of 4, 4 and 2 images; the one with the bad image is sent again without it.
        sizes = sorted(len(json.loads(r["body"])["instances"]) for r in server.requests)
        assert sizes == [2, 3, 4, 4]
        with pytest.raises(InvalidArgumentError) as info:
            client.predict(images)
    assert [type(o).__name__ for o in outcomes] == ["Prediction"] * 6 + ["InvalidArgumentError"] + [
        "Prediction"
    ] * 3
    assert all(o.label == "red" for i, o in enumerate(outcomes) if i != 6)
    assert outcomes[6].indices == [6] and outcomes[6].http_status == 400
    # TF Serving names the element in its request ("Failed to process element: 2"):
    # the client maps it to the caller's position and keeps the reason.
    assert info.value.message.startswith("Failed to decode image")
    assert info.value.indices == [6]
    assert "input image 6" in str(info.value)


def test_replays_tf_serving_exact_replies(server, client):
    """Replies byte for byte as TF Serving writes them (tfserving-exact-output-samples.txt)."""
    samples = exact_samples()
    server.script = [(404, samples["error"])]
    with pytest.raises(NotFoundError, match=r"Servable not found for request: Latest\(half\)"):
        client.predict(solid(COLOURS["red"]))
    server.script = [(400, samples["error with quotes"])]
    with pytest.raises(InvalidArgumentError) as info:
        client.predict(solid(COLOURS["red"]))
    assert info.value.message == 'Serving signature name: "foo" not found in signature def'
    server.script = [(200, samples["classify 2"])]
    assert client.classify([solid(COLOURS["red"])] * 2) == [
        [("car", pytest.approx(0.2)), ("bike", pytest.approx(0.7))],
        [("car", pytest.approx(0.7)), ("bike", pytest.approx(0.1))],
    ]
    # A single-output signature: TF Serving drops the output name.
    server.script = [(200, samples["row single output [2,2]"])]
    assert client.embed([solid(COLOURS["red"])] * 2).tolist() == [[2.5, 3.0], [3.5, 4.0]]


def test_status_and_metadata_from_tf_serving_documented_json(server, client):
    case = next(
        c for c in tfserving_cases() if c["description"].startswith("Doc example: model status")
    )
    server.script = [(200, case["expected_response_or_error"]["body_text"])]
    (status,) = client.status()
    assert (status.version, status.state, status.error_code) == (123, "AVAILABLE", "OK")
    metadata_file = SHARED_DATA / "half_plus_two_2_versions_metadata.json"
    server.script = [(200, metadata_file.read_text())]
    signatures = client.signatures()
    assert signatures["serving_default"]["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert client.metadata() == METADATA  # the fake's own reply, unscripted


def test_routes_encode_names_like_tf_serving_decodes_them():
    """Percent-encoding matches TF Serving's ParseModelInfo test paths."""
    cases = {c["description"]: c["request"].get("path") for c in tfserving_cases()}
    name = "modelname!#$%&'()*+,/:;=?@[]"
    encoded = RestTransport("h:1", name, None, None, 1)
    expected = cases["ParseModelInfo POST encoded model name + :predict"]
    assert encoded.model_url + ":predict" == "http://h:1" + expected
    label = RestTransport("h:1", "modelname", None, "latest!#$%&'()*+,/:;=?@[]", 1)
    path = "ParseModelInfo GET label with encoded reserved chars"
    assert label.model_url == "http://h:1" + cases[path]
    version = RestTransport("h:1", "modelname", 99, None, 1)
    assert version.model_url + ":predict" == "http://h:1" + cases["ParseModelInfo POST version"]


def test_embed_and_classify(server, client):
    images = [solid(COLOURS["red"], (10, 4)), solid(COLOURS["blue"], (6, 5))]
    vectors = client.embed(images)
    assert vectors.dtype == np.float32 and vectors.shape == (2, 4)
    assert vectors[:, 3].tolist() == [40.0, 30.0]
    body = json.loads(server.requests[-1]["body"])
    assert body["signature_name"] == "embedding"
    top = client.classify(images)
    assert [row[0][0] for row in top] == ["red", "blue"]
    body = json.loads(server.requests[-1]["body"])
    assert body["signature_name"] == "classify"
    assert set(body["examples"][0]) == {"image/encoded"}


def test_version_and_label_routes(server):
    for kwargs, path in [
        ({"version": 3}, "/versions/3"),
        ({"version_label": "canary"}, "/labels/canary"),
    ]:
        with ServingClient(server.target, protocol="rest", **kwargs) as c:
            c.predict(solid(COLOURS["red"]))
        assert server.requests[-1]["path"] == f"/v1/models/vit{path}:predict"


def test_client_deadline(server):
    release = threading.Event()
    server.hook = lambda record: release.wait(timeout=5)
    with ServingClient(server.target, protocol="rest", timeout=0.2) as c:
        with pytest.raises(DeadlineExceededError, match="within 0.2 s"):
            c.predict(solid(COLOURS["red"]))
    release.set()
    assert len(server.requests) == 1  # deadlines are not retried


def test_connection_refused_is_unavailable():
    with FakeRestServer() as fake:
        target = fake.target
    with ServingClient(target, protocol="rest", retry_policy=FAST_RETRY) as c:
        with pytest.raises(UnavailableError, match="cannot connect"):
            c.predict(solid(COLOURS["red"]))


def test_non_json_replies(server, client):
    html = "<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>"
    server.script = [(404, html)]
    with pytest.raises(NotFoundError, match="404 Not Found"):
        client.predict(solid(COLOURS["red"]))
    server.script = [(200, '{"outputs": [1, 2]}')]
    with pytest.raises(MalformedResponseError, match="predictions"):
        client.predict(solid(COLOURS["red"]))


def test_wait_until_available(server, client):
    server.script = [(404, error_body("Could not find any versions of model vit"))] * 2
    states = client.wait_until_available(timeout=10, poll_interval=0.01)
    assert states[0].state == "AVAILABLE"
    assert len(server.requests) == 3


def test_wait_until_available_times_out(server, client):
    server.script = [(503, error_body("starting"))] * 1000
    with pytest.raises(DeadlineExceededError, match="starting"):
        client.wait_until_available(timeout=0.3, poll_interval=0.05)


def test_cli_predict(server, tmp_path, capsys):
    red = tmp_path / "red.png"
    red.write_bytes(encode(solid(COLOURS["red"])))
    code = cli_predict(server.target, [str(red)], protocol="rest", output_json=True)
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    record = json.loads(out[0])
    assert record["image"] == str(red) and record["label"] == "red"
    assert record["top_k"][0][0] == "red" and len(record["top_k"]) == 3
    assert cli_predict(server.target, [str(red)], protocol="rest", top_k=1) == 0
    assert capsys.readouterr().out.rstrip("\n").split("\t")[1:] == [
        "red",
        f"{record['score']:.4f}",
        f"red:{record['score']:.4f}",
    ]
    assert cli_predict(server.target, [str(tmp_path / "missing.jpg")], protocol="rest") == 1
    server.script = [(400, error_body("bad"))]
    assert cli_predict(server.target, [str(red)], protocol="rest") == 1
    assert f"error: {red}: bad\n" in capsys.readouterr().err
