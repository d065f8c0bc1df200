"""Load test for any TF Serving endpoint: the local server, a Kubernetes service, or Vertex AI.

Sends real JPEGs through the client library (``serving.client``) at one or more
concurrency levels and reports requests/s, images/s and latency percentiles.
Every level is bounded by ``--requests`` and ``--duration``. Throughput is also
given relative to the first (lowest) level, measured in the same run.

Examples::

    python -m benchmarks.loadtest --target localhost:8500 --protocol grpc
    python -m benchmarks.loadtest --target http://vit.default.svc:8501 --protocol rest \\
        --concurrency 1,8,32 --requests 500 --duration 60 --images photos/
    python -m benchmarks.loadtest --protocol vertex --endpoint 1234567890 \\
        --project my-project --region europe-west4 --concurrency 1,4
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.harness import add_output_options, machine_info, results_path, write_results
from serving.client import ServingClient, ServingError, VertexClient

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
MAX_CONCURRENCY = 256


@dataclass
class LevelResult:
    """What one concurrency level measured."""

    concurrency: int
    batch_size: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    error_codes: dict[str, int]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def default_images() -> list[tuple[str, bytes]]:
    """Real photos as JPEGs: scikit-image's and scikit-learn's sample images, native sizes."""
    from PIL import Image
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = {name: getattr(data, name)() for name in ("astronaut", "chelsea", "coffee", "rocket")}
    sample = load_sample_images()
    for name, array in zip(sample.filenames, sample.images, strict=True):
        photos[Path(name).stem] = array
    out = []
    for name, array in photos.items():
        buffer = io.BytesIO()
        Image.fromarray(array).convert("RGB").save(buffer, format="JPEG", quality=90)
        out.append((f"{name}.jpg", buffer.getvalue()))
    return out


def load_images(paths: list[str]) -> list[tuple[str, bytes]]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            files.append(path)
        else:
            raise SystemExit(f"error: no such image file or directory: {raw}")
    if not files:
        raise SystemExit(f"error: no .jpg/.jpeg/.png images in {paths}")
    return [(str(p), p.read_bytes()) for p in files]


def make_client(args: argparse.Namespace, concurrency: int) -> ServingClient | VertexClient:
    common = dict(
        timeout=args.timeout,
        retries=args.retries,
        batch_size=args.batch_size,
        # Each predict() call is one request; sizing the pools to the number of workers lets
        # them share one channel / HTTP session, as an application would.
        max_concurrency=concurrency,
    )
    if args.protocol == "vertex":
        credentials = None
        if args.anonymous_credentials:
            from google.auth.credentials import AnonymousCredentials

            credentials = AnonymousCredentials()
        return VertexClient(
            args.endpoint, args.project, args.region, credentials, base_url=args.base_url, **common
        )
    return ServingClient(
        args.target,
        args.model_name,
        args.protocol,
        version=args.model_version,
        version_label=args.model_version_label,
        signature_name=args.signature_name,
        **common,
    )


def run_level(args: argparse.Namespace, images: list[bytes], concurrency: int) -> LevelResult:
    client = make_client(args, concurrency)
    batches = [
        [images[(start + j) % len(images)] for j in range(args.batch_size)]
        for start in range(len(images))
    ]
    try:
        for i in range(args.warmup):  # not measured: connections, server warm-up
            try:
                client.predict(batches[i % len(batches)])
            except ServingError:
                pass
        lock = threading.Lock()
        state = {"issued": 0}
        latencies: list[float] = []
        codes: Counter[str] = Counter()
        start = time.perf_counter()
        stop_at = start + args.duration

        def worker() -> None:
            while True:
                with lock:
                    ticket = state["issued"]
                    if ticket >= args.requests or time.perf_counter() >= stop_at:
                        return
                    state["issued"] += 1
                began = time.perf_counter()
                try:
                    client.predict(batches[ticket % len(batches)])
                except ServingError as error:
                    with lock:
                        codes[error.code] += 1
                    continue
                elapsed = (time.perf_counter() - began) * 1000.0
                with lock:
                    latencies.append(elapsed)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - start
    finally:
        client.close()
    return LevelResult(
        concurrency=concurrency,
        batch_size=args.batch_size,
        requests=len(latencies),
        errors=sum(codes.values()),
        seconds=seconds,
        latencies_ms=latencies,
        error_codes=dict(codes),
    )


def report(args: argparse.Namespace, results: list[LevelResult], image_names: list[str]) -> str:
    target = args.endpoint if args.protocol == "vertex" else args.target
    base = results[0].rps if results and results[0].rps > 0 else float("nan")
    lines = [
        f"Target `{target}` over {args.protocol}"
        + ("" if args.protocol == "vertex" else f", model `{args.model_name}`")
        + f"; {len(image_names)} real images cycled ({', '.join(image_names[:8])}"
        + (", ..." if len(image_names) > 8 else "")
        + f"); batch {args.batch_size} image(s) per request; at most {args.requests} requests"
        f" or {args.duration:g} s per level, after {args.warmup} warm-up requests.",
        f"Command: `{' '.join(['python -m benchmarks.loadtest', *sys.argv[1:]])}`",
        "",
        "| concurrency | requests | errors | requests/s | images/s | p50 ms | p90 ms | p95 ms "
        f"| p99 ms | max ms | requests/s ÷ c={results[0].concurrency if results else 1} |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        maximum = max(r.latencies_ms) if r.latencies_ms else float("nan")
        lines.append(
            f"| {r.concurrency} | {r.requests} | {r.errors} | {r.rps:.2f} | "
            f"{r.rps * r.batch_size:.2f} | {r.percentile(50):.1f} | {r.percentile(90):.1f} | "
            f"{r.percentile(95):.1f} | {r.percentile(99):.1f} | {maximum:.1f} | "
            f"{r.rps / base:.2f} |"
        )
    errors = {k: v for r in results for k, v in r.error_codes.items()}
    if errors:
        lines += ["", "Errors by code: " + ", ".join(f"{k}: {v}" for k, v in errors.items())]
    lines += [
        "",
        "Latency is measured per request around `predict()` (client encoding, network, server);"
        " percentiles use linear interpolation. Median latency of the first level: "
        + (
            f"{statistics.median(results[0].latencies_ms):.1f} ms."
            if results and results[0].latencies_ms
            else "n/a."
        ),
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Load-test a TF Serving endpoint (local server, Kubernetes service, Vertex AI)"
        " with real images; reports requests/s and latency percentiles.",
    )
    parser.add_argument("--protocol", choices=("grpc", "rest", "vertex"), default="grpc")
    parser.add_argument(
        "--target",
        default="localhost:8500",
        help="HOST:PORT (gRPC 8500, REST 8501) or http(s):// URL for REST",
    )
    parser.add_argument("--model-name", default="vit")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model-version", type=int)
    which.add_argument("--model-version-label")
    parser.add_argument("--signature-name", default="serving_default")
    vertex = parser.add_argument_group("Vertex AI (--protocol vertex)")
    vertex.add_argument("--endpoint", help="endpoint id, resource name or full :predict URL")
    vertex.add_argument("--project")
    vertex.add_argument("--region")
    vertex.add_argument("--base-url", help="replace https://REGION-aiplatform.googleapis.com")
    vertex.add_argument(
        "--anonymous-credentials",
        action="store_true",
        help="send no Google credentials (local emulators and fakes)",
    )
    parser.add_argument(
        "--images",
        nargs="+",
        metavar="PATH",
        help="image files or directories (default: scikit-image/scikit-learn "
        "sample photos as JPEGs)",
    )
    parser.add_argument(
        "--concurrency",
        default="1,4,16",
        help="comma-separated numbers of concurrent clients (default 1,4,16)",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="images per request")
    parser.add_argument("--requests", type=int, default=200, help="max requests per level")
    parser.add_argument("--duration", type=float, default=30.0, help="max seconds per level")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured requests per level")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument(
        "--retries",
        type=int,
        default=0,
        help="retries on UNAVAILABLE (default 0: count overload as errors)",
    )
    add_output_options(parser, "loadtest", aliases=["--output"], note="; '-': none")
    parser.add_argument("--json", help="also write the raw numbers to this JSON file")
    args = parser.parse_args(argv)
    try:
        args.levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--concurrency must be comma-separated integers, got {args.concurrency!r}")
    if not args.levels or any(not 1 <= c <= MAX_CONCURRENCY for c in args.levels):
        parser.error(f"each concurrency must be between 1 and {MAX_CONCURRENCY}")
    if args.requests < 1 or args.duration <= 0 or args.batch_size < 1 or args.warmup < 0:
        parser.error("--requests, --duration and --batch-size must be positive")
    if args.protocol == "vertex" and not args.endpoint:
        parser.error("--protocol vertex needs --endpoint")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    named = load_images(args.images) if args.images else default_images()
    images = [data for _, data in named]
    results = []
    for concurrency in args.levels:
        result = run_level(args, images, concurrency)
        print(
            f"concurrency {concurrency}: {result.requests} ok, {result.errors} errors, "
            f"{result.rps:.2f} req/s, p50 {result.percentile(50):.1f} ms, "
            f"p99 {result.percentile(99):.1f} ms",
            file=sys.stderr,
        )
        results.append(result)
    text = report(args, results, [os.path.basename(n) for n, _ in named])
    print(text)
    if args.out != "-":
        write_results(results_path(args), "Load test", machine_info(["grpcio"]), text)
    if args.json:
        rows = [asdict(r) | {"rps": r.rps} for r in results]
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 1 if any(r.requests == 0 for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
