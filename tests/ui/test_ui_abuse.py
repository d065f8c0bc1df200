"""``keras-vit ui`` against hostile requests, sent raw: foreign ``Host`` (DNS rebinding),
cross-site POSTs, slow and oversized uploads, many large uploads at once.

The page runs with a stand-in backend (``tests/ui/raw_http.py``): these tests are
about the HTTP server, not the model (tests/ui/test_ui_browser.py runs the real one).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from keras_vit.ui.app import UIServer
from tests.ui.raw_http import (
    JPEG_MAGIC,
    StubBackend,
    page_headers,
    page_token,
    read_response,
    request,
    send_head,
)

IMAGE = JPEG_MAGIC + b"\x00" * 1000
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ui():
    server = UIServer(StubBackend(), port=0).start()
    try:
        yield server
    finally:
        server.stop()


def predict(ui, **headers) -> int | None:
    sent = page_headers(ui.port, ui.guard.token, **headers)
    return request(ui.port, "POST", "/api/predict", sent, IMAGE).status


def test_the_page_answers_under_its_own_names(ui):
    for host in (f"127.0.0.1:{ui.port}", f"localhost:{ui.port}", f"[::1]:{ui.port}"):
        page = request(ui.port, "GET", "/", {"Host": host})
        assert page.status == 200, host
        assert ui.guard.token.encode() in page.body
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert request(ui.port, "GET", "/api/info", {"Host": host}).status == 200
    assert predict(ui) == 200
    assert page_token(ui.port) == ui.guard.token


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:{port}",  # DNS rebinding: the attacker's name, the page's port
        "127.0.0.1.evil.example:{port}",
        "localhost:{other}",
        "127.0.0.2:{port}",
        "[::1",
        "",
    ],
)
def test_a_foreign_host_is_refused_everywhere(ui, host):
    host = host.format(port=ui.port, other=ui.port + 1)
    for method, path in (("GET", "/"), ("GET", "/api/info"), ("POST", "/api/predict")):
        headers = page_headers(ui.port, ui.guard.token, Host=host, Origin=f"http://{host}")
        answer = request(ui.port, method, path, headers, IMAGE if method == "POST" else b"")
        assert answer.status == 421, (method, path, answer)
        assert b"DNS" in answer.body and b"--allowed-host" in answer.body
        assert ui.guard.token.encode() not in answer.body


def test_a_request_without_host_is_refused(ui):
    with socket.create_connection(("127.0.0.1", ui.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        answer = read_response(sock)
    assert answer.status == 421


def test_allowed_host_names():
    ui = UIServer(StubBackend(), port=0, allowed_hosts=["MyBox.lan", "localhost:9000"]).start()
    try:

        def status(host):
            return request(ui.port, "GET", "/api/info", {"Host": host}).status

        assert status("mybox.lan") == 200
        assert status("mybox.lan:8443") == 200  # a name without a port: any port
        assert status("localhost:9000") == 200  # ssh -L 9000:localhost:PORT
        assert status("localhost:9001") == 421
        assert status("evil.example:9000") == 421
    finally:
        ui.stop()
    with pytest.raises(ValueError, match="NAME or NAME:PORT"):
        UIServer(StubBackend(), port=0, allowed_hosts=["bad:host:name"])


def test_cross_site_posts_are_refused(ui):
    evil = "http://evil.example"
    # What any site can send without a preflight: no custom header, a form body type.
    form_like = {"Content-Type": "text/plain", "X-Keras-Vit-Token": ""}
    assert predict(ui, Origin=evil, **form_like) == 403
    assert predict(ui, Origin=evil) == 403  # even with the token
    assert predict(ui, Origin=evil, **{"Sec-Fetch-Site": "cross-site"}) == 403
    assert predict(ui, Origin=f"http://localhost:{ui.port}") == 403  # another origin
    assert predict(ui, Origin=f"https://127.0.0.1:{ui.port}") == 403
    assert predict(ui, **{"Sec-Fetch-Site": "same-origin"}) == 200


def test_posts_need_the_page_token(ui):
    headers = page_headers(ui.port, ui.guard.token)
    del headers["Origin"]
    assert request(ui.port, "POST", "/api/predict", headers, IMAGE).status == 200  # e.g. curl
    for token in ("", "wrong", ui.guard.token[:-1]):
        headers["X-Keras-Vit-Token"] = token
        answer = request(ui.port, "POST", "/api/predict", headers, IMAGE)
        assert answer.status == 403 and b"X-Keras-Vit-Token" in answer.body
    # No Origin and no token: what a cross-site form or sendBeacon may look like.
    no_token = {"Host": f"127.0.0.1:{ui.port}", "Content-Type": "image/jpeg"}
    assert request(ui.port, "POST", "/api/predict", no_token, IMAGE).status == 403


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"],
)
def test_form_body_types_are_refused(ui, content_type):
    answer = request(
        ui.port,
        "POST",
        "/api/predict",
        page_headers(ui.port, ui.guard.token, **{"Content-Type": content_type}),
        IMAGE,
    )
    assert answer.status == 415 and b"application/octet-stream" in answer.body


def test_no_cors_preflight_is_granted(ui):
    headers = {
        "Host": f"127.0.0.1:{ui.port}",
        "Origin": "http://evil.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-keras-vit-token",
    }
    answer = request(ui.port, "OPTIONS", "/api/predict", headers)
    assert answer.status == 405
    assert not any(name.startswith("access-control-") for name in answer.headers)


def test_oversized_and_unsized_uploads(ui):
    from keras_vit.ui.app import MAX_IMAGE_BYTES

    headers = page_headers(ui.port, ui.guard.token)
    started = time.perf_counter()
    with send_head(ui.port, "POST", "/api/predict", headers, MAX_IMAGE_BYTES + 1) as sock:
        answer = read_response(sock)  # answered from the headers: no body sent
    assert answer.status == 413 and b"limit" in answer.body
    assert time.perf_counter() - started < 5
    with send_head(
        ui.port, "POST", "/api/predict", {**headers, "Transfer-Encoding": "chunked"}
    ) as sock:
        assert read_response(sock).status == 411
    assert request(ui.port, "POST", "/api/predict", headers, b"").status == 400
    answer = request(ui.port, "POST", "/api/predict", headers, b"not an image")
    assert answer.status == 400 and b"not a usable image" in answer.body


def test_the_upload_budget_is_shared_and_given_back():
    ui = UIServer(
        StubBackend(), port=0, max_image_bytes=1 << 20, upload_budget=2 << 20, upload_timeout=30
    ).start()
    try:
        headers = page_headers(ui.port, ui.guard.token)
        held = [send_head(ui.port, "POST", "/api/predict", headers, 1 << 20) for _ in range(2)]
        deadline = time.monotonic() + 10
        while ui.budget.in_use_bytes < 2 << 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        answer = request(ui.port, "POST", "/api/predict", headers, IMAGE)
        assert answer.status == 503, answer
        assert b"--upload-budget-mib" in answer.body and answer.headers["retry-after"] == "1"
        for sock in held:  # the uploads give up: their reservations come back
            sock.close()
        while ui.budget.in_use_bytes and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ui.budget.in_use_bytes == 0 and ui.budget.in_flight == 0
        assert request(ui.port, "POST", "/api/predict", headers, IMAGE).status == 200
    finally:
        ui.stop()


def test_slow_uploads_time_out_and_hold_no_thread():
    ui = UIServer(StubBackend(), port=0, upload_timeout=2.0, idle_timeout=2.0).start()
    try:
        threads_before = threading.active_count()
        headers = page_headers(ui.port, ui.guard.token)
        slow = []
        for _ in range(100):
            sock = send_head(ui.port, "POST", "/api/predict", headers, 65536)
            sock.sendall(b"x" * 10)
            slow.append(sock)
        for _ in range(50):  # slowloris: headers that never end
            sock = socket.create_connection(("127.0.0.1", ui.port), timeout=30)
            sock.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{ui.port}\r\n".encode())
            slow.append(sock)
        started = time.monotonic()
        assert request(ui.port, "POST", "/api/predict", headers, IMAGE).status == 200
        assert threading.active_count() <= threads_before + 1  # + the prediction thread
        for sock in slow:  # every one is closed by the page within the timeouts
            assert _closed_by_peer(sock, 15)
        elapsed = time.monotonic() - started
        assert 1.5 < elapsed < 15, elapsed
        deadline = time.monotonic() + 5  # the page's close callbacks run just after the close
        while ui.budget.in_use_bytes and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ui.budget.in_use_bytes == 0
        assert request(ui.port, "POST", "/api/predict", headers, IMAGE).status == 200
    finally:
        for sock in slow:
            sock.close()
        ui.stop()


def test_predictions_run_on_a_bounded_pool_and_queue():
    ui = UIServer(StubBackend(delay=0.3), port=0, max_pending=4).start()
    try:
        threads_before = threading.active_count()
        statuses, peak = [], [0]

        def one():
            statuses.append(predict(ui))

        workers = [threading.Thread(target=one) for _ in range(12)]
        for worker in workers:
            worker.start()
        while any(worker.is_alive() for worker in workers):
            names = [t.name for t in threading.enumerate() if t.name.startswith("keras-vit-ui_")]
            peak[0] = max(peak[0], len(names))
            time.sleep(0.02)
        assert peak[0] == 1  # LocalBackend-like: one prediction thread
        assert statuses.count(200) >= 4 and statuses.count(503) >= 1
        assert set(statuses) <= {200, 503}
        assert threading.active_count() <= threads_before + 1
    finally:
        ui.stop()


def _closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):  # whatever answer came first, then the end
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


def _status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_many_large_uploads_at_once_stay_within_the_budget():
    """32 x 20 MiB at once: peak RSS within the 64 MiB budget's reach, memory given back."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.ui.raw_http", "0", "64"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert select.select([process.stdout], [], [], 60)[0], "the page did not start"
        url = process.stdout.readline()
        assert url.startswith("http://127.0.0.1:"), url
        port = int(url.rstrip("/\n").rsplit(":", 1)[1])
        headers = page_headers(port, page_token(port))
        body = JPEG_MAGIC + os.urandom(20 * 1024 * 1024 - 3)
        assert request(port, "POST", "/api/predict", headers, body).status == 200  # warm up
        time.sleep(0.5)
        baseline = _status_bytes(process.pid, "VmRSS")
        Path(f"/proc/{process.pid}/clear_refs").write_text("5")
        statuses = []

        def one():
            statuses.append(request(port, "POST", "/api/predict", headers, body).status)

        workers = [threading.Thread(target=one) for _ in range(32)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        peak = _status_bytes(process.pid, "VmHWM") - baseline
        time.sleep(1)
        kept = _status_bytes(process.pid, "VmRSS") - baseline
        assert statuses.count(200) >= 1, statuses
        assert set(statuses) <= {200, 503, None}, statuses  # None: refused while sending
        # Without the budget: +840 MB peak, +620 MB kept (issue 18). With it: the 64 MiB
        # budget (three 20 MiB uploads, each in one buffer of its size) and some slack;
        # measured +60 to +62 MiB peak, +0 kept.
        assert peak < 80 * 1024 * 1024, peak
        assert kept < 16 * 1024 * 1024, kept
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        process.stdout.close()
    assert process.returncode == 0


def test_the_page_with_a_server_stays_tensorflow_free():
    code = (
        "import sys, keras_vit.cli.ui, keras_vit.ui.app, keras_vit.ui.backends; "
        "from serving.client import ServingClient; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--upload-budget-mib", "10"], "--upload-budget-mib must be at least 20"),
        (["--upload-timeout", "0"], "--upload-timeout must be positive"),
        (["--allowed-host", "a:b:c"], "--allowed-host 'a:b:c' is not NAME or NAME:PORT"),
    ],
)
def test_bad_limits_are_refused_before_anything_loads(flags, message, capsys):
    from keras_vit.cli import main

    assert main(["ui", "--server", "127.0.0.1:1", *flags]) == 2
    assert message in capsys.readouterr().err
