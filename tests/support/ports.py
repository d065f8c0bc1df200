"""Free loopback ports for test servers."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port nothing listens on right now (on 127.0.0.1).

    The kernel picks it from its ephemeral range, so concurrent pytest-xdist workers
    get different ones; the window between this probe and the server's bind is short.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
