"""A friendlier ``serve`` (issue 10, section 5): base paths and model loading."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from serving.server.options import ServerOptions
from serving.server.server import Server
from serving.server.status import Code, ServingError
from tests.serving.half_plus_two import build_half_plus


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines():
    handler = _Lines()
    logger = logging.getLogger("serving.server")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


def _start_error(**fields) -> ServingError:
    from tests.support.ports import free_port

    server = Server()
    with pytest.raises(ServingError) as raised:
        server.build_and_start(ServerOptions(port=free_port(), max_num_load_retries=0, **fields))
    server.shutdown(5)
    return raised.value


def test_relative_base_path_is_resolved_against_the_working_directory(
    tmp_path, monkeypatch, run_server, log_lines
):
    build_half_plus(tmp_path / "models" / "half" / "1")
    monkeypatch.chdir(tmp_path)
    with run_server(model_name="half", model_base_path="models/half") as server:
        [config] = server.core.config.model_config_list.config
        assert config.base_path == str(tmp_path / "models" / "half")
        assert server.core.model_status("half", 1)
    assert any(
        "Relative --model_base_path models/half resolved against the working directory" in line
        and str(tmp_path / "models" / "half") in line
        for line in log_lines
    )


def test_a_version_folder_as_base_path_fails_at_start_with_the_fix(tmp_path):
    version = build_half_plus(tmp_path / "vit" / "1")
    start = time.monotonic()
    error = _start_error(model_name="vit", model_base_path=str(version))
    assert time.monotonic() - start < 5  # instead of waiting for versions forever
    assert error.code == Code.INVALID_ARGUMENT
    assert "is a SavedModel version folder" in error.message
    assert f"--model_base_path={tmp_path / 'vit'}" in error.message


def test_an_unavailable_filesystem_fails_at_start(tmp_path):
    error = _start_error(model_name="vit", model_base_path="nosuchfs://bucket/models/vit")
    assert error.code == Code.FAILED_PRECONDITION
    assert "'nosuchfs' filesystem" in error.message


def test_a_failing_models_retries_never_stall_the_others(tmp_path):
    from tests.support.ports import free_port

    build_half_plus(tmp_path / "good" / "1")
    broken = tmp_path / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    config = tmp_path / "models.config"
    entries = "".join(
        f' config {{ name: "{name}" base_path: "{tmp_path / name}" model_platform: "tensorflow" }}'
        for name in ("broken", "good")
    )
    config.write_text("model_config_list {" + entries + " }")
    server = Server()
    options = ServerOptions(
        port=free_port(),
        model_config_file=str(config),
        file_system_poll_wait_seconds=0,
        num_load_threads=1,  # even with a single load thread
        max_num_load_retries=2,
        load_retry_interval_micros=2_000_000,
    )
    outcome: dict = {}

    def start():
        try:
            server.build_and_start(options)
        except ServingError as error:
            outcome["error"] = error
        outcome["done"] = time.monotonic()

    began = time.monotonic()
    thread = threading.Thread(target=start)
    thread.start()
    good_at = None
    while thread.is_alive() and time.monotonic() - began < 60:
        if server.core is not None and good_at is None:
            try:
                server.core.model_status("good", 1)
                if server.core.model_status("good", 1)[0][1].state == 30:  # AVAILABLE
                    good_at = time.monotonic()
            except ServingError:
                pass
        time.sleep(0.02)
    thread.join(60)
    server.shutdown(5)
    assert good_at is not None and good_at - began < 4.0  # retries of "broken" take >= 4 s
    assert outcome["done"] - began >= 4.0
    assert "broken" in outcome["error"].message and "did not become available" in (
        outcome["error"].message
    )


def test_a_busy_grpc_port_is_named_after_tf_servings_text(tmp_path):
    import socket

    build_half_plus(tmp_path / "half" / "1")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = Server()
        with pytest.raises(ServingError) as raised:
            server.build_and_start(
                ServerOptions(
                    port=port,
                    model_name="half",
                    model_base_path=str(tmp_path / "half"),
                    max_num_load_retries=0,
                )
            )
        server.shutdown(5)
    message = raised.value.message
    assert message.startswith("Failed to BuildAndStart gRPC server: ")  # what operators grep
    assert f":{port} (--port)" in message and "another process uses it" in message
