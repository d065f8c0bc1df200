"""The Beam pipeline of ``keras-vit batch-predict``, on the FnApiRunner and on two worker processes.

Every good image gets the prediction TF Serving's way of running the export
gives (same labels, scores within 1e-6), keyed by its path; every bad one is a
dead letter with the decoder's reason; JSON Lines and Parquet hold the same
rows; the counters add up: images in = predictions + dead letters.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.batch.conftest import MAX_FILE_BYTES, NEEDS_BEAM
from tests.special_files import SECRET

# 45 CPU-s in all (tests/support/cpu_report.py): `make test` runs it, `make test-fast` not
pytestmark = pytest.mark.slow

pytest.importorskip("apache_beam", reason=NEEDS_BEAM)

SCORE_TOLERANCE = 1e-6
TWO_WORKERS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def read_rows(out: Path, name: str) -> list[dict]:
    return [
        json.loads(line)
        for path in sorted(out.glob(f"{name}-*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def read_parquet(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return [
        row
        for path in sorted(out.glob("predictions-*.parquet"))
        for row in pq.read_table(path).to_pylist()
    ]


def reference_predictions(exported: Path, files: list[Path]) -> dict[str, dict]:
    """The export run as TF Serving runs it: TF1 session, SignatureDef tensor names."""
    from tests.export.conftest import SessionModel

    model = SessionModel(exported)
    encoded = np.array([path.read_bytes() for path in files], dtype=object)
    outputs = model.run("serving_default", image_bytes=encoded)
    return {
        str(path): {
            "label": outputs["label"][i].decode(),
            "score": float(outputs["score"][i]),
            "top_k_labels": [label.decode() for label in outputs["top_k_labels"][i]],
            "top_k_scores": [float(s) for s in outputs["top_k_scores"][i]],
        }
        for i, path in enumerate(files)
    }


def run_pipeline(
    exported: Path, folder: Path, out: Path, beam_args: list[str], share_model: bool = False
):
    from apache_beam.options.pipeline_options import PipelineOptions

    from serving.batch import pipeline

    settings = pipeline.BatchSettings(
        model_dir=str(exported),
        input=f"{folder}/**",
        output=str(out),
        batch_size=4,
        max_file_bytes=MAX_FILE_BYTES,
        share_model=share_model,
    )
    options = PipelineOptions([*beam_args, "--default_sdk_harness_log_level=ERROR"])
    return pipeline.run(settings, options, runner=pipeline.local_runner(options))


def check_outputs(exported: Path, folder: Path, bad: dict[str, str], out: Path, counts) -> None:
    # Pipes, sockets and symlinks too: every matched file is a prediction or a dead letter.
    files = sorted(p for p in folder.rglob("*") if not p.is_dir())
    good = [p for p in files if p.relative_to(folder).as_posix() not in bad]
    assert len(files) == 21 and len(good) == 11

    assert (counts.images_in, counts.predictions, counts.dead_letters) == (21, 11, 10)
    assert counts.balanced
    print(f"counts: {counts.images_in} in = {counts.predictions} out + {counts.dead_letters} dead")

    rows = read_rows(out, "predictions")
    assert sorted(row["image"] for row in rows) == sorted(str(p) for p in good)  # keys: paths
    reference = reference_predictions(exported, good)
    worst = 0.0
    for row in rows:
        expected = reference[row["image"]]
        assert list(row) == ["image", "label", "score", "top_k_labels", "top_k_scores"]
        assert row["label"] == expected["label"]
        assert row["top_k_labels"] == expected["top_k_labels"]
        for ours, theirs in zip(
            [row["score"], *row["top_k_scores"]],
            [expected["score"], *expected["top_k_scores"]],
            strict=True,
        ):
            worst = max(worst, abs(ours - theirs))
    print(f"max |batch-predict - TF Serving's session| score = {worst:.1e}")
    assert worst <= SCORE_TOLERANCE

    by_image = {row["image"]: row for row in rows}
    parquet = read_parquet(out)
    assert len(parquet) == len(rows)
    for row in parquet:
        assert row == by_image[row["image"]]  # float32 in both: exactly equal

    dead = read_rows(out, "dead_letters")
    assert sorted(d["image"] for d in dead) == sorted(str(folder / name) for name in bad)
    for letter in dead:
        expected = bad[Path(letter["image"]).relative_to(folder).as_posix()]
        assert expected in letter["reason"], letter
        assert SECRET.decode().strip()[:5] not in letter["reason"], letter  # never quoted


@pytest.mark.parametrize("share_model", [False, True], ids=["own-model", "shared-model"])
def test_fn_api_runner_predicts_every_good_image_and_dead_letters_the_rest(
    exported, image_folder, tmp_path, share_model
):
    # shared-model: the model lives in Beam's multi_process_shared server process; the
    # handler's ImageClassifier is called through its proxy.
    folder, bad = image_folder
    counts, state = run_pipeline(exported, folder, tmp_path / "out", [], share_model)
    assert state == "DONE"
    check_outputs(exported, folder, bad, tmp_path / "out", counts)


def test_two_worker_processes_give_the_same_rows(exported, image_folder, tmp_path):
    folder, bad = image_folder
    counts, state = run_pipeline(exported, folder, tmp_path / "out", TWO_WORKERS)
    assert state == "DONE"
    check_outputs(exported, folder, bad, tmp_path / "out", counts)
    shards = sorted(p.name for p in (tmp_path / "out").glob("predictions-*.jsonl"))
    print(f"two workers wrote {shards}")


@pytest.mark.parametrize("formats", [("jsonl",), ("parquet",)])
def test_one_format_only(exported, image_folder, tmp_path, formats):
    from apache_beam.options.pipeline_options import PipelineOptions

    from serving.batch import pipeline

    folder, _ = image_folder
    settings = pipeline.BatchSettings(
        model_dir=str(exported), input=f"{folder}/cats/*.jpg", output=str(tmp_path), formats=formats
    )
    options = PipelineOptions([])
    counts, _ = pipeline.run(settings, options, runner=pipeline.local_runner(options))
    # photos, truncated.jpg, notes.jpg, pipe.jpg, shadow.jpg (a symlink out of the folder)
    matched = len(list((folder / "cats").glob("*.jpg")))
    assert counts.balanced and counts.images_in == matched and counts.dead_letters == 4
    written = {name for name, files in pipeline.output_files(str(tmp_path)).items() if files}
    assert written == {f"predictions.{formats[0]}", "dead_letters.jsonl"}
