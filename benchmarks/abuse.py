"""Hostile requests against ``keras-vit serve`` (issue 10), with every number measured.

Exports a tiny ViT (or serves ``--model_base_path``), starts the server as its
own process and, for each attack, measures: the answer, the time to it, the
server's RSS before / at its peak / after, whether the server survived, and the
latency of normal requests (one small JPEG over REST, back to back) sent during
the attack. The peak is the kernel's own high-water mark (``VmHWM``, reset
through ``/proc/<pid>/clear_refs`` before each attack). A watchdog kills the
server if its RSS passes ``--rss_limit_gb`` (default 3): this runs on shared
machines.

Goals: an error or a normal answer within 5 s, peak <= baseline + 1 GB, RSS back
within 300 MB, normal-request p99 <= 1 s during the attack. The image attacks
(GIF comment flood, big PNGs) exercise the SavedModel's decoder
(``keras_vit/decode.py``), whatever version the checkout has.

    python -m benchmarks.abuse                 # writes benchmarks/results/abuse.md
    python -m benchmarks.abuse --only rest     # attacks whose name contains "rest"
    python -m benchmarks.abuse --connections   # the connection attacks (its own section)
    python -m benchmarks.abuse --elements      # many elements, few bytes (its own section)

The element attacks (``--elements``, issue 18) are small in bytes but large in elements:
100,000 one-byte strings over gRPC, 100,000 ``{"b64"}`` instances over REST, 20,000 valid
1x1 PNGs over gRPC, 100,000 1x1 uint8 images to ``serving_pixels`` (300 KB), each alone
and 4 at once.

The connection attacks (``--connections``) hold connections open instead of sending a
hostile request: 2,000 idle TCP connections, slowloris headers, 1 MB bodies sent at
10 bytes/s, 2,000 kept-alive connections left idle after one request, and 2,000 idle
connections to the gRPC port (half plain TCP, half HTTP/2 without a call). They report
the server's threads and RSS and the normal client's latency. ``--server_checkout DIR``
runs another checkout's server (``git archive`` of an older commit) for before/after;
``--label`` names it in the table.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import shlex
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.harness import (
    ROOT,
    ServedModel,
    ServerNotReady,
    add_output_options,
    cpu_flags,
    cpu_model,
    export_tiny,
    machine_info,
    results_path,
)

MB = 1024 * 1024
GB = 1024 * MB
# The table (measured before the fix, on the same kind of tiny export).
BEFORE = {
    "grpc-string-67M": "RSS to 24 GB in 30 s; OOM-killed",
    "grpc-float-2GB": "INVALID_ARGUMENT after 2.5 s; peak 7.5 GB, 5.4 GB held after",
    "grpc-float-2GB-x2": "peak 11.5 GB",
    "rest-brackets-20MB": "400 after 21.6 s; peak 4.3 GB",
    "rest-brackets-60MB": "400 after 70 s; 10.9 GB",
    "rest-brackets-20MB-x4": "13.8 GB",
    "grpc-gif-comments-3MB": "answer after 40.6 s",
    "grpc-gif-comments-3MB-x2": "every other request blocked 14 s",
    "rest-png-36MP": "50 x 8 images: all 200; a normal request waited up to 41.5 s",
}


def _rows_by_name(saved: dict):
    """``(name, label, row)`` of every saved run's rows, grouped by the row's name (in the
    order names first appear), then by run: each attack's servers side by side."""
    names = list(dict.fromkeys(row["name"] for run in saved.values() for row in run["rows"]))
    for name in names:
        for label, run in saved.items():
            for row in run["rows"]:
                if row["name"] == name:
                    yield name, label, row


def _status(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    return 0


class WatchedServer(ServedModel):
    """The served model (``python -m serving.server`` on free ports), watched for RSS:
    killed once it passes ``rss_limit`` bytes."""

    def __init__(
        self, base_path: Path, rss_limit: int, extra: list[str], root: Path = ROOT
    ) -> None:
        super().__init__(base_path, extra, checkout=root)
        self.rss_limit = rss_limit
        self.killed_for_rss = False
        try:
            self.start()
        except ServerNotReady as error:
            raise SystemExit(f"server did not start: {error}") from None
        self._watch = threading.Thread(target=self._watchdog, daemon=True)
        self._watch.start()

    def _watchdog(self) -> None:
        while self.process.poll() is None:
            try:
                if _status(self.process.pid, "VmRSS") > self.rss_limit:
                    self.killed_for_rss = True
                    self.process.kill()
                    return
            except OSError:
                return
            time.sleep(0.01)

    def rss(self) -> int:
        return _status(self.process.pid, "VmRSS")

    def threads(self) -> int:
        try:
            return len(os.listdir(f"/proc/{self.process.pid}/task"))
        except OSError:
            return 0

    def reset_peak(self) -> None:
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def peak(self) -> int:
        return _status(self.process.pid, "VmHWM")

    def stop(self, grace: float = 40) -> None:
        super().stop(grace)


def rest_post(port: int, body: bytes, timeout: float = 120.0, path: str = "/v1/models/vit:predict"):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    try:
        message = json.loads(payload).get("error", "")
    except ValueError:
        message = payload[:80].decode("latin-1")
    return response.status, message


def grpc_predict(port: int, request, timeout: float = 120.0):
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 2**31 - 1)]
    ) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            stub.Predict(request, timeout=timeout)
            return "OK", ""
        except grpc.RpcError as error:
            return error.code().name, error.details() or ""


def _jpeg(size=(64, 48)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _normal_traffic(
    port: int, body: bytes, stop, ready, results, protocol="rest", pace=0.0
) -> None:
    """Normal predicts, back to back, until ``stop`` is set (in its own process).

    REST: a new connection per request (as many clients do); gRPC: one channel."""
    if protocol == "grpc":
        from serving.client import ServingClient

        client = ServingClient(f"127.0.0.1:{port}", "vit", protocol="grpc", retries=0)

        def send():
            try:
                client.predict(body, timeout=60)
                return 200
            except Exception:  # noqa: BLE001 - any failure counts as failed
                return 0
    else:

        def send():
            return rest_post(port, body, timeout=60)[0]

    send()  # connections and imports warm
    ready.set()
    while not stop.is_set():
        start = time.monotonic()
        try:
            status = send()
        except OSError:
            status = 0
        results.put((time.monotonic() - start, status == 200))
        if status != 200 or pace:
            time.sleep(max(pace, 0.05))


class NormalTraffic:
    """Normal REST predicts while an attack runs, from another process (so the
    attacker's own work in this process does not slow them down)."""

    def __init__(self, port: int, protocol: str = "rest", pace: float = 0.0) -> None:
        import base64
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._ready = context.Event()
        self._results = context.Queue()
        if protocol == "grpc":
            body = _jpeg()
        else:
            body = json.dumps({"instances": [{"b64": base64.b64encode(_jpeg()).decode()}]})
            body = body.encode()
        self._process = context.Process(
            target=_normal_traffic,
            args=(port, body, self._stop, self._ready, self._results, protocol, pace),
            daemon=True,
        )
        self.latencies: list[float] = []
        self.failures = 0

    def __enter__(self):
        self._process.start()
        self._ready.wait(60)  # the child's start-up and first request, not measured
        return self

    def __exit__(self, *exc):
        self._stop.set()
        deadline = time.monotonic() + 90
        while self._process.is_alive() and time.monotonic() < deadline:
            self._drain()
            time.sleep(0.05)
        self._drain()
        if self._process.is_alive():
            self._process.kill()

    def _drain(self) -> None:
        import queue

        while True:
            try:
                seconds, ok = self._results.get_nowait()
            except queue.Empty:
                return
            self.latencies.append(seconds)
            self.failures += not ok

    def p99(self) -> float:
        return float(np.percentile(self.latencies, 99)) if self.latencies else float("nan")

    def median(self) -> float:
        return float(np.median(self.latencies)) if self.latencies else float("nan")


# ----------------------------------------------------------------------------------------
# The attacks: each returns a short text of what the server answered.


def _sized_proto(dtype, shape: int, value):
    # TensorFlow's own class: it goes into tensorflow-serving-api's PredictRequest.
    from tensorflow.core.framework import tensor_pb2

    from serving import tensor_codec

    proto = tensor_pb2.TensorProto(dtype=dtype)
    proto.tensor_shape.dim.add(size=shape)
    if dtype == tensor_codec.DT_STRING:
        proto.string_val.append(value)
    else:
        proto.float_val.append(value)
    return proto


def _predict_request(signature: str, alias: str, proto):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "vit"
    request.model_spec.signature_name = signature
    # Any TensorProto class (TensorFlow's or serving.protos'): copied as wire bytes.
    request.inputs[alias].MergeFromString(proto.SerializeToString())
    return request


def _concurrently(count: int, action: Callable[[], tuple[str, str]]) -> tuple[str, str]:
    results: list = [None] * count

    def run(index):
        results[index] = action()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    codes = sorted({str(r[0]) for r in results if r})
    return " / ".join(codes), results[0][1] if results[0] else ""


def gif_comment_flood(size_bytes: int) -> bytes:
    """A valid 1x1 GIF with a comment extension of ``size_bytes / 2`` one-byte sub-blocks."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 10, 10)).save(buffer, "GIF")
    data = buffer.getvalue()
    flags = data[10]
    table = 3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0
    head = 13 + table
    blocks = size_bytes // 2
    return data[:head] + b"\x21\xfe" + b"\x01c" * blocks + b"\x00" + data[head:]


def png_bytes(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def attacks(server: WatchedServer, args) -> dict[str, Callable[[], tuple[str, str]]]:
    from serving import tensor_codec

    grpc_port, rest_port = server.grpc_port, server.rest_port
    strings = _predict_request(
        "serving_default", "image_bytes", _sized_proto(tensor_codec.DT_STRING, 67108864, b"x")
    )
    floats = _predict_request(
        "serving_pixels", "images", _sized_proto(tensor_codec.DT_FLOAT, 536870912, 1.0)
    )
    gif = gif_comment_flood(3 * MB)
    gif_request = _predict_request(
        "serving_default", "image_bytes", tensor_codec.string_tensor([gif])
    )
    png = png_bytes(6000, 6000)
    import base64

    png_body = json.dumps(
        {"instances": [{"b64": base64.b64encode(png).decode()}] * args.png_images}
    ).encode()

    return {
        "grpc-string-67M": lambda: grpc_predict(grpc_port, strings),
        "grpc-float-2GB": lambda: grpc_predict(grpc_port, floats),
        "grpc-float-2GB-x2": lambda: _concurrently(2, lambda: grpc_predict(grpc_port, floats)),
        "rest-brackets-20MB": lambda: rest_post(rest_port, b"[" * (20 * MB)),
        "rest-brackets-60MB": lambda: rest_post(rest_port, b"[" * (60 * MB)),
        "rest-brackets-20MB-x4": lambda: _concurrently(
            4, lambda: rest_post(rest_port, b"[" * (20 * MB))
        ),
        "rest-deep-nesting-200k": lambda: rest_post(
            rest_port, b'{"instances": [], "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
        ),
        "rest-many-empty-lists-30MB": lambda: rest_post(
            rest_port, b'{"instances": [' + b"[]," * (10 * MB) + b"[]]}"
        ),
        "rest-body-over-limit-100MB": lambda: rest_post(rest_port, b" " * (100 * MB)),
        "grpc-gif-comments-3MB": lambda: grpc_predict(grpc_port, gif_request, timeout=60),
        "grpc-gif-comments-3MB-x2": lambda: _concurrently(
            2, lambda: grpc_predict(grpc_port, gif_request, timeout=60)
        ),
        "rest-png-36MP": lambda: _concurrently(
            args.png_requests, lambda: rest_post(rest_port, png_body)
        ),
    }


def element_attacks(server: WatchedServer, args) -> dict[str, Callable[[], tuple[str, str]]]:
    """Requests that are small in bytes but hold many elements (issue 18), alone and 4 at once."""
    import base64

    from tensorflow_serving.apis import predict_pb2

    from serving import tensor_codec

    grpc_port, rest_port = server.grpc_port, server.rest_port
    strings = _predict_request(
        "serving_default", "image_bytes", tensor_codec.string_tensor([b"x"] * 100_000)
    )
    b64 = json.dumps({"instances": [{"b64": base64.b64encode(b"x").decode()}] * 100_000})
    b64 = b64.encode()
    png = png_bytes(1, 1)
    pngs = _predict_request(
        "serving_default", "image_bytes", tensor_codec.string_tensor([png] * 20_000)
    )
    pixels = predict_pb2.PredictRequest()
    pixels.model_spec.name = "vit"
    pixels.model_spec.signature_name = "serving_pixels"
    tensor_codec.from_numpy(np.zeros([100_000, 1, 1, 3], np.uint8), out=pixels.inputs["images"])
    single = {
        "grpc-strings-100k": lambda: grpc_predict(grpc_port, strings),
        "rest-b64-instances-100k": lambda: rest_post(rest_port, b64),
        "grpc-png-1x1-20k": lambda: grpc_predict(grpc_port, pngs),
        "grpc-pixels-1x1-100k": lambda: grpc_predict(grpc_port, pixels),
    }
    attacks = {}
    for name, action in single.items():
        attacks[name] = action
        attacks[f"{name}-x4"] = lambda action=action: _concurrently(4, action)
    return attacks


@dataclass
class Row:
    name: str
    answer: str = ""
    message: str = ""
    seconds: float = 0.0
    baseline: int = 0
    peak: int = 0
    after: int = 0
    survived: bool = True
    normal_p99: float = float("nan")
    normal_count: int = 0
    normal_failures: int = 0
    notes: list[str] = field(default_factory=list)

    def meets_goals(self) -> bool:
        return (
            self.survived
            and self.seconds <= 5
            and self.peak - self.baseline <= GB
            and self.after - self.baseline <= 300 * MB
            and (self.normal_p99 <= 1.0 or self.normal_count == 0)
        )


def run_attack(server: WatchedServer, name: str, action) -> Row:
    row = Row(name)
    time.sleep(0.5)
    row.baseline = server.rss()
    server.reset_peak()
    with NormalTraffic(server.rest_port) as normal:
        time.sleep(0.3)
        start = time.monotonic()
        try:
            row.answer, row.message = action()
        except Exception as error:  # noqa: BLE001 - a dropped connection is an answer too
            row.answer, row.message = type(error).__name__, str(error)
        row.seconds = time.monotonic() - start
        time.sleep(0.3)
    row.peak = server.peak() if server.alive else 0
    time.sleep(1.0)
    row.survived = server.alive and not server.killed_for_rss
    row.after = server.rss() if server.alive else 0
    row.normal_p99 = normal.p99()
    row.normal_count = len(normal.latencies)
    row.normal_failures = normal.failures
    if server.killed_for_rss:
        row.notes.append("killed by the benchmark's RSS watchdog")
    return row


def write_report(rows: list[Row], args, path: Path, idle_rss: int) -> str:
    facts = "\n".join(f"- {key}: {value}" for key, value in args.machine.items())
    lines = [
        "# Abuse suite: hostile requests against `keras-vit serve` (issue 10)",
        "",
        facts,
        "",
        f"`python -m benchmarks.abuse {' '.join(sys.argv[1:])}`; tiny exported ViT; "
        f"load average {os.getloadavg()[0]:.1f} at the end (shared machine); server idle RSS "
        f"{idle_rss / MB:.0f} MB. Peak = kernel VmHWM of the server process, reset before "
        "each attack; 'after' = RSS 1 s after the answer; 'normal p99' = latency of small "
        "REST predicts sent back to back during the attack. Goals: answer <= 5 s, peak <= "
        "baseline + 1 GB, after <= baseline + 300 MB, normal p99 <= 1 s.",
        "",
        "| attack | before (issue 10) | answer | time s | baseline MB | peak MB | after MB "
        "| survived | normal p99 s (n, failed) | goals |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        message = row.message.replace("|", "/").replace("\n", " ")[:90]
        lines.append(
            f"| {row.name} | {BEFORE.get(row.name, 'new')} | {row.answer}: {message} "
            f"| {row.seconds:.2f} | {row.baseline / MB:.0f} | {row.peak / MB:.0f} "
            f"| {row.after / MB:.0f} | {'yes' if row.survived else 'NO'} "
            f"| {row.normal_p99:.3f} ({row.normal_count}, {row.normal_failures}) "
            f"| {'met' if row.meets_goals() else 'MISSED'}"
            + (f" ({'; '.join(row.notes)})" if row.notes else "")
            + " |"
        )
    lines += [
        "",
        f"rest-png-36MP here: {args.png_requests} concurrent requests of {args.png_images} "
        "6000x6000 PNG(s) (the issue's attack is `--png_requests 50 --png_images 8`; a "
        "request over the per-request pixel budget is refused from the headers alone). "
        "The GIF and PNG rows measure the decoder in `keras_vit/decode.py` of this checkout.",
        "",
    ]
    text = "\n".join(lines)
    old = path.read_text() if path.exists() else ""
    sections = [old.find(m) for m in (CONNECTIONS_START, ELEMENTS_START) if m in old]
    kept = old[min(sections) :] if sections else ""
    path.write_text(text + ("\n" + kept if kept else ""))
    return text


ELEMENTS_START = "<!-- element attacks: written by benchmarks/abuse.py --elements -->"


# Where the per-element cost came from (measured in-process on the tiny export, 2 shared
# CPUs; the scripts' numbers are in the paragraphs).
ELEMENTS_CAUSE = [
    "**Where the cost came from.** Profiled in-process on the tiny export (RSS sampling, "
    "the decode graph run stage by stage). (1) *Memory*: the exported decode graph "
    "(`keras_vit/decode.py`) made a float32 model-input image for **every** element, even "
    "when the request had already failed: a skipped element still produced "
    "`zeros([32, 32, 3])` in the `tf.data` decode map, batched, then scattered into a "
    "second `[N, 32, 32, 3]` tensor: 100,000 one-byte strings = 2 x 1.2 GB. (2) *Time*: "
    "every element went through the per-element header map (a `switch_case` over five "
    "header parsers) even when the batch-wide sniffing had already found non-images: "
    "~100-270 µs per element (27 s of the 34 s for 100,000 strings here; the sniffing "
    "itself, vectorised, 0.2 s). (3) *Python objects per element*: `tensor_codec` takes "
    '0.03 s for 100,000 strings, but REST paid twice per `{"b64"}` instance: the JSON '
    "nesting-depth check walked every object through a Python stack (0.9-3 s, against "
    "0.15-0.35 s for `json.loads` itself), then tensors were built element by element "
    "(1.7 s in all for 100,000 instances). "
    "(4) *Kept memory*: TensorFlow's oneDNN build allocates large CPU tensors from a BFC "
    "allocator that never returns its regions; `/proc/self/smaps` showed one 1 GiB "
    "anonymous region with 714 MB resident after 30,000 strings, the same after every "
    "repeat (reused, not leaked), untouched by `malloc_trim` (which gave back 60 MB). With "
    "`TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1` (or oneDNN off) RSS after trim is within 10 MB of "
    "the start. (5) *Pixels*: `serving_pixels` makes a model-input image of every image "
    "of its `[N, h, w, 3]` input: 300 KB of 1x1 uint8 images are 1.2 GB of float32, "
    "within every byte limit.",
    "",
    "**Fixes.** The decode graph refuses empty and non-image elements from the batch-wide "
    "checks before any per-element work and makes no pixels at all for a refused request "
    "(100,000 strings, in-process: 21.8 s and +2.7 GB before, 1.3 s and +160 MB after); "
    "the depth check goes level by level (under 0.1 s) and REST counts the string "
    "elements before building tensors; "
    "the server sets `TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1` (an operator's value wins) and "
    "gives memory back (`malloc_trim`) after every large request on gRPC and REST; and it "
    "admits requests by cost (`serving/server/admission.py`): string elements (and "
    "`serving_pixels` images) counted "
    "(`--max_request_elements`, default 4096), decode memory estimated from the elements "
    "and the image headers, one budget for all requests in flight "
    "(`--max_decode_bytes_in_flight`, default 768 MiB; INVALID_ARGUMENT / 400 over it "
    "alone, RESOURCE_EXHAUSTED / 429 after 3 s without a share). Valid images still cost "
    "~0.25-0.9 ms each in the per-element header and decode maps on this machine, hence "
    "the element limit.",
]


def _replace_section(path: Path, marker: str, section: str) -> None:
    """Puts ``section`` (starting with ``marker``) in ``path``, in place of the old one."""
    text = path.read_text() if path.exists() else ""
    if marker in text:
        before, _, rest = text.partition(marker)
        following = rest.find("\n<!-- ")
        after = rest[following + 1 :] if following >= 0 else ""
    else:
        before, after = text, ""
    parts = [before.rstrip("\n"), section.rstrip("\n")] + ([after.rstrip("\n")] if after else [])
    path.write_text("\n\n".join(p for p in parts if p) + "\n")


def cpu_description() -> str:
    return f"{os.cpu_count()} CPUs ({cpu_model()}; flags: {cpu_flags()})"


def write_elements_report(rows: list[Row], args, path: Path, idle_rss: int) -> str:
    """Keeps every label's rows in ``abuse-elements.json``; rewrites the section of ``path``
    that starts at :data:`ELEMENTS_START` with all of them."""
    store = path.with_name("abuse-elements.json")
    saved = json.loads(store.read_text()) if store.exists() else {}
    new = {row.name: {**row.__dict__, "goals": row.meets_goals()} for row in rows}
    kept = [r for r in saved.get(args.label, {}).get("rows", []) if r["name"] not in new]
    command = f"python -m benchmarks.abuse {shlex.join(sys.argv[1:])}"
    commands = saved.get(args.label, {}).get("commands", [])
    if rows:
        saved[args.label] = {
            "commands": [*[c for c in commands if c != command], command],
            "load": round(os.getloadavg()[0], 1),
            "idle_rss": idle_rss,
            "cpu": cpu_description(),
            "rows": kept + list(new.values()),
        }
        store.write_text(json.dumps(saved, indent=1) + "\n")
    lines = [
        ELEMENTS_START,
        "",
        "## Requests small in bytes, large in elements (issue 18)",
        "",
        "Each request alone, then 4 at once (x4: every answer listed), while a normal client "
        "sends small REST predicts back to back. Time = until the last answer; RSS of the "
        "server: baseline, peak (VmHWM) and 'after' (1 s after the answer). A 'before' "
        "server is the branch's starting commit (`git archive COMMIT | tar -x -C DIR`, then "
        "`--server_checkout DIR`); the watchdog kills a server past `--rss_limit_gb` and a "
        "new one starts for the next row.",
        "",
        *ELEMENTS_CAUSE,
        "",
        "Runs:",
        "",
    ]
    for label, run in saved.items():
        shown = "; then ".join(f"`{c}`" for c in run["commands"])
        lines.append(
            f"- **{label}**: {shown}; {run['cpu']}; idle RSS "
            f"{run['idle_rss'] / MB:.0f} MB; load average {run['load']} at the end."
        )
    lines += [
        "",
        "| request | server | answer | time s | RSS MB baseline / peak / after "
        "| normal p99 s (n, failed) | goals |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, label, row in _rows_by_name(saved):
        message = row["message"].replace("|", "/").replace("\n", " ")[:110]
        notes = f" ({'; '.join(row['notes'])})" if row["notes"] else ""
        lines.append(
            f"| {name} | {label} | {row['answer']}: {message} | {row['seconds']:.2f} "
            f"| {row['baseline'] / MB:.0f} / {row['peak'] / MB:.0f} / "
            f"{row['after'] / MB:.0f} | {row['normal_p99']:.3f} ({row['normal_count']}, "
            f"{row['normal_failures']}) | {'met' if row['goals'] else 'MISSED'}{notes} |"
        )
    lines.append("")
    section = "\n".join(lines)
    _replace_section(path, ELEMENTS_START, section)
    return section


# ----------------------------------------------------------------------------------------
# Connections that hold on without finishing a request: each attack holds its connections
# for a while, sending as it goes, and reports how the server ended them.

# An HTTP/2 client preface and an empty SETTINGS frame, then the SETTINGS ack.
H2_PREFACE = (
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    + b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"
)


def _connect(port: int, count: int, first: bytes = b"") -> tuple[list[socket.socket], int]:
    """``count`` connections (each sends ``first``); also how many could not connect."""
    sockets, failed = [], 0
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if first:
                sock.sendall(first)
            sock.setblocking(False)
            sockets.append(sock)
        except OSError:
            failed += 1
    return sockets, failed


def _hold(sockets, seconds: float, every: float | None = None, payload: bytes = b""):
    """Keeps ``sockets`` open for ``seconds`` (sending ``payload`` on each every ``every``
    seconds); returns when each was closed by the server (or None) and its first bytes."""
    import selectors

    selector = selectors.DefaultSelector()
    for index, sock in enumerate(sockets):
        selector.register(sock, selectors.EVENT_READ, index)
    start = time.monotonic()
    closed_at: list[float | None] = [None] * len(sockets)
    first = [b""] * len(sockets)
    next_send = start + (every or 0.0)

    def closed(index):
        closed_at[index] = time.monotonic() - start
        selector.unregister(sockets[index])

    while any(t is None for t in closed_at) and time.monotonic() - start < seconds:
        if every is not None and time.monotonic() >= next_send:
            for index, sock in enumerate(sockets):
                if closed_at[index] is None:
                    try:
                        sock.send(payload)
                    except BlockingIOError:
                        pass
                    except OSError:
                        closed(index)
            next_send = time.monotonic() + every
        for key, _ in selector.select(0.1):
            index = key.data
            try:
                data = sockets[index].recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                first[index] += data[: max(64 - len(first[index]), 0)]
            else:
                closed(index)
    selector.close()
    for sock in sockets:
        sock.close()
    return closed_at, first


def _outcome(closed_at, first, failed: int, seconds: float) -> str:
    from collections import Counter

    times = sorted(t for t in closed_at if t is not None)
    answers = Counter(
        f.split(b" ", 2)[1].decode() if f.startswith(b"HTTP/1.1 ") else ("h2" if f else "none")
        for f in first
    )
    text = f"{len(times)}/{len(closed_at) + failed} closed by the server in {seconds:.0f} s"
    if times:
        cuts = (
            statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else times * 9
        )
        tenth, ninetieth = cuts[0], cuts[-1]
        text += (
            f" (10% / median / 90% of them by {tenth:.1f} / "
            f"{statistics.median(times):.1f} / {ninetieth:.1f} s)"
        )
    text += "; answers: " + ", ".join(f"{code} x{n}" for code, n in sorted(answers.items()))
    if failed:
        text += f"; {failed} could not connect"
    return text


def connection_attacks(server: WatchedServer, args) -> dict[str, tuple[str, Callable[[], str]]]:
    """name -> (protocol of the normal traffic, attack)."""
    rest, grpc_port, count = server.rest_port, server.grpc_port, args.connection_count
    slow_head = b"POST /v1/models/vit:predict HTTP/1.1\r\nHost: x\r\n"
    body_head = slow_head + b"Content-Length: 1048576\r\n\r\n"
    status = b"GET /v1/models/vit HTTP/1.1\r\nHost: x\r\n\r\n"

    def idle():
        sockets, failed = _connect(rest, count)
        return _outcome(*_hold(sockets, args.idle_hold), failed, args.idle_hold)

    def slowloris():
        sockets, failed = _connect(rest, args.slowloris, slow_head)
        closed_at, first = _hold(sockets, args.slowloris_hold, every=2.0, payload=b"X")
        return _outcome(closed_at, first, failed, args.slowloris_hold)

    def slow_body():
        sockets, failed = _connect(rest, args.slow_bodies, body_head)
        closed_at, first = _hold(sockets, args.body_hold, every=1.0, payload=b" " * 10)
        return _outcome(closed_at, first, failed, args.body_hold)

    def keepalive():
        sockets, failed = _connect(rest, count, status)
        return _outcome(*_hold(sockets, args.idle_hold), failed, args.idle_hold)

    def grpc_idle():
        silent, failed = _connect(grpc_port, count // 2)
        preface, failed_h2 = _connect(grpc_port, count - count // 2, H2_PREFACE)
        closed_at, first = _hold(silent + preface, args.grpc_hold)
        return _outcome(closed_at, first, failed + failed_h2, args.grpc_hold)

    return {
        f"conn-rest-idle-{count}": ("rest", idle),
        f"conn-rest-slowloris-{args.slowloris}": ("rest", slowloris),
        f"conn-rest-slow-body-1MB-x{args.slow_bodies}": ("rest", slow_body),
        f"conn-rest-keepalive-idle-{count}": ("rest", keepalive),
        f"conn-grpc-idle-{count}": ("grpc", grpc_idle),
    }


@dataclass
class ConnRow:
    name: str
    server: str
    outcome: str = ""
    threads_before: int = 0
    threads_peak: int = 0
    baseline: int = 0
    peak: int = 0
    after: int = 0
    survived: bool = True
    normal_median: float = float("nan")
    normal_p99: float = float("nan")
    normal_max: float = float("nan")
    normal_count: int = 0
    normal_failures: int = 0


def run_connection_attack(server: WatchedServer, label: str, name: str, protocol, action):
    row = ConnRow(name, label)
    time.sleep(0.5)
    row.baseline, row.threads_before = server.rss(), server.threads()
    server.reset_peak()
    peak_threads = [row.threads_before]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak_threads[0] = max(peak_threads[0], server.threads())
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    port = server.grpc_port if protocol == "grpc" else server.rest_port
    # Paced (20 requests/s at most): the attacks last minutes on a shared machine.
    with NormalTraffic(port, protocol, pace=0.05) as normal:
        time.sleep(0.3)
        try:
            row.outcome = action()
        except Exception as error:  # noqa: BLE001 - reported as the outcome
            row.outcome = f"{type(error).__name__}: {error}"
    stop.set()
    sampler.join()
    row.threads_peak = peak_threads[0]
    row.peak = server.peak() if server.alive else 0
    time.sleep(1.0)
    row.survived = server.alive and not server.killed_for_rss
    row.after = server.rss() if server.alive else 0
    row.normal_median, row.normal_p99 = normal.median(), normal.p99()
    row.normal_max = max(normal.latencies, default=float("nan"))
    row.normal_count, row.normal_failures = len(normal.latencies), normal.failures
    return row


CONNECTIONS_START = "<!-- connection attacks: written by benchmarks/abuse.py --connections -->"


def write_connections_report(rows: list[ConnRow], args, path: Path) -> str:
    """Keeps every label's rows in ``abuse-connections.json``; rewrites the section of
    ``path`` that starts at :data:`CONNECTIONS_START` with all of them."""
    store = path.with_name("abuse-connections.json")
    saved = json.loads(store.read_text()) if store.exists() else {}
    # A run with --only replaces just its rows of that label.
    new = {row.name: row.__dict__ for row in rows}
    kept = [r for r in saved.get(args.label, {}).get("rows", []) if r["name"] not in new]
    command = f"python -m benchmarks.abuse {shlex.join(sys.argv[1:])}"
    commands = saved.get(args.label, {}).get("commands", [])
    if rows:  # without rows: only the section is written again
        saved[args.label] = {
            "commands": [*[c for c in commands if c != command], command],
            "load": round(os.getloadavg()[0], 1),
            "rows": kept + list(new.values()),
        }
        store.write_text(json.dumps(saved, indent=1) + "\n")
    lines = [
        CONNECTIONS_START,
        "",
        "## Connections that hold on (issue 10's closing gap)",
        "",
        "Each attack opens its connections against the server, holds them for the time "
        "shown (sending as it says) while a normal client sends small predicts, one every "
        "50 ms (REST: a new connection each; gRPC: one channel), then reports how the server "
        "ended the attacking connections. Threads = the server's `/proc/PID/task` count "
        "(every thread, gRPC core's and TensorFlow's too), before and at its peak; RSS "
        "baseline and peak (VmHWM). A 'before' server is an older commit's tree "
        "(`git archive COMMIT | tar -x -C DIR`, then `--server_checkout DIR`). Runs:",
        "",
    ]
    for label, run in saved.items():
        commands = run.get("commands") or [run["command"]]
        shown = "; then ".join(f"`{c}`" for c in commands)
        lines.append(f"- **{label}**: {shown}; load average {run['load']} at the end.")
    lines += [
        "",
        "| attack | server | attacking connections | threads before → peak | RSS MB "
        "baseline → peak | normal requests: median / p99 / max s (n, failed) |",
        "|---|---|---|---|---|---|",
    ]
    for name, label, row in _rows_by_name(saved):
        lines.append(
            f"| {name} | {label} | {row['outcome']} | {row['threads_before']} → "
            f"{row['threads_peak']} | {row['baseline'] / MB:.0f} → {row['peak'] / MB:.0f}"
            f"{'' if row['survived'] else ' (server died)'} | "
            f"{row['normal_median']:.3f} / {row['normal_p99']:.3f} / "
            f"{row['normal_max']:.3f} ({row['normal_count']}, {row['normal_failures']}) |"
        )
    lines.append("")
    section = "\n".join(lines)
    _replace_section(path, CONNECTIONS_START, section)
    return section


def run_elements(server: WatchedServer, base: Path, args) -> int:
    rows = []
    try:
        time.sleep(2)
        idle = server.rss()
        for name in element_attacks(server, args):
            if args.only not in name:
                continue
            if not server.alive:  # the watchdog killed the last one: a fresh server
                server = WatchedServer(
                    base, server.rss_limit, args.server_flags, Path(args.server_checkout)
                )
                time.sleep(2)
            row = run_attack(server, name, element_attacks(server, args)[name])
            print(
                f"{name}: {row.answer} in {row.seconds:.2f}s, peak +"
                f"{(row.peak - row.baseline) / MB:.0f} MB, after +"
                f"{(row.after - row.baseline) / MB:.0f} MB, normal p99 "
                f"{row.normal_p99:.3f}s n={row.normal_count}",
                flush=True,
            )
            rows.append(row)
    finally:
        server.stop()
    print(write_elements_report(rows, args, Path(args.output), idle))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_base_path", help="serve this instead of a tiny export")
    parser.add_argument("--only", default="", help="run the attacks whose name contains this")
    parser.add_argument("--rss_limit_gb", type=float, default=3.0)
    parser.add_argument("--png_requests", type=int, default=2)
    parser.add_argument("--png_images", type=int, default=1)
    add_output_options(parser, "abuse", aliases=["--output"])
    parser.add_argument(
        "--connections",
        action="store_true",
        help="run the connection attacks (idle floods, slowloris, slow bodies) instead",
    )
    parser.add_argument(
        "--elements",
        action="store_true",
        help="run the element attacks (many strings, many tiny images) instead",
    )
    parser.add_argument("--label", default="after", help="the server's name in that table")
    parser.add_argument(
        "--server_checkout",
        default=str(ROOT),
        help="run the server of this checkout (e.g. an older commit's `git archive`)",
    )
    parser.add_argument("--connections_count", dest="connection_count", type=int, default=2000)
    parser.add_argument("--slowloris", type=int, default=500)
    parser.add_argument("--slow_bodies", type=int, default=20)
    parser.add_argument("--idle_hold", type=float, default=55.0)
    parser.add_argument("--slowloris_hold", type=float, default=20.0)
    parser.add_argument("--body_hold", type=float, default=35.0)
    parser.add_argument("--grpc_hold", type=float, default=15.0)
    parser.add_argument("server_flags", nargs="*", help="extra flags for the server (after --)")
    args = parser.parse_args(argv)
    args.output = str(results_path(args))
    args.machine = machine_info(["tensorflow", "grpcio", "protobuf"])
    with tempfile.TemporaryDirectory() as tmp:
        if args.model_base_path:
            base = Path(args.model_base_path)
        else:
            base = Path(tmp) / "vit"
            export_tiny(base)
        server = WatchedServer(
            base, int(args.rss_limit_gb * GB), args.server_flags, Path(args.server_checkout)
        )
        if args.elements:
            return run_elements(server, base, args)
        if args.connections:
            try:
                time.sleep(2)
                rows = []
                for name, (protocol, action) in connection_attacks(server, args).items():
                    if args.only not in name or not server.alive:
                        continue
                    row = run_connection_attack(server, args.label, name, protocol, action)
                    print(row, flush=True)
                    rows.append(row)
            finally:
                server.stop()
            print(write_connections_report(rows, args, Path(args.output)))
            return 0
        try:
            time.sleep(2)
            idle = server.rss()
            rows = []
            for name, action in attacks(server, args).items():
                if args.only not in name:
                    continue
                if not server.alive:
                    print(f"{name}: skipped, the server is gone", flush=True)
                    continue
                row = run_attack(server, name, action)
                print(
                    f"{name}: {row.answer} in {row.seconds:.2f}s, peak +"
                    f"{(row.peak - row.baseline) / MB:.0f} MB, after +"
                    f"{(row.after - row.baseline) / MB:.0f} MB, normal p99 "
                    f"{row.normal_p99:.3f}s n={row.normal_count}",
                    flush=True,
                )
                rows.append(row)
        finally:
            server.stop()
    print(write_report(rows, args, Path(args.output), idle))
    print(f"p50 of all normal p99s: {statistics.median([r.normal_p99 for r in rows]):.3f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
