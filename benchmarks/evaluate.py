"""How long ``keras-vit evaluate`` takes on the digits held-out set: in-process vs served.

Trains the ``digits`` recipe (or takes ``--model RUN_DIR``), exports it, starts
``python -m serving.server`` in a subprocess, then times, round-robin,
``keras_vit.evaluate.runner.evaluate`` with the in-process model and through
the gRPC and REST clients on the same 359 held-out PNG files (batch 32). It
also times each mode once end to end through the ``keras-vit evaluate``
command (process start, TensorFlow import, model load included). Writes
``benchmarks/results/evaluate.md``.

    python -m benchmarks.evaluate [--model RUN_DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import (
    ROOT,
    ServedModel,
    add_output_options,
    machine_info,
    markdown_table,
    results_path,
    write_results,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a keras-vit run directory (default: train digits)")
    parser.add_argument("--workdir", default=str(ROOT / "benchmarks" / ".cache" / "evaluate"))
    parser.add_argument("--repeats", type=int, default=3)
    add_output_options(parser, "evaluate")
    args = parser.parse_args(argv)
    return run(args)


def run(args) -> int:
    from keras_vit.evaluate.predictors import LocalPredictor, ServerPredictor
    from keras_vit.evaluate.runner import evaluate
    from keras_vit.loading import load_pretrained
    from keras_vit.training.data import image_folder
    from keras_vit.training.digits import write_digits
    from serving.client import ServingClient
    from serving.export import export_saved_model

    workdir = Path(args.workdir)
    folder = write_digits(workdir / "digits", image_size=32)
    model_dir = args.model
    if model_dir is None:
        from keras_vit.demo import train_digits

        model_dir = workdir / "model"
        if not (model_dir / "model.keras").exists():
            train_digits(workdir)
    model = load_pretrained(str(model_dir))
    scratch = tempfile.TemporaryDirectory(prefix="eval-bench-")
    base = Path(scratch.name) / "vit"
    export_saved_model(model, base, version=1)
    data = image_folder(folder.test_dir)
    server = ServedModel(base).start()
    clients = {}
    try:
        for protocol in ("grpc", "rest"):
            port = server.grpc_port if protocol == "grpc" else server.rest_port
            clients[protocol] = ServingClient(
                f"127.0.0.1:{port}", protocol=protocol, batch_size=32, timeout=120
            )
        predictors = {
            "in-process": LocalPredictor(model),
            "server, gRPC": ServerPredictor(clients["grpc"]),
            "server, REST": ServerPredictor(clients["rest"]),
        }
        out = Path(scratch.name) / "reports"
        # One untimed pass each: traces, warm-up, connections.
        for predictor in predictors.values():
            evaluate(predictor, data, out / "warm", batch_size=32, progress=False)
        samples = {name: [] for name in predictors}
        loops = {name: [] for name in predictors}
        results = {}
        for round_ in range(args.repeats):
            names = list(predictors)
            names = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in names:
                started = time.perf_counter()
                result = evaluate(predictors[name], data, out / "r", batch_size=32, progress=False)
                samples[name].append(time.perf_counter() - started)
                results[name] = result.metrics
                loops[name].append(result.metrics["seconds"])
        cli = {}
        for name, extra in (
            ("in-process", ["--model", str(model_dir)]),
            ("server, gRPC", ["--server", f"127.0.0.1:{server.grpc_port}", "--protocol", "grpc"]),
            ("server, REST", ["--server", f"127.0.0.1:{server.rest_port}", "--protocol", "rest"]),
        ):
            command = [sys.executable, "-m", "keras_vit", "evaluate", *extra]
            command += [
                "--data",
                str(folder.test_dir),
                "--output",
                str(out / "cli"),
                "--no-progress",
            ]
            started = time.perf_counter()
            subprocess.run(command, check=True, cwd=ROOT, capture_output=True)
            cli[name] = time.perf_counter() - started
    finally:
        for client in clients.values():
            client.close()
        server.stop()
        scratch.cleanup()

    rows = []
    for name, times in samples.items():
        m = results[name]
        median = statistics.median(times)
        loop = statistics.median(loops[name])
        latency = m.get("latency") or {}
        rows.append(
            [
                name,
                m["num_images"],
                f"{loop:.2f}",
                f"{m['num_images'] / loop:.0f}",
                f"{median:.2f}",
                f"{min(times):.2f}-{max(times):.2f}",
                f"{cli[name]:.1f}",
                f"{m['accuracy']:.4f}",
                f"{latency['p50_ms']:.1f} / {latency['p99_ms']:.1f}" if latency else "-",
            ]
        )
    table = markdown_table(
        [
            "mode",
            "images",
            "classify s (median)",
            "images/s",
            "evaluate() s (median)",
            "range s",
            "`keras-vit evaluate` wall s",
            "accuracy",
            "request p50 / p99 ms",
        ],
        rows,
    )
    body = (
        f"Digits held-out set ({folder.num_test} PNG files, 32x32), the `digits` recipe's model, "
        f"batch 32, {args.repeats} timed rounds after one warm-up round, modes interleaved; the "
        "server is `python -m serving.server` in a subprocess on the same machine. "
        "*classify* is the loop that reads, decodes and classifies every file (requests included); "
        "`evaluate()` adds the metrics, the five plots and report.html; "
        "the command's wall time also includes the process start, imports and model load.\n\n"
        + table
        + "\n"
    )
    info = machine_info(["tensorflow", "keras", "scikit-learn", "matplotlib"])
    print(body)
    title = "keras-vit evaluate: in-process vs served"
    print("wrote", write_results(results_path(args), title, info, body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
