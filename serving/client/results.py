"""What the clients return: predictions and model version states."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.client.errors import MalformedResponseError


@dataclass(frozen=True)
class Prediction:
    """One image's prediction from a ``serving_default``-style signature.

    Attributes:
        label: the top-1 class name.
        score: its probability.
        top_k: ``(label, score)`` pairs, best first (``k`` as exported).
        probabilities: all class probabilities, when the model was exported with them.
        outputs: every output of the signature for this image, as received.
    """

    label: str
    score: float
    top_k: list[tuple[str, float]]
    probabilities: np.ndarray | None = None
    outputs: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class ModelVersionStatus:
    """State of one model version, as reported by TF Serving's model status API.

    ``state`` is one of ``UNKNOWN, START, LOADING, AVAILABLE, UNLOADING, END``;
    ``error_code`` is a canonical status name (``"OK"`` when healthy).
    """

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


def to_text(value: Any) -> str:
    """A string output element (bytes over gRPC, str or ``{"b64"}`` over REST) as text."""
    if isinstance(value, Mapping) and set(value) == {"b64"}:
        value = base64.b64decode(value["b64"])
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def prediction_from_row(row: Mapping[str, Any]) -> Prediction:
    """Build a :class:`Prediction` from one row of outputs (name -> value for one image).

    Needs ``label``/``score`` or ``top_k_labels``/``top_k_scores`` (the serving contract
    has all four); missing top-1 outputs are taken from the top-k ones and vice versa.
    """
    has_top1 = "label" in row and "score" in row
    has_topk = "top_k_labels" in row and "top_k_scores" in row
    if not (has_top1 or has_topk):
        raise MalformedResponseError(
            "the signature's outputs are not a classification: expected 'label' and 'score' "
            f"or 'top_k_labels' and 'top_k_scores', got {sorted(row)}; "
            "use the embedding signature through embed(), or a predict signature of the "
            "keras-vit serving contract"
        )
    top_k: list[tuple[str, float]] = []
    if has_topk:
        labels = np.asarray(row["top_k_labels"], dtype=object).reshape(-1)
        scores = np.asarray(row["top_k_scores"], dtype=np.float64).reshape(-1)
        if labels.shape != scores.shape:
            raise MalformedResponseError(
                f"top_k_labels has {labels.size} entries but top_k_scores has {scores.size}"
            )
        top_k = [(to_text(lab), float(sc)) for lab, sc in zip(labels, scores, strict=True)]
    if has_top1:
        label = to_text(_scalar(row["label"]))
        score = float(_scalar(row["score"]))
    else:
        if not top_k:
            raise MalformedResponseError("top_k_labels is empty")
        label, score = top_k[0]
    if not top_k:
        top_k = [(label, score)]
    probabilities = None
    if "probabilities" in row:
        probabilities = np.asarray(row["probabilities"], dtype=np.float32)
    return Prediction(label, score, top_k, probabilities, dict(row))


def _scalar(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise MalformedResponseError(f"expected one value per image, got shape {value.shape}")
        return value.reshape(-1)[0]
    if isinstance(value, list):
        if len(value) != 1:
            raise MalformedResponseError(
                f"expected one value per image, got a list of {len(value)}"
            )
        return value[0]
    return value


def embedding_from_row(row: Mapping[str, Any] | Any, output: str = "embedding") -> np.ndarray:
    """The embedding vector of one image (a row of the embedding signature)."""
    if isinstance(row, Mapping) and not set(row) == {"b64"}:
        if output in row:
            value = row[output]
        elif len(row) == 1:
            value = next(iter(row.values()))
        else:
            raise MalformedResponseError(
                f"the embedding signature returned outputs {sorted(row)}, none named {output!r}"
            )
    else:
        value = row  # REST returns a single output's value without its name
    vector = np.asarray(value, dtype=np.float32)
    if vector.ndim != 1:
        raise MalformedResponseError(f"expected one embedding vector per image, got {vector.shape}")
    return vector
