"""The numbers of the report, from scikit-learn's metrics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CALIBRATION_BINS = 15


def classification_metrics(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    confidences: Sequence[float],
    in_top_k: Sequence[bool],
    labels: Sequence[str],
    top_k: int,
) -> dict:
    """Accuracy, top-k, per-class P/R/F1/support, macro and weighted averages, ECE.

    ``labels`` orders the classes (rows and columns of the confusion matrix).
    """
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

    labels = list(labels)
    report = classification_report(y_true, y_pred, labels=labels, output_dict=True, zero_division=0)
    per_class = {
        label: {
            "precision": report[label]["precision"],
            "recall": report[label]["recall"],
            "f1": report[label]["f1-score"],
            "support": int(report[label]["support"]),
        }
        for label in labels
    }
    averages = {
        name: {
            "precision": report[f"{name} avg"]["precision"],
            "recall": report[f"{name} avg"]["recall"],
            "f1": report[f"{name} avg"]["f1-score"],
        }
        for name in ("macro", "weighted")
    }
    correct = np.asarray(y_true, dtype=object) == np.asarray(y_pred, dtype=object)
    ece, bins = calibration(correct, np.asarray(confidences, dtype=np.float64))
    return {
        "num_images": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        f"top_{top_k}_accuracy": float(np.mean(np.asarray(in_top_k, dtype=bool))),
        "top_k": top_k,
        "per_class": per_class,
        "macro_avg": averages["macro"],
        "weighted_avg": averages["weighted"],
        "ece": ece,
        "calibration_bins": bins,
        "labels": labels,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def calibration(correct: np.ndarray, confidences: np.ndarray, n_bins: int = CALIBRATION_BINS):
    """Expected calibration error of the top-1 confidence (Guo et al., 2017) and its bins.

    Equal-width bins over ``[0, 1]``, assigned as scikit-learn's
    ``calibration_curve(strategy="uniform")`` assigns them; ECE is the
    support-weighted mean of ``|accuracy - confidence|`` over the bins.
    """
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.searchsorted(edges[1:-1], confidences)  # as sklearn.calibration does
    counts = np.bincount(index, minlength=n_bins)
    accuracy = np.bincount(index, weights=correct.astype(np.float64), minlength=n_bins)
    confidence = np.bincount(index, weights=confidences, minlength=n_bins)
    filled = counts > 0
    accuracy[filled] /= counts[filled]
    confidence[filled] /= counts[filled]
    total = max(int(counts.sum()), 1)
    ece = float(np.sum(counts[filled] / total * np.abs(accuracy[filled] - confidence[filled])))
    bins = [
        {
            "low": float(edges[i]),
            "high": float(edges[i + 1]),
            "count": int(counts[i]),
            "accuracy": float(accuracy[i]) if filled[i] else None,
            "confidence": float(confidence[i]) if filled[i] else None,
        }
        for i in range(n_bins)
    ]
    return ece, bins


def latency_summary(seconds: Sequence[float], images: Sequence[int]) -> dict:
    """Percentiles of per-request latency in milliseconds."""
    values = np.asarray(seconds, dtype=np.float64) * 1000.0
    if values.size == 0:
        return {}
    return {
        "requests": int(values.size),
        "images_per_request_mean": float(np.mean(images)),
        "mean_ms": float(values.mean()),
        "p50_ms": float(np.percentile(values, 50)),
        "p90_ms": float(np.percentile(values, 90)),
        "p99_ms": float(np.percentile(values, 99)),
        "max_ms": float(values.max()),
    }
