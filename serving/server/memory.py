"""Giving freed heap memory back to the system after a request that held a lot of it.

glibc keeps freed blocks of its (per-thread) heaps for reuse; after a large request
the process would otherwise stay at its peak. ``malloc_trim(0)`` returns the free
pages. Elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

from serving.server.logs import get_logger

# Requests that held at least this many bytes trigger a trim.
GIVE_BACK_THRESHOLD = 8 * 1024 * 1024


def use_system_allocator() -> None:
    """Large CPU tensors from the C library's heap, where :func:`give_back` reaches them.

    TensorFlow's oneDNN build (the x86 Linux default) allocates large CPU tensors from
    a BFC allocator that keeps every region it grew: after one large request the server
    stayed ~750 MB above its baseline for good, and ``malloc_trim`` cannot return it
    (issue 18; gone with ``TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1`` or oneDNN off, with no
    measurable latency change on small requests). Call before TensorFlow allocates
    anything; an operator's own setting wins.
    """
    os.environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")


@functools.cache
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def give_back() -> bool:
    """Returns free heap pages to the system; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    try:
        trim(0)
    except OSError:  # pragma: no cover - defensive
        get_logger().debug("malloc_trim failed", exc_info=True)
        return False
    return True
