"""Times a pytest run of this suite: wall clock, CPU seconds of every process, slowest tests.

    python -m benchmarks.test_suite --label "make test" -- tests -n 2 --dist loadgroup

runs ``python -m pytest ARGS --durations=15 -q -p no:cacheprovider`` and appends one
section to ``benchmarks/results/test-suite-runs.md`` (created with the machine facts,
CPU flags included): the command, wall seconds, user+system CPU seconds of pytest and
all its children (``RUSAGE_CHILDREN``; xdist workers, servers and CLI subprocesses
included), the load average before and after (the machine may be shared: CPU seconds
compare across runs where wall time does not), the outcome line and the 15 slowest tests.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness import ROOT, add_output_options, machine_info, results_path, write_results


def _load() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", required=True, help="the section's title")
    add_output_options(parser, "test-suite-runs", aliases=["--output"])
    parser.add_argument("--log", help="also write pytest's whole output to this file")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="-- then pytest's arguments")
    args = parser.parse_args(argv)
    pytest_args = [a for a in args.pytest_args if a != "--"] or ["tests"]
    durations = [] if any(a.startswith("--durations") for a in pytest_args) else ["--durations=15"]
    command = [sys.executable, "-m", "pytest", *pytest_args, *durations, "-q"]
    command += ["-p", "no:cacheprovider"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    load_before, started = _load(), time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = done.stdout + done.stderr
    if args.log:
        Path(args.log).write_text(output)
    slowest = re.findall(r"^\d+\.\d+s (?:call|setup|teardown) .*$", output, re.M)[:15]
    outcome = [line for line in output.splitlines() if re.search(r" in \d+\.\d+s", line)]
    section = [
        f"## {args.label}",
        "",
        f"- command: `{' '.join(['python -m pytest', *command[3:]])}`",
        f"- exit status: {done.returncode}; {outcome[-1].strip('= ') if outcome else '?'}",
        f"- wall: {wall:.0f} s ({wall / 60:.1f} min)",
        f"- CPU (user + system, all processes): {usage.ru_utime + usage.ru_stime:.0f} s"
        f" ({(usage.ru_utime + usage.ru_stime) / wall:.2f} cores on average)",
        f"- load average (1/5/15 min) before: {load_before}; after: {_load()}",
        "",
        *[f"- {line}" for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))],
        "",
        "Slowest 15:",
        "",
        "```",
        *slowest,
        "```",
        "",
    ]
    path = results_path(args)
    if not path.exists():
        info = machine_info(["pytest", "pytest-xdist"])
        write_results(path, "Test-suite runs (benchmarks/test_suite.py)", info, "")
    with open(path, "a") as f:
        f.write("\n")
        f.write("\n".join(section) + "\n")
    print("\n".join(section))
    if done.returncode not in (0, 1):
        print(output[-5000:], file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
