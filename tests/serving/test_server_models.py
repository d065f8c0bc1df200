"""Model management: polling for versions, version policies, labels, config reloads,
and TF Serving's configuration errors (``tfserving-protocol.md`` section 3)."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.request

import grpc
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from serving.server.status import ServingError
from tests.serving.half_plus_two import build_half_plus


def get(server, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.rest_port}{path}", timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def predict(server, model, value=1.0, suffix=""):
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.rest_port}/v1/models/{model}{suffix}:predict",
        data=json.dumps({"instances": [value]}).encode(),
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def states(server, model):
    status, body = get(server, f"/v1/models/{model}")
    if status != 200:
        return {}
    return {int(v["version"]): v["state"] for v in body["model_version_status"]}


def test_new_versions_are_picked_up_and_old_ones_unloaded(tmp_path, run_server, wait_for):
    base = tmp_path / "model"
    build_half_plus(base / "1")  # y = 0.5x + 2
    with run_server(model_base_path=str(base), file_system_poll_wait_seconds=0.2) as server:
        assert predict(server, "default") == (200, {"predictions": [2.5]})
        build_half_plus(tmp_path / "staging", b=3.0)
        shutil.move(tmp_path / "staging", base / "2")  # appears atomically
        wait_for(lambda: states(server, "default") == {2: "AVAILABLE", 1: "END"}, what="v2")
        assert predict(server, "default") == (200, {"predictions": [3.5]})
        _, body = predict(server, "default", suffix="/versions/1")
        assert body == {"error": "Servable not found for request: Specific(default, 1)"}

        # A broken newer version fails to load; the serving version stays (availability
        # preserving) and the failure shows in the status.
        (base / "3").mkdir()
        (base / "3" / "saved_model.pb").write_bytes(b"not a SavedModel")
        wait_for(lambda: states(server, "default").get(3) == "END", what="v3 to fail")
        assert predict(server, "default") == (200, {"predictions": [3.5]})
        _, body = get(server, "/v1/models/default/versions/3")
        status = body["model_version_status"][0]["status"]
        assert status["error_code"] != "OK" and status["error_message"]

        # Removing the newest versions brings version 1 back.
        shutil.rmtree(base / "3")
        shutil.rmtree(base / "2")
        wait_for(lambda: states(server, "default").get(1) == "AVAILABLE", what="v1 back")
        wait_for(lambda: states(server, "default").get(2) == "END", what="v2 unloaded")
        assert predict(server, "default") == (200, {"predictions": [2.5]})


def write_config(path, text):
    path.write_text(text)
    text_format.Parse(text, model_server_config_pb2.ModelServerConfig())  # valid as written


def test_version_policies_labels_and_config_file_reload(tmp_path, run_server, wait_for):
    for version, b in ((1, 1.0), (2, 2.0), (3, 3.0)):
        build_half_plus(tmp_path / "m" / str(version), b=b)
    config = tmp_path / "models.config"
    entry = 'name: "{name}" base_path: "{base}" model_platform: "tensorflow" {extra}'
    m = str(tmp_path / "m")
    write_config(
        config,
        "model_config_list { config { "
        + entry.format(name="all", base=m, extra="model_version_policy { all {} }")
        + " } config { "
        + entry.format(
            name="pinned",
            base=m,
            extra="model_version_policy { specific { versions: 1 versions: 3 } } "
            'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 3 }',
        )
        + " }"
        + " config { "
        + entry.format(
            name="latest2", base=m, extra="model_version_policy { latest { num_versions: 2 } }"
        )
        + " } }",
    )
    with run_server(
        model_config_file=str(config),
        model_config_file_poll_wait_seconds=1,
        file_system_poll_wait_seconds=0,
    ) as server:
        assert sorted(states(server, "all")) == [1, 2, 3]
        assert sorted(states(server, "pinned")) == [1, 3]
        assert sorted(states(server, "latest2")) == [2, 3]
        assert predict(server, "pinned", suffix="/labels/stable") == (200, {"predictions": [1.5]})
        assert predict(server, "pinned", suffix="/labels/canary") == (200, {"predictions": [3.5]})
        assert predict(server, "pinned", suffix="/versions/2")[0] == 404

        # The config file changes: "latest2" goes away, "pinned" gets a new label value.
        write_config(
            config,
            "model_config_list { config { "
            + entry.format(
                name="pinned",
                base=m,
                extra="model_version_policy { specific { versions: 1 versions: 3 } } "
                'version_labels { key: "stable" value: 3 }',
            )
            + " } }",
        )
        wait_for(
            lambda: predict(server, "pinned", suffix="/labels/stable")[1] == {"predictions": [3.5]},
            what="the new label",
        )
        wait_for(lambda: predict(server, "latest2")[0] == 404, what="latest2 to go")
        assert set(states(server, "latest2").values()) == {"END"}
        assert predict(server, "pinned", suffix="/labels/canary")[0] == 400


def test_reload_config_over_grpc(tmp_path, half_plus_two_base_path, run_server):
    with run_server(model_name="first", model_base_path=str(half_plus_two_base_path)) as server:
        stub = model_service_pb2_grpc.ModelServiceStub(
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        )
        request = model_management_pb2.ReloadConfigRequest()
        for name in ("first", "second"):
            model = request.config.model_config_list.config.add()
            model.name, model.base_path = name, str(half_plus_two_base_path)
            model.model_platform = "tensorflow"
        response = stub.HandleReloadConfigRequest(request, timeout=60)
        assert response.status.error_code == 0
        assert predict(server, "second") == (200, {"predictions": [2.5]})

        label = request.config.model_config_list.config[1].version_labels
        label["stable"] = 999
        with pytest.raises(grpc.RpcError) as raised:
            stub.HandleReloadConfigRequest(request, timeout=60)
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert raised.value.details() == (
            "Request to assign label to version 999 of model second, which is not currently "
            "available for inference"
        )
        with pytest.raises(grpc.RpcError) as raised:
            stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(), timeout=60)
        assert raised.value.details() == (
            "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
            "ModelConfigList is currently supported"
        )


CONFIG_ERRORS = [
    (
        'config { name: "m" base_path: "relative/path" model_platform: "tensorflow" }',
        "Expected model m to have an absolute path or URI; got base_path()=relative/path",
    ),
    (
        'config { name: "m" base_path: "/a" model_platform: "tensorflow" } '
        'config { name: "m" base_path: "/b" model_platform: "tensorflow" }',
        "Illegal to list model m multiple times in config list",
    ),
    (
        'config { name: "m" base_path: "/a" model_platform: "pytorch" }',
        "Model m requests unsupported platform pytorch",
    ),
    (
        'config { name: "m" base_path: "/a" }',
        "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
        "ModelServerConfig::model_platform, model name is m",
    ),
]


@pytest.mark.parametrize("configs,message", CONFIG_ERRORS)
def test_config_errors_stop_startup(tmp_path, configs, message, run_server):
    config = tmp_path / "models.config"
    config.write_text(f"model_config_list {{ {configs} }}")
    with pytest.raises(ServingError) as raised:
        with run_server(model_config_file=str(config)):
            pass
    assert raised.value.message == message


@pytest.mark.parametrize(
    "fields,message",
    [
        ({}, "Both server_options.model_base_path and server_options.model_config_file are empty!"),
        (
            {"port": 0, "model_base_path": "/x"},
            "At least one of server_options.grpc_port or server_options.grpc_socket_path must "
            "be set.",
        ),
        (
            {"model_base_path": "/x", "batching_parameters_file": "/b"},
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true.",
        ),
    ],
)
def test_startup_option_errors(fields, message, run_server):
    with pytest.raises(ServingError) as raised:
        with run_server(**fields):
            pass
    assert raised.value.message == message


def test_unparsable_config_file(tmp_path, run_server):
    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { nme: 'x' } }")
    with pytest.raises(ServingError) as raised:
        with run_server(model_config_file=str(config)):
            pass
    assert raised.value.message == f"Invalid protobuf file: '{config}'"


def test_model_that_fails_to_load_fails_startup(tmp_path, run_server):
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"garbage")
    with pytest.raises(ServingError) as raised:
        with run_server(model_name="m", model_base_path=str(tmp_path / "m")):
            pass
    assert raised.value.message.startswith(
        "1 model(s) did not become available: {{{name: m version: 1} due to error: "
    )


def test_same_rest_and_grpc_port_skips_rest(half_plus_two_base_path, run_server, free_port):
    port = free_port()
    with run_server(
        port=port, rest_api_port=port, model_base_path=str(half_plus_two_base_path)
    ) as server:
        assert server.rest_port is None  # TF Serving logs an error and skips REST
        assert server.grpc_port == port


def test_startup_waits_for_a_first_version_and_can_be_aborted(tmp_path, free_port, wait_for):
    from serving.server.options import ServerOptions
    from serving.server.server import Server

    (tmp_path / "empty").mkdir()
    server = Server()
    outcome: dict = {}

    def start():
        try:
            server.build_and_start(
                ServerOptions(port=free_port(), model_base_path=str(tmp_path / "empty"))
            )
        except ServingError as error:
            outcome["error"] = error

    thread = threading.Thread(target=start)
    thread.start()
    # Like TF Serving, the server waits for a version instead of starting without one.
    wait_for(lambda: server.core is not None, what="the model manager")
    thread.join(1.5)
    assert thread.is_alive()
    server.abort_startup()  # what SIGTERM/SIGINT do during startup
    thread.join(30)
    assert outcome["error"].message == "Server is shutting down"
