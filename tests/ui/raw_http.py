"""Raw HTTP/1.1 over a socket: any ``Host``, any header, a body sent slowly or not at all.

``urllib`` and ``requests`` set ``Host`` and ``Content-Length`` themselves and
send the whole body before they read; these helpers do not, which the
hostile-request tests need. Also a stand-in backend (no TensorFlow) and
``python -m tests.ui.raw_http PORT BUDGET_MIB`` to run a page with it in its own
process (for memory measurements).
"""

from __future__ import annotations

import re
import select
import socket
import sys
import time
from dataclasses import dataclass

TOKEN_RE = re.compile(rb'name="keras-vit-token" content="([^"]+)"')
JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass
class Response:
    status: int | None  # None: the connection closed without an answer
    headers: dict[str, str]
    body: bytes


def read_response(sock: socket.socket, timeout: float = 30.0) -> Response:
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except (ConnectionResetError, TimeoutError):
        head, headers, body = data, {}, b""
    status = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return Response(int(status.group(1)) if status else None, headers, body)


def send_head(port: int, method: str, path: str, headers: dict, length: int | None = None):
    """An open connection with the request line and headers sent (and no body yet)."""
    lines = [f"{method} {path} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    return sock


def request(port: int, method: str, path: str, headers: dict, body: bytes = b"") -> Response:
    """One request; a refusal that comes before the body is read without sending the body."""
    length = len(body) if (body or method == "POST") else None
    with send_head(port, method, path, {"Connection": "close", **headers}, length) as sock:
        if body and not select.select([sock], [], [], 0.3)[0]:
            try:
                sock.sendall(body)
            except OSError:  # refused while sending: the answer may still be there
                pass
        return read_response(sock)


def page_token(port: int) -> str:
    page = request(port, "GET", "/", {"Host": f"127.0.0.1:{port}"})
    assert page.status == 200, page
    return TOKEN_RE.search(page.body).group(1).decode()


def page_headers(port: int, token: str, **more: str) -> dict:
    """The headers the page itself sends with a prediction."""
    headers = {
        "Host": f"127.0.0.1:{port}",
        "Origin": f"http://127.0.0.1:{port}",
        "X-Keras-Vit-Token": token,
        "Content-Type": "application/octet-stream",
    }
    headers.update(more)
    return headers


class StubBackend:
    """Answers a JPEG (by its magic bytes) after ``delay`` seconds; anything else is not one."""

    description = "stub model"
    has_explain = False
    concurrency = 1

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.calls = 0

    def answer(self, image: bytes):
        from keras_vit.ui.backends import Answer

        self.calls += 1
        if not image.startswith(JPEG_MAGIC):
            raise ValueError("not a JPEG")
        time.sleep(self.delay)
        return Answer([("tabby cat", 0.75), ("tiger", 0.25)], None)

    def close(self) -> None:
        pass


if __name__ == "__main__":
    from keras_vit.ui.app import UIServer

    ui = UIServer(StubBackend(), port=int(sys.argv[1]), upload_budget=int(sys.argv[2]) << 20)
    print(ui.url, flush=True)
    try:
        ui.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        ui.close()
