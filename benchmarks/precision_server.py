"""fp32 vs bf16 vs int8 versions end to end through our server (gRPC, JPEG bytes).

Serves the three ViT-B/16 versions that ``python -m benchmarks.precision`` wrote
(``benchmarks/.cache/precision/{fp32,bf16,int8}``; run it first) with
``python -m serving.server`` (``keras-vit serve``), one server process per
version, all started before timing. Then, in interleaved rounds (the order
rotates each round), ``serving.client.ServingClient`` sends one-JPEG
``Predict`` requests (640x480 photos) over gRPC at concurrency 1 and 8:
p50/p99 latency and img/s, medians over rounds. Also the memory of each
server process: RSS at idle (loaded, warmed up) and its peak (VmHWM) after
the load.

    .venv/bin/python -m benchmarks.precision_server [--rounds 3] [--requests 48]

Writes ``benchmarks/results/precision-server.md`` (``--out`` to change it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from benchmarks.harness import (
    ROOT,
    ServedModel,
    add_output_options,
    machine_info,
    markdown_table,
    results_path,
    write_results,
)
from benchmarks.serving_overhead import drive

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CACHE = ROOT / "benchmarks" / ".cache" / "precision"
VARIANTS = ("fp32", "bf16", "int8")


def memory_mib(pid: int) -> dict[str, float]:
    found = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024
    return found


def request_jpegs() -> list[bytes]:
    from benchmarks.precision import request_jpegs as jpegs

    return jpegs()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=48, help="requests per cell and round")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--flags", nargs="*", default=[], help="extra server flags")
    add_output_options(parser, "precision-server")
    args = parser.parse_args(argv)

    from serving.client import ServingClient

    started = time.perf_counter()
    images = request_jpegs()
    servers, clients, idle = {}, {}, {}
    try:
        for variant in VARIANTS:
            base = CACHE / variant
            if not (base / "1").is_dir():
                raise SystemExit(f"{base}/1 is missing: run python -m benchmarks.precision first")
            servers[variant] = ServedModel(base, flags=args.flags)
            servers[variant].start()  # until the model is AVAILABLE
            clients[variant] = ServingClient(
                f"127.0.0.1:{servers[variant].grpc_port}", protocol="grpc", timeout=300
            )
            idle[variant] = memory_mib(servers[variant].pid)["VmRSS"]
            print(f"{variant} served; idle RSS {idle[variant]:.0f} MiB", file=sys.stderr)
        for client in clients.values():  # one more warm-up through the client path
            drive(client, images, 2, 4)
        results: dict[tuple[str, int], list[dict]] = {}
        for round_ in range(args.rounds):
            order = list(VARIANTS[round_ % 3 :] + VARIANTS[: round_ % 3])
            for concurrency in args.concurrency:
                for variant in order:
                    cell = drive(clients[variant], images, concurrency, args.requests)
                    results.setdefault((variant, concurrency), []).append(cell)
                    print(
                        f"round {round_} {variant} c={concurrency}: "
                        f"{cell['throughput']:.2f} img/s p50 {1000 * cell['p50']:.0f} ms",
                        file=sys.stderr,
                    )
        peak = {v: memory_mib(servers[v].pid)["VmHWM"] for v in VARIANTS}
    finally:
        for client in clients.values():
            client.close()
        for server in servers.values():
            server.stop()

    rows = []
    for concurrency in args.concurrency:
        bf16 = statistics.median(c["throughput"] for c in results[("bf16", concurrency)])
        for variant in VARIANTS:
            cells = results[(variant, concurrency)]
            rate = statistics.median(c["throughput"] for c in cells)
            rows.append(
                [
                    variant,
                    concurrency,
                    f"{rate:.2f} [{min(c['throughput'] for c in cells):.2f}–"
                    f"{max(c['throughput'] for c in cells):.2f}]",
                    f"{1000 * statistics.median(c['p50'] for c in cells):.0f}",
                    f"{1000 * statistics.median(c['p99'] for c in cells):.0f}",
                    f"{rate / bf16:.2f}",
                ]
            )
    memory = [[v, f"{idle[v]:.0f}", f"{peak[v]:.0f}"] for v in VARIANTS]
    int8 = statistics.median(c["throughput"] for c in results[("int8", max(args.concurrency))])
    bf16 = statistics.median(c["throughput"] for c in results[("bf16", max(args.concurrency))])
    verdict = "met" if int8 / bf16 >= 1.4 else "MISSED"
    load = os.getloadavg()
    body = [
        "ViT-B/16 (random weights) versions of `benchmarks/precision.py`'s run, each served "
        "by its own `python -m serving.server` process (server defaults"
        + (f" + {' '.join(args.flags)}" if args.flags else "")
        + "), one 640x480 JPEG per `Predict` request over gRPC (`ServingClient`). "
        f"{args.rounds} interleaved rounds of {args.requests} requests per cell; medians "
        "over rounds [min–max]. The machine is shared with other agents: load average "
        f"at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) on "
        f"{os.cpu_count()} CPUs.",
        "",
        markdown_table(["version", "concurrency", "img/s", "p50 ms", "p99 ms", "× bf16"], rows),
        "",
        f"Goal (concurrency {max(args.concurrency)}): int8 ≥ 1.4× bf16: "
        f"{int8 / bf16:.2f}× — {verdict}.",
        "",
        "## Memory per server process (one replica)",
        "",
        markdown_table(["version", "idle RSS MiB (loaded, warmed up)", "peak RSS MiB"], memory),
        f"\nTotal {time.perf_counter() - started:.0f} s.",
    ]
    info = machine_info(["tensorflow", "openvino", "nncf"])
    title = "fp32 vs bf16 vs int8 through our server"
    path = write_results(results_path(args), title, info, "\n".join(body))
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
