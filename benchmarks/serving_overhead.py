"""Serving benchmark: the local TF-Serving-compatible server vs the in-process signature.

Exports a ViT (default ViT-B/16, random weights) with ``serving.export``, starts
``python -m serving.server`` with batching off and on, and drives it through
``serving.client.ServingClient`` over gRPC and REST at concurrency 1, 4 and 16
with real JPEGs. The peer is the same SavedModel's ``serving_default`` called
in-process on the same images, in the same run. It reports p50/p95/p99 latency
and throughput, and the ratios to the in-process call, in
``benchmarks/results/serving.md`` (``serving-quick.md`` with ``--quick``).

    python -m benchmarks.serving_overhead            # ViT-B/16, a few minutes on 2 cores
    python -m benchmarks.serving_overhead --quick    # a tiny ViT, well under a minute
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.harness import (
    ServedModel,
    add_output_options,
    export_tiny,
    machine_info,
    results_path,
    write_results,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def sample_jpegs(count: int, size: int) -> list[bytes]:
    """Real photos (scikit-image, scikit-learn), cropped and resized to ``size`` px JPEGs."""
    from PIL import Image
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    photos += list(load_sample_images().images)
    out = []
    for i in range(count):
        image = Image.fromarray(photos[i % len(photos)]).convert("RGB")
        shift = (i // len(photos)) * 7
        image = image.crop((shift, shift, image.width - shift, image.height - shift))
        buffer = io.BytesIO()
        image.resize((size, size), Image.BILINEAR).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def export_model(base: Path, quick: bool) -> Path:
    if quick:
        return export_tiny(base)
    from keras_vit import ViTClassifier
    from serving.export import export_saved_model

    model = ViTClassifier.from_preset("vit-base-patch16-224", load_weights=False)
    return Path(export_saved_model(model, base, version=1))


class InProcess:
    """The peer: the same SavedModel's ``serving_default`` called in this process."""

    def __init__(self, version_dir: Path, images: list[bytes]):
        import tensorflow as tf

        self.tf = tf
        self.images = images
        self.signature = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
        self.signature(image_bytes=tf.constant(images[:1]))  # trace and warm up

    def _call(self, chunk: list[bytes]) -> float:
        start = time.perf_counter()
        self.signature(image_bytes=self.tf.constant(chunk))
        return time.perf_counter() - start

    def latency(self, repeats: int) -> float:
        """Median seconds of a one-image call."""
        n = len(self.images)
        return statistics.median(self._call([self.images[i % n]]) for i in range(repeats))

    def throughput(self, batch: int, repeats: int) -> float:
        """Median images/s of ``batch``-image calls."""
        n = len(self.images)
        chunks = [[self.images[(i * batch + j) % n] for j in range(batch)] for i in range(repeats)]
        return statistics.median(batch / self._call(chunk) for chunk in chunks)


def drive(client, images: list[bytes], concurrency: int, requests: int) -> dict:
    """``concurrency`` threads send one-image predict requests until ``requests`` are done."""
    latencies: list[float] = []
    errors: list[BaseException] = []
    counter = iter(range(requests))
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            start = time.perf_counter()
            try:
                client.predict([images[i % len(images)]])
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(error)
                return
            with lock:
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, first: {errors[0]!r}")
    return {
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "p99": percentile(latencies, 99),
        "throughput": len(latencies) / elapsed,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=None, help="requests per cell")
    add_output_options(
        parser, "serving", quick="tiny ViT instead of ViT-B/16", aliases=["--output"]
    )
    args = parser.parse_args(argv)

    from serving.client import ServingClient

    size = 32 if args.quick else 224
    images = sample_jpegs(32, size)
    per_cell = args.requests or (64 if args.quick else 16)
    concurrencies = (1, 4, 16)
    work = Path(tempfile.mkdtemp(prefix="keras-vit-bench-"))
    base = work / "vit"
    started = time.perf_counter()
    version_dir = export_model(base, args.quick)
    print(f"exported {version_dir} in {time.perf_counter() - started:.1f}s", flush=True)
    local = InProcess(version_dir, images)
    repeats = 16 if args.quick else 6

    batching = work / "batching_parameters.txt"
    # Tuned for a CPU: no allowed_batch_sizes, since padding a batch of 5 up to 8 only
    # wastes cores (an earlier run with sizes 4/8/16 padded lone requests to 4 and gave
    # 4.6x the in-process latency at concurrency 1); one batch thread, as the model's own
    # ops already use every core; a short timeout, so that lone requests wait little.
    batching.write_text(
        "max_batch_size { value: 16 }\n"
        "batch_timeout_micros { value: 10000 }\n"
        "max_enqueued_batches { value: 64 }\n"
        "num_batch_threads { value: 1 }\n"
    )
    info = machine_info(["tensorflow", "keras", "grpcio"])
    rows = []
    for batching_file in (None, batching):
        flags = ["--enable_batching", f"--batching_parameters_file={batching_file}"]
        server = ServedModel(base, flags if batching_file else ()).start()
        try:
            for protocol in ("grpc", "rest"):
                port = server.grpc_port if protocol == "grpc" else server.rest_port
                client = ServingClient(
                    f"127.0.0.1:{port}", model_name="vit", protocol=protocol,
                    batch_size=1, max_concurrency=max(concurrencies), timeout=120, image_size=size,
                )  # fmt: skip
                drive(client, images, 4, 8)  # warm the connections and the server
                for concurrency in concurrencies:
                    # The peer is timed right before each cell, so that both see the same
                    # load on a shared machine: one-image latency, and batch-16 throughput.
                    peer_p50 = local.latency(repeats)
                    peer_rate = local.throughput(16, 2)
                    cell = drive(client, images, concurrency, max(per_cell, 2 * concurrency))
                    cell.update(
                        protocol=protocol, batching=batching_file is not None,
                        concurrency=concurrency, peer_p50=peer_p50, peer_rate=peer_rate,
                    )  # fmt: skip
                    rows.append(cell)
                    print(
                        f"{protocol:4s} batching={cell['batching']!s:5s} c={concurrency:2d} "
                        f"p50={cell['p50'] * 1e3:7.1f}ms p95={cell['p95'] * 1e3:7.1f}ms "
                        f"p99={cell['p99'] * 1e3:7.1f}ms {cell['throughput']:6.2f} img/s | "
                        f"in-process p50={peer_p50 * 1e3:7.1f}ms batch-16 {peer_rate:6.2f} img/s",
                        flush=True,
                    )
                client.close()
        finally:
            server.stop()
    report(args, info, rows, per_cell)
    return 0


def report(args, info, rows, per_cell) -> None:
    lines = [
        f"- Model: {'tiny ViT (32 px)' if args.quick else 'ViT-B/16 (224 px), random weights'}; "
        f"{per_cell} one-image requests per cell (at least 2 per client thread).",
        "- Peer (same run, timed right before each cell): the same SavedModel's "
        "`serving_default` called in-process — median one-image latency and batch-16 "
        "throughput.",
        "- Ratios: `p50 / in-process p50` (goal ≤ 1.10 at concurrency 1) and "
        "`throughput / in-process batch throughput` (goal ≥ 0.9 at concurrency 16 with batching).",
        "- Load average at the end (1/5/15 min): "
        f"{' / '.join(f'{v:.2f}' for v in os.getloadavg())}.",
        "",
        "| protocol | batching | concurrency | p50 ms | p95 ms | p99 ms | img/s "
        "| in-process p50 ms | in-process batch img/s | p50 / in-process "
        "| img/s / in-process batch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['protocol']} | {'on' if row['batching'] else 'off'} | {row['concurrency']} "
            f"| {row['p50'] * 1e3:.1f} | {row['p95'] * 1e3:.1f} | {row['p99'] * 1e3:.1f} "
            f"| {row['throughput']:.2f} | {row['peer_p50'] * 1e3:.1f} | {row['peer_rate']:.2f} "
            f"| {row['p50'] / row['peer_p50']:.2f} | {row['throughput'] / row['peer_rate']:.2f} |"
        )
    title = "Serving benchmark: local server through the client vs in-process signature"
    print(write_results(results_path(args), title, info, "\n".join(lines)))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
