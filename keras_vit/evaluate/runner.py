"""Classify a labelled data set and write the evaluation report."""

from __future__ import annotations

import heapq
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keras_vit.evaluate import metrics as metrics_lib
from keras_vit.evaluate import plots, report
from keras_vit.image_folder import listing_text

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"


@dataclass
class EvaluationResult:
    """Where the report went, and its headline numbers."""

    output_dir: Path
    metrics: dict

    @property
    def accuracy(self) -> float:
        return self.metrics["accuracy"]


def evaluate(
    predictor,
    dataset,
    output_dir,
    *,
    batch_size: int = 32,
    top_k: int = 5,
    gallery_size: int = 16,
    progress: bool | None = None,
) -> EvaluationResult:
    """Classifies every image of ``dataset`` and writes the report into ``output_dir``.

    Args:
        predictor: a :class:`~keras_vit.evaluate.predictors.LocalPredictor` or
            :class:`~keras_vit.evaluate.predictors.ServerPredictor`.
        dataset: a labelled ``keras_vit.training.data.ImageDataset``.
        output_dir: created if missing; ``predictions.jsonl``, ``metrics.json``,
            the PNG figures and ``report.html`` are (over)written there.
        batch_size: images per model call or request.
        top_k: the k of the top-k accuracy (at most what the model returns).
        gallery_size: how many misclassifications the gallery shows.
        progress: show a progress bar with images/s (default: when stderr is a terminal).
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    class_names = list(dataset.class_names)
    sources = list(getattr(dataset, "paths", []))

    y_true: list[str] = []
    y_pred: list[str] = []
    confidences: list[float] = []
    ranked: list[list[str]] = []
    latencies: list[float] = []
    request_sizes: list[int] = []
    worst: list[tuple[float, int, bytes, str, str]] = []  # a min-heap of the most confident errors
    returned_k = None
    refused: list[tuple[str, str]] = []
    started = time.perf_counter()
    bar = tqdm(
        total=dataset.size,
        unit="img",
        desc="evaluating",
        file=sys.stderr,
        disable=(not sys.stderr.isatty()) if progress is None else not progress,
    )
    with open(output / PREDICTIONS_FILE, "w", encoding="utf-8") as predictions_file, bar:
        position = 0  # of the image in the data set
        for encoded, labels in dataset.batches(batch_size):
            rows, seconds = predictor.predict(encoded)
            latencies.append(seconds)
            request_sizes.append(len(encoded))
            for data, label, row in zip(encoded, labels, rows, strict=True):
                position += 1
                if isinstance(row, str):  # refused by the server: skipped, named below
                    source = sources[position - 1] if position <= len(sources) else position
                    refused.append((str(source), row))
                    continue
                index = len(y_true)
                true = class_names[int(label)]
                predicted, score = row[0]
                returned_k = len(row) if returned_k is None else min(returned_k, len(row))
                y_true.append(true)
                y_pred.append(predicted)
                confidences.append(score)
                ranked.append([name for name, _ in row])
                record = {
                    "index": index,
                    "image": sources[position - 1] if position <= len(sources) else index,
                    "true": true,
                    "predicted": predicted,
                    "score": score,
                    "top_k": [[name, value] for name, value in row],
                }
                predictions_file.write(json.dumps(record) + "\n")
                if predicted != true:
                    item = (score, index, data, true, predicted)
                    if len(worst) < gallery_size:
                        heapq.heappush(worst, item)
                    elif gallery_size:
                        heapq.heappushpop(worst, item)
            bar.update(len(encoded))
    seconds = time.perf_counter() - started
    if refused:
        logger.warning(
            "Skipped %d images the server refused: %s", len(refused), listing_text(refused)
        )
    if not y_true:
        raise ValueError(f"{dataset.description} holds no images")

    # Classes: the data's, then any other label the model answered with.
    labels = class_names + sorted(set(y_pred) - set(class_names))
    k = min(top_k, returned_k or top_k)
    if k < top_k:
        logger.warning("the model returns only %d labels per image: reporting top-%d", k, k)
    in_top_k = [true in names[:k] for true, names in zip(y_true, ranked, strict=True)]
    result = metrics_lib.classification_metrics(
        y_true, y_pred, confidences, in_top_k, labels, top_k=k
    )
    result.update(
        model=predictor.description,
        mode=predictor.kind,
        data=dataset.description,
        seconds=seconds,
        images_per_second=len(y_true) / seconds if seconds > 0 else float("inf"),
        batch_size=batch_size,
        skipped=[{"image": image, "reason": reason} for image, reason in refused],
    )
    figures = {
        "confusion_counts": plots.confusion_matrix_png(
            result["confusion_matrix"], labels, output / "confusion_matrix.png", normalize=False
        ),
        "confusion_normalized": plots.confusion_matrix_png(
            result["confusion_matrix"],
            labels,
            output / "confusion_matrix_normalized.png",
            normalize=True,
        ),
        "reliability": plots.reliability_png(
            np.asarray(y_true, dtype=object) == np.asarray(y_pred, dtype=object),
            confidences,
            metrics_lib.CALIBRATION_BINS,
            result["ece"],
            output / "reliability.png",
        ),
        "gallery": plots.gallery_png(
            [
                (data, true, pred, score)
                for score, _, data, true, pred in sorted(worst, reverse=True)
            ],
            output / "misclassified.png",
        ),
    }
    if predictor.kind == "server":
        result["latency"] = metrics_lib.latency_summary(latencies, request_sizes)
        figures["latency"] = plots.latency_png(
            latencies, output / "latency.png", f"request latency, {predictor.description}"
        )
    result["figures"] = {name: p.name for name, p in figures.items() if p is not None}
    (output / METRICS_FILE).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    report.write_report(result, figures, output / REPORT_FILE)
    return EvaluationResult(output, result)
