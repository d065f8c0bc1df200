"""Vertex AI batch prediction: ``keras-vit deploy vertex batch-input`` writes JSON Lines that
decode back to the image bytes and that our TF-Serving-compatible REST server answers;
``batch-predict --dry-run`` records a BatchPredictionJob's calls, each bound to
google-cloud-aiplatform's real signatures, and runs against autospecced SDK objects."""

from __future__ import annotations

import base64
import csv
import hashlib
import inspect
import io
import json
import subprocess
import sys
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from keras_vit.cli import main
from serving.vertex_batch import (
    MAX_IMAGE_BYTES,
    MAX_LINE_BYTES,
    InstanceError,
    VertexBatchConfig,
    batch_predict,
    check_instances_file,
    decode_instance,
    instance_line,
)
from serving.vertex_sdk import RecordingSdk, Sdk
from tests.support.ports import free_port


def _image(fmt: str, size=(40, 56), seed=0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture
def photos(tmp_path):
    """photos/{cats,mugs}/...: JPEG, PNG, GIF and BMP files, and a README that is skipped."""
    root = tmp_path / "photos"
    files = {
        "cats/a.jpg": _image("JPEG", seed=1),
        "cats/b.png": _image("PNG", seed=2),
        "mugs/c.gif": _image("GIF", seed=3),
        "mugs/deeper/d.bmp": _image("BMP", seed=4),
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "README.txt").write_text("not an image")
    return root


def test_batch_input_lines_decode_back_to_the_image_bytes(photos, tmp_path, capsys):
    output = tmp_path / "instances.jsonl"
    assert main(["deploy", "vertex", "batch-input", str(photos), "--output", str(output)]) == 0
    assert "4 instances" in capsys.readouterr().out
    lines = output.read_text().splitlines()
    with open(str(output) + ".files.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    assert [row["line"] for row in manifest] == ["1", "2", "3", "4"]
    images = [p for p in photos.rglob("*") if p.suffix in (".jpg", ".png", ".gif", ".bmp")]
    assert [row["path"] for row in manifest] == sorted(map(str, images))
    for line, row in zip(lines, manifest, strict=True):
        # The instance format of the exported model: its input name, TF Serving's {"b64"}.
        instance = json.loads(line)
        assert list(instance) == ["image_bytes"] and list(instance["image_bytes"]) == ["b64"]
        data = base64.b64decode(instance["image_bytes"]["b64"], validate=True)
        assert data == open(row["path"], "rb").read()
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        assert decode_instance(line) == data
    assert check_instances_file(output) == 4


def test_batch_input_takes_globs(photos, tmp_path):
    output = tmp_path / "jpeg-and-png.jsonl"
    pattern = str(photos / "**" / "*.[jp][pn]g")
    assert main(["deploy", "vertex", "batch-input", pattern, "--output", str(output)]) == 0
    assert len(output.read_text().splitlines()) == 2


def test_images_over_the_limit_are_refused_and_listed(photos, tmp_path, capsys):
    big = photos / "cats" / "huge.png"
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    Image.fromarray(noise).save(big)  # incompressible: ~1.47 MB of PNG
    assert big.stat().st_size > MAX_IMAGE_BYTES
    (photos / "mugs" / "fake.jpg").write_bytes(b"GIF89a? no, just text")
    output = tmp_path / "instances.jsonl"
    assert main(["deploy", "vertex", "batch-input", str(photos), "--output", str(output)]) == 2
    error = capsys.readouterr().err
    assert "2 of 6 images cannot be batch prediction instances; nothing was written" in error
    assert (
        f"huge.png: {big.stat().st_size:,} bytes, over the maximum image size of "
        f"{MAX_IMAGE_BYTES:,} bytes (the most an instance may hold" in error
    )
    assert "fake.jpg: not a JPEG/PNG/GIF/BMP/WEBP image" in error
    assert not output.exists() and not (tmp_path / "instances.jsonl.partial").exists()


def test_the_limit_is_vertexs_request_limit_after_base64():
    from serving.client.client import VERTEX_MAX_REQUEST_BYTES

    largest = b"\xff" * MAX_IMAGE_BYTES
    line = instance_line(largest)
    assert len(line) <= MAX_LINE_BYTES < len(instance_line(largest + b"\0\0\0"))
    # One such instance is a whole request of Vertex's documented 1.5 MB.
    assert len(json.dumps({"instances": [json.loads(line)]}).encode()) <= VERTEX_MAX_REQUEST_BYTES


def test_missing_inputs_are_explained(tmp_path, capsys):
    args = [str(tmp_path / "nothing"), str(tmp_path / "*.jpg"), "--output", str(tmp_path / "x")]
    assert main(["deploy", "vertex", "batch-input", *args]) == 2
    error = capsys.readouterr().err
    assert "no such file or directory" in error and "the pattern matches no file" in error


def test_bad_lines_are_listed(tmp_path):
    good = instance_line(_image("PNG"))
    text = "\n".join(
        [
            good,
            "{not json",
            json.dumps({"image": {"b64": "AAAA"}}),
            json.dumps({"b64": "%%%"}),
            json.dumps({"b64": base64.b64encode(b"plain text").decode()}),
            json.dumps({"b64": "A" * MAX_LINE_BYTES}),
            json.dumps({"b64": base64.b64encode(_image("JPEG")).decode()}),  # the short form
        ]
    )
    path = tmp_path / "bad.jsonl"
    path.write_text(text + "\n")
    with pytest.raises(InstanceError) as raised:
        check_instances_file(path)
    message = str(raised.value)
    assert "5 bad lines" in message
    for expected in ("line 2: not JSON", 'line 3: expected {"image_bytes"', "line 4: ",
                     "line 5: the bytes are not", "line 6: 1,572,"):  # fmt: skip
        assert expected in message, message
    assert "  line 1:" not in message and "  line 7:" not in message


# --- our REST server answers a line ---------------------------------------------------


@pytest.fixture(scope="module")
def served_model(tmp_path_factory):
    """The tiny model exported and served by our server on free loopback ports."""
    from keras_vit import ViTClassifier
    from serving.export import export_saved_model
    from serving.server import logs
    from serving.server.options import ServerOptions
    from serving.server.server import Server
    from tests.conftest import TINY_CONFIG

    labels = ["tabby", "tiger", "lynx", "mug", "rocket", "espresso", "astronaut"]
    base = tmp_path_factory.mktemp("models") / "vit"
    export_saved_model(ViTClassifier(**TINY_CONFIG, labels=labels), base, top_k=3)
    logs.configure()
    server = Server()
    server.build_and_start(
        ServerOptions(
            port=free_port(),
            rest_api_port=free_port(),
            model_name="vit",
            model_base_path=str(base),
            max_num_load_retries=0,
        )
    )
    try:
        yield server.rest_port, labels
    finally:
        server.shutdown()


@pytest.mark.slow  # an export and a server: 8 CPU-s (tests/support/cpu_report.py)
def test_a_line_is_what_the_served_model_predicts_on(served_model, photos, tmp_path):
    """Vertex puts lines into {"instances": [...]} for TF Serving's REST predict."""
    import requests

    port, labels = served_model
    output = tmp_path / "instances.jsonl"
    assert main(["deploy", "vertex", "batch-input", str(photos), "--output", str(output)]) == 0
    lines = output.read_text().splitlines()
    url = f"http://127.0.0.1:{port}/v1/models/vit:predict"
    body = '{"instances": [' + ", ".join(lines[:2]) + "]}"  # as Vertex batches them
    answer = requests.post(url, data=body, timeout=60)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert len(predictions) == 2
    for prediction in predictions:
        assert prediction["label"] in labels and 0.0 <= prediction["score"] <= 1.0
        assert prediction["top_k_labels"][0] == prediction["label"]
    # The same image sent the way the online clients send it gets the same answer.
    plain = {"instances": [{"b64": json.loads(lines[0])["image_bytes"]["b64"]}]}
    again = requests.post(url, json=plain, timeout=60).json()["predictions"][0]
    assert again["label"] == predictions[0]["label"]
    assert again["score"] == pytest.approx(predictions[0]["score"], abs=1e-6)


# --- the plan -------------------------------------------------------------------------


@pytest.fixture
def model_dir(tmp_path):
    version = tmp_path / "vit" / "1"
    for name in ("saved_model.pb", "variables/variables.index"):
        (version / name).parent.mkdir(parents=True, exist_ok=True)
        (version / name).write_bytes(b"x")
    return version


@pytest.fixture
def instances(tmp_path):
    path = tmp_path / "instances.jsonl"
    path.write_text(instance_line(_image("JPEG")) + "\n" + instance_line(_image("PNG")) + "\n")
    return path


def _config(local_instances, local_model, **changes) -> VertexBatchConfig:
    fields = dict(
        project="my-project",
        region="europe-west4",
        instances=[str(local_instances), "gs://my-bucket/more/*.jsonl"],
        output="gs://my-bucket/predictions",
        bucket="gs://my-bucket/batch",
        model_dir=local_model,
        accelerator_type="NVIDIA_L4",
        accelerator_count=1,
        starting_replica_count=2,
        service_account="sa@my-project.iam.gserviceaccount.com",
    )
    return VertexBatchConfig(**(fields | changes))


def test_dry_run_calls(capsys, instances, model_dir):
    args = [
        "deploy", "vertex", "batch-predict", "--project", "my-project", "--region",
        "europe-west4", "--bucket", "gs://my-bucket/batch", "--instances", str(instances),
        "--instances", "gs://my-bucket/more/*.jsonl", "--output", "gs://my-bucket/predictions",
        "--model-dir", str(model_dir), "--machine-type", "n1-standard-8",
        "--accelerator-type", "NVIDIA_L4", "--starting-replica-count", "3",
        "--batch-size", "16", "--dry-run",
    ]  # fmt: skip
    assert main(args) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["dry_run"] is True
    calls = plan["calls"]
    assert [c["call"].removeprefix("google.cloud.") for c in calls] == [
        "aiplatform.init", "storage.Client", "storage.Blob.from_string",
        "storage.Blob.upload_from_filename", "aiplatform.Model.upload",
        "aiplatform.BatchPredictionJob.create",
    ]  # fmt: skip
    uploaded = "gs://my-bucket/batch/keras-vit-batch/instances/instances.jsonl"
    assert calls[2]["args"] == [uploaded]
    assert calls[3]["kwargs"] == {"filename": str(instances), "if_generation_match": 0}
    assert calls[4]["kwargs"]["artifact_uri"] == str(model_dir)
    assert calls[4]["kwargs"]["serving_container_image_uri"] == (
        "europe-docker.pkg.dev/vertex-ai/prediction/tf2-gpu.2-15:latest"
    )
    assert calls[5]["kwargs"] == {
        "job_display_name": "keras-vit-batch",
        "model_name": "${model}",
        "instances_format": "jsonl",
        "predictions_format": "jsonl",
        "gcs_source": [uploaded, "gs://my-bucket/more/*.jsonl"],
        "gcs_destination_prefix": "gs://my-bucket/predictions",
        "machine_type": "n1-standard-8",
        "starting_replica_count": 3,
        "max_replica_count": 3,
        "batch_size": 16,
        "labels": {"app": "keras-vit"},
        "sync": True,
        "accelerator_type": "NVIDIA_L4",
        "accelerator_count": 1,
    }


def test_overwrite_drops_the_generation_guard(instances, model_dir):
    sdk = RecordingSdk()
    batch_predict(_config(instances, model_dir, overwrite=True), sdk, log=lambda line: None)
    (upload,) = [c for c in sdk.calls if c["call"].endswith("upload_from_filename")]
    assert upload["kwargs"] == {"filename": str(instances)}


def test_a_registered_model_is_used_as_it_is(instances, model_dir):
    name = "projects/123/locations/europe-west4/models/456"
    sdk = RecordingSdk()
    config = _config(
        instances, None, model=name, instances=["gs://my-bucket/in.jsonl"], bucket=None
    )
    batch_predict(config, sdk, log=lambda line: None)
    assert [c["call"].rsplit(".", 1)[-1] for c in sdk.calls] == ["init", "create"]
    assert sdk.calls[-1]["kwargs"]["model_name"] == name
    assert sdk.calls[-1]["kwargs"]["gcs_source"] == ["gs://my-bucket/in.jsonl"]


def test_dry_run_is_offline(instances, model_dir, tmp_path):
    code = f"""
import socket, sys
def refuse(*args, **kwargs):
    raise AssertionError("network access during a dry run")
socket.socket.connect = refuse
socket.create_connection = refuse
from keras_vit.cli import main
rc = main(["deploy", "vertex", "batch-predict", "--project", "my-project", "--region",
           "us-central1", "--bucket", "gs://my-bucket", "--instances", {str(instances)!r},
           "--output", "gs://my-bucket/out", "--model-dir", {str(model_dir)!r}, "--dry-run"])
assert rc == 0, rc
"""
    env = {"PATH": "/usr/bin:/bin", "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "none")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["calls"][-1]["kwargs"]["instances_format"] == "jsonl"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"model": "projects/1/locations/x/models/2"}, "not both or neither"),
        ({"model_dir": None}, "not both or neither"),
        ({"output": "/local/out"}, "must be a gs://"),
        ({"bucket": None}, "needs --bucket"),
        ({"instances": []}, "at least one instances file"),
        ({"instances": ["missing.jsonl"]}, "does not exist"),
        ({"accelerator_count": 0}, "together"),
        ({"max_replica_count": 1}, "below starting_replica_count"),
        ({"batch_size": 0}, "batch_size"),
        ({"region": "mars"}, "not a region"),
    ],
)
def test_bad_configuration_is_explained(instances, model_dir, changes, message):
    sdk = RecordingSdk()
    with pytest.raises(ValueError, match=message):
        batch_predict(_config(instances, model_dir, **changes), sdk, log=lambda line: None)
    assert sdk.calls == []  # refused before any call


def test_bad_instances_stop_the_plan(tmp_path, model_dir, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image_bytes": "not b64 object"}\n')
    where = ["--bucket", "gs://my-bucket", "--output", "gs://my-bucket/out"]
    args = ["deploy", "vertex", "batch-predict", "--project", "my-project", "--region",
            "us-central1", *where, "--instances", str(bad), "--model-dir", str(model_dir),
            "--dry-run"]  # fmt: skip
    assert main(args) == 2
    assert "bad instances" in capsys.readouterr().err


# --- against autospecced google-cloud-aiplatform objects --------------------------------


def test_the_sdk_takes_jsonl_in_and_out():
    from google.cloud.aiplatform import jobs

    source = inspect.getsource(jobs.BatchPredictionJob.create)
    assert '"jsonl"' in source or "'jsonl'" in source


def test_run_uploads_then_creates_the_job(instances, model_dir):
    from google.cloud import aiplatform, storage

    model = mock.create_autospec(aiplatform.Model, instance=True)
    model.resource_name = "projects/1/locations/europe-west4/models/77"
    job = mock.create_autospec(aiplatform.BatchPredictionJob, instance=True)
    job.resource_name = "projects/1/locations/europe-west4/batchPredictionJobs/9"
    ai = SimpleNamespace(
        init=mock.create_autospec(aiplatform.init),
        Model=mock.create_autospec(aiplatform.Model),
        BatchPredictionJob=mock.create_autospec(aiplatform.BatchPredictionJob),
        helpers=aiplatform.helpers,
    )
    ai.Model.upload.return_value = model
    ai.BatchPredictionJob.create.return_value = job
    blobs: dict[str, mock.MagicMock] = {}
    blob_class = mock.create_autospec(storage.Blob)
    blob_class.from_string.side_effect = lambda uri, client=None: blobs.setdefault(
        uri, mock.create_autospec(storage.Blob, instance=True)
    )
    client = mock.create_autospec(storage.Client, instance=True)
    store = SimpleNamespace(Client=mock.Mock(return_value=client), Blob=blob_class)
    config = _config(instances, model_dir)
    result = batch_predict(config, Sdk(ai, store, None), log=lambda line: None)
    assert result is job
    uploaded = "gs://my-bucket/batch/keras-vit-batch/instances/instances.jsonl"
    blobs[uploaded].upload_from_filename.assert_called_once_with(
        filename=str(instances), if_generation_match=0
    )
    assert ai.Model.upload.call_args.kwargs["artifact_uri"] == str(model_dir)
    kwargs = ai.BatchPredictionJob.create.call_args.kwargs
    assert kwargs["model_name"] is model  # the uploaded model object
    assert kwargs["gcs_source"][0] == uploaded


def test_docstring_and_help_name_the_same_limit(capsys):
    import serving.vertex_batch as module

    with pytest.raises(SystemExit):
        main(["deploy", "vertex", "batch-input", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"{MAX_IMAGE_BYTES:,}" in " ".join(module.__doc__.split())
    assert f"{MAX_IMAGE_BYTES:,} bytes" in help_text
