"""`keras-vit deploy vertex`: the dry run's calls (order, container, arguments), each bound to
google-cloud-aiplatform's real signatures by the recording SDK, and the deployment run
against autospecced SDK objects (no network anywhere)."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace
from unittest import mock

import pytest

from keras_vit.cli import main
from serving.vertex import (
    PREBUILT_TF_VERSION,
    VertexDeployConfig,
    deploy,
    parse_traffic_split,
)
from serving.vertex_sdk import RecordingSdk, Sdk

aiplatform = pytest.importorskip(
    "google.cloud.aiplatform", reason="the vertex extra (google-cloud-aiplatform) is not installed"
)
storage = pytest.importorskip("google.cloud.storage")


@pytest.fixture
def model_dir(tmp_path):
    """A SavedModel version directory's file layout (contents do not matter here)."""
    version = tmp_path / "vit" / "1"
    for name in (
        "saved_model.pb",
        "fingerprint.pb",
        "variables/variables.index",
        "variables/variables.data-00000-of-00001",
        "assets.extra/tf_serving_warmup_requests",
    ):
        (version / name).parent.mkdir(parents=True, exist_ok=True)
        (version / name).write_bytes(b"x")
    return version


def cli_plan(capsys, *args: str) -> list[dict]:
    assert main(["deploy", "vertex", *args, "--dry-run"]) == 0
    return json.loads(capsys.readouterr().out)["calls"]


def short(call: dict) -> str:
    """``Model.upload`` for ``google.cloud.aiplatform.Model.upload``."""
    return ".".join(call["call"].split(".")[-2:]).removeprefix("aiplatform.")


GPU_ARGS = (
    "--project", "my-project", "--region", "europe-west4",
    "--bucket", "gs://my-bucket/models", "--endpoint-name", "vit",
    "--machine-type", "n1-standard-8", "--accelerator-type", "NVIDIA_TESLA_T4",
    "--accelerator-count", "1", "--min-replicas", "1", "--max-replicas", "2",
    "--traffic-percentage", "100", "--cleanup",
)  # fmt: skip


def test_dry_run_calls_order_and_arguments(capsys, model_dir) -> None:
    calls = cli_plan(capsys, "--model-dir", str(model_dir), *GPU_ARGS)
    assert [short(c) for c in calls] == [
        "init", "Model.upload", "Endpoint.list", "Endpoint.create", "Endpoint.deploy",
        "Endpoint.list_models", "client.VertexClient", "VertexClient.predict",
        "Endpoint.undeploy", "Endpoint.delete", "Model.delete", "storage.Client",
        "Client.list_blobs",
    ]  # fmt: skip
    by_name = {short(c): c for c in calls}
    assert by_name["init"]["kwargs"] == {
        "project": "my-project", "location": "europe-west4",
        "staging_bucket": "gs://my-bucket/models",
    }  # fmt: skip
    upload = by_name["Model.upload"]
    # The local version directory: Model.upload stages it under the staging bucket itself.
    assert upload["kwargs"]["artifact_uri"] == str(model_dir)
    # GPU accelerator -> the GPU build of the prebuilt container, from the europe repository
    # (the URI as Vertex's "Prebuilt containers for inference" page lists it).
    assert upload["kwargs"]["serving_container_image_uri"] == (
        "europe-docker.pkg.dev/vertex-ai/prediction/tf2-gpu.2-15:latest"
    )
    deploy_call = by_name["Endpoint.deploy"]
    assert deploy_call["target"] == "${endpoint}"
    assert deploy_call["kwargs"] == {
        "model": "${model}",
        "deployed_model_display_name": "keras-vit",
        "machine_type": "n1-standard-8",
        "min_replica_count": 1,
        "max_replica_count": 2,
        "accelerator_type": "NVIDIA_TESLA_T4",
        "accelerator_count": 1,
        "traffic_percentage": 100,
        "sync": True,
    }
    assert by_name["Endpoint.list"]["kwargs"]["filter"] == 'display_name="vit"'
    assert by_name["client.VertexClient"]["args"] == ["${endpoint.resource_name}"]
    (image,) = by_name["VertexClient.predict"]["kwargs"]["images"]
    assert image.endswith(" bytes>")  # the generated smoke-test JPEG
    assert by_name["Endpoint.undeploy"]["kwargs"]["deployed_model_id"] == "${deployed_model_id}"
    # The files Model.upload staged go with the model.
    assert by_name["Client.list_blobs"]["args"] == ["${staging_bucket}"]
    assert by_name["Client.list_blobs"]["kwargs"] == {
        "prefix": "vertex_ai_auto_staging/${timestamp}/"
    }


def test_cpu_custom_container_and_canary_split(capsys) -> None:
    image = "us-docker.pkg.dev/my-project/serving/keras-vit-serving:0.1.0"
    calls = cli_plan(
        capsys, "--project", "my-project", "--region", "us-central1", "--endpoint-id", "123",
        "--container-image-uri", image, "--traffic-split", "0=10,4567=90",
        "--predict-image", __file__,
    )  # fmt: skip
    # The model is baked into our image: nothing to stage, no cleanup asked for.
    assert [short(c) for c in calls] == [
        "init", "Model.upload", "Endpoint", "Endpoint.deploy",
        "Endpoint.list_models", "client.VertexClient", "VertexClient.predict",
    ]  # fmt: skip
    upload = calls[1]["kwargs"]
    assert upload["serving_container_image_uri"] == image
    assert "artifact_uri" not in upload
    assert upload["serving_container_predict_route"] == "/v1/models/vit:predict"
    assert upload["serving_container_health_route"] == "/v1/models/vit"
    assert upload["serving_container_ports"] == [8501]
    assert calls[2]["kwargs"] == {"endpoint_name": "123"}
    assert calls[3]["kwargs"]["traffic_split"] == {"0": 10, "4567": 90}
    assert "accelerator_type" not in calls[3]["kwargs"]
    assert calls[6]["kwargs"] == {"images": [__file__]}


def test_our_servers_image_is_told_vertexs_routes(capsys, tmp_path) -> None:
    """`--container keras-vit-serve`: Model.upload (bound to the SDK's real signature) names
    the routes and port our server answers under Vertex's AIP_* variables."""
    from serving.server.vertex_routes import VertexRoutes

    image = "us-docker.pkg.dev/my-project/serving/keras-vit-serve:0.1.0-int8"
    calls = cli_plan(
        capsys, "--project", "my-project", "--region", "us-central1", "--endpoint-name", "vit",
        "--container-image-uri", image, "--container", "keras-vit-serve",
        "--machine-type", "c3-standard-4",
    )  # fmt: skip
    upload = {short(c): c for c in calls}["Model.upload"]["kwargs"]
    assert upload["serving_container_image_uri"] == image and "artifact_uri" not in upload
    assert upload["serving_container_ports"] == [8501]
    # What Vertex then sets in the container, and what our server makes of it.
    env = {
        "AIP_HTTP_PORT": str(upload["serving_container_ports"][0]),
        "AIP_HEALTH_ROUTE": upload["serving_container_health_route"],
        "AIP_PREDICT_ROUTE": upload["serving_container_predict_route"],
    }
    routes = VertexRoutes.from_environment(None, env)
    assert (routes.health_route, routes.predict_route) == ("/health", "/predict")
    # An int8 export cannot go to the prebuilt TF Serving container.
    version = tmp_path / "vit-int8" / "1"
    (version / "assets.extra").mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"x")
    (version / "assets.extra" / "keras_vit_export.json").write_text('{"precision": "int8"}')
    rc = main(["deploy", "vertex", "--project", "my-project", "--region", "us-central1",
               "--bucket", "gs://my-bucket", "--model-dir", str(version), "--dry-run"])  # fmt: skip
    assert rc == 2
    assert "int8 export, which TF Serving cannot load" in capsys.readouterr().err


def test_an_argument_the_sdk_does_not_take_fails_the_dry_run(model_dir) -> None:
    # The recording SDK binds every call to the real signature, as the SDK itself would.
    sdk = RecordingSdk()
    with pytest.raises(TypeError, match="machine"):
        sdk.aiplatform.Endpoint.create(display_name="vit", machine="n1-standard-4")
    with pytest.raises(TypeError):
        sdk.aiplatform.Model.upload(display_name="vit", artifact="models/vit/1")
    assert [short(c) for c in sdk.calls] == []


def test_dry_run_needs_no_network_no_credentials(model_dir, tmp_path) -> None:
    code = f"""
import socket, sys
def refuse(*args, **kwargs):
    raise AssertionError("network access during a dry run")
socket.socket.connect = refuse
socket.create_connection = refuse
from keras_vit.cli import main
rc = main(["deploy", "vertex", "--model-dir", {str(model_dir)!r}, *{list(GPU_ARGS)!r},
           "--dry-run"])
assert rc == 0, rc
"""
    env = {"PATH": "/usr/bin:/bin", "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "none")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["dry_run"] is True


@pytest.mark.parametrize(
    "change,message",
    [
        ({"project": "X"}, "not a Google Cloud project id"),
        ({"region": "mars"}, "not a region"),
        ({"bucket": "s3://bucket"}, "gs://BUCKET"),
        ({"model_dir": "parent"}, "no saved_model.pb"),
        ({"endpoint_id": "1"}, "exactly one of endpoint_name"),
        ({"accelerator_type": "T4"}, "not a Vertex accelerator"),
        ({"accelerator_count": 2}, "together"),
        ({"min_replicas": 0}, "min_replicas must be >= 1"),
        ({"max_replicas": 0}, "below min_replicas"),
        ({"traffic_split": {"0": 50, "7": 40}}, "add up to 100"),
        ({"traffic_split": {"7": 100}}, 'key "0"'),
        ({"traffic_percentage": 120}, "within 0..100"),
        ({"container_image_uri": "keras-vit-serving"}, "pinned image"),
        ({"predict_images": ["missing.jpg"]}, "does not exist"),
    ],
)
def test_bad_configuration_is_explained(model_dir, change, message) -> None:
    values = dict(
        project="my-project", region="us-central1", model_dir=model_dir,
        bucket="gs://my-bucket", endpoint_name="vit",
    )  # fmt: skip
    if change.get("model_dir") == "parent":
        change = {"model_dir": model_dir.parent}
    with pytest.raises(ValueError, match=message):
        VertexDeployConfig(**(values | change)).validate()


def test_cli_reports_bad_input_without_traceback(capsys, model_dir) -> None:
    rc = main(["deploy", "vertex", "--model-dir", str(model_dir.parent), *GPU_ARGS])
    assert rc == 2
    assert "no saved_model.pb" in capsys.readouterr().err


def test_parse_traffic_split() -> None:
    assert parse_traffic_split("0=80, 123=20") == {"0": 80, "123": 20}
    for bad in ("0:80", "0=", "=5", "0=eighty"):
        with pytest.raises(ValueError, match="0=80"):
            parse_traffic_split(bad)


# --- against the real google-cloud-aiplatform ------------------------------------------


def test_prebuilt_version_is_the_newest_the_sdk_knows() -> None:
    from google.cloud.aiplatform.constants import prediction

    versions = prediction._SERVING_CONTAINER_URI_MAP["us"]["tensorflow"]["cpu"].keys()
    newest = max(versions, key=lambda v: tuple(int(x) for x in v.split(".")))
    assert PREBUILT_TF_VERSION == newest


def _fakes(*, existing_endpoint=False, predict_error=None):
    from serving.client import VertexClient

    model = mock.create_autospec(aiplatform.Model, instance=True)
    model.resource_name = "projects/1/locations/us-central1/models/77"
    model.uri = "gs://my-bucket/models/vertex_ai_auto_staging/2026-12-07-10:00:00.000"
    endpoint = mock.create_autospec(aiplatform.Endpoint, instance=True)
    endpoint.resource_name = "projects/1/locations/us-central1/endpoints/55"
    endpoint.list_models.return_value = [
        SimpleNamespace(id="41", model="projects/1/locations/us-central1/models/12"),
        SimpleNamespace(id="42", model=model.resource_name + "@1"),
    ]
    ai = SimpleNamespace(
        init=mock.create_autospec(aiplatform.init),
        Model=mock.create_autospec(aiplatform.Model),
        Endpoint=mock.create_autospec(aiplatform.Endpoint),
        helpers=aiplatform.helpers,
    )
    ai.Model.upload.return_value = model
    ai.Endpoint.list.return_value = [endpoint] if existing_endpoint else []
    ai.Endpoint.create.return_value = endpoint
    staged = [mock.create_autospec(storage.Blob, instance=True) for _ in range(3)]
    client = mock.create_autospec(storage.Client, instance=True)
    client.list_blobs.return_value = staged
    store = SimpleNamespace(Client=mock.Mock(return_value=client))
    vertex = mock.create_autospec(VertexClient, instance=True)
    vertex.__enter__.return_value = vertex
    vertex.predict.return_value = [SimpleNamespace(label="tabby", score=0.9)]
    if predict_error:
        vertex.predict.side_effect = predict_error
    vertex_factory = mock.Mock(return_value=vertex)
    return SimpleNamespace(
        ai=ai, model=model, endpoint=endpoint, staged=staged, client=client,
        storage=store, vertex=vertex, vertex_factory=vertex_factory,
    )  # fmt: skip


def _run(model_dir, fakes, **overrides):
    config = VertexDeployConfig(
        **(
            dict(
                project="my-project", region="us-central1", model_dir=model_dir,
                bucket="gs://my-bucket/models", endpoint_name="vit", cleanup=True,
            )
            | overrides
        )
    )  # fmt: skip
    sdk = Sdk(fakes.ai, fakes.storage, fakes.vertex_factory)
    return deploy(config, sdk, log=lambda line: None)


def test_deploy_makes_every_call_and_cleans_up(model_dir) -> None:
    fakes = _fakes()
    done = _run(model_dir, fakes)
    fakes.ai.init.assert_called_once_with(
        project="my-project", location="us-central1", staging_bucket="gs://my-bucket/models"
    )
    assert fakes.ai.Model.upload.call_args.kwargs["artifact_uri"] == str(model_dir)
    fakes.ai.Endpoint.create.assert_called_once()
    fakes.endpoint.deploy.assert_called_once()
    assert fakes.endpoint.deploy.call_args.kwargs["model"] is fakes.model
    fakes.vertex_factory.assert_called_once_with(
        fakes.endpoint.resource_name, project="my-project", region="us-central1"
    )
    (images,) = fakes.vertex.predict.call_args.kwargs["images"]
    assert images[:2] == b"\xff\xd8"  # the synthetic smoke-test image is a JPEG
    fakes.endpoint.undeploy.assert_called_once_with(deployed_model_id="42", sync=True)
    fakes.endpoint.delete.assert_called_once_with(force=False, sync=True)
    fakes.model.delete.assert_called_once_with(sync=True)
    # The files Model.upload staged: listed under the model's URI and deleted.
    fakes.client.list_blobs.assert_called_once_with(
        "my-bucket", prefix="models/vertex_ai_auto_staging/2026-12-07-10:00:00.000/"
    )
    assert all(blob.delete.call_count == 1 for blob in fakes.staged)
    assert done.deployed_model_id == "42" and done.created_endpoint


def test_reused_endpoint_is_not_deleted(model_dir) -> None:
    fakes = _fakes(existing_endpoint=True)
    _run(model_dir, fakes)
    fakes.ai.Endpoint.create.assert_not_called()
    fakes.endpoint.undeploy.assert_called_once()
    fakes.endpoint.delete.assert_not_called()


def test_failed_prediction_still_cleans_up(model_dir) -> None:
    fakes = _fakes(predict_error=RuntimeError("503 from the endpoint"))
    with pytest.raises(RuntimeError, match="503"):
        _run(model_dir, fakes)
    fakes.endpoint.undeploy.assert_called_once_with(deployed_model_id="42", sync=True)
    fakes.endpoint.delete.assert_called_once()
    fakes.model.delete.assert_called_once()
    assert all(blob.delete.called for blob in fakes.staged)


def test_a_failed_cleanup_step_does_not_stop_the_others(model_dir) -> None:
    fakes = _fakes()
    fakes.endpoint.undeploy.side_effect = RuntimeError("undeploy timed out")
    _run(model_dir, fakes)
    fakes.endpoint.delete.assert_called_once()
    fakes.model.delete.assert_called_once()


def test_docstring_example_runs() -> None:
    import doctest

    import serving.vertex

    result = doctest.testmod(serving.vertex, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_endpoint_defaults_to_the_model_display_name(capsys, model_dir) -> None:
    # The README's "Deployment in short" command, which names no endpoint.
    args = ("--model-dir", str(model_dir), "--project", "my-project", "--region",
            "europe-west4", "--bucket", "gs://my-bucket")  # fmt: skip
    for extra, name in (((), "keras-vit"), (("--model-display-name", "vit"), "vit")):
        calls = {short(c): c for c in cli_plan(capsys, *args, *extra)}
        assert calls["Endpoint.list"]["kwargs"]["filter"] == f'display_name="{name}"'
        assert calls["Endpoint.create"]["kwargs"]["display_name"] == name
