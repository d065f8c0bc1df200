"""`keras-vit deploy vertex --precision`: the machine series and the export must match.

The export's own settings file (written by ``keras-vit export``) says which precision
it holds; a bfloat16 export goes to a machine series with hardware bf16.
"""

from __future__ import annotations

import json

import pytest

from keras_vit.cli import main
from serving.vertex import BF16_MACHINE_SERIES, EXPORT_SETTINGS, VertexDeployConfig

WHERE = ("--project", "my-project", "--region", "us-central1", "--bucket", "gs://my-bucket/models")


def version_dir(tmp_path, precision: str | None):
    """A version directory as `keras-vit export` lays it out, with its settings file."""
    version = tmp_path / "vit" / "1"
    (version / "variables").mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"x")
    (version / "variables" / "variables.index").write_bytes(b"x")
    settings = {"top_k": 5} | ({"precision": precision} if precision else {})
    (version / EXPORT_SETTINGS).parent.mkdir()
    (version / EXPORT_SETTINGS).write_text(json.dumps(settings))
    return version


def plan(capsys, *args: str) -> dict[str, dict]:
    assert main(["deploy", "vertex", *WHERE, *args, "--dry-run"]) == 0, capsys.readouterr().err
    calls = json.loads(capsys.readouterr().out)["calls"]
    names = {"Endpoint.deploy": "deploy", "Model.upload": "upload_model"}
    by_call = {".".join(c["call"].split(".")[-2:]): c["kwargs"] for c in calls}
    return {short: by_call[name] for name, short in names.items()}


def test_settings_path_is_the_one_export_writes() -> None:
    from serving.export import SETTINGS_FILE

    assert EXPORT_SETTINGS == f"assets.extra/{SETTINGS_FILE}"


def test_a_bf16_export_goes_to_a_bf16_machine_by_default(capsys, tmp_path) -> None:
    steps = plan(capsys, "--model-dir", str(version_dir(tmp_path, "bfloat16")))
    assert steps["deploy"]["machine_type"] == "c3-standard-4"
    assert steps["upload_model"]["labels"] == {"app": "keras-vit", "precision": "bfloat16"}
    # Explicit and consistent: the same plan.
    again = plan(capsys, "--model-dir", str(tmp_path / "vit" / "1"), "--precision", "bfloat16")
    assert again == steps


@pytest.mark.parametrize("precision", ["float32", None])  # None: exported before --precision
def test_float32_stays_the_default(capsys, tmp_path, precision) -> None:
    steps = plan(capsys, "--model-dir", str(version_dir(tmp_path, precision)))
    assert steps["deploy"]["machine_type"] == "n1-standard-4"
    assert steps["upload_model"]["labels"] == {"app": "keras-vit", "precision": "float32"}


def test_bf16_on_a_machine_without_hardware_bf16_is_refused(capsys, tmp_path) -> None:
    model_dir = str(version_dir(tmp_path, "bfloat16"))
    args = ["deploy", "vertex", *WHERE, "--model-dir", model_dir, "--dry-run"]
    for machine in ("n1-standard-4", "n2-standard-8", "n2d-standard-8", "e2-standard-4"):
        assert main([*args, "--machine-type", machine]) == 2
        err = capsys.readouterr().err
        assert f"machine_type {machine} has no hardware bfloat16" in err
        assert "c3-standard-4" in err
    for series in BF16_MACHINE_SERIES:
        assert main([*args, "--machine-type", f"{series}-standard-8"]) == 0
        capsys.readouterr()


def test_precision_must_match_the_export(capsys, tmp_path) -> None:
    model_dir = str(version_dir(tmp_path, "float32"))
    args = ["deploy", "vertex", *WHERE, "--model-dir", model_dir, "--dry-run"]
    assert main([*args, "--precision", "bfloat16"]) == 2
    assert "holds a float32 export but precision is bfloat16" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--precision", "float16"])
    assert exit_.value.code == 2
    assert "invalid choice: 'float16'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="precision must be float32 or bfloat16"):
        VertexDeployConfig(
            project="my-project", region="us-central1", model_dir=model_dir,
            bucket="gs://my-bucket", endpoint_name="vit", precision="fp16",
        ).validate()  # fmt: skip


def test_custom_container_takes_the_precision_as_given(capsys) -> None:
    image = "us-docker.pkg.dev/my-project/serving/keras-vit-serving:0.1.0-bf16"
    args = ("--endpoint-id", "1", "--container-image-uri", image, "--precision", "bfloat16")
    steps = plan(capsys, *args)
    assert steps["deploy"]["machine_type"] == "c3-standard-4"
    assert steps["upload_model"]["labels"]["precision"] == "bfloat16"
