"""The local TF-Serving-compatible server in the test process, on free loopback ports."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.support.ports import free_port


@contextlib.contextmanager
def serving(
    base_path: Path | None, model_name: str = "vit", *, model_config_file: Path | None = None
) -> Iterator:
    """Runs the local server on free loopback ports; yields it (``.grpc_port``, ``.rest_port``).

    Serves ``base_path`` as ``model_name``, or the models of ``model_config_file``."""
    from serving.server.options import ServerOptions
    from serving.server.server import Server

    where = (
        {"model_config_file": str(model_config_file)}
        if model_config_file is not None
        else {"model_name": model_name, "model_base_path": str(base_path)}
    )
    server = Server()
    server.build_and_start(
        ServerOptions(
            **where,
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
