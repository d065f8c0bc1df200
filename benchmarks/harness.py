"""The harness every benchmark here uses: options, machine header, results, timing, servers.

A benchmark compares *our* code with a peer measured in the same process run, and
runs as ``python -m benchmarks.NAME`` from the checkout (``benchmarks`` and
``tests`` are packages there; no module edits the import path). This module gives it:

- :func:`add_output_options` (``--out``, and ``--quick`` where the benchmark has a
  quick mode) and :func:`results_path`: ``benchmarks/results/<name>.md`` by default,
  ``<name>-quick.md`` with ``--quick``, so a smoke run never overwrites a real one;
- :func:`machine_info` (date, cores, CPU model and flags, load average, Python, OS,
  package versions) and :func:`write_results` (that header, then the body);
- :func:`calibrate` picks how many calls make one timed sample (long enough
  for the clock, short enough for many samples);
- :func:`run_interleaved` times every case round-robin (the order rotates each
  round), so a burst of load from other processes on a shared machine hits all
  cases alike instead of one of them, within an optional time budget; each
  sample is a :class:`Timing` of wall-clock and process CPU seconds;
- :class:`Stats` holds a median and interquartile range of a rate (items/s);
  :func:`ratio` and :func:`markdown_table` make the comparison table;
- :class:`ServedModel` runs ``python -m serving.server`` on an export, on free
  loopback ports, and waits until the model is available; :func:`export_tiny`
  writes the tiny ViT's export to serve.

``free_port`` and the process runner are the tests' own (``tests/support``): one
copy for both. Only the standard library is imported at module level, so
``serving`` benchmarks can use it without importing TensorFlow.

Example:
>>> stats = Stats.from_rates([4.0, 5.0, 6.0, 100.0])
>>> stats.median, stats.q1, stats.q3
(5.5, 4.75, 29.5)
>>> ratio(stats, Stats.from_rates([11.0]))
0.5
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

# The tests' helpers, re-exported for the benchmarks: one copy of each in the repository.
from tests.support.ports import free_port, free_ports  # noqa: F401
from tests.support.processes import ServerNotReady, ServerProcess  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Stats:
    """Median and interquartile range (q1, q3) of a rate, from ``n`` samples."""

    median: float
    q1: float
    q3: float
    n: int

    @classmethod
    def from_rates(cls, rates: Sequence[float]) -> Stats:
        if not rates:
            raise ValueError("no samples")
        rates = sorted(rates)
        if len(rates) == 1:
            return cls(rates[0], rates[0], rates[0], 1)
        # "inclusive" interpolates inside the observed range, right for few samples.
        q1, _, q3 = statistics.quantiles(rates, n=4, method="inclusive")
        return cls(statistics.median(rates), q1, q3, len(rates))

    def format(self, digits: int = 2) -> str:
        """``median [q1–q3]``, e.g. ``4.31 [4.20–4.40]``."""
        return f"{self.median:.{digits}f} [{self.q1:.{digits}f}–{self.q3:.{digits}f}]"


def calibrate(fn: Callable[[], object], target_s: float, max_calls: int = 1000) -> int:
    """Calls ``fn`` once (already warmed up) and returns how many calls last ``target_s``."""
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    return max(1, min(max_calls, round(target_s / max(once, 1e-9))))


@dataclass(frozen=True)
class Timing:
    """Seconds per call: ``wall`` clock and ``cpu`` (this process, all threads).

    On a machine shared with other work, wall time includes waiting for a core
    and CPU time does not, so CPU time is the steadier measure of the work a
    call costs; wall time is what a user waits.
    """

    wall: float
    cpu: float


def time_sample(fn: Callable[[], object], calls: int) -> Timing:
    """Per-call wall and CPU seconds of ``calls`` back-to-back calls of ``fn``."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        fn()
    return Timing((time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls)


def run_interleaved(
    cases: Mapping[str, Callable[[], object]],
    calls: Mapping[str, int],
    rounds: int,
    min_rounds: int = 1,
    budget_s: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[Timing]]:
    """Times every case once per round, round-robin; returns the timings per case.

    The starting case rotates each round so that no case always runs right
    after the same neighbour (caches, frequency boost, a neighbour's burst).
    With ``budget_s``, no new round starts once that many seconds have passed
    and ``min_rounds`` are done, which keeps a run bounded on a busy machine.
    """
    names = list(cases)
    timings: dict[str, list[Timing]] = {name: [] for name in names}
    start = time.perf_counter()
    for r in range(rounds):
        if r >= min_rounds and budget_s is not None and time.perf_counter() - start > budget_s:
            if progress is not None:
                progress(f"time budget of {budget_s:.0f} s spent: stopping after {r} rounds")
            break
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            timings[name].append(time_sample(cases[name], calls[name]))
        if progress is not None:
            progress(f"round {r + 1}/{rounds} done ({time.perf_counter() - start:.0f} s)")
    return timings


def ratio(ours: Stats, peer: Stats) -> float:
    """Ours / peer on the medians (> 1 means ours is faster for a rate)."""
    return ours.median / peer.median


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table; numbers right-aligned by the renderer's default."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> str:
    """The vector and matrix extensions (``avx*``, ``amx*``, ``fma``) ``/proc/cpuinfo`` lists.

    What TensorFlow's and ONNX Runtime's CPU kernels can use; every results header shows it.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    prefixes = ("avx", "amx", "fma")
                    found = [f for f in line.split(":", 1)[1].split() if f.startswith(prefixes)]
                    return " ".join(found) or "none of avx/amx/fma"
    except OSError:
        pass
    return "unknown"


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info(packages: Sequence[str] = ()) -> dict[str, str]:
    """Date, host facts and the versions of ``packages``, for the results header."""
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus (nproc)": str(
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        ),
        "cpu model": cpu_model(),
        "cpu flags": cpu_flags(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }
    try:
        info["load average (1/5/15 min) at start"] = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        pass
    for name in packages:
        info[name] = package_version(name)
    return info


def add_output_options(
    parser: argparse.ArgumentParser,
    name: str,
    *,
    quick: str | None = None,
    aliases: Sequence[str] = (),
    note: str = "",
) -> argparse.ArgumentParser:
    """Adds ``--out`` (also spelled ``aliases``, the benchmark's older names for it; ``note``
    ends its help) and, with ``quick`` (its help text), ``--quick``; :func:`results_path`
    reads them."""
    parser.add_argument(
        "--out",
        *aliases,
        dest="out",
        default=None,
        metavar="PATH",
        help=f"results file (default benchmarks/results/{name}.md"
        + (f", {name}-quick.md with --quick" if quick is not None else "")
        + "); a bare name without a suffix means benchmarks/results/NAME.md"
        + note,
    )
    if quick is not None:
        parser.add_argument("--quick", action="store_true", help=quick)
    parser.set_defaults(results_name=name)
    return parser


def results_path(args: argparse.Namespace) -> Path:
    """Where this run's results go: ``--out``, else ``benchmarks/results/<name>[-quick].md``."""
    out = args.out
    if not out:
        suffix = "-quick" if getattr(args, "quick", False) else ""
        return RESULTS_DIR / f"{args.results_name}{suffix}.md"
    path = Path(out)
    if path.suffix or os.sep in out:
        return path
    return RESULTS_DIR / f"{out}.md"


def write_results(path: Path | str, title: str, info: Mapping[str, str], body: str) -> Path:
    """Writes the results file (title, machine facts, body); returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    facts = "\n".join(f"- {key}: {value}" for key, value in info.items())
    path.write_text(f"# {title}\n\n{facts}\n\n{body.rstrip()}\n")
    return path


def export_tiny(base: Path | str, version: int = 1, **export_options) -> Path:
    """The tests' tiny ViT (``tests/support/tiny.py``, random weights) exported under
    ``base/<version>``; ``export_options`` go to ``serving.export.export_saved_model``."""
    from serving.export import export_saved_model
    from tests.support.tiny import tiny_vit

    return Path(export_saved_model(tiny_vit(), Path(base), version=version, **export_options))


# Runs ``python -m serving.server ARGS`` pinned to the CPUs in argv[1] ("0,1"): the
# affinity is set before the interpreter starts a thread, so every thread (TensorFlow's
# pools, which it sizes from the CPUs it may run on, included) inherits it.
_PINNED_SERVER = (
    "import os, runpy, sys; "
    "os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(',')}); "
    "sys.argv = ['serving.server', *sys.argv[2:]]; "
    "runpy.run_module('serving.server', run_name='__main__', alter_sys=True)"
)


class ServedModel(ServerProcess):
    """``python -m serving.server`` serving ``base`` as ``model_name``, on free loopback ports.

    ``with ServedModel(base) as server:`` starts it, waits until the model is
    AVAILABLE over REST (``.grpc_port``, ``.rest_port``) and stops it after the block;
    ``launch()`` then ``wait_ready()`` start several at once. ``flags`` are appended to
    the command line. With ``cpus``, the server runs only on those CPUs (like
    ``taskset -c``), as a pod with that many dedicated cores would. ``checkout`` runs
    another checkout's server (its ``serving`` package) for before/after comparisons.
    """

    def __init__(
        self,
        base: Path | str,
        flags: Sequence[str] = (),
        *,
        cpus: Collection[int] = (),
        model_name: str = "vit",
        checkout: Path = ROOT,
        timeout: float = 300,
    ):
        self.grpc_port, self.rest_port = free_ports(2)
        self.model_name = model_name
        args = [
            f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}",
            f"--model_name={model_name}", f"--model_base_path={Path(base).resolve()}", *flags,
        ]  # fmt: skip
        if cpus:
            cpu_list = ",".join(str(cpu) for cpu in sorted(cpus))
            argv = [sys.executable, "-c", _PINNED_SERVER, cpu_list, *args]
        else:
            argv = [sys.executable, "-m", "serving.server", *args]
        path = os.pathsep.join(filter(None, [str(checkout), os.environ.get("PYTHONPATH")]))
        super().__init__(
            argv,
            ready=f"http://127.0.0.1:{self.rest_port}/v1/models/{model_name}",
            ready_text="AVAILABLE",
            timeout=timeout,
            cwd=checkout,
            env={**os.environ, "PYTHONPATH": path},
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class DigitsRun:
    """The digits image folder and a model trained on it by the ``digits`` recipe."""

    workdir: Path
    folder: object  # keras_vit.training.digits.DigitsFolder
    model_dir: Path
    train_seconds: float | None  # None: an existing model was reused
    scratch: tempfile.TemporaryDirectory | None

    def cleanup(self) -> None:
        if self.scratch is not None:
            self.scratch.cleanup()


def digits_run(
    workdir: str | None, model: str | None, prefix: str, epochs: int | None = None
) -> DigitsRun:
    """Writes the digits folder under ``workdir`` (a temporary folder when None) and trains
    the ``digits`` recipe into ``workdir/model``, unless ``model`` (or that folder) already
    holds a ``model.keras``; ``epochs`` replaces the recipe's."""
    from keras_vit.training.digits import write_digits

    scratch = None
    if workdir:
        root = Path(workdir)
        root.mkdir(parents=True, exist_ok=True)
    else:
        scratch = tempfile.TemporaryDirectory(prefix=f"{prefix}-")
        root = Path(scratch.name)
    folder = write_digits(root / "digits", image_size=32)
    model_dir = Path(model) if model else root / "model"
    train_seconds = None
    if not (model_dir / "model.keras").exists():
        from keras_vit.training.recipes import get_recipe
        from keras_vit.training.trainer import train

        recipe = get_recipe("digits")
        training = dict(recipe["training"])
        if epochs:
            training["epochs"] = epochs
        begin = time.perf_counter()
        train(data=folder.train_dir, output_dir=model_dir, model_config=recipe["model_config"],
              tensorboard=False, verbose=2, **training)  # fmt: skip
        train_seconds = time.perf_counter() - begin
    return DigitsRun(root, folder, model_dir, train_seconds, scratch)
