"""Fixtures that build small SavedModels and run the local TF-Serving-compatible server.

For other test modules:

* ``half_plus_two_base_path``: a model base path holding ``half_plus_two``
  version 123 (TF Serving's test model, y = 0.5 * x + 2).
* ``tf_serving_server``: the server on free loopback ports serving that model
  as ``half_plus_two``; yields ``(grpc_port, rest_port)``.
* ``start_server``: a factory, ``start_server(**ServerOptions fields)`` ->
  a running :class:`serving.server.server.Server` (stopped after the test module).
* ``run_server``: ``with run_server(**fields) as server:`` for one test;
  ``wait_for``, ``free_port`` and ``shared_data`` helpers.

Test modules use these fixtures instead of importing this file: several test
directories have a ``conftest.py``, and only one can be the ``conftest`` module.

Servers run in the test process (one TensorFlow import for the whole run).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.ports import free_port

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@contextlib.contextmanager
def running_server(**fields) -> Iterator:
    """Starts a server in this process on free ports; stops it on exit."""
    from serving.server import logs
    from serving.server.options import ServerOptions
    from serving.server.server import Server

    logs.configure()
    fields.setdefault("port", free_port())
    fields.setdefault("rest_api_port", free_port())
    fields.setdefault("max_num_load_retries", 0)
    fields.setdefault("shutdown_grace_seconds", 10.0)
    server = Server()
    server.build_and_start(ServerOptions(**fields))
    try:
        yield server
    finally:
        server.shutdown()


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition"):
    """Polls ``condition`` until true; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="session")
def run_server():
    """``with run_server(**ServerOptions fields) as server:`` (a context manager)."""
    return running_server


@pytest.fixture(scope="session", name="wait_for")
def wait_for_fixture():
    """``wait_for(condition, timeout=30, what=...)``: polls, fails the test on timeout."""
    return wait_for


@pytest.fixture(scope="session", name="free_port")
def free_port_fixture():
    """``free_port()``: a TCP port nothing listens on right now."""
    return free_port


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: TF Serving's reference cases and files."""
    return SHARED_DATA


@pytest.fixture(scope="session")
def half_plus_two_base_path(tmp_path_factory) -> Path:
    """A base path with ``half_plus_two`` version 123 (as ``00000123/``)."""
    from tests.serving.half_plus_two import build_half_plus_two_base

    return build_half_plus_two_base(tmp_path_factory.mktemp("models") / "half_plus_two")


@pytest.fixture(scope="session")
def tf_serving_server(half_plus_two_base_path) -> Iterator[tuple[int, int]]:
    """The server serving ``half_plus_two``; yields ``(grpc_port, rest_port)``."""
    with running_server(
        model_name="half_plus_two", model_base_path=str(half_plus_two_base_path)
    ) as server:
        yield server.grpc_port, server.rest_port


@pytest.fixture(scope="module")
def start_server():
    """``start_server(**ServerOptions fields)``: servers stopped when the module ends."""
    with contextlib.ExitStack() as stack:
        yield lambda **fields: stack.enter_context(running_server(**fields))
