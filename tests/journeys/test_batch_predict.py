"""Journey: export an HF classifier, then ``keras-vit batch-predict`` a folder, as a user types it.

The folder holds the query photos (JPEG and PNG, one grayscale) and a file
that is not an image. Every photo's row must give transformers'
``pipeline("image-classification")`` top-1 with scores within 5e-3 (the
tolerance of the predict journey: PIL's resize against the export's); the
non-image is a dead letter; the printed counts add up.
"""

from __future__ import annotations

import json
import shutil

import pytest

pytestmark = pytest.mark.slow  # a journey: keras-vit in fresh processes

pytest.importorskip("apache_beam", reason="batch-predict needs the batch extra (apache-beam)")

SCORE_TOLERANCE = 5e-3


def test_export_then_batch_predict_matches_the_transformers_pipeline(
    checkpoints, query_photos, journey, tmp_path
):
    photos = tmp_path / "photos"
    (photos / "more").mkdir(parents=True)
    for i, photo in enumerate(query_photos):
        shutil.copy(photo, (photos / "more" if i % 2 else photos) / photo.name)
    (photos / "more" / "notes.jpg").write_text("meeting notes, not an image\n")
    models, out = tmp_path / "models" / "vit", tmp_path / "out"

    journey.run(
        "export", "export", "--model", str(checkpoints / "classifier"), "--output", str(models)
    )
    result = journey.run(
        "batch-predict",
        "batch-predict", "--model-dir", str(models), "--input", f"{photos}/**",
        "--output", str(out), "--batch-size", "2",
    )  # fmt: skip
    assert f"{len(query_photos) + 1} images in: {len(query_photos)} predictions, 1 dead letter" in (
        result.stdout
    )

    rows = [json.loads(line) for f in out.glob("predictions-*.jsonl") for line in open(f)]
    reference = json.loads((checkpoints / "pipeline.json").read_text())
    assert sorted(row["image"].rsplit("/", 1)[1] for row in rows) == sorted(reference)
    worst = 0.0
    for row in rows:
        answer = reference[row["image"].rsplit("/", 1)[1]]
        theirs = {entry["label"]: entry["score"] for entry in answer}
        assert row["label"] == answer[0]["label"], (row, answer)
        for label, score in zip(row["top_k_labels"], row["top_k_scores"], strict=True):
            worst = max(worst, abs(score - theirs[label]))
    print(f"max |batch-predict - transformers pipeline| score = {worst:.2e}")
    assert worst <= SCORE_TOLERANCE

    dead = [json.loads(line) for f in out.glob("dead_letters-*.jsonl") for line in open(f)]
    assert [d["image"] for d in dead] == [str(photos / "more" / "notes.jpg")]
    assert dead[0]["reason"].startswith("not a JPEG, PNG, GIF, BMP or WebP image")
