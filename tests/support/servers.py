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


def start_from_flags(flags: list[str]):
    """``keras-vit serve FLAGS`` (``python -m serving.server FLAGS``) in this process: the
    same flag parsing and :class:`~serving.server.server.Server` as the command, started
    (models loaded) and returned; the caller stops it with ``shutdown()``. Raises
    ``SystemExit`` for flags argparse refuses and ``ServingError`` as the command would
    report it ("Failed to start server. Error: ...")."""
    from serving.server.options import build_parser, options_from_args
    from serving.server.server import Server

    options = options_from_args(build_parser().parse_args(flags))
    server = Server()
    try:
        server.build_and_start(options)
    except BaseException:
        server.shutdown(grace_seconds=0)
        raise
    return server
