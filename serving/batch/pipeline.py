"""The batch prediction pipeline: files -> ``RunInference`` -> JSON Lines, Parquet, dead letters.

::

    MatchFiles(pattern) -> Reshuffle -> ReadMatches -> read (size-capped)
        -> RunInference(KeyedModelHandler(SavedModelHandler))   # (path, result)
        -> predictions: OUTPUT/predictions-*.jsonl, OUTPUT/predictions-*.parquet
        -> dead letters (unreadable, too large, refused by the decoder):
           OUTPUT/dead_letters-*.jsonl

The ``Reshuffle`` after the match spreads the files over the workers: without it
the whole pipeline fuses behind the one element that holds the pattern, and runs
on one worker. Nothing is dropped: every matched file ends as a prediction or a
dead letter, and the counters (namespace ``keras_vit.batch_predict``) say so:
``images_in == predictions + dead_letters``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from serving.batch import records
from serving.batch.model_handler import SavedModelHandler
from serving.image_files import ImageFileError, pattern_folder, read_image_file

NAMESPACE = "keras_vit.batch_predict"
IMAGES_IN, PREDICTED, DEAD = "images_in", "predictions", "dead_letters"
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
FORMATS = ("jsonl", "parquet")


# Where in-process workers also report each count as it happens (the local runner's
# in_memory mode, whose bundles report their counters only when they end):
# serving/batch/progress.py installs a LiveCounters here while it shows a bar.
LOCAL_PROGRESS: list = []


def _count(counter, name: str) -> None:
    counter.inc()
    for live in LOCAL_PROGRESS:
        live.tick(name)


@dataclass
class BatchSettings:
    """What ``keras-vit batch-predict`` was asked to do."""

    model_dir: str  # a version directory (serving.batch.model_dir.resolve_model_dir)
    input: str  # a file pattern: local glob or gs://bucket/photos/**.jpg
    output: str  # a directory (prefix): predictions-*.jsonl|parquet, dead_letters-*.jsonl
    batch_size: int = 32
    formats: tuple[str, ...] = FORMATS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    share_model: bool = False


@dataclass
class Counts:
    images_in: int = 0
    predictions: int = 0
    dead_letters: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        return self.images_in == self.predictions + self.dead_letters


class ReadImage(beam.DoFn):
    """``ReadableFile`` -> ``(path, bytes)``, or a dead letter when it cannot be read whole."""

    def __init__(self, max_file_bytes: int, folder: str | None = None):
        self.max_file_bytes = max_file_bytes
        # The folder the input pattern walks: a local symlink leading out of it is not read.
        self.folder = folder
        self.images_in = Metrics.counter(NAMESPACE, IMAGES_IN)
        self.dead = Metrics.counter(NAMESPACE, DEAD)

    def process(self, readable: fileio.ReadableFile):
        path = readable.metadata.path
        _count(self.images_in, IMAGES_IN)
        limit = self.max_file_bytes
        size = readable.metadata.size_in_bytes
        data, reason = b"", None
        if "://" not in path:
            # Local files: regular files only (a pipe or /dev/zero never blocks or floods
            # a worker), size checked before and after opening, symlinks kept to the folder.
            try:
                data = read_image_file(path, limit, within=self.folder, setting="--max-file-bytes")
            except ImageFileError as error:
                reason = error.reason
        elif size > limit:
            reason = _too_large(size, limit)
        else:
            try:
                # Bytes as they are: no decompression guessed from the name (.gz, .bz2, ...).
                with readable.open(compression_type=CompressionTypes.UNCOMPRESSED) as file:
                    data = file.read(limit + 1)
            except Exception as error:  # noqa: BLE001 - any filesystem's error is a dead letter
                reason = f"cannot read the file: {type(error).__name__}: {error}"
            if reason is None and len(data) > limit:  # it grew since it was matched
                reason = _too_large(f"more than {limit}", limit)
        if reason is not None:
            _count(self.dead, DEAD)
            yield beam.pvalue.TaggedOutput(DEAD, records.dead_letter(path, reason))
        else:
            yield path, data


class SplitResults(beam.DoFn):
    """``(path, result)`` -> a prediction row, or a dead letter with the decoder's reason."""

    def __init__(self):
        self.predicted = Metrics.counter(NAMESPACE, PREDICTED)
        self.dead = Metrics.counter(NAMESPACE, DEAD)

    def process(self, element):
        path, result = element
        if "error" in result:
            _count(self.dead, DEAD)
            yield beam.pvalue.TaggedOutput(DEAD, records.dead_letter(path, result["error"]))
        else:
            _count(self.predicted, PREDICTED)
            yield records.prediction_row(path, result)


class BatchPredict(beam.PTransform):
    """The whole job as one transform of a pipeline root; see the module docstring."""

    def __init__(self, settings: BatchSettings):
        super().__init__()
        self.settings = settings

    def expand(self, root):
        s = self.settings
        handler = KeyedModelHandler(
            SavedModelHandler(s.model_dir, batch_size=s.batch_size, share_model=s.share_model)
        )
        read = (
            root
            | "Match" >> fileio.MatchFiles(s.input)
            | "Spread" >> beam.Reshuffle()
            | "Open" >> fileio.ReadMatches(compression=CompressionTypes.UNCOMPRESSED)
            | "Read"
            >> beam.ParDo(ReadImage(s.max_file_bytes, pattern_folder(s.input))).with_outputs(
                DEAD, main="images"
            )
        )
        results = (
            read.images
            | "RunInference" >> RunInference(handler)
            | "Split" >> beam.ParDo(SplitResults()).with_outputs(DEAD, main="predictions")
        )
        predictions = results.predictions
        prefix = FileSystems.join(s.output, records.PREDICTIONS)
        if "jsonl" in s.formats:
            _ = (
                predictions
                | "ToJson" >> beam.Map(records.to_json)
                | "WriteJsonl" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl")
            )
        if "parquet" in s.formats:
            _ = predictions | "WriteParquet" >> beam.io.WriteToParquet(
                prefix, records.parquet_schema(), file_name_suffix=".parquet"
            )
        dead = (read[DEAD], results[DEAD]) | "DeadLetters" >> beam.Flatten()
        _ = (
            dead
            | "DeadToJson" >> beam.Map(records.to_json)
            | "WriteDeadLetters"
            >> beam.io.WriteToText(
                FileSystems.join(s.output, records.DEAD_LETTERS), file_name_suffix=".jsonl"
            )
        )
        return predictions


def run(settings: BatchSettings, options, runner=None) -> tuple[Counts, str]:
    """Runs the job to the end; ``(counts, final state)``. ``runner`` None: the options'."""

    pipeline = beam.Pipeline(runner=runner, options=options)
    _ = pipeline | "BatchPredict" >> BatchPredict(settings)
    result = pipeline.run()
    state = result.wait_until_finish()
    return counts(result), str(state)


def local_runner(options, progress_frequency: float | None = None):
    """Beam's Python ``FnApiRunner``, given the pipeline options its workers should see.

    ``progress_frequency``: ask the workers for in-flight counters this often
    (seconds; serving/batch/progress.py shows them).

    What Beam's ``DirectRunner`` falls back to, without its first attempt at the Prism
    runner (a binary it downloads, which cannot work offline). The options travel in
    the provision info as the ``DirectRunner`` sends them, so local SDK worker
    processes (``--direct_running_mode=multi_processing``) get their log level and the rest.
    """
    # Beam's runner internals (50 ms more), for local runs only.
    from apache_beam.portability.api import beam_provision_api_pb2  # noqa: PLC0415
    from apache_beam.runners.portability.fn_api_runner import fn_runner  # noqa: PLC0415
    from apache_beam.runners.portability.portable_runner import (  # noqa: PLC0415
        JobServiceHandle,
    )

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    return fn_runner.FnApiRunner(
        provision_info=fn_runner.ExtendedProvisionInfo(info),
        progress_request_frequency=progress_frequency,
    )


def counts(result) -> Counts:
    """The job's counters (committed where the runner has them, else attempted)."""
    found = Counts()
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        name = counter.key.metric.name
        if name in (IMAGES_IN, PREDICTED, DEAD):
            setattr(found, name, getattr(found, name) + int(value or 0))
    return found


def count_inputs(pattern: str) -> int | None:
    """How many files ``pattern`` matches (the progress bar's total); None if it cannot list."""
    try:
        return len(FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # noqa: BLE001 - the job reports listing errors itself
        return None


def existing_outputs(output: str) -> list[str]:
    """Files of an earlier run under ``output`` (they would mix with this run's shards)."""
    patterns = [
        FileSystems.join(output, f"{name}-*")
        for name in (records.PREDICTIONS, records.DEAD_LETTERS)
    ]
    found = []
    for match in FileSystems.match(patterns):
        found += [metadata.path for metadata in match.metadata_list]
    return sorted(found)


def output_files(output: str) -> dict[str, list[str]]:
    """The files written, by kind: ``{"predictions.jsonl": [paths], ...}``."""
    files = {}
    for name, suffix in (
        (records.PREDICTIONS, "jsonl"),
        (records.PREDICTIONS, "parquet"),
        (records.DEAD_LETTERS, "jsonl"),
    ):
        match = FileSystems.match([FileSystems.join(output, f"{name}-*.{suffix}")])[0]
        files[f"{name}.{suffix}"] = sorted(m.path for m in match.metadata_list)
    return files


def _too_large(size, limit: int) -> str:
    return f"file too large: {size} bytes, the limit is {limit} (--max-file-bytes)"
