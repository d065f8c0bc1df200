"""Journey 1, the main recipe: fine-tune a headless in21k backbone, export, serve, query.

Starts from what a user downloads: a ``ViTModel`` / ``TFViTModel`` checkpoint
without a classification head (TF ``tf_model.h5`` or PyTorch-named
``model.safetensors``), or a Google AugReg-style ``.npz`` whose 21,843-class
head must be replaced. ``keras-vit train`` on an image folder adds a head sized
by the folder's classes; ``export`` -> ``serve`` -> ``predict --server`` over
gRPC and REST then agree with ``predict --model RUN_DIR`` in-process.
"""

from __future__ import annotations

import json

import pytest

from tests.journeys.conftest import CLASS_PHOTOS, predictions, serving

pytestmark = pytest.mark.slow  # a journey: keras-vit as typed, a server, queries

# In-process prediction and the served signature share one decoder (keras_vit/decode.py):
# the same pixels, so the scores agree to float rounding.
SCORE_TOLERANCE = 1e-5

SOURCES = {
    "tf_h5": "in21k_tf",  # TFViTModel.save_pretrained: tf_model.h5, no head
    "pt_safetensors": "in21k_pt",  # ViTModel.save_pretrained: model.safetensors, no head
    "augreg_npz": "augreg.npz",  # vit_jax layout with a 21,843-class head
}


# The first format runs the journey in fresh processes, as a user's terminal does; the
# others take the same path with the commands in the test process (tests/journeys/conftest.py).
@pytest.mark.parametrize(
    "source",
    [
        source if index == 0 else pytest.param(source, marks=pytest.mark.journey_in_process)
        for index, source in enumerate(SOURCES)
    ],
)
def test_in21k_backbone_fine_tunes_exports_serves_and_answers_alike(
    source, checkpoints, photo_folder, query_photos, tmp_path, journey
):
    run_dir, models = tmp_path / "runs" / "photos", tmp_path / "models" / "vit"
    trained = journey.run(
        "train",
        "train",
        "--model",
        str(checkpoints / SOURCES[source]),
        "--data",
        str(photo_folder),
        "--output",
        str(run_dir),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--lr",
        "1e-3",
        "--validation-split",
        "0.25",
        "--no-tensorboard",
    )
    labels = sorted(CLASS_PHOTOS)
    assert "3 classes" in trained.stdout
    assert (run_dir / "labels.txt").read_text().splitlines() == labels
    config = json.loads((run_dir / "training_config.json").read_text())
    assert config["labels"] == labels

    journey.run("export", "export", "--model", str(run_dir), "--output", str(models))
    assert (models / "1" / "saved_model.pb").is_file()
    images = [str(p) for p in query_photos]
    local = predictions(
        journey.run("predict --model", "predict", "--model", str(run_dir), "--json", *images).stdout
    )
    with serving(journey, "vit", models) as (grpc_port, rest_port):
        answers = {}
        for protocol, port in (("grpc", grpc_port), ("rest", rest_port)):
            answers[protocol] = predictions(
                journey.run(
                    f"predict --server ({protocol})",
                    "predict",
                    "--server",
                    f"127.0.0.1:{port}",
                    "--protocol",
                    protocol,
                    "--model-name",
                    "vit",
                    "--json",
                    *images,
                ).stdout
            )
    names = {p.name for p in query_photos}
    assert set(local) == set(answers["grpc"]) == set(answers["rest"]) == names
    worst = 0.0
    for name, mine in local.items():
        grpc, rest = answers["grpc"][name], answers["rest"][name]
        # One export, two protocols: the same answer.
        assert [label for label, _ in grpc["top_k"]] == [label for label, _ in rest["top_k"]]
        served = dict(grpc["top_k"])
        for label, score in rest["top_k"]:
            assert score == pytest.approx(served[label], abs=1e-6)
        assert set(served) == set(labels)
        for label, score in mine["top_k"]:
            worst = max(worst, abs(score - served[label]))
    print(f"{source}: max |in-process - served| score = {worst:.2e}")
    assert worst <= SCORE_TOLERANCE
