"""Zero-downtime rollout, measured (issue 10, section 3).

Serves version 1 of a tiny ViT export with ``keras-vit serve``'s server, runs 8
gRPC clients back to back (one JPEG per Predict), writes version 2 into the base
path (exported beside it, then renamed in, as a deployment would), and once
version 1 is unloaded deletes its folder. Reports the failed requests, when the
first request was answered by version 2, when the server reported version 2
AVAILABLE and version 1 END (polled through GetModelStatus every 5 ms), and the
latency before, during and after the rollout. Writes
``benchmarks/results/rollout.md``.

    python -m benchmarks.rollout [--concurrency 8] [--seconds_after 3]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import (
    ServedModel,
    add_output_options,
    export_tiny,
    machine_info,
    results_path,
    write_results,
)

AVAILABLE, END = 30, 50  # ModelVersionStatus.State


def export(base: Path, version: int, seed: int) -> Path:
    import keras

    keras.utils.set_random_seed(seed)
    return export_tiny(base, version)


def jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds_before", type=float, default=3.0)
    parser.add_argument("--seconds_after", type=float, default=3.0)
    parser.add_argument("--poll_seconds", type=int, default=1)
    add_output_options(parser, "rollout", aliases=["--output"])
    args = parser.parse_args(argv)

    import grpc
    from tensorflow_serving.apis import (
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    from serving import tensor_codec

    info = machine_info(["tensorflow", "grpcio"])
    tmp = Path(tempfile.mkdtemp(prefix="rollout-"))
    base = tmp / "vit"
    export(base, 1, seed=1)
    export(tmp / "staging", 2, seed=2)  # written beside the base path, moved in later
    server = ServedModel(base, [f"--file_system_poll_wait_seconds={args.poll_seconds}"])
    server.start()
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "vit"
        tensor_codec.string_tensor([jpeg()], out=request.inputs["image_bytes"])
        records: list[tuple[float, float, int, str]] = []  # (start, end, version, error)
        events: dict[str, float] = {}
        stop = threading.Event()

        def client():
            while not stop.is_set():
                start = time.monotonic()
                try:
                    response = predict(request, timeout=30)
                    records.append((start, time.monotonic(), response.model_spec.version.value, ""))
                except grpc.RpcError as error:
                    records.append((start, time.monotonic(), 0, error.code().name))

        def monitor():
            query = get_model_status_pb2.GetModelStatusRequest()
            query.model_spec.name = "vit"
            while not stop.is_set():
                states = {s.version: s.state for s in status(query, timeout=5).model_version_status}
                if states.get(2) == AVAILABLE:
                    events.setdefault("v2 AVAILABLE", time.monotonic())
                if states.get(1) == END:
                    events.setdefault("v1 END (unloaded)", time.monotonic())
                time.sleep(0.005)

        threads = [threading.Thread(target=client) for _ in range(args.concurrency)]
        threads.append(threading.Thread(target=monitor))
        for thread in threads:
            thread.start()
        time.sleep(args.seconds_before)
        written = time.monotonic()
        os.rename(tmp / "staging" / "2", base / "2")
        deadline = written + 120
        while "v1 END (unloaded)" not in events and time.monotonic() < deadline:
            time.sleep(0.01)
        shutil.rmtree(base / "1", ignore_errors=True)
        events["v1 folder deleted"] = time.monotonic()
        time.sleep(args.seconds_after)
        stop.set()
        for thread in threads:
            thread.join(60)
        channel.close()
    finally:
        server.stop(grace=40)

    failures = [r for r in records if r[2] == 0]
    first_v2 = min((end for _, end, version, _ in records if version == 2), default=float("nan"))
    last_v1 = max((end for _, end, version, _ in records if version == 1), default=float("nan"))
    unloaded = events.get("v1 END (unloaded)", float("nan"))

    def latency(select) -> str:
        values = [(end - start) * 1000 for start, end, _, _ in records if select(start)]
        if not values:
            return "n/a"
        return f"p50 {np.percentile(values, 50):.1f} ms, p99 {np.percentile(values, 99):.1f} ms"

    lines = [
        f"`python -m benchmarks.rollout {' '.join(sys.argv[1:])}`: tiny ViT export, gRPC "
        f"Predict of one 64x48 JPEG, {args.concurrency} clients back to back, "
        f"`--file_system_poll_wait_seconds={args.poll_seconds}`. "
        "Times in seconds after version 2 was renamed into the base path.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| requests | {len(records)} |",
        f"| failed requests | {len(failures)} |",
        f"| first answer by version 2 | {first_v2 - written:+.3f} s |",
    ]
    lines += [
        f"| {name} | {when - written:+.3f} s |"
        for name, when in sorted(events.items(), key=lambda e: e[1])
    ]  # noqa: E501
    lines += [
        f"| last answer by version 1 | {last_v1 - written:+.3f} s |",
        f"| answers by version 1 / 2 | {sum(r[2] == 1 for r in records)} / "
        f"{sum(r[2] == 2 for r in records)} |",
        f"| latency before the rollout | {latency(lambda t: t < written)} |",
        f"| latency from write to unload | {latency(lambda t: written <= t <= unloaded)} |",
        f"| latency after the unload | {latency(lambda t: t > unloaded)} |",
        "",
    ]
    if failures:
        lines.append(f"Failures: {sorted({r[3] for r in failures})}")
    text = "\n".join(lines)
    title = "Rollout under load: version 2 in, version 1 out (issue 10)"
    write_results(results_path(args), title, info, text)
    print(text)
    shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
