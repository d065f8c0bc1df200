"""The command line (``python -m serving.server``, ``keras-vit serve``) and the process
life cycle: TF Serving's flags, startup messages and log lines, and a clean shutdown on
SIGTERM that finishes the request in flight."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from serving.server.options import ServerOptions, build_parser, options_from_args

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"


def parse(argv: list[str]) -> ServerOptions:
    return options_from_args(build_parser().parse_args(argv))


def test_flag_syntax_like_tensorflow_model_server():
    assert parse(["--port=9000", "--rest_api_port", "9001"]) == parse(
        ["--port", "9000", "--rest_api_port=9001"]
    )
    options = parse(["--model_base_path=/m", "--enable_batching"])
    assert options.enable_batching is True and options.port == 8500
    assert parse(["--enable_model_warmup=false"]).enable_model_warmup is False
    assert parse(["--enable_model_warmup", "false"]).enable_model_warmup is False
    defaults = parse([])
    assert (defaults.rest_api_port, defaults.model_name, defaults.host) == (
        0,
        "default",
        "127.0.0.1",
    )
    assert defaults.rest_api_timeout_in_ms == 30000 and defaults.file_system_poll_wait_seconds == 1
    with pytest.raises(SystemExit):
        parse(["--port=abc"])


def test_help_says_where_it_binds():
    text = " ".join(build_parser().format_help().split())
    assert "binds to 127.0.0.1 (this machine only) unless told otherwise" in text
    for flag in (
        "--model_config_file_poll_wait_seconds",
        "--file_system_poll_wait_seconds",
        "--batching_parameters_file",
        "--monitoring_config_file",
        "--rest_api_enable_cors_support",
        "--enable_grpc_healthcheck_service",
        "--tensorflow_intra_op_parallelism",
        "--tensorflow_inter_op_parallelism",
        "--version",
    ):
        assert flag in text


def test_keras_vit_serve_subcommand():
    from keras_vit.cli import build_parser as cli_parser
    from keras_vit.cli.serve import run

    args = cli_parser().parse_args(["serve", "--port", "9000", "--model_base_path=/m"])
    assert args.func is run
    assert options_from_args(args) == parse(["--port=9000", "--model_base_path=/m"])


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serving.server", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_version_and_startup_error_like_tf_serving():
    version = run_cli("--version")
    lines = version.stdout.splitlines()
    assert version.returncode == 0 and len(lines) == 2
    assert lines[0].startswith("TensorFlow ModelServer: ")
    assert lines[1].startswith("TensorFlow Library: ")
    failure = run_cli("--port=0")
    assert failure.returncode == 255  # TF Serving's main returns -1
    assert failure.stdout == (
        "Failed to start server. Error: INVALID_ARGUMENT: At least one of "
        "server_options.grpc_port or server_options.grpc_socket_path must be set.\n"
    )


def _json(url: str, data: bytes | None = None):
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=60) as response:
        return json.loads(response.read())


@pytest.mark.slow  # a server process: 6 CPU-s (tests/support/cpu_report.py)
def test_sigterm_finishes_the_request_in_flight(
    tmp_path, half_plus_two_base_path, free_port, wait_for
):
    grpc_port, rest_port = free_port(), free_port()
    batching = tmp_path / "batching.txt"
    # A request waits up to 3 s in the batch queue: it is in flight when SIGTERM comes.
    batching.write_text("max_batch_size { value: 8 } batch_timeout_micros { value: 3000000 }")
    monitoring = tmp_path / "monitoring.txt"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }')
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving.server",
            f"--port={grpc_port}",
            "--rest_api_port",
            str(rest_port),
            f"--model_base_path={half_plus_two_base_path}",
            "--enable_batching",
            f"--batching_parameters_file={batching}",
            f"--monitoring_config_file={monitoring}",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(process.stderr), daemon=True)
    reader.start()
    try:
        ready = f"Exporting HTTP/REST API at:localhost:{rest_port} ..."
        wait_for(
            lambda: any(ready in line for line in log) or process.poll() is not None,
            timeout=120,
            what="the REST port",
        )
        assert process.poll() is None, "".join(log)
        running = f"Running gRPC ModelServer at 127.0.0.1:{grpc_port} ..."
        assert any(running in line for line in log)
        # TF Serving's metadata file for half_plus_two served as "default".
        base = f"http://127.0.0.1:{rest_port}/v1/models/default"
        reference = json.loads((SHARED_DATA / "half_plus_two_model_metadata.json").read_text())
        assert _json(base + "/metadata") == reference

        reply: dict = {}

        def in_flight():
            reply["body"] = _json(base + ":predict", json.dumps({"instances": [4.0]}).encode())

        request = threading.Thread(target=in_flight)
        request.start()

        def queued() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/metrics", timeout=30) as r:
                page = r.read().decode()
            return (
                ':tensorflow:serving:batching:input_batch_size_count{model_name="default"} 1'
                in page
            )

        wait_for(queued, what="the request to wait in the batch queue")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        request.join(60)
        assert reply["body"] == {"predictions": [4.0]}
        assert process.wait(60) == 0
        assert time.monotonic() - started < 60
        reader.join(10)
        text = "".join(log)
        assert "Received SIGTERM" in text
        assert "Done unloading servable version {name: default version: 123}" in text
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_thread_pool_flags_reach_the_session_config():
    from serving.server.server import Server
    from serving.server.status import ServingError

    config = Server._session_config(
        parse(["--tensorflow_intra_op_parallelism=3", "--tensorflow_inter_op_parallelism=2"])
    )
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (3, 2)
    both = Server._session_config(parse(["--tensorflow_session_parallelism=4"]))
    assert (both.intra_op_parallelism_threads, both.inter_op_parallelism_threads) == (4, 4)
    # None set: more inter-op threads than cores, so a blocking op cannot hold them all.
    default = Server._session_config(parse([]))
    assert default.intra_op_parallelism_threads == 0
    assert default.inter_op_parallelism_threads >= 8
    with pytest.raises(ServingError) as raised:
        Server._session_config(
            parse(
                [
                    "--tensorflow_intra_op_parallelism=1",
                    "--tensorflow_inter_op_parallelism=1",
                    "--tensorflow_session_parallelism=1",
                ]
            )
        )
    assert raised.value.message.startswith("Either configure server_options.tensorflow_session")
