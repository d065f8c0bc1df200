"""Per-test CPU seconds (this process and the child processes it waited for).

Wall-clock durations mislead on a shared 2-core machine; CPU seconds say what a
test costs. Enabled with ``KERAS_VIT_TEST_CPU_REPORT=<file.jsonl>``: each test
appends one line ``{"test", "cpu_s", "self_s", "children_s", "wall_s", "worker"}``
(xdist workers append to the same file). ``python -m tests.support.cpu_report FILE``
prints the most expensive tests and the sum per file.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections import defaultdict

import pytest

REPORT_ENV = "KERAS_VIT_TEST_CPU_REPORT"


def _cpu() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    path = os.environ.get(REPORT_ENV)
    if not path:
        yield
        return
    own0, children0 = _cpu()
    wall0 = time.monotonic()
    yield
    own1, children1 = _cpu()
    row = {
        "test": item.nodeid,
        "cpu_s": round(own1 - own0 + children1 - children0, 2),
        "self_s": round(own1 - own0, 2),
        "children_s": round(children1 - children0, 2),
        "wall_s": round(time.monotonic() - wall0, 2),
        "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
    }
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


def summarize(path: str, top: int = 40) -> str:
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    lines = [f"{len(rows)} tests, {sum(r['cpu_s'] for r in rows):.0f} CPU-s "
             f"(children {sum(r['children_s'] for r in rows):.0f}), "
             f"{sum(r['wall_s'] for r in rows):.0f} test-wall-s", "", "## most CPU"]  # fmt: skip
    for row in sorted(rows, key=lambda r: -r["cpu_s"])[:top]:
        lines.append(f"{row['cpu_s']:8.1f} cpu {row['children_s']:7.1f} child "
                     f"{row['wall_s']:7.1f} wall  {row['test']}")  # fmt: skip
    per_file: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for row in rows:
        entry = per_file[row["test"].split("::")[0]]
        entry[0] += row["cpu_s"]
        entry[1] += row["wall_s"]
        entry[2] += 1
    lines += ["", "## per file"]
    for name, (cpu, wall, count) in sorted(per_file.items(), key=lambda kv: -kv[1][0])[:top]:
        lines.append(f"{cpu:8.1f} cpu {wall:8.1f} wall {count:4d} tests  {name}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarize(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40))
