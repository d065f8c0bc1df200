"""Journey 2, quick inference: ``keras-vit predict`` on an HF classifier, as transformers answers.

A ``ViTForImageClassification`` directory with ``preprocessor_config.json``
(ImageNet mean and std) written by transformers; ``keras-vit predict --model
DIR --json`` on real photos (JPEG and PNG, colour and grayscale) must give
transformers' ``pipeline("image-classification")`` top-1 with every score
within 5e-3. The two differ only in resizing: PIL's resize of the uint8
image (rounded to uint8) against the model's in-graph float resize.
"""

from __future__ import annotations

import json

import pytest

from tests.journeys.conftest import predictions

pytestmark = pytest.mark.slow  # a journey: keras-vit in fresh processes

SCORE_TOLERANCE = 5e-3


def test_predict_on_an_hf_classifier_matches_the_transformers_pipeline(
    checkpoints, query_photos, journey
):
    reference = json.loads((checkpoints / "pipeline.json").read_text())
    images = [str(p) for p in query_photos]
    result = journey.run(
        "predict --model", "predict", "--model", str(checkpoints / "classifier"), "--json", *images
    )
    ours = predictions(result.stdout)
    assert set(ours) == set(reference) == {p.name for p in query_photos}
    worst = 0.0
    for name, answer in reference.items():
        theirs = {entry["label"]: entry["score"] for entry in answer}
        assert ours[name]["label"] == answer[0]["label"], (name, ours[name], answer)
        for label, score in ours[name]["top_k"]:
            worst = max(worst, abs(score - theirs[label]))
    print(f"max |keras-vit predict - transformers pipeline| score = {worst:.2e}")
    assert worst <= SCORE_TOLERANCE
