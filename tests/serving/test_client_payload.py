"""Payload limits: size estimates, splitting, and downscaling of images that cannot fit."""

from __future__ import annotations

import io
import json
import random

import pytest
from PIL import Image

from serving.client import (
    VERTEX_MAX_REQUEST_BYTES,
    InputImageError,
    PayloadTooLargeError,
    ServingClient,
)
from serving.client.batching import BatchEngine
from serving.client.images import shrink_to_fit
from serving.client.rest import RestTransport, b64
from tests.serving.client_support import (
    FakeRestServer,
    big_photo_jpeg,
    classify_pixels,
    decode,
    encode,
    solid,
)


@pytest.fixture(scope="module")
def photo() -> bytes:
    data = big_photo_jpeg()  # 4000x3000
    assert len(data) > VERTEX_MAX_REQUEST_BYTES
    return data


def test_rest_size_estimate_is_an_upper_bound_of_the_real_body():
    transport = RestTransport("h:1", "vit", None, None, 1)
    rng = random.Random(0)
    for signature in ("serving_default", "embedding"):
        size = transport.predict_size(signature)
        for _ in range(20):
            images = [rng.randbytes(rng.randrange(0, 3000)) for _ in range(rng.randrange(1, 6))]
            body = json.dumps(
                {"signature_name": signature, "instances": [{"b64": b64(x)} for x in images]}
            ).encode()
            estimate = size.request_bytes([len(x) for x in images])
            assert len(body) <= estimate <= len(body) + 4  # tight: only the last ", " is spare


def test_largest_image_that_fits_really_fits():
    transport = RestTransport("h:1", "vit", None, None, 1)
    size = transport.predict_size("serving_default")
    for limit in (10_000, 1_572_864):
        n = size.max_image_bytes(limit)
        assert size.request_bytes([n]) <= limit < size.request_bytes([n + 3])


def test_planner_respects_batch_size_and_bytes():
    transport = RestTransport("h:1", "vit", None, None, 1)
    size = transport.predict_size("serving_default")
    engine = BatchEngine(
        batch_size=4,
        max_concurrency=1,
        max_request_bytes=10_000,
        downscale=True,
        image_size=224,
        image_format="png",
    )
    rng = random.Random(1)
    payloads = [bytes(rng.randrange(100, 3000)) for _ in range(40)]
    chunks = engine.plan(payloads, size)
    assert [i for chunk in chunks for i in chunk] == list(range(40))
    for chunk in chunks:
        assert 1 <= len(chunk) <= 4
        assert size.request_bytes([len(payloads[i]) for i in chunk]) <= 10_000


def test_vertex_limit_photo_is_downscaled_never_below_model_resolution(photo):
    with FakeRestServer() as server:
        with ServingClient(
            server.target, protocol="rest", max_request_bytes=VERTEX_MAX_REQUEST_BYTES
        ) as client:
            (got,) = client.predict(photo)
        (request,) = server.requests
        (width, height) = server.received_sizes[0]
    assert request["bytes"] <= VERTEX_MAX_REQUEST_BYTES
    assert 224 <= min(width, height) and width < 4000
    assert abs(width / height - 4 / 3) < 0.005  # aspect ratio kept
    assert got.label == classify_pixels(decode(photo))["label"]


def test_downscale_off_raises_a_clear_error_and_sends_nothing(photo):
    with FakeRestServer() as server:
        with ServingClient(
            server.target,
            protocol="rest",
            downscale=False,
            max_request_bytes=VERTEX_MAX_REQUEST_BYTES,
        ) as client:
            with pytest.raises(PayloadTooLargeError) as info:
                client.predict([encode(solid((1, 2, 3))), photo])
        assert server.requests == []
    message = str(info.value)
    assert "image 1" in message and "downscale=False" in message
    assert isinstance(info.value, ValueError)


def test_shrink_keeps_the_short_side_at_least_image_size(photo):
    # A budget far below what 12 MP needs: the result lands at (or just above) 224.
    small = shrink_to_fit(photo, 60_000, 224, 0)
    image = Image.open(io.BytesIO(small))
    assert image.format == "JPEG" and len(small) <= 60_000
    assert min(image.size) >= 224
    assert abs(image.size[0] / image.size[1] - 4 / 3) < 0.01
    # Portrait images keep their orientation.
    portrait = io.BytesIO()
    Image.open(io.BytesIO(photo)).transpose(Image.Transpose.ROTATE_90).save(portrait, "JPEG")
    tall = Image.open(io.BytesIO(shrink_to_fit(portrait.getvalue(), 200_000, 224, 0)))
    assert tall.size[0] < tall.size[1] and tall.size[0] >= 224


def test_image_that_cannot_fit_even_at_model_resolution(photo):
    with pytest.raises(PayloadTooLargeError, match="image_size=224"):
        shrink_to_fit(photo, 2_000, 224, 3)
    with FakeRestServer() as server:
        with ServingClient(server.target, protocol="rest", max_request_bytes=3_000) as client:
            with pytest.raises(PayloadTooLargeError, match="image 0 does not fit"):
                client.predict(photo)
        assert server.requests == []


def test_oversized_bytes_that_are_no_image():
    with pytest.raises(InputImageError, match="cannot be decoded"):
        shrink_to_fit(b"x" * 50_000, 10_000, 224, 5)


def test_small_images_are_never_touched():
    png = encode(solid((10, 200, 30), (300, 200)))
    with FakeRestServer() as server:
        with ServingClient(
            server.target, protocol="rest", max_request_bytes=VERTEX_MAX_REQUEST_BYTES
        ) as client:
            client.predict([png] * 3)
        sent = json.loads(server.requests[0]["body"])["instances"]
    assert [x["b64"] for x in sent] == [b64(png)] * 3
