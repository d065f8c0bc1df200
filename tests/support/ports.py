"""Free loopback ports for test and benchmark servers: the repository's one ``free_port``."""

from __future__ import annotations

import contextlib
import socket


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports nothing listens on right now (on 127.0.0.1).

    The kernel picks them from its ephemeral range, so concurrent pytest-xdist workers
    get different ones; the window between this probe and the server's bind is short.
    All probes stay bound until every port is chosen, so the ports differ.
    """
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


def free_port() -> int:
    """One TCP port nothing listens on right now (on 127.0.0.1)."""
    return free_ports(1)[0]
