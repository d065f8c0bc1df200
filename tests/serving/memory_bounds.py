"""Time and memory bounds of an attack on the in-process server (this process's RSS).

``/proc/self/status`` gives RSS and its peak (``VmHWM``); writing 5 to
``/proc/self/clear_refs`` resets the peak to the current RSS.
"""

from __future__ import annotations

import time
from pathlib import Path

MB = 1024 * 1024
ANSWER_WITHIN = 5.0
MEMORY_SLACK = 300 * MB


def status_bytes(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not in /proc/self/status")


class Memory:
    """Time, RSS before, peak during (VmHWM, reset first) and RSS after one attack."""

    def __enter__(self):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        self.before = status_bytes("VmRSS")
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.seconds = time.monotonic() - self.start
        self.peak = status_bytes("VmHWM")
        self.after = status_bytes("VmRSS")

    def check(self, claimed: int | None = None, within: float = ANSWER_WITHIN):
        """Answered within ``within`` seconds; peak and kept RSS within :data:`MEMORY_SLACK`
        of the RSS before, and with ``claimed`` (what the request says it holds), a peak
        under a tenth of that: the claim was refused, not allocated."""
        assert self.seconds < within, self.seconds
        assert self.peak - self.before < MEMORY_SLACK, (self.before, self.peak)
        assert self.after - self.before < MEMORY_SLACK, (self.before, self.after)
        if claimed is not None:
            assert self.peak - self.before < claimed / 10, (self.before, self.peak, claimed)
