"""Retry policy, typed errors and the client's documented examples."""

from __future__ import annotations

import doctest
import random

import pytest

import serving.client.retry
from serving.client import (
    DeadlineExceededError,
    InvalidArgumentError,
    RetryPolicy,
    ServingError,
    UnavailableError,
)
from serving.client.errors import code_for_http_status, error_for_code, error_for_http_status

# TF Serving's status -> HTTP table (http_server.cc ToHTTPStatusCode).
TF_SERVING_HTTP = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    random.seed(0)
    policy = RetryPolicy(retries=8, initial_backoff=0.1, max_backoff=1.0, multiplier=2.0)
    for retry in range(1, 9):
        ceiling = min(1.0, 0.1 * 2 ** (retry - 1))
        delays = [policy.delay(retry) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered


def test_only_unavailable_is_retried():
    slept: list[float] = []
    policy = RetryPolicy(retries=3, initial_backoff=0.5, sleep=slept.append)
    attempts = []

    def fails_with(error):
        def call():
            attempts.append(error)
            raise error

        return call

    with pytest.raises(UnavailableError):
        policy.call(fails_with(UnavailableError("down")))
    assert len(attempts) == 4 and len(slept) == 3
    for error in (InvalidArgumentError("bad"), DeadlineExceededError("slow"), ServingError("?")):
        attempts.clear()
        with pytest.raises(type(error)):
            policy.call(fails_with(error))
        assert len(attempts) == 1


def test_http_status_mapping_agrees_with_tf_serving():
    for code, http in TF_SERVING_HTTP.items():
        mapped = code_for_http_status(http)
        assert TF_SERVING_HTTP[mapped] == http  # a code TF Serving sends with this status
        error = error_for_http_status(http, "text")
        assert error.http_status == http and error.message == "text"
        assert type(error_for_code(code, "x")).__name__ != "ServingError"


def test_error_text_names_code_status_and_inputs():
    error = error_for_http_status(400, "Failed to process element: 1")
    error.indices = [0, 1, 2, 3, 8, 10, 11]
    assert str(error) == (
        "INVALID_ARGUMENT, HTTP 400: Failed to process element: 1 "
        "(request with input images 0-3, 8, 10-11)"
    )
    assert isinstance(error, InvalidArgumentError)


def test_docstring_examples_run():
    result = doctest.testmod(serving.client.retry)
    assert result.attempted > 0 and result.failed == 0
