"""Hostile requests against ``keras-vit ui`` (issue 18 §4), before and after, every number measured.

Saves a tiny ViT as a ``.keras`` file, starts ``keras-vit ui --model FILE --port 0``
from each checkout as its own process and measures four things:

- **foreign Host**: ``GET /``, ``GET /api/info`` and a ``POST /api/predict`` of a
  small JPEG with ``Host: evil.example`` and ``Host: evil.example:PORT`` (a DNS
  rebinding page's requests: its Origin, the page's port);
- **cross-site POSTs**: a small JPEG with no Origin and no token; with
  ``Origin: http://evil.example`` as ``text/plain`` (what any site can send without
  a preflight); the same with ``Sec-Fetch-Site: cross-site``; and the page's own
  request (its Origin and token) as the control;
- **slow uploads**: ``--slow`` connections each declaring a 64 KiB image and sending
  10 bytes a second; the ui's thread count (``/proc/PID/task``) before and at its
  peak, how many connections the ui closed and when, and a normal predict every
  second meanwhile;
- **large uploads at once**: ``--large`` uploads of 20 MiB (random bytes: refused as
  not an image once read) sent together; RSS before, peak (kernel ``VmHWM``, reset
  before) and kept 3 s after the last answer, and the answers.

    python -m benchmarks.ui_abuse                                   # this checkout
    git archive COMMIT | tar -x -C /tmp/ui-before
    python -m benchmarks.ui_abuse --before-checkout /tmp/ui-before  # both, one table

Writes ``benchmarks/results/ui-abuse.md``.
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import re
import select
import shlex
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.harness import (
    ROOT,
    ServerProcess,
    add_output_options,
    machine_info,
    markdown_table,
    results_path,
    write_results,
)
from tests.support.tiny import tiny_vit

MIB = 1024 * 1024
TOKEN_HEADER = "X-Keras-Vit-Token"


def _proc_status(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    return 0


class UIProcess(ServerProcess):
    """``python -m keras_vit ui --model MODEL --port 0 FLAGS`` run from ``checkout``,
    started until its page is up, stopped with Ctrl-C (SIGINT)."""

    stop_signal = signal.SIGINT

    def __init__(self, checkout: Path, model: Path, flags=()):
        command = [sys.executable, "-m", "keras_vit", "ui", "--model", str(model), "--port", "0"]
        super().__init__(
            [*command, *flags], ready="keras-vit ui: http://", timeout=300, cwd=checkout,
            env=dict(os.environ, PYTHONPATH=str(checkout)),
        )  # fmt: skip
        self.start()
        self.port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", self.output()).group(1))
        self.host = f"127.0.0.1:{self.port}"
        page = request(self.port, "GET", "/", {"Host": self.host})
        found = re.search(rb'name="keras-vit-token" content="([^"]+)"', page.body)
        self.token = found.group(1).decode() if found else "none-in-this-page"

    @property
    def pid(self) -> int:
        return self.process.pid

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/task"))

    def rss(self) -> int:
        return _proc_status(self.pid, "VmRSS")

    def peak(self) -> int:
        return _proc_status(self.pid, "VmHWM")

    def reset_peak(self) -> None:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def page_headers(self, **more) -> dict:
        """What the page itself sends with a prediction."""
        headers = {
            "Host": self.host, "Origin": f"http://{self.host}", TOKEN_HEADER: self.token,
            "Content-Type": "application/octet-stream",
        }  # fmt: skip
        headers.update(more)
        return headers


class Response(collections.namedtuple("Response", "status body")):
    pass


def _read_response(sock: socket.socket, timeout: float) -> Response:
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        while length and len(body) < int(length.group(1)):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except OSError:
        pass
    status = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return Response(int(status.group(1)) if status else None, body)


def request(
    port: int, method: str, path: str, headers: dict, body: bytes = b"", timeout: float = 60.0
) -> Response:
    """One raw HTTP/1.1 request (any ``Host``); status None when the ui closed without one.

    The headers go first; an answer that comes before the body (a refusal) is read
    without sending the body.
    """
    lines = [f"{method} {path} HTTP/1.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if body:
            early, _, _ = select.select([sock], [], [], 0.3)
            if not early:
                try:
                    sock.sendall(body)
                except OSError:
                    pass
        return _read_response(sock, timeout)


def jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


def show(responses) -> str:
    return ", ".join(str(r.status) if r.status is not None else "closed" for r in responses)


def foreign_host(ui: UIProcess, image: bytes) -> str:
    out = []
    for host in ("evil.example", f"evil.example:{ui.port}"):
        page = request(ui.port, "GET", "/", {"Host": host})
        info = request(ui.port, "GET", "/api/info", {"Host": host})
        headers = ui.page_headers(Host=host, Origin=f"http://{host}")
        predict = request(ui.port, "POST", "/api/predict", headers, image)
        out.append(f"`{host}`: {show([page, info, predict])}")
    return "; ".join(out)


def cross_site(ui: UIProcess, image: bytes) -> str:
    cases = {
        "no Origin, no token": {"Host": ui.host, "Content-Type": "image/jpeg"},
        "evil Origin, text/plain": {
            "Host": ui.host, "Origin": "http://evil.example", "Content-Type": "text/plain",
        },
        "evil Origin, text/plain, Sec-Fetch-Site cross-site": {
            "Host": ui.host, "Origin": "http://evil.example", "Content-Type": "text/plain",
            "Sec-Fetch-Site": "cross-site",
        },
        "the page's own (control)": ui.page_headers(),
    }  # fmt: skip
    answers = []
    for name, headers in cases.items():
        answer = request(ui.port, "POST", "/api/predict", headers, image)
        answers.append(f"{name}: {show([answer])}")
    return "; ".join(answers)


def _normal_traffic(ui: UIProcess, image: bytes, stop: threading.Event, every: float = 1.0):
    latencies, failed = [], []
    while not stop.is_set():
        started = time.perf_counter()
        answer = request(ui.port, "POST", "/api/predict", ui.page_headers(), image, timeout=30)
        if answer.status == 200:
            latencies.append(time.perf_counter() - started)
        else:
            failed.append(answer.status)
        stop.wait(every)
    return latencies, failed


def slow_uploads(ui: UIProcess, image: bytes, count: int, hold_s: float) -> str:
    threads_before = ui.threads()
    headers = ui.page_headers()
    head = ["POST /api/predict HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    head = ("\r\n".join([*head, "Content-Length: 65536"]) + "\r\n\r\n").encode()
    socks, opened = [], time.monotonic()
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", ui.port), timeout=10)
        sock.sendall(head)
        sock.setblocking(False)
        socks.append(sock)
    closed_at: dict[int, float] = {}
    answers = collections.Counter()
    stop, normal = threading.Event(), {}
    traffic = threading.Thread(
        target=lambda: normal.update(
            zip(("lat", "failed"), _normal_traffic(ui, image, stop), strict=True)
        )
    )
    traffic.start()
    peak_threads, next_send = threads_before, 0.0
    while time.monotonic() - opened < hold_s and len(closed_at) < count:
        peak_threads = max(peak_threads, ui.threads())
        now = time.monotonic()
        for index, sock in enumerate(socks):
            if index in closed_at:
                continue
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                data = None
            except OSError:
                data = b""
            if data is not None:
                status = re.match(rb"HTTP/1\.[01] (\d{3})", data or b"")
                answers[status.group(1).decode() if status else "none"] += 1
                closed_at[index] = now - opened
                continue
            if now >= next_send:
                try:
                    sock.send(b"x" * 10)
                except OSError:
                    pass
        if now >= next_send:
            next_send = now + 1.0
        time.sleep(0.2)
    stop.set()
    traffic.join()
    for sock in socks:
        sock.close()
    answers["none (still open)"] += count - len(closed_at)
    times = sorted(closed_at.values())
    when = f"; median closed at {statistics.median(times):.1f} s" if times else ""
    lat, failed = normal.get("lat", []), normal.get("failed", [])
    failures = collections.Counter(str(status) if status else "closed" for status in failed)
    normal_text = f"{len(lat)} ok" + (f" (max {max(lat):.2f} s)" if lat else "")
    if failures:
        normal_text += ", failed: " + ", ".join(f"{k} x{v}" for k, v in sorted(failures.items()))
    shown = ", ".join(f"{k} x{v}" for k, v in sorted(answers.items()))
    return (
        f"threads {threads_before} → {peak_threads}; {len(closed_at)}/{count} closed by the ui "
        f"within {hold_s:.0f} s{when}; answers: {shown}; normal predicts meanwhile: {normal_text}"
    )


def large_uploads(ui: UIProcess, count: int, size: int) -> str:
    body = os.urandom(size)
    time.sleep(1)
    baseline = ui.rss()
    ui.reset_peak()
    results: list[Response] = [None] * count

    def one(index):
        results[index] = request(ui.port, "POST", "/api/predict", ui.page_headers(), body, 120)

    workers = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    peak = ui.peak()
    time.sleep(3)
    kept = ui.rss()
    statuses = collections.Counter(str(r.status) if r.status else "closed" for r in results)
    shown = ", ".join(f"{k} x{v}" for k, v in sorted(statuses.items()))
    return (
        f"RSS {baseline / MIB:.0f} MiB; peak +{(peak - baseline) / MIB:.0f} MiB; kept "
        f"+{(kept - baseline) / MIB:.0f} MiB after 3 s; answers: {shown} in {elapsed:.1f} s"
    )


def measure(label: str, checkout: Path, model: Path, args) -> dict[str, str]:
    ui = UIProcess(checkout, model, args.ui_flags.split())
    try:
        image = jpeg()
        row = {"label": label, "idle RSS MiB": f"{ui.rss() / MIB:.0f}"}
        row["foreign Host"] = foreign_host(ui, image)
        row["cross-site POST"] = cross_site(ui, image)
        row["slow uploads"] = slow_uploads(ui, image, args.slow, args.hold)
        row["large uploads"] = large_uploads(ui, args.large, args.large_mib * MIB)
        row["survived"] = "yes" if ui.process.poll() is None else "no"
        return row
    finally:
        ui.stop()


NOTES = """\
Large uploads, after: the page holds at most the 64 MiB budget of uploads (three of
20 MiB; the other 29 get 503 from their headers, before their bodies are sent); the
rest of the peak is TensorFlow decoding those 20 MiB strings in the ui process (the
in-process model's decoder, `keras_vit/decode.py`), one at a time on the one prediction
thread. The page alone, with a stand-in backend in its own process, peaks at +60 MiB
and keeps +0 MiB (`tests/ui/test_ui_abuse.py`, the many-large-uploads test).
Slow uploads, after: each connection is closed `--upload-timeout` (60 s) after its body
began; the connections cost sockets on the one event-loop thread, not threads.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before-checkout", type=Path, help="an older tree (git archive)")
    parser.add_argument("--before-label", default="before")
    parser.add_argument("--label", default="after (this checkout)")
    parser.add_argument("--slow", type=int, default=300, help="slow uploads at once")
    parser.add_argument("--hold", type=float, default=75.0, help="seconds to hold them")
    parser.add_argument("--large", type=int, default=32, help="large uploads at once")
    parser.add_argument("--large-mib", type=int, default=20)
    parser.add_argument("--ui-flags", default="", help="more `keras-vit ui` flags")
    add_output_options(parser, "ui-abuse", aliases=["--name"])
    args = parser.parse_args()

    import keras

    flags = args.ui_flags.split()
    info = machine_info(["tornado", "tensorflow", "keras"])
    keras.utils.set_random_seed(0)
    model_dir = Path(tempfile.mkdtemp(prefix="ui-abuse-"))
    model = model_dir / "tiny.keras"
    tiny_vit().save(model)
    runs = []
    if args.before_checkout:
        runs.append((args.before_label, args.before_checkout.resolve()))
    runs.append((args.label, ROOT))
    rows = []
    for label, checkout in runs:
        print(f"measuring {label} ({checkout}) ...", flush=True)
        rows.append(measure(label, checkout, model, args))
        print(rows[-1], flush=True)
    attacks = ["foreign Host", "cross-site POST", "slow uploads", "large uploads"]
    table = markdown_table(
        ["attack", *(row["label"] for row in rows)],
        [[attack, *(row[attack] for row in rows)] for attack in attacks]
        + [["idle RSS MiB", *(row["idle RSS MiB"] for row in rows)]]
        + [["ui survived", *(row["survived"] for row in rows)]],
    )
    command = shlex.join(["python", "-m", "benchmarks.ui_abuse", *sys.argv[1:]])
    ui_command = shlex.join(["keras-vit", "ui", "--model", "tiny.keras", "--port", "0", *flags])
    body = (
        f"`{command}`; `{ui_command}` (a tiny ViT in-process) as its own process; "
        "each cell lists the statuses in order "
        "(`closed`: the connection closed without an answer). Foreign Host: `GET /`, "
        "`GET /api/info`, a predict of a small JPEG sent with that Host and its Origin. "
        f"Slow uploads: {args.slow} connections each declaring 64 KiB and sending 10 bytes/s; "
        "a normal predict every second meanwhile (its latency includes the client's 0.3 s "
        "wait for an early refusal before it sends the body). "
        f"Large uploads: {args.large} x {args.large_mib} MiB of random bytes at once; peak = "
        "the kernel's VmHWM of the ui process (reset before); load average at the end: "
        f"{os.getloadavg()[0]:.1f} (shared machine).\n\n{table}\n\n{NOTES}"
    )
    title = "`keras-vit ui` under hostile requests (issue 18 §4)"
    print(write_results(results_path(args), title, info, body))


if __name__ == "__main__":
    main()
