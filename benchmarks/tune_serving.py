"""Tunes TF Serving's batching and thread settings for a pod of C cores, over our server.

Exports ViT-B/16 (random weights) once, then, for each setting, starts our
TF-Serving-compatible server (``python -m serving.server`` with TF Serving's
flags) pinned to C CPUs, drives it over gRPC with real JPEGs at concurrency 1,
4 and 16 and records throughput, p50/p99 latency, the server's CPU time per
image and its batch sizes. Clients form a closed loop (each sends its next
one-image request when the last one is answered), as the serving benchmarks
here do. Each level is warmed up first (two requests per client, not
measured), then measured for ``--window`` seconds.

The sweep is staged, so that a full run fits in about 10 minutes on 2 cores
(each server start alone costs 15-25 s there: importing TensorFlow, loading
the model, replaying its warm-up):

1. **anchors**: TF Serving's defaults (no batching; intra/inter-op threads 0,
   which TensorFlow resolves to the C schedulable CPUs) and the "common
   mistake" (TF Serving's documented example batching file, timeout 0, with
   ``num_batch_threads`` = C);
2. **coarse** (timeout 2 ms): how the C cores are split between batches: the
   previous manifests' batching (batch 8), one batch of up to 16 at a time on
   all C cores, C batches at once on one core each, C batch threads sharing a
   pool of C threads;
3. **refine** around the best so far, while the time budget lasts: the batch
   size x2, the timeout x4 and /4, the batch size /2, padding to
   ``allowed_batch_sizes``, the thread pools without batching;
4. **confirm**: the defaults and the best setting measured once more, minutes
   after their first measurement; the gain uses the medians of both.

The objective is :func:`score`. Results: ``benchmarks/results/tune_serving.md``.

    python benchmarks/tune_serving.py                 # ViT-B/16, C = 2, about 10 minutes
    python benchmarks/tune_serving.py --quick         # tiny ViT, short windows: a smoke run
    python benchmarks/tune_serving.py --cores 4 --window 20 --budget 1200
"""

from __future__ import annotations

import argparse
import io
import math
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
# The checkout first: this folder's serving.py must not shadow the serving package.
sys.path.insert(0, str(ROOT))

from benchmarks.common import ServerProcess, machine_info, markdown_table  # noqa: E402
from benchmarks.loadtest import default_images, parse_args, run_level  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "tune_serving.md"
CONCURRENCIES = (1, 4, 16)
LOADED = (4, 16)  # the levels whose throughput the objective counts
METRICS_PATH = "/monitoring/prometheus/metrics"
# At concurrency c a closed loop's mean latency is c / throughput (Little's law); the
# objective accepts a p99 of at most this many times that: no request starves.
P99_FACTOR = 1.5
# A setting for all loads may make lone requests at most this much slower than the
# fastest lone-request setting of the run.
C1_SLACK = 1.25
# Every setting gets this many gRPC handler threads, so that 16 clients can all be
# inside the server (and in one batch) at once: our server's default (4 x CPUs) would
# turn away or serialise part of them on 2 cores, whatever the setting under test.
GRPC_THREADS = 2 * max(CONCURRENCIES)


@dataclass(frozen=True)
class Batching:
    """The fields of TF Serving's ``BatchingParameters`` that the sweep sets."""

    max_batch_size: int
    batch_timeout_micros: int
    num_batch_threads: int
    max_enqueued_batches: int
    allowed_batch_sizes: tuple[int, ...] = ()

    def text(self) -> str:
        """The text-format file for ``--batching_parameters_file``."""
        lines = [
            f"max_batch_size {{ value: {self.max_batch_size} }}",
            f"batch_timeout_micros {{ value: {self.batch_timeout_micros} }}",
            f"max_enqueued_batches {{ value: {self.max_enqueued_batches} }}",
            f"num_batch_threads {{ value: {self.num_batch_threads} }}",
        ]
        lines += [f"allowed_batch_sizes: {size}" for size in self.allowed_batch_sizes]
        return "\n".join(lines) + "\n"

    def label(self) -> str:
        allowed = "/".join(map(str, self.allowed_batch_sizes)) or "-"
        return (
            f"b={self.max_batch_size} t={self.batch_timeout_micros / 1000:g}ms "
            f"nbt={self.num_batch_threads} q={self.max_enqueued_batches} pad={allowed}"
        )


@dataclass(frozen=True)
class Setting:
    """One server configuration: TF's thread pools and, optionally, batching."""

    name: str
    intra: int
    inter: int
    batching: Batching | None = None

    def key(self) -> tuple:
        """What changes the measurement (the queue bound does not, while nothing is refused)."""
        batching = self.batching and replace(self.batching, max_enqueued_batches=0)
        return (self.intra, self.inter, batching)

    def label(self) -> str:
        batching = self.batching.label() if self.batching else "no batching"
        return f"{batching}, intra={self.intra} inter={self.inter}"

    def flags(self, work: Path, monitoring: Path) -> list[str]:
        flags = [
            f"--tensorflow_intra_op_parallelism={self.intra}",
            f"--tensorflow_inter_op_parallelism={self.inter}",
            f"--grpc_max_threads={GRPC_THREADS}",
            f"--monitoring_config_file={monitoring}",
            "--file_system_poll_wait_seconds=0",  # no polling thread competing for the cores
        ]
        if self.batching is not None:
            path = work / f"batching-{abs(hash(self.batching))}.txt"
            path.write_text(self.batching.text())
            flags += ["--enable_batching", f"--batching_parameters_file={path}"]
        return flags


@dataclass
class Level:
    """What one concurrency level of one setting measured."""

    concurrency: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float | None  # the server's CPU time per answered image
    mean_batch: float | None  # images per session run, from the server's metrics
    padding: float | None  # padded share of the images run

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def p99_ok(self) -> bool:
        if not self.throughput:
            return False
        return self.p99_ms <= P99_FACTOR * 1000.0 * self.concurrency / self.throughput


@dataclass
class Point:
    setting: Setting
    stage: str
    levels: dict[int, Level] = field(default_factory=dict)
    seconds: float = 0.0
    load: float = 0.0  # 1-minute load average when the point started

    def ok(self) -> bool:
        return all(level.errors == 0 and level.requests > 0 for level in self.levels.values())


def score(point: Point, best_c1_p50_ms: float) -> float:
    """The objective: geometric mean of img/s at concurrency 4 and 16; -inf if not acceptable.

    Acceptable: no failed request; p99 within ``P99_FACTOR`` x the mean latency at 4
    and 16; p50 at concurrency 1 within ``C1_SLACK`` x the best of the run.
    """
    if not point.ok() or not all(point.levels[c].p99_ok() for c in LOADED):
        return -math.inf
    if point.levels[1].p50_ms > C1_SLACK * best_c1_p50_ms:
        return -math.inf
    return statistics.geometric_mean(point.levels[c].throughput for c in LOADED)


# --- measuring --------------------------------------------------------------------------


def read_metrics(port: int) -> dict[str, float]:
    """Sums of the batching histograms on the server's Prometheus page."""
    url = f"http://127.0.0.1:{port}{METRICS_PATH}"
    with urllib.request.urlopen(url, timeout=10) as page:
        text = page.read().decode()
    totals: dict[str, float] = {}
    pattern = r"^:tensorflow:serving:batching:(processed_batch_size|padding_size)_(sum|count)\{"
    for line in text.splitlines():
        match = re.match(pattern, line)
        if match:
            name = f"{match.group(1)}_{match.group(2)}"
            totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(setting: Setting, stage: str, env: dict) -> Point:
    from serving.client import ServingClient

    point = Point(setting, stage, load=os.getloadavg()[0])
    began = time.perf_counter()
    server = ServerProcess(
        env["base"], setting.flags(env["work"], env["monitoring"]), cpus=env["server_cpus"]
    )
    try:
        with ServingClient(f"127.0.0.1:{server.grpc_port}", "vit", "grpc") as client:
            server.wait(client)
        load = parse_args(
            [
                "--protocol=grpc", f"--target=127.0.0.1:{server.grpc_port}",
                "--model-name=vit", "--warmup=0", "--output=-",
                f"--timeout={env['request_timeout']}",
            ]
        )  # fmt: skip
        for c in CONCURRENCIES:
            # Warm-up, not measured: connections, and the batch sizes this level forms
            # (oneDNN prepares its kernels per input shape).
            run_level(_with(load, requests=2 * c, duration=60.0), env["images"], c)
            before, cpu_before = read_metrics(server.rest_port), cpu_seconds(server.process.pid)
            result = run_level(
                _with(load, requests=10**6, duration=env["window"]), env["images"], c
            )
            after, cpu_after = read_metrics(server.rest_port), cpu_seconds(server.process.pid)

            def delta(name: str, after=after, before=before) -> float:
                return after.get(name, 0.0) - before.get(name, 0.0)

            runs, images = delta("processed_batch_size_count"), delta("processed_batch_size_sum")
            cpu = None
            if cpu_before is not None and cpu_after is not None and result.requests:
                cpu = 1000.0 * (cpu_after - cpu_before) / result.requests
            point.levels[c] = Level(
                concurrency=c,
                requests=result.requests,
                errors=result.errors,
                seconds=result.seconds,
                p50_ms=result.percentile(50),
                p99_ms=result.percentile(99),
                cpu_ms=cpu,
                mean_batch=images / runs if runs else None,
                padding=delta("padding_size_sum") / images if images else None,
            )
            if result.error_codes:
                print(f"    errors at c={c}: {result.error_codes}", flush=True)
    finally:
        # No graceful shutdown needed between points: it would only cost seconds.
        server.process.kill()
        server.process.wait()
    point.seconds = time.perf_counter() - began
    print(
        f"  [{stage}] {setting.name}: {setting.label()} "
        f"({point.seconds:.0f} s, load {point.load:.1f})",
        flush=True,
    )
    for level in point.levels.values():
        print(
            f"    c={level.concurrency:2d} {level.throughput:6.2f} img/s "
            f"p50 {level.p50_ms:6.0f} ms p99 {level.p99_ms:6.0f} ms "
            f"cpu {_fmt(level.cpu_ms, 0)} ms/img batch {_fmt(level.mean_batch)} "
            f"errors {level.errors}",
            flush=True,
        )
    return point


def _with(namespace: argparse.Namespace, **changes) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(namespace), **changes})


# --- the sweep --------------------------------------------------------------------------


def queue_for(max_batch_size: int) -> int:
    """Queued batches for the highest concurrency's requests, plus one batch."""
    return math.ceil(max(CONCURRENCIES) / max_batch_size) + 1


def anchors(cores: int) -> list[Setting]:
    return [
        # tensorflow_model_server without flags: no batching; intra/inter-op 0, which
        # TensorFlow resolves to the schedulable CPUs (port::MaxParallelism()). Given
        # explicitly, because our server's own default inter-op pool is larger.
        Setting("tfs-default", cores, cores),
        # TF Serving's example batching file (serving_config.md; tfserving-protocol.md
        # 3.4) with num_batch_threads = cores: a timeout of 0 forms batches only from
        # requests already waiting, and C batches at once share the C cores.
        Setting("common-mistake", cores, cores, Batching(128, 0, cores, 1000000)),
    ]


def coarse(cores: int, timeout_us: int) -> list[Setting]:
    half = math.ceil(cores / 2)
    settings = [
        # What kubernetes/ shipped before this tuning: intra C, inter ceil(C/2).
        Setting("previous-manifests", cores, half, Batching(8, 2000, half, 4)),
        # One batch at a time, using every core.
        Setting("serial-b16", cores, 1, Batching(16, timeout_us, 1, queue_for(16))),
    ]
    if cores > 1:
        # C batches at once, one core each: more throughput, slower lone requests.
        parallel = Batching(8, timeout_us, cores, queue_for(8))
        settings.append(Setting("parallel-b8", 1, cores, parallel))
        # C batch threads sharing a C-thread pool: a lone batch still gets every core.
        settings.append(Setting("shared-b8", cores, cores, parallel))
    return settings


def refine(best: Setting, cores: int) -> list[Setting]:
    """Neighbours of the best batching setting, most telling first."""
    b = best.batching

    def sized(size: int) -> list[Setting]:
        # Batches larger than the highest concurrency cannot form in this test.
        if not 2 <= size <= max(CONCURRENCIES):
            return []
        changed = replace(b, max_batch_size=size, max_enqueued_batches=queue_for(size))
        return [replace(best, name=f"b={size}", batching=changed)]

    out = sized(b.max_batch_size * 2)
    out += [
        replace(best, name=f"t={t / 1000:g}ms", batching=replace(b, batch_timeout_micros=t))
        for t in (b.batch_timeout_micros * 4, b.batch_timeout_micros // 4)
    ]
    out += sized(b.max_batch_size // 2)
    sizes = [1 << i for i in range(b.max_batch_size.bit_length()) if 1 << i < b.max_batch_size]
    padded = replace(b, allowed_batch_sizes=(*sizes, b.max_batch_size))
    out.append(replace(best, name="pad-pow2", batching=padded))
    out.append(Setting("threads-only", cores, 1))
    return out


def tiny_jpegs(images: list[bytes]) -> list[bytes]:
    """32-px JPEGs for the tiny model: the quick run checks the machinery."""
    from PIL import Image

    out = []
    for data in images:
        buffer = io.BytesIO()
        Image.open(io.BytesIO(data)).convert("RGB").resize((32, 32)).save(buffer, "JPEG")
        out.append(buffer.getvalue())
    return out


def cpu_flags() -> str:
    """The vector and matrix extensions TensorFlow's CPU kernels can use."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    prefixes = ("avx", "amx", "fma")
                    return " ".join(
                        f for f in line.split(":", 1)[1].split() if f.startswith(prefixes)
                    )
    except OSError:
        pass
    return "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2, help="pod size C: CPUs the server gets")
    parser.add_argument("--quick", action="store_true", help="tiny ViT, short windows")
    parser.add_argument("--window", type=float, help="measured seconds per level (6; quick 2)")
    parser.add_argument("--budget", type=float, help="seconds for the whole run (570; quick 240)")
    parser.add_argument(
        "--saved-model", type=Path, help="serve this base path (numbered versions); no export"
    )
    parser.add_argument("--request-timeout", type=float, default=60.0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    window = args.window or (2.0 if args.quick else 6.0)
    budget = args.budget or (240.0 if args.quick else 570.0)
    output = args.output or (RESULTS.with_name("tune_serving-quick.md") if args.quick else RESULTS)

    available = sorted(os.sched_getaffinity(0))
    if not 1 <= args.cores <= len(available):
        parser.error(f"--cores must be between 1 and {len(available)} (this process's CPUs)")
    server_cpus = available[: args.cores]
    client_cpus = available[args.cores :] or available
    os.sched_setaffinity(0, client_cpus)  # the load generator stays off the pod's CPUs if it can
    info = machine_info(["tensorflow", "keras", "grpcio"])
    info["cpu flags"] = cpu_flags()
    info["server CPUs (pinned)"] = ",".join(map(str, server_cpus))
    info["client CPUs"] = ",".join(map(str, client_cpus)) + (
        " (the server's too: no spare CPU)" if client_cpus == available else ""
    )
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="keras-vit-tune-"))
    monitoring = work / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true, path: "{METRICS_PATH}" }}\n')
    if args.saved_model:
        base = args.saved_model.resolve()
    else:
        from benchmarks.serving import export_model

        base = work / "vit"
        export_model(base, args.quick)
        print(f"exported in {time.perf_counter() - started:.0f} s", flush=True)
    images = [data for _, data in default_images()]
    env = {
        "base": base,
        "work": work,
        "monitoring": monitoring,
        "server_cpus": server_cpus,
        "images": tiny_jpegs(images) if args.quick else images,
        "window": window,
        "request_timeout": args.request_timeout,
    }
    points: list[Point] = []
    measured: set[tuple] = set()

    def run(setting: Setting, stage: str) -> None:
        points.append(measure(setting, stage, env))
        measured.add(setting.key())

    def affordable(setting: Setting) -> bool:
        # Room for this point and the two confirmation points after it.
        left = budget - (time.perf_counter() - started)
        need = 3 * max(p.seconds for p in points)
        if left < need:
            print(f"  budget: skipping {setting.name} ({left:.0f} s left, {need:.0f} s needed)")
        return left >= need

    for setting in anchors(args.cores):
        run(setting, "anchor")
    for setting in coarse(args.cores, 2000):
        if affordable(setting):
            run(setting, "coarse")
    best = best_point(points).setting
    if best.batching is not None:
        for setting in refine(best, args.cores):
            if setting.key() not in measured and affordable(setting):
                run(setting, "refine")
    best = best_point(points).setting
    # Once more each, minutes after the first time: the gain rests on two measurements.
    run(points[0].setting, "confirm")
    run(best, "confirm")
    text = report(points, args, window, info, time.perf_counter() - started, best)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print(text)
    return 0


def best_point(points: list[Point]) -> Point:
    c1 = min(p.levels[1].p50_ms for p in points if p.ok())
    return max(points, key=lambda p: (score(p, c1), p.levels[16].throughput))


# --- the report -------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def medians(points: list[Point], setting: Setting) -> dict[int, dict[str, float]]:
    same = [p for p in points if p.setting.key() == setting.key()]
    return {
        c: {
            "img/s": statistics.median(p.levels[c].throughput for p in same),
            "p50": statistics.median(p.levels[c].p50_ms for p in same),
            "p99": statistics.median(p.levels[c].p99_ms for p in same),
            "n": len(same),
        }
        for c in CONCURRENCIES
    }


def report(points, args, window, info, elapsed, best) -> str:
    c1_best = min(p.levels[1].p50_ms for p in points if p.ok())
    rows = []
    for index, point in enumerate(points, 1):
        value = score(point, c1_best)
        for c, level in point.levels.items():
            first = c == CONCURRENCIES[0]
            rows.append(
                [
                    index if first else "",
                    point.stage if first else "",
                    f"`{point.setting.name}` {point.setting.label()}" if first else "",
                    f"{point.load:.1f}" if first else "",
                    c,
                    f"{level.throughput:.2f}",
                    f"{level.p50_ms:.0f}",
                    f"{level.p99_ms:.0f}",
                    _fmt(level.cpu_ms, 0),
                    _fmt(level.mean_batch),
                    "-" if level.padding is None else f"{100 * level.padding:.0f}%",
                    level.errors,
                    ("-" if value == -math.inf else f"{value:.2f}") if first else "",
                ]
            )
    table = markdown_table(
        [
            "#", "stage", "setting", "load", "c", "img/s", "p50 ms", "p99 ms",
            "server CPU ms/img", "batch", "padding", "errors", "score",
        ],
        rows,
    )  # fmt: skip

    default = points[0].setting
    base, tuned = medians(points, default), medians(points, best)
    gain = markdown_table(
        [
            "c", "defaults img/s", "tuned img/s", "img/s tuned / defaults",
            "defaults p50 / p99 ms", "tuned p50 / p99 ms", "p50 tuned / defaults",
        ],
        [
            [
                c, f"{base[c]['img/s']:.2f}", f"{tuned[c]['img/s']:.2f}",
                f"**{tuned[c]['img/s'] / base[c]['img/s']:.2f}**",
                f"{base[c]['p50']:.0f} / {base[c]['p99']:.0f}",
                f"{tuned[c]['p50']:.0f} / {tuned[c]['p99']:.0f}",
                f"{tuned[c]['p50'] / base[c]['p50']:.2f}",
            ]
            for c in CONCURRENCIES
        ],
    )  # fmt: skip

    acceptable = [p for p in points if p.ok()]
    per_c = []
    for c in CONCURRENCIES:
        if c == 1:
            chosen = min(acceptable, key=lambda p: p.levels[1].p50_ms)
            why = f"lowest p50: {chosen.levels[1].p50_ms:.0f} ms"
        else:
            fair = [p for p in acceptable if p.levels[c].p99_ok()] or acceptable
            chosen = max(fair, key=lambda p: p.levels[c].throughput)
            why = (
                f"most img/s ({chosen.levels[c].throughput:.2f}) with p99 "
                f"({chosen.levels[c].p99_ms:.0f} ms) within {P99_FACTOR}x the mean latency"
            )
        per_c.append([c, f"`{chosen.setting.name}` {chosen.setting.label()}", why])
    per_c_table = markdown_table(["c", "best setting", "why"], per_c)

    facts = "\n".join(f"- {k}: {v}" for k, v in info.items())
    model = (
        "tiny ViT (32 px)"
        if args.quick
        else "ViT-B/16 (224 px, 86M parameters), random weights, fp32"
    )
    levels = ", ".join(map(str, CONCURRENCIES))
    return f"""# TF Serving settings for a {args.cores}-core pod, measured on our server

{facts}
- model: {model}; exported by `serving.export`, served by `python -m serving.server`
  pinned to the server CPUs, `--grpc_max_threads={GRPC_THREADS}` for every setting
- load: gRPC, one JPEG per request (scikit-image and scikit-learn sample photos at their own
  sizes, decoded and resized in the graph), closed loop at concurrency {levels}; per level two
  requests per client of warm-up (not measured), then {window:g} s measured
- whole run: {elapsed / 60:.1f} min, {len(points)} server starts
- command: `python benchmarks/tune_serving.py {" ".join(sys.argv[1:])}`

## Objective

- Overall: the highest geometric mean of img/s at concurrency {LOADED[0]} and {LOADED[1]}, among
  settings with no failed request, a p99 at {LOADED[0]} and {LOADED[1]} within {P99_FACTOR}x the
  mean latency (concurrency / throughput, Little's law: no request starves), and a p50 at
  concurrency 1 within {C1_SLACK}x the best of the run ({c1_best:.0f} ms), so that lone requests
  pay little for batching.
- Per concurrency: the lowest p50 at 1; the most img/s with the p99 bound at {LOADED[0]} and
  {LOADED[1]}.

**Best overall: `{best.name}`: {best.label()}.**

## Gain over TF Serving's defaults, same run

Medians of the defaults' {base[1]["n"]} and the tuned setting's {tuned[1]["n"]} measurements.

{gain}

## Best per concurrency

{per_c_table}

## Every point

`load`: the machine's 1-minute load average when the point started (other jobs share the
cores); `server CPU ms/img`: the server process's CPU time over the window per answered image;
`batch`: images per session run (the server's `processed_batch_size`, padding included);
`padding`: the padded share of those; `score`: the objective (`-`: not acceptable).
`nbt`: `num_batch_threads`, `q`: `max_enqueued_batches`, `pad`: `allowed_batch_sizes`.

{table}
"""


if __name__ == "__main__":
    sys.exit(main())
