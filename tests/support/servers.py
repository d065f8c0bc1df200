"""The local TF-Serving-compatible server in the test process, on free loopback ports."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.support.ports import free_port


@contextlib.contextmanager
def serving(base_path: Path, model_name: str = "vit") -> Iterator:
    """Runs the local server on free loopback ports; yields it (``.grpc_port``, ``.rest_port``)."""
    from serving.server.options import ServerOptions
    from serving.server.server import Server

    server = Server()
    server.build_and_start(
        ServerOptions(
            model_name=model_name,
            model_base_path=str(base_path),
            port=free_port(),
            rest_api_port=free_port(),
            max_num_load_retries=0,
            shutdown_grace_seconds=5.0,
        )
    )
    try:
        yield server
    finally:
        server.shutdown()
