"""``python -m serving.server`` / ``keras-vit serve``: run the server until SIGTERM or SIGINT."""

from __future__ import annotations

import importlib.metadata
import os
import signal
import sys
import threading

from keras_vit import quiet
from serving.server import logs, memory
from serving.server.options import ServerOptions, build_parser, check_options, options_from_args
from serving.server.status import ServingError


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def version_text() -> str:
    """``--version``, in TF Serving's two-line format."""
    return (
        f"TensorFlow ModelServer: {_version('tensorflow-serving-api')}+keras-vit\n"
        f"TensorFlow Library: {_version('tensorflow')}\n"
    )


def serve(options: ServerOptions) -> int:
    """Starts the server and blocks until a signal; returns the process exit code."""
    if options.version:
        sys.stdout.write(version_text())
        return 0
    problem = check_options(options)
    if problem:
        sys.stdout.write(f"Failed to start server. Error: INVALID_ARGUMENT: {problem}\n")
        return 255
    logs.configure()
    # TensorFlow's start-up lines filtered and its runtime level at errors: without it the
    # runtime logs `W ... local_rendezvous.cc:412] Local rendezvous is aborting` (with the graph
    # location) for every request it refuses, which the server reports itself, in the answer.
    # TF_CPP_MIN_LOG_LEVEL set by the operator wins (0 shows everything).
    quiet.for_program()
    memory.use_system_allocator()
    # The flags were checked above, before TensorFlow loads (a bad command line fails fast).
    from serving.server.server import Server  # noqa: PLC0415

    server = Server()
    stop = threading.Event()
    received: list[int] = []

    def on_signal(number, _frame):
        received.append(number)
        if len(received) > 1:
            # A second signal: exit now, whatever is still running.
            logs.get_logger().warning("Received a second signal: exiting now.")
            _exit(1)
        stop.set()
        server.abort_startup()  # a start still waiting for its models gives up

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            server.build_and_start(options)
        except ServingError as error:
            if stop.is_set():
                logs.get_logger().info("Stopped by a signal before the models were loaded.")
                return 0
            sys.stdout.write(f"Failed to start server. Error: {error}\n")
            sys.stdout.flush()
            return 255
        while not stop.wait(0.5):
            pass
        name = signal.Signals(received[0]).name if received else "signal"
        logs.get_logger().info(
            "Received %s: finishing requests in flight (up to %gs), then exiting.",
            name,
            options.shutdown_grace_seconds,
        )
        if not server.shutdown():
            # A request still in the TensorFlow runtime (or a model load) would keep the
            # process alive past the grace period: leave without waiting for it.
            logs.get_logger().warning("Exiting with work still running after the grace period.")
            _exit(0)
        logs.get_logger().info("Server stopped.")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _exit(code: int) -> None:
    """Ends the process at once (threads still running would block a normal exit)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return serve(options_from_args(args))
