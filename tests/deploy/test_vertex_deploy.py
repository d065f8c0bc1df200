"""`keras-vit deploy vertex`: the dry-run plan (order, container, arguments), its
arguments checked against google-cloud-aiplatform's real signatures, and the execution
of the plan against autospecced SDK objects (no network anywhere)."""

from __future__ import annotations

import inspect
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
    build_plan,
    execute,
    parse_traffic_split,
    prebuilt_container_uri,
)


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
    return json.loads(capsys.readouterr().out)["steps"]


GPU_ARGS = (
    "--project", "my-project", "--region", "europe-west4",
    "--bucket", "gs://my-bucket/models", "--endpoint-name", "vit",
    "--machine-type", "n1-standard-8", "--accelerator-type", "NVIDIA_TESLA_T4",
    "--accelerator-count", "1", "--min-replicas", "1", "--max-replicas", "2",
    "--traffic-percentage", "100", "--cleanup",
)  # fmt: skip


def test_dry_run_plan_order_and_arguments(capsys, model_dir) -> None:
    steps = cli_plan(capsys, "--model-dir", str(model_dir), *GPU_ARGS)
    names = [s["step"] for s in steps]
    files = sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file())
    assert names == (
        ["init"]
        + ["upload_artifact"] * len(files)
        + ["upload_model", "find_endpoint", "create_endpoint", "deploy", "predict"]
        + ["undeploy", "delete_endpoint", "delete_model"]
        + ["delete_artifact"] * len(files)
    )
    artifact_uri = "gs://my-bucket/models/keras-vit/1"
    uploads = [s for s in steps if s["step"] == "upload_artifact"]
    assert [s["target"] for s in uploads] == [f"{artifact_uri}/{f}" for f in files]
    assert all(s["kwargs"]["if_generation_match"] == 0 for s in uploads)
    assert {s["kwargs"]["filename"] for s in uploads} == {str(model_dir / f) for f in files}

    upload = steps[names.index("upload_model")]
    assert upload["call"] == "google.cloud.aiplatform.Model.upload"
    assert upload["kwargs"]["artifact_uri"] == artifact_uri
    # GPU accelerator -> the GPU build of the prebuilt container, from the europe repository.
    version = PREBUILT_TF_VERSION.replace(".", "-")
    assert upload["kwargs"]["serving_container_image_uri"] == (
        f"europe-docker.pkg.dev/vertex-ai/prediction/tf2-gpu.{version}:latest"
    )
    deploy = steps[names.index("deploy")]
    assert deploy["target"] == "${endpoint}"
    assert deploy["kwargs"] == {
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
    assert steps[names.index("find_endpoint")]["kwargs"]["filter"] == 'display_name="vit"'
    predict = steps[names.index("predict")]
    assert predict["call"] == "serving.client.VertexClient.predict"
    assert predict["target"] == "${endpoint.resource_name}"
    undeploy = steps[names.index("undeploy")]
    assert undeploy["kwargs"]["deployed_model_id"] == "${deployed_model_id}"


def test_cpu_custom_container_and_canary_split(capsys) -> None:
    image = "us-docker.pkg.dev/my-project/serving/keras-vit-serving:0.1.0"
    steps = cli_plan(
        capsys, "--project", "my-project", "--region", "us-central1", "--endpoint-id", "123",
        "--container-image-uri", image, "--traffic-split", "0=10,4567=90",
        "--predict-image", __file__,
    )  # fmt: skip
    names = [s["step"] for s in steps]
    # The model is baked into our image: nothing to upload, no cleanup asked for.
    assert names == ["init", "upload_model", "get_endpoint", "deploy", "predict"]
    upload = steps[1]["kwargs"]
    assert upload["serving_container_image_uri"] == image
    assert "artifact_uri" not in upload
    assert upload["serving_container_predict_route"] == "/v1/models/vit:predict"
    assert upload["serving_container_health_route"] == "/v1/models/vit"
    assert upload["serving_container_ports"] == [8501]
    assert steps[3]["kwargs"]["traffic_split"] == {"0": 10, "4567": 90}
    assert "accelerator_type" not in steps[3]["kwargs"]
    assert steps[4]["kwargs"] == {"images": [__file__]}


def test_dry_run_needs_no_network_no_credentials_no_sdk(model_dir, tmp_path) -> None:
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
assert "google.cloud.aiplatform" not in sys.modules
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
        ({"accelerator_count": 2}, "needs an accelerator_type"),
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


@pytest.fixture(scope="module")
def sdk():
    aiplatform = pytest.importorskip(
        "google.cloud.aiplatform", reason="google-cloud-aiplatform is not installed"
    )
    storage = pytest.importorskip("google.cloud.storage")
    return aiplatform, storage


@pytest.mark.parametrize("region", ["us-central1", "europe-west4", "asia-northeast1"])
@pytest.mark.parametrize("gpu", [False, True])
def test_container_uri_matches_the_sdk(sdk, region, gpu) -> None:
    aiplatform, _ = sdk
    expected = aiplatform.helpers.get_prebuilt_prediction_container_uri(
        framework="tensorflow",
        framework_version=PREBUILT_TF_VERSION,
        region=region,
        accelerator="gpu" if gpu else "cpu",
    )
    assert prebuilt_container_uri(region, gpu=gpu) == expected


def test_prebuilt_version_is_the_newest_the_sdk_knows(sdk) -> None:
    from google.cloud.aiplatform.constants import prediction

    versions = prediction._SERVING_CONTAINER_URI_MAP["us"]["tensorflow"]["cpu"].keys()
    newest = max(versions, key=lambda v: tuple(int(x) for x in v.split(".")))
    assert PREBUILT_TF_VERSION == newest


def _sdk_function(sdk, call: str):
    aiplatform, storage = sdk
    from serving.client import VertexClient

    owners = {
        "google.cloud.aiplatform": aiplatform,
        "google.cloud.aiplatform.Model": aiplatform.Model,
        "google.cloud.aiplatform.Endpoint": aiplatform.Endpoint,
        "google.cloud.storage.Blob": storage.Blob,
        "serving.client.VertexClient": VertexClient,
    }
    if call in owners and inspect.isclass(owners[call]):
        return owners[call].__init__, True
    owner, _, name = call.rpartition(".")
    function = getattr(owners[owner], name)
    is_method = inspect.isclass(owners[owner]) and not isinstance(
        inspect.getattr_static(owners[owner], name), (classmethod, staticmethod)
    )
    return function, is_method


def test_plan_arguments_bind_to_the_sdk_signatures(sdk, model_dir) -> None:
    for container in (None, "us-docker.pkg.dev/p/r/keras-vit-serving:0.1.0"):
        config = VertexDeployConfig(
            project="my-project", region="us-central1", model_dir=model_dir,
            bucket="gs://my-bucket/p", endpoint_name="vit", accelerator_type="NVIDIA_L4",
            accelerator_count=1, service_account="sa@my-project.iam.gserviceaccount.com",
            container_image_uri=container, cleanup=True,
        )  # fmt: skip
        for step in build_plan(config):
            function, is_method = _sdk_function(sdk, step.call)
            args = (object(),) if is_method else ()
            try:
                inspect.signature(function).bind(*args, **step.kwargs)
            except TypeError as error:
                pytest.fail(f"{step.call}{sorted(step.kwargs)}: {error}")


def _fakes(sdk, *, existing_endpoint=False, predict_error=None):
    aiplatform, storage = sdk
    from serving.client import VertexClient

    model = mock.create_autospec(aiplatform.Model, instance=True)
    model.resource_name = "projects/1/locations/us-central1/models/77"
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
    )
    ai.Model.upload.return_value = model
    ai.Endpoint.list.return_value = [endpoint] if existing_endpoint else []
    ai.Endpoint.create.return_value = endpoint
    blobs: dict[str, mock.MagicMock] = {}

    def blob(name):
        return blobs.setdefault(name, mock.create_autospec(storage.Blob, instance=True))

    bucket = mock.create_autospec(storage.Bucket, instance=True)
    bucket.blob.side_effect = blob
    client = mock.create_autospec(storage.Client, instance=True)
    client.bucket.return_value = bucket
    store = SimpleNamespace(Client=mock.Mock(return_value=client))
    vertex = mock.create_autospec(VertexClient, instance=True)
    vertex.__enter__.return_value = vertex
    vertex.predict.return_value = [SimpleNamespace(label="tabby", score=0.9)]
    if predict_error:
        vertex.predict.side_effect = predict_error
    vertex_factory = mock.Mock(return_value=vertex)
    return SimpleNamespace(
        ai=ai, model=model, endpoint=endpoint, blobs=blobs, bucket=client.bucket,
        storage=store, vertex=vertex, vertex_factory=vertex_factory,
    )  # fmt: skip


def _run(sdk, model_dir, fakes, **overrides):
    config = VertexDeployConfig(
        **(
            dict(
                project="my-project", region="us-central1", model_dir=model_dir,
                bucket="gs://my-bucket/models", endpoint_name="vit", cleanup=True,
            )
            | overrides
        )
    )  # fmt: skip
    return execute(
        build_plan(config),
        config,
        aiplatform=fakes.ai,
        storage=fakes.storage,
        vertex_client=fakes.vertex_factory,
        log=lambda line: None,
    )


def test_execute_runs_every_step_and_cleans_up(sdk, model_dir) -> None:
    fakes = _fakes(sdk)
    values = _run(sdk, model_dir, fakes)
    files = sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file())
    fakes.ai.init.assert_called_once_with(
        project="my-project", location="us-central1", staging_bucket="gs://my-bucket/models"
    )
    fakes.bucket.assert_called_with("my-bucket")
    assert sorted(fakes.blobs) == [f"models/keras-vit/1/{f}" for f in files]
    for relative in files:
        blob = fakes.blobs[f"models/keras-vit/1/{relative}"]
        blob.upload_from_filename.assert_called_once_with(
            filename=str(model_dir / relative), if_generation_match=0
        )
        blob.delete.assert_called_once_with()
    assert fakes.ai.Model.upload.call_args.kwargs["artifact_uri"] == (
        "gs://my-bucket/models/keras-vit/1"
    )
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
    assert values["deployed_model_id"] == "42"


def test_reused_endpoint_is_not_deleted(sdk, model_dir) -> None:
    fakes = _fakes(sdk, existing_endpoint=True)
    _run(sdk, model_dir, fakes)
    fakes.ai.Endpoint.create.assert_not_called()
    fakes.endpoint.undeploy.assert_called_once()
    fakes.endpoint.delete.assert_not_called()


def test_failed_prediction_still_cleans_up(sdk, model_dir) -> None:
    fakes = _fakes(sdk, predict_error=RuntimeError("503 from the endpoint"))
    with pytest.raises(RuntimeError, match="503"):
        _run(sdk, model_dir, fakes)
    fakes.endpoint.undeploy.assert_called_once_with(deployed_model_id="42", sync=True)
    fakes.endpoint.delete.assert_called_once()
    fakes.model.delete.assert_called_once()
    assert all(blob.delete.called for blob in fakes.blobs.values())


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
        steps = {s["step"]: s for s in cli_plan(capsys, *args, *extra)}
        assert steps["find_endpoint"]["kwargs"]["filter"] == f'display_name="{name}"'
        assert steps["create_endpoint"]["kwargs"]["display_name"] == name
