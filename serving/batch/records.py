"""The rows ``keras-vit batch-predict`` writes: predictions and dead letters.

A prediction row is ``{"image", "label", "score", "top_k_labels", "top_k_scores"}``
(the ``serving_default`` outputs, keyed by the image's path as matched); JSON Lines
and Parquet hold the same rows. A dead letter is ``{"image", "reason"}``.
"""

from __future__ import annotations

import json

FIELDS = ("image", "label", "score", "top_k_labels", "top_k_scores")
PREDICTIONS = "predictions"
DEAD_LETTERS = "dead_letters"


def parquet_schema():
    """The Parquet columns; scores are float32, the signature's DT_FLOAT."""
    import pyarrow as pa

    return pa.schema(
        [
            ("image", pa.string()),
            ("label", pa.string()),
            ("score", pa.float32()),
            ("top_k_labels", pa.list_(pa.string())),
            ("top_k_scores", pa.list_(pa.float32())),
        ]
    )


def prediction_row(image: str, result: dict) -> dict:
    return {"image": image, **{name: result[name] for name in FIELDS[1:]}}


def dead_letter(image: str, reason: str) -> dict:
    return {"image": image, "reason": reason}


def to_json(row: dict) -> str:
    # Scores are float32 values written as Python floats: exact, so JSON and Parquet agree.
    return json.dumps(row, ensure_ascii=False)
