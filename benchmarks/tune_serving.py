"""Tunes TF Serving's batching and thread settings for a pod of C cores, over our server.

Exports ViT-B/16 (random weights) once, then starts our TF-Serving-compatible
server (``python -m serving.server`` with TF Serving's flags) once per setting,
pinned to C CPUs, drives it over gRPC with real JPEGs at concurrency 1, 4 and
16 and records throughput, p50/p99 latency, the server's CPU time per image
and its batch sizes. Clients form a closed loop (each sends its next one-image
request when the last one is answered), as the serving benchmarks here do.
Each level gets one warm-up request per client (not measured), then a window
of ``--window`` seconds (5/8 of it at concurrency 1 and 4).

The machine this runs on is shared, so the servers of a stage are started side
by side (starting is the slow part: importing TensorFlow, loading the model,
replaying its warm-up), stay idle while another is measured, and each round
measures every level of every setting round-robin with a rotating start:

1. **screen**, one round: TF Serving's defaults (no batching; intra/inter-op
   threads 0, which TensorFlow resolves to the C schedulable CPUs), the
   "common mistake" (the CPU-only starting point of TF Serving's batching guide:
   ``num_batch_threads`` = C, no batch size limit, timeout 0), the previous
   manifests' batching, and C batches at once on one core each;
2. **refine**, ``--rounds`` interleaved rounds: the defaults, the best so far,
   the best batching setting and its neighbours (one batch thread, batch size
   x2, timeout x4 and /4, batch size /2, padding to ``allowed_batch_sizes``),
   as many as ``--servers`` allows.

Each setting is judged on the medians of its measurements (:func:`score`), and
the gain over the defaults is taken from those medians. With the defaults
(export included) a run takes about 10 minutes on 2 cores. Results:
``benchmarks/results/tune_serving.md``.

    python -m benchmarks.tune_serving                 # ViT-B/16, C = 2
    python -m benchmarks.tune_serving --quick         # tiny ViT, short windows: a smoke run
    python -m benchmarks.tune_serving --cores 4 --window 15 --rounds 3
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

from benchmarks.harness import (
    ServedModel,
    add_output_options,
    machine_info,
    markdown_table,
    results_path,
)
from benchmarks.loadtest import default_images, parse_args, run_level

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
    """What one concurrency level measured (or the medians of several measurements)."""

    concurrency: int
    throughput: float  # answered images per second
    errors: int
    p50_ms: float
    p99_ms: float
    cpu_ms: float | None  # the server's CPU time per answered image
    mean_batch: float | None  # images per session run, from the server's metrics
    padding: float | None  # padded share of the images run

    def p99_ok(self) -> bool:
        if not self.throughput:
            return False
        return self.p99_ms <= P99_FACTOR * 1000.0 * self.concurrency / self.throughput


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


@dataclass
class Point:
    """One setting's measurement in one round of one stage."""

    setting: Setting
    stage: str
    round: int
    levels: dict[int, Level] = field(default_factory=dict)
    load: float = 0.0  # 1-minute load average when the round started

    def ok(self) -> bool:
        return all(level.errors == 0 and level.throughput > 0 for level in self.levels.values())

    @classmethod
    def merged(cls, points: list[Point]) -> Point:
        """The medians of several points of one setting."""
        merged = cls(points[0].setting, "all", len(points))
        for c in CONCURRENCIES:
            levels = [p.levels[c] for p in points]
            merged.levels[c] = Level(
                c,
                _median(lv.throughput for lv in levels),
                sum(lv.errors for lv in levels),
                _median(lv.p50_ms for lv in levels),
                _median(lv.p99_ms for lv in levels),
                _median(lv.cpu_ms for lv in levels),
                _median(lv.mean_batch for lv in levels),
                _median(lv.padding for lv in levels),
            )
        return merged


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


def available_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def start_servers(settings: list[Setting], env: dict) -> list[ServedModel]:
    """One server per setting, started together (the slow part is importing TensorFlow);
    idle while another is measured."""
    servers = []
    try:
        for setting in settings:
            flags = setting.flags(env["work"], env["monitoring"])
            servers.append(ServedModel(env["base"], flags, cpus=env["server_cpus"]).launch())
        for server in servers:
            server.wait_ready()
    except BaseException:
        stop_servers(servers)
        raise
    return servers


def stop_servers(servers: list[ServedModel]) -> None:
    for server in servers:  # no graceful shutdown needed: it would only cost seconds
        server.stop(grace=0)


def measure_level(server: ServedModel, c: int, env: dict, warm_up: bool) -> Level:
    load = parse_args(
        [
            "--protocol=grpc", f"--target=127.0.0.1:{server.grpc_port}", "--model-name=vit",
            "--warmup=0", "--output=-", f"--timeout={env['request_timeout']}",
        ]
    )  # fmt: skip
    if warm_up:
        # Not measured: connections, and the batch sizes this level forms (oneDNN
        # prepares its kernels per input shape).
        run_level(_with(load, requests=c, duration=60.0), env["images"], c)
    before, cpu_before = read_metrics(server.rest_port), cpu_seconds(server.process.pid)
    result = run_level(_with(load, requests=10**6, duration=env["window"][c]), env["images"], c)
    after, cpu_after = read_metrics(server.rest_port), cpu_seconds(server.process.pid)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    runs, images = delta("processed_batch_size_count"), delta("processed_batch_size_sum")
    cpu = None
    if cpu_before is not None and cpu_after is not None and result.requests:
        cpu = 1000.0 * (cpu_after - cpu_before) / result.requests
    if result.error_codes:
        print(f"    errors at c={c}: {result.error_codes}", flush=True)
    return Level(
        concurrency=c,
        throughput=result.rps,
        errors=result.errors,
        p50_ms=result.percentile(50),
        p99_ms=result.percentile(99),
        cpu_ms=cpu,
        mean_batch=images / runs if runs else None,
        padding=delta("padding_size_sum") / images if images else None,
    )


def run_stage(settings: list[Setting], stage: str, rounds: int, env: dict) -> list[Point]:
    """Every setting's server at once; each round measures every level of every setting,
    round-robin with a rotating start, so that load from other jobs hits all alike."""
    began = time.perf_counter()
    servers = start_servers(settings, env)
    print(f"  [{stage}] {len(servers)} servers up in {time.perf_counter() - began:.0f} s")
    points = []
    try:
        for r in range(rounds):
            row = {s.key(): Point(s, stage, r + 1, load=os.getloadavg()[0]) for s in settings}
            for c in CONCURRENCIES:
                shift = (r + CONCURRENCIES.index(c)) % len(settings)
                pairs = list(zip(settings, servers, strict=True))
                for setting, server in pairs[shift:] + pairs[:shift]:
                    level = measure_level(server, c, env, warm_up=r == 0)
                    row[setting.key()].levels[c] = level
                    print(
                        f"  [{stage} {r + 1}] {setting.name:18s} c={c:2d} "
                        f"{level.throughput:6.2f} img/s p50 {level.p50_ms:6.0f} ms "
                        f"p99 {level.p99_ms:6.0f} ms cpu {_fmt(level.cpu_ms, 0)} ms/img "
                        f"batch {_fmt(level.mean_batch)}",
                        flush=True,
                    )
            points += row.values()
    finally:
        stop_servers(servers)
    print(f"  [{stage}] done in {time.perf_counter() - began:.0f} s", flush=True)
    return points


def _with(namespace: argparse.Namespace, **changes) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(namespace), **changes})


# --- the sweep --------------------------------------------------------------------------


def queue_for(max_batch_size: int) -> int:
    """Queued batches for the highest concurrency's requests, plus one batch."""
    return math.ceil(max(CONCURRENCIES) / max_batch_size) + 1


def defaults(cores: int) -> Setting:
    # tensorflow_model_server without flags: no batching; intra/inter-op 0, which
    # TensorFlow resolves to the schedulable CPUs (port::MaxParallelism()). Given
    # explicitly, because our server's own default inter-op pool is larger.
    return Setting("tfs-default", cores, cores)


def screen(cores: int) -> list[Setting]:
    """Stage 1: the anchors and how the C cores are split between batches."""
    half = math.ceil(cores / 2)
    settings = [
        defaults(cores),
        # The CPU-only starting point of TF Serving's batching guide
        # (tensorflow_serving/batching/README.md, "CPU-only: One Approach"):
        # num_batch_threads = cores, max_batch_size "infinity" (128: more than ever
        # queue here), timeout 0; max_enqueued_batches from its example file
        # (serving_config.md). A timeout of 0 forms batches only from requests already
        # waiting, and C batches at once share the C cores.
        Setting("common-mistake", cores, cores, Batching(128, 0, cores, 1000000)),
        # What kubernetes/ shipped before this tuning: intra C, inter ceil(C/2), one
        # batch thread per two cores.
        Setting("previous-manifests", cores, half, Batching(8, 2000, half, 4)),
    ]
    if cores > 1:
        # C batches at once, one core each: efficient, but a lone request gets one core.
        settings.append(Setting("parallel-b8", 1, cores, Batching(8, 2000, cores, queue_for(8))))
    return settings


def refine(best: Setting, cores: int) -> list[Setting]:
    """Neighbours of a batching setting, most telling first."""
    b = best.batching

    def sized(size: int) -> list[Setting]:
        # Batches larger than the highest concurrency cannot form in this test.
        if not 2 <= size <= max(CONCURRENCIES):
            return []
        changed = replace(b, max_batch_size=size, max_enqueued_batches=queue_for(size))
        return [replace(best, name=f"b={size}", batching=changed)]

    out = []
    if b.num_batch_threads != 1:
        # One batch at a time on every core (the lone-request latency of the defaults).
        serial = replace(b, num_batch_threads=1)
        out.append(Setting("serial", cores, 1, serial))
    out += sized(b.max_batch_size * 2)
    out += [
        replace(best, name=f"t={t / 1000:g}ms", batching=replace(b, batch_timeout_micros=t))
        for t in (b.batch_timeout_micros * 4, b.batch_timeout_micros // 4)
    ]
    out += sized(b.max_batch_size // 2)
    sizes = [1 << i for i in range(b.max_batch_size.bit_length()) if 1 << i < b.max_batch_size]
    padded = replace(b, allowed_batch_sizes=(*sizes, b.max_batch_size))
    out.append(replace(best, name="pad-pow2", batching=padded))
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2, help="pod size C: CPUs the server gets")
    parser.add_argument(
        "--window", type=float, help="measured seconds per level at concurrency 16 (7; quick 2)"
    )
    parser.add_argument("--rounds", type=int, help="rounds of the refine stage (2; quick 1)")
    parser.add_argument(
        "--servers", type=int, default=4, help="servers alive at once (each ViT-B/16 ~1.5 GB)"
    )
    parser.add_argument(
        "--saved-model", type=Path, help="serve this base path (numbered versions); no export"
    )
    parser.add_argument(
        "--only",
        help="comma-separated setting names of the screen stage and its refine neighbours "
        "(e.g. tfs-default,previous-manifests): measure just these, --rounds rounds, no sweep",
    )
    parser.add_argument("--request-timeout", type=float, default=60.0)
    add_output_options(
        parser, "tune_serving", quick="tiny ViT, short windows", aliases=["--output"]
    )
    args = parser.parse_args(argv)
    window = args.window or (2.0 if args.quick else 7.0)
    rounds = args.rounds or (1 if args.quick else 2)
    output = results_path(args)

    available = sorted(os.sched_getaffinity(0))
    if not 1 <= args.cores <= len(available):
        parser.error(f"--cores must be between 1 and {len(available)} (this process's CPUs)")
    memory = available_memory_bytes()
    if not args.quick and memory is not None and memory < (args.servers * 1.6 + 2) * 2**30:
        parser.error(
            f"{args.servers} ViT-B/16 servers need about {args.servers * 1.6 + 2:.0f} GiB "
            f"available; {memory / 2**30:.1f} GiB are: lower --servers"
        )
    server_cpus = available[: args.cores]
    client_cpus = available[args.cores :] or available
    os.sched_setaffinity(0, client_cpus)  # the load generator stays off the pod's CPUs if it can
    info = machine_info(["tensorflow", "keras", "grpcio"])
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
        from benchmarks.serving_overhead import export_model

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
        # Lower concurrency answers faster: shorter windows hold as many requests.
        "window": {c: window * (0.625 if c < max(CONCURRENCIES) else 1.0) for c in CONCURRENCIES},
        "request_timeout": args.request_timeout,
    }

    if args.only:
        catalogue = {}
        for setting in screen(args.cores):
            catalogue.setdefault(setting.name, setting)
            for neighbour in refine(setting, args.cores) if setting.batching else []:
                catalogue.setdefault(neighbour.name, neighbour)
        names = args.only.split(",")
        if "tfs-default" not in names:
            parser.error("--only needs tfs-default: the gain is measured against it")
        unknown = [name for name in names if name not in catalogue]
        if unknown:
            parser.error(f"unknown settings {unknown}; known: {', '.join(catalogue)}")
        chosen = [catalogue[name] for name in names][: args.servers]
        points = run_stage(chosen, "only", rounds, env)
        best = best_setting(points)
        text = report(points, args, env, info, time.perf_counter() - started, best)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        print(text)
        return 0
    # Stage 1, one round: the anchors and how the cores are split.
    first = screen(args.cores)[: args.servers]
    points = run_stage(first, "screen", 1, env)
    best = best_setting(points)
    # Stage 2: the defaults, the best so far, and the neighbours of the best batching
    # setting, in interleaved rounds.
    batching = [p for p in points if p.setting.batching is not None]
    reference = best_setting(batching) if batching else best
    second = [defaults(args.cores), best, reference]
    for setting in refine(reference, args.cores):
        if setting.key() not in {p.setting.key() for p in points}:
            second.append(setting)
    unique = list({s.key(): s for s in reversed(second)}.values())[::-1]
    points += run_stage(unique[: args.servers], "refine", rounds, env)
    best = best_setting(points)
    text = report(points, args, env, info, time.perf_counter() - started, best)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print(text)
    return 0


def merged_by_setting(points: list[Point]) -> dict[tuple, Point]:
    keys = list(dict.fromkeys(p.setting.key() for p in points))
    return {k: Point.merged([p for p in points if p.setting.key() == k]) for k in keys}


def best_c1(merged) -> float:
    return min(p.levels[1].p50_ms for p in merged if p.ok())


def best_setting(points: list[Point]) -> Setting:
    """The best setting by :func:`score` on the medians of its measurements."""
    merged = list(merged_by_setting(points).values())
    c1 = best_c1(merged)
    top = max(CONCURRENCIES)
    return max(merged, key=lambda p: (score(p, c1), p.levels[top].throughput)).setting


# --- the report -------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _level_cells(level: Level) -> list[str]:
    return [
        f"{level.throughput:.2f}",
        f"{level.p50_ms:.0f}",
        f"{level.p99_ms:.0f}",
        _fmt(level.cpu_ms, 0),
        _fmt(level.mean_batch),
        "-" if level.padding is None else f"{100 * level.padding:.0f}%",
        str(level.errors),
    ]


LEVEL_HEADERS = ["img/s", "p50 ms", "p99 ms", "server CPU ms/img", "batch", "padding", "errors"]


def report(points, args, env, info, elapsed, best) -> str:
    merged = merged_by_setting(points)
    c1 = best_c1(merged.values())
    top = max(CONCURRENCIES)
    ranked = sorted(merged.values(), key=lambda p: -max(score(p, c1), -1e9))
    summary_rows = []
    for point in ranked:
        value = score(point, c1)
        for c, level in point.levels.items():
            first = c == CONCURRENCIES[0]
            summary_rows.append(
                [
                    f"`{point.setting.name}`" if first else "",
                    point.setting.label() if first else "",
                    point.round if first else "",
                    c,
                    *_level_cells(level),
                    ("-" if value == -math.inf else f"{value:.2f}") if first else "",
                ]
            )
    summary = markdown_table(["setting", "flags", "n", "c", *LEVEL_HEADERS, "score"], summary_rows)
    rows = []
    for point in points:
        for c, level in point.levels.items():
            first = c == CONCURRENCIES[0]
            rows.append(
                [
                    f"{point.stage} {point.round}" if first else "",
                    f"`{point.setting.name}`" if first else "",
                    f"{point.load:.1f}" if first else "",
                    c,
                    *_level_cells(level),
                ]
            )
    table = markdown_table(["stage", "setting", "load", "c", *LEVEL_HEADERS], rows)

    base, tuned = merged[defaults(args.cores).key()], merged[best.key()]
    gain = markdown_table(
        [
            "c", "defaults img/s", "tuned img/s", "img/s tuned / defaults",
            "defaults p50 / p99 ms", "tuned p50 / p99 ms", "p99 tuned / defaults",
            "CPU ms/img defaults / tuned",
        ],
        [
            [
                c, f"{base.levels[c].throughput:.2f}", f"{tuned.levels[c].throughput:.2f}",
                f"**{tuned.levels[c].throughput / base.levels[c].throughput:.2f}**",
                f"{base.levels[c].p50_ms:.0f} / {base.levels[c].p99_ms:.0f}",
                f"{tuned.levels[c].p50_ms:.0f} / {tuned.levels[c].p99_ms:.0f}",
                f"**{tuned.levels[c].p99_ms / base.levels[c].p99_ms:.2f}**",
                f"{_fmt(base.levels[c].cpu_ms, 0)} / {_fmt(tuned.levels[c].cpu_ms, 0)}",
            ]
            for c in CONCURRENCIES
        ],
    )  # fmt: skip

    acceptable = [p for p in merged.values() if p.ok()]
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

    if score(merged[best.key()], c1) == -math.inf:
        verdict = (
            "**No setting met all the conditions in this run.** Below, the setting with the "
            f"most img/s at concurrency {top} stands in for the best: `{best.name}`: "
            f"{best.label()}."
        )
    else:
        verdict = f"**Best overall: `{best.name}`: {best.label()}.**"
    facts = "\n".join(f"- {k}: {v}" for k, v in info.items())
    model = (
        "tiny ViT (32 px)"
        if args.quick
        else "ViT-B/16 (224 px, 86M parameters), random weights, fp32"
    )
    windows = ", ".join(f"{w:g} s at {c}" for c, w in env["window"].items())
    return f"""# TF Serving settings for a {args.cores}-core pod, measured on our server

{facts}
- model: {model}; exported by `serving.export`, served by `python -m serving.server`
  pinned to the server CPUs, `--grpc_max_threads={GRPC_THREADS}` for every setting
- load: gRPC, one JPEG per request (scikit-image and scikit-learn sample photos at their own
  sizes, decoded and resized in the graph), closed loop at concurrency
  {", ".join(map(str, CONCURRENCIES))}; one warm-up request per client (not measured), then
  measured for {windows}
- stages: `screen` (one round) then `refine` (interleaved rounds); the servers of a stage run
  side by side, idle while another is measured, and each round measures every level of every
  setting round-robin, so that load from other jobs on the machine hits all settings alike
- whole run: {elapsed / 60:.1f} min
- command: `python -m benchmarks.tune_serving {" ".join(sys.argv[1:])}`

## Objective

- Overall: the highest geometric mean of img/s at concurrency {LOADED[0]} and {LOADED[1]}, among
  settings with no failed request, a p99 at {LOADED[0]} and {LOADED[1]} within {P99_FACTOR}x the
  mean latency (concurrency / throughput, Little's law: no request starves), and a p50 at
  concurrency 1 within {C1_SLACK}x the best setting's ({c1:.0f} ms), so that lone requests pay
  little for batching. Each setting is judged on the medians of its `n` measurements.
- Per concurrency: the lowest p50 at 1; the most img/s with the p99 bound at {LOADED[0]} and
  {LOADED[1]}.

{verdict}

## Gain over TF Serving's defaults, same run

Medians of the defaults' {base.round} and the tuned setting's {tuned.round} measurements.

{gain}

## Best per concurrency

{per_c_table}

## Every setting (medians of its `n` measurements, best score first)

`server CPU ms/img`: the server process's CPU time over the window per answered image;
`batch`: images per session run (the server's `processed_batch_size`, padding included);
`padding`: the padded share of those; `score`: the objective (`-`: not acceptable; concurrency
{top} img/s breaks ties). `nbt`: `num_batch_threads`, `q`: `max_enqueued_batches`, `pad`:
`allowed_batch_sizes`.

{summary}

## Every measurement

`load`: the machine's 1-minute load average when the round started (other jobs share the cores).

{table}
"""


if __name__ == "__main__":
    sys.exit(main())
