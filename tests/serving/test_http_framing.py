"""Request smuggling: every ambiguous HTTP/1.1 framing gets one error answer and a close.

Raw sockets against the real REST port (tornado, ``serving/server/http_server.py``).
Each request below is framed in a way that a proxy in front could read differently
(RFC 9112 section 6; the classic CL.TE, TE.CL and TE.TE variants, malformed lengths
and chunk sizes, header lines that parsers disagree on). Each one carries a second,
smuggled request after it. The server must answer exactly once, with the error
status given, and close the connection (the socket reads EOF) within a time bound,
so that the smuggled request is never answered.
"""

from __future__ import annotations

import json
import re
import socket
import time

import pytest

from tests.serving.half_plus_two import build_half_plus

LIMIT = 1024 * 1024
ANSWER_WITHIN = 3.0
PREDICT = "POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\n"
SMUGGLED = b"GET /v1/models/half HTTP/1.1\r\nHost: x\r\n\r\n"
BODY = b'{"instances": [1.0]}'


@pytest.fixture(scope="module")
def server(tmp_path_factory, start_server):
    root = tmp_path_factory.mktemp("framing")
    build_half_plus(root / "half" / "1")
    return start_server(
        model_name="half",
        model_base_path=str(root / "half"),
        rest_api_max_request_bytes=LIMIT,
        rest_api_timeout_in_ms=5000,
    )


def _exchange(port: int, data: bytes, seconds: float = ANSWER_WITHIN) -> tuple[bytes, float]:
    """Sends ``data``; returns all the server sent until it closed, and how long it took.

    Fails if the connection is still open after ``seconds``."""
    start = time.monotonic()
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
        sock.sendall(data)
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                pytest.fail(f"still open after {seconds} s; received {received[:200]!r}")
            except ConnectionResetError:
                break  # a reset is a close too; the answer must have come before it
            if not chunk:
                break
            received += chunk
    return received, time.monotonic() - start


def _statuses(received: bytes) -> list[int]:
    """The status of every answer in ``received`` (the bodies here never hold one)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", received)]


def _head(*lines: str) -> bytes:
    return (PREDICT + "".join(f"{line}\r\n" for line in lines) + "\r\n").encode("latin-1")


CHUNKED_BODY = b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)

# (name, bytes sent before the smuggled request, the one status expected)
CASES = [
    # CL.TE and TE.CL: both framings at once, in either order.
    ("cl-te", _head(f"Content-Length: {len(CHUNKED_BODY)}", "Transfer-Encoding: chunked")
     + CHUNKED_BODY, 400),
    ("te-cl", _head("Transfer-Encoding: chunked", "Content-Length: 4") + CHUNKED_BODY, 400),
    ("cl-zero-te", _head("Content-Length: 0", "Transfer-Encoding: chunked") + CHUNKED_BODY, 400),
    # TE.TE: obfuscated Transfer-Encoding, with a Content-Length for the other reader.
    ("te-xchunked", _head("Transfer-Encoding: xchunked") + CHUNKED_BODY, 400),
    ("te-xchunked-cl", _head("Transfer-Encoding: xchunked", "Content-Length: 4") + BODY, 400),
    ("te-chunked-identity", _head("Transfer-Encoding: chunked, identity") + CHUNKED_BODY, 400),
    ("te-identity-chunked-cl",
     _head("Transfer-Encoding: identity, chunked", "Content-Length: 4") + CHUNKED_BODY, 400),
    ("te-space-chunked-cl", _head("Transfer-Encoding:  chunked", "Content-Length: 4")
     + CHUNKED_BODY, 400),
    ("te-casing-cl", _head("Transfer-Encoding: Chunked", "Content-Length: 4") + CHUNKED_BODY,
     400),
    ("te-tab-cl", _head("Transfer-Encoding:\tchunked", "Content-Length: 4") + CHUNKED_BODY, 400),
    ("te-duplicate", _head("Transfer-Encoding: chunked", "Transfer-Encoding: chunked")
     + CHUNKED_BODY, 400),
    ("te-gzip", _head("Transfer-Encoding: gzip") + BODY, 400),
    ("te-gzip-chunked", _head("Transfer-Encoding: gzip, chunked") + CHUNKED_BODY, 400),
    ("te-space-before-colon", _head("Transfer-Encoding : chunked", "Content-Length: 4")
     + CHUNKED_BODY, 400),
    ("te-obs-fold", _head("X-Pad: a", " Transfer-Encoding: chunked", f"Content-Length: {len(BODY)}")
     + BODY, 400),
    ("te-in-http-1.0",
     b"POST /v1/models/half:predict HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
     + CHUNKED_BODY, 400),
    # Content-Length: duplicated, conflicting, not plain digits.
    ("cl-conflicting", _head("Content-Length: 4", f"Content-Length: {len(BODY)}") + BODY, 400),
    ("cl-list", _head(f"Content-Length: 4, {len(BODY)}") + BODY, 400),
    ("cl-plus", _head("Content-Length: +2") + BODY, 400),
    ("cl-hex", _head("Content-Length: 0x2") + BODY, 400),
    ("cl-underscore", _head("Content-Length: 0_2") + BODY, 400),
    ("cl-negative", _head("Content-Length: -1") + BODY, 400),
    ("cl-empty", _head("Content-Length: ") + BODY, 400),
    ("cl-space-inside", _head("Content-Length: 2 0") + BODY, 400),
    ("cl-space-before-colon", _head(f"Content-Length : {len(BODY)}") + BODY, 400),
    # Chunk sizes: hex digits only, and a size past the body limit refused at once.
    ("chunk-plus", _head("Transfer-Encoding: chunked") + b"+2\r\nab\r\n0\r\n\r\n", 400),
    ("chunk-0x", _head("Transfer-Encoding: chunked") + b"0x2\r\nab\r\n0\r\n\r\n", 400),
    ("chunk-underscore", _head("Transfer-Encoding: chunked") + b"0_2\r\nab\r\n0\r\n\r\n", 400),
    ("chunk-negative", _head("Transfer-Encoding: chunked") + b"-2\r\nab\r\n0\r\n\r\n", 400),
    ("chunk-bare-lf", _head("Transfer-Encoding: chunked") + b"2\nab\r\n0\r\n\r\n", 400),
    ("chunk-size-line-too-long", _head("Transfer-Encoding: chunked") + b"0" * 100 + b"2\r\nab",
     400),
    ("chunk-huge", _head("Transfer-Encoding: chunked") + b"ffffffffffffffff\r\nab", 400),
    ("chunk-unterminated", _head("Transfer-Encoding: chunked") + b"2\r\nabcd\r\n0\r\n\r\n", 400),
    # Header lines parsers disagree on.
    ("bare-lf-everywhere", b"POST /v1/models/half:predict HTTP/1.1\nHost: x\n"
     + f"Content-Length: {len(BODY)}\n\n".encode() + BODY, 400),
    ("bare-lf-one-line", _head("X-Pad: a\nContent-Length: 4") + BODY, 400),
    ("bare-cr", _head(f"X-Pad: a\rContent-Length: {len(BODY)}") + BODY, 400),
    ("nul-in-value", _head("X-Pad: a\x00b", f"Content-Length: {len(BODY)}") + BODY, 400),
    ("nul-in-name", _head("X-P\x00ad: a", f"Content-Length: {len(BODY)}") + BODY, 400),
    ("bare-cr-after-request-line",
     b"POST /v1/models/half:predict HTTP/1.1\r\r\nHost: x\r\n\r\n", 400),
]  # fmt: skip


@pytest.mark.parametrize("data,status", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_ambiguous_framing_gets_one_error_answer_and_a_closed_connection(server, data, status):
    received, seconds = _exchange(server.rest_port, data + SMUGGLED)
    assert _statuses(received) == [status], received[:300]
    assert seconds < ANSWER_WITHIN


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(server):
    # Only the headers are sent: the answer must not wait for the body.
    head = _head(f"Content-Length: {10**12}")
    received, seconds = _exchange(server.rest_port, head)
    assert _statuses(received) == [413]
    reply = json.loads(received.split(b"\r\n\r\n", 1)[1])
    assert "--rest_api_max_request_bytes" in reply["error"]
    assert seconds < 1.0


def test_a_body_sent_in_full_after_a_413_still_gets_its_answer(server):
    # The client sends the whole over-limit body before reading (as http.client does):
    # it is read and dropped, so the client gets the 413 instead of a reset.
    body = b" " * (3 * LIMIT)
    received, _ = _exchange(server.rest_port, _head(f"Content-Length: {len(body)}") + body)
    assert _statuses(received) == [413]


def test_identical_duplicate_lengths_and_plain_chunked_bodies_are_served(server):
    # RFC 9110 8.6 lets a recipient take identical Content-Length values as one.
    length = len(BODY)
    for data in (
        _head(f"Content-Length: {length}", f"Content-Length: {length}") + BODY,
        _head("Transfer-Encoding: chunked") + b"3\r\n" + BODY[:3] + b"\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (length - 3, BODY[3:]),
    ):  # fmt: skip
        received, _ = _exchange(server.rest_port, data + b"GET /v1/models/half HTTP/1.1\r\n"
                                b"Host: x\r\nConnection: close\r\n\r\n")  # fmt: skip
        assert _statuses(received) == [200, 200], received[:300]
        first = received.split(b"\r\n\r\n", 1)[1]
        assert json.loads(first[: first.index(b"}") + 1]) == {"predictions": [2.5]}


def test_the_bare_lf_workaround_is_needed_exactly_while_tornado_reads_bare_lf():
    # serving/server/http_connections.py refuses a bare LF itself while tornado takes it
    # as a line end (until 6.7, tornadoweb/tornado#3477). When this fails, tornado's
    # behaviour changed: set TORNADO_READS_BARE_LF for the versions that need it.
    from tornado.httputil import HTTPHeaders, HTTPInputError

    from serving.server.http_connections import TORNADO_READS_BARE_LF

    try:
        headers = HTTPHeaders.parse("Content-Length: 2\nX-Pad: a\n")
        reads_bare_lf = headers.get("X-Pad") == "a"
    except HTTPInputError:
        reads_bare_lf = False
    assert reads_bare_lf == TORNADO_READS_BARE_LF
