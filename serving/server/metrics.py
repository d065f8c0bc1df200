"""TF Serving's monitoring metrics and their Prometheus text page.

Names and labels follow TF Serving (``servables/tensorflow/util.cc``,
``saved_model_warmup_util.cc``, the batching session); the page follows
``util/prometheus_exporter.cc``: metrics sorted by TF name, ``/`` turned into
``:``, ``# TYPE`` lines, histograms as cumulative ``_bucket``/``_sum``/``_count``
with ``absl::StrCat`` number formatting and a last ``le="+Inf"`` bucket.
"""

from __future__ import annotations

import bisect
import re
import sys
import threading
from collections.abc import Sequence

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


def exponential_buckets(scale: float, growth_factor: float, bucket_count: int) -> list[float]:
    """``monitoring::Buckets::Exponential``: the limits plus ``DBL_MAX`` as the last one."""
    limits = []
    bound = scale
    for _ in range(bucket_count):
        limits.append(bound)
        bound *= growth_factor
    limits.append(sys.float_info.max)
    return limits


def _str_cat(value: float) -> str:
    """``absl::StrCat(double)``: ``%g`` with 6 significant digits."""
    return f"{value:g}"


def _prometheus_name(name: str) -> str:
    name = re.sub(r"[^a-zA-Z0-9_]", ":", name)
    return "_" + name if name[:1].isdigit() else name


def _label_name(name: str) -> str:
    name = re.sub(r"[^a-zA-Z0-9]", "_", name)
    return "_" + name if name[:1].isdigit() else name


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


class _Metric:
    """A named metric with one cell per combination of label values."""

    kind = "untyped"

    def __init__(self, name: str, description: str, label_names: Sequence[str]) -> None:
        self.name = name
        self.description = description
        self.label_names = tuple(label_names)
        self._cells: dict[tuple[str, ...], object] = {}
        self._lock = threading.Lock()

    def _labels(self, labels: tuple[str, ...]) -> list[str]:
        return [
            f'{_label_name(n)}="{_label_value(v)}"'
            for n, v in zip(self.label_names, labels, strict=True)
        ]


class Counter(_Metric):
    """``monitoring::Counter``: an int64 that only goes up."""

    kind = "counter"

    def increment(self, *labels: str, by: int = 1) -> None:
        with self._lock:
            self._cells[labels] = self._cells.get(labels, 0) + by

    def value(self, *labels: str) -> int:
        with self._lock:
            return int(self._cells.get(labels, 0))

    def lines(self) -> list[str]:
        name = _prometheus_name(self.name)
        out = [f"# TYPE {name} {self.kind}"]
        with self._lock:
            cells = sorted(self._cells.items())
        for labels, value in cells:
            out.append(f"{name}{{{','.join(self._labels(labels))}}} {int(value)}")
        return out


class Gauge(Counter):
    """``monitoring::Gauge<int64>``."""

    kind = "gauge"

    def set(self, *labels: str, value: int) -> None:
        with self._lock:
            self._cells[labels] = value


class Sampler(_Metric):
    """``monitoring::Sampler``: a histogram over fixed bucket limits."""

    kind = "histogram"

    def __init__(self, name, description, label_names, bucket_limits: list[float]) -> None:
        super().__init__(name, description, label_names)
        self.bucket_limits = bucket_limits

    def add(self, *labels: str, value: float) -> None:
        # Histogram::Add: the bucket is the first whose limit is above the value.
        index = min(bisect.bisect_right(self.bucket_limits, value), len(self.bucket_limits) - 1)
        with self._lock:
            cell = self._cells.get(labels)
            if cell is None:
                cell = self._cells[labels] = [[0] * len(self.bucket_limits), 0.0]
            cell[0][index] += 1
            cell[1] += value

    def count(self, *labels: str) -> int:
        with self._lock:
            cell = self._cells.get(labels)
            return sum(cell[0]) if cell else 0

    def total(self, *labels: str) -> float:
        with self._lock:
            cell = self._cells.get(labels)
            return cell[1] if cell else 0.0

    def lines(self) -> list[str]:
        name = _prometheus_name(self.name)
        out = [f"# TYPE {name} histogram"]
        with self._lock:
            cells = sorted((labels, (list(c[0]), c[1])) for labels, c in self._cells.items())
        for labels, (buckets, total) in cells:
            label_text = ",".join(self._labels(labels))
            prefix = f"{name}_bucket{{{label_text}{',' if label_text else ''}"
            cumulative = 0
            for index, count in enumerate(buckets):
                cumulative += count
                last = index == len(buckets) - 1
                limit = "+Inf" if last else _str_cat(self.bucket_limits[index])
                out.append(f'{prefix}le="{limit}"}} {cumulative}')
            out.append(f"{name}_sum{{{label_text}}} {_str_cat(total)}")
            out.append(f"{name}_count{{{label_text}}} {cumulative}")
        return out


_LATENCY = exponential_buckets(10, 1.8, 33)
_COUNTS = exponential_buckets(1, 2, 15)

# attribute: (kind, TF name, description, labels, bucket limits of a Sampler).
_METRICS = {
    "request_count": ("counter", "/tensorflow/serving/request_count",
        "The total number of requests.", ("model_name", "status"), None),
    "request_latency": ("histogram", "/tensorflow/serving/request_latency",
        "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
        ("model_name", "API", "entrypoint"), _LATENCY),
    "runtime_latency": ("histogram", "/tensorflow/serving/runtime_latency",
        "Distribution of wall time (in microseconds) for Tensorflow runtime.",
        ("model_name", "API", "runtime"), _LATENCY),
    "example_counts": ("histogram", "/tensorflow/serving/request_example_counts",
        "The number of tensorflow.Examples per request.", ("model",), _COUNTS),
    "example_count_total": ("counter", "/tensorflow/serving/request_example_count_total",
        "The total number of tensorflow.Examples.", ("model",), None),
    "warmup_latency": ("histogram", "/tensorflow/serving/model_warmup_latency",
        "Distribution of wall time (in microseconds) for warming up the model.",
        ("model_path", "status"), _LATENCY),
    "load_attempt_count": ("counter", "/tensorflow/cc/saved_model/load_attempt_count",
        "The number of times a SavedModel was successfully loaded.",
        ("model_path", "status"), None),
    "load_latency": ("counter", "/tensorflow/cc/saved_model/load_latency",
        "Latency in microseconds for SavedModels that were successfully loaded.",
        ("model_path",), None),
    "queuing_latency": ("histogram", "/tensorflow/serving/batching_session/queuing_latency",
        "Distribution of wall time spent (in microseconds) in queuing",
        ("thread_pool_name",), exponential_buckets(100, 1.2, 52)),
    "wrapped_run_count": ("counter", "/tensorflow/serving/batching_session/wrapped_run_count",
        "Total count of run calls on the wrapped session", (), None),
    "input_batch_size": ("histogram", "/tensorflow/serving/batching/input_batch_size",
        "Tracks the batch size distribution on the inputs by model_name (if exists).",
        ("model_name",), _COUNTS),
    "processed_batch_size": ("histogram", "/tensorflow/serving/batching/processed_batch_size",
        "Tracks the batch size distribution on processing by model_name (if exists).",
        ("model_name",), _COUNTS),
    "padding_size": ("histogram", "/tensorflow/serving/batching/padding_size",
        "Tracks the padding size distribution on batches.",
        ("model_name", "execution_batch_size"), exponential_buckets(1, 2, 16)),
    # Ours (TF Serving has none): the REST port's connections (``http_connections.py``).
    "rest_open_connections": ("gauge", "/keras_vit/serving/rest/open_connections",
        "HTTP connections open on the REST port.", (), None),
    "rest_connections_closed": ("counter", "/keras_vit/serving/rest/connections_closed",
        "HTTP connections the server closed or refused, by reason: refused (at "
        "--rest_api_max_connections), evicted (to make room), idle_timeout, "
        "header_timeout, body_timeout, header_too_large.", ("reason",), None),
}  # fmt: skip
_KINDS = {"counter": Counter, "gauge": Gauge, "histogram": Sampler}


class ServingMetrics:
    """The metrics of one server, named as TF Serving names them (:data:`_METRICS`)."""

    request_count: Counter
    request_latency: Sampler
    runtime_latency: Sampler
    example_counts: Sampler
    example_count_total: Counter
    warmup_latency: Sampler
    load_attempt_count: Counter
    load_latency: Counter
    queuing_latency: Sampler
    wrapped_run_count: Counter
    input_batch_size: Sampler
    processed_batch_size: Sampler
    padding_size: Sampler
    rest_open_connections: Gauge
    rest_connections_closed: Counter

    def __init__(self) -> None:
        self._metrics: list[_Metric] = []
        for attribute, (kind, name, description, labels, buckets) in _METRICS.items():
            extra = () if buckets is None else (buckets,)
            metric = _KINDS[kind](name, description, labels, *extra)
            self._metrics.append(metric)
            setattr(self, attribute, metric)

    def prometheus_page(self) -> str:
        """``PrometheusExporter::GeneratePage``."""
        lines: list[str] = []
        for metric in sorted(self._metrics, key=lambda m: m.name):
            lines.extend(metric.lines())
        return "\n".join(lines) + "\n"
