"""``keras-vit batch-predict``: classify stored images with Apache Beam (the ``batch`` extra).

Reads the files with Beam's ``fileio`` (local globs, ``gs://`` with
``apache-beam[gcp]``), runs the exported SavedModel's ``serving_default`` with
``RunInference`` and writes JSON Lines and Parquet rows plus a dead-letter file
(``serving/batch/``). Options this command does not know go to Beam's
``PipelineOptions`` as they are (``--direct_num_workers=2``, ``--project=...``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

EXAMPLES = """\
example:
  keras-vit batch-predict --model-dir models/vit --input 'photos/**' --output out/

Local runs use Beam's Python FnApiRunner (--runner DirectRunner means it too: Beam's own
DirectRunner would first try to download and start the Prism runner). Two local worker
processes: add --direct_num_workers=2 --direct_running_mode=multi_processing. Dataflow,
Flink and Spark: see docs/batch.md.
"""

# What --runner DirectRunner (and no --runner) runs: the in-process portable runner.
LOCAL_RUNNER = "FnApiRunner"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "batch-predict",
        help="classify stored images with Apache Beam (local, Dataflow, Flink, Spark)",
        description="Run the exported model's serving_default signature over every file "
        "matching --input with Beam's RunInference, writing OUTPUT/predictions-*.jsonl and "
        "-*.parquet (image, label, score, top_k_labels, top_k_scores) and "
        "OUTPUT/dead_letters-*.jsonl (image, reason) for files that cannot be read or "
        "decoded. Every matched file ends in one of the two; the counts are printed at the "
        "end. Unknown options are Beam pipeline options.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # a Beam option must never pass for an abbreviation of ours
    )
    parser.add_argument(
        "--model-dir",
        required=True,
        metavar="DIR",
        help="the export: a version directory (models/vit/1) or its base path, whose "
        "highest version is taken; gs:// works",
    )
    parser.add_argument(
        "--input",
        required=True,
        metavar="PATTERN",
        help="file pattern, quoted: 'photos/**' (any depth), 'photos/*/*.jpg', "
        "'gs://bucket/photos/**.jpg'; * stays within a folder, ** crosses folders",
    )
    parser.add_argument(
        "--output", required=True, metavar="DIR", help="output directory (local or gs://)"
    )
    parser.add_argument(
        "--runner",
        default=LOCAL_RUNNER,
        metavar="RUNNER",
        help="Beam runner: FnApiRunner (default; also what DirectRunner means here), "
        "DataflowRunner, FlinkRunner, SparkRunner, PortableRunner, PrismRunner",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive,
        default=32,
        metavar="N",
        help="images per call of the model (default 32)",
    )
    parser.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=("jsonl", "parquet"),
        help="output format, repeatable (default: both)",
    )
    parser.add_argument(
        "--max-file-bytes",
        type=_positive,
        default=None,
        metavar="N",
        help="files larger than this go to the dead letters unread (default 64 MiB)",
    )
    parser.add_argument(
        "--share-model",
        action="store_true",
        help="one model copy per machine shared by the worker processes (Beam's "
        "share_model_across_processes): less memory, one process computing",
    )
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress",
        action="store_true",
        default=None,
        help="show a progress bar of the job's counters on stderr (default: when stderr is a "
        "terminal and the runner is local; remote runners show counters in their own UI)",
    )
    progress.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete an earlier run's predictions-* and dead_letters-* under --output first",
    )
    parser.set_defaults(func=run, accepts_beam_options=True)


def run(args: argparse.Namespace) -> int:
    # Beam's BigQuery client module logs this at import wherever google-cloud libraries are
    # installed without apitools (the Vertex AI SDK brings them); nothing here uses BigQuery.
    logging.getLogger().addFilter(_drop_apitools_notice)
    try:
        import apache_beam  # noqa: F401
    except ImportError:
        print(
            "error: batch-predict needs Apache Beam: pip install 'keras-vit[batch]'",
            file=sys.stderr,
        )
        return 1
    from apache_beam.options.pipeline_options import (
        PipelineOptions,
        StandardOptions,
        WorkerOptions,
    )

    from serving.batch import pipeline, progress
    from serving.batch.model_dir import ModelDirError, resolve_model_dir

    beam_args = list(getattr(args, "beam_args", []))
    options = PipelineOptions(beam_args)
    unknown = _unknown_options(options)
    if unknown:
        print(
            f"error: unrecognised option(s): {' '.join(unknown)} "
            "(neither batch-predict's nor a Beam pipeline option)",
            file=sys.stderr,
        )
        return 2
    runner = LOCAL_RUNNER if args.runner in ("DirectRunner", "direct") else args.runner
    options.view_as(StandardOptions).runner = runner
    worker = options.view_as(WorkerOptions)
    if worker.default_sdk_harness_log_level is None:
        # Local SDK worker processes log every bundle (INFO) and their set-up (WARNING) on
        # this terminal otherwise; --default_sdk_harness_log_level=INFO brings them back.
        worker.default_sdk_harness_log_level = "ERROR"

    try:
        model_dir = resolve_model_dir(args.model_dir)
    except ModelDirError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    problem = _input_problem(args.input)
    if problem:
        print(f"error: --input {args.input}: {problem}", file=sys.stderr)
        return 1
    earlier = pipeline.existing_outputs(args.output)
    if earlier and not args.overwrite:
        print(
            f"error: --output {args.output} holds {len(earlier)} file(s) of an earlier run "
            f"({earlier[0]}, ...); pass --overwrite to replace them, or another --output",
            file=sys.stderr,
        )
        return 1
    if earlier:
        from apache_beam.io.filesystems import FileSystems

        FileSystems.delete(earlier)

    settings = pipeline.BatchSettings(
        model_dir=model_dir,
        input=args.input,
        output=args.output,
        batch_size=args.batch_size,
        formats=tuple(args.formats or pipeline.FORMATS),
        max_file_bytes=args.max_file_bytes or pipeline.DEFAULT_MAX_FILE_BYTES,
        share_model=args.share_model,
    )
    print(f"model {model_dir}, runner {runner}, batch size {settings.batch_size}", flush=True)
    started = time.perf_counter()
    local = runner == LOCAL_RUNNER
    show = local and (sys.stderr.isatty() if args.progress is None else args.progress)
    live = progress.LiveCounters()
    try:
        if show:
            total = pipeline.count_inputs(args.input)
            bar = progress.ProgressBar(live, total, enabled=True)
            with progress.live_counters(live), bar:
                counts, state = pipeline.run(
                    settings, options, runner=pipeline.local_runner(options, progress.FREQUENCY)
                )
                bar.finish(counts)
        else:
            counts, state = pipeline.run(
                settings, options, runner=pipeline.local_runner(options) if local else None
            )
    except Exception as error:  # noqa: BLE001 - the runner's failure, in one message
        print(f"error: the pipeline failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    print(
        f"{counts.images_in} images in: {counts.predictions} predictions, "
        f"{counts.dead_letters} dead letter{'' if counts.dead_letters == 1 else 's'} "
        f"({seconds:.1f} s, state {state})"
    )
    print(progress.counts_table(counts, seconds))
    for name, files in pipeline.output_files(args.output).items():
        if files:
            shown = files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} more)"
            print(f"  {name}: {shown}")
    if not counts.balanced:
        print(
            "error: the counts do not add up: "
            f"{counts.images_in} != {counts.predictions} + {counts.dead_letters}",
            file=sys.stderr,
        )
        return 1
    return 0


def _input_problem(pattern: str) -> str | None:
    """Why ``pattern`` gives no files, or None when it matches at least one."""
    from apache_beam.io.filesystem import BeamIOError
    from apache_beam.io.filesystems import FileSystems

    try:
        match = FileSystems.match([pattern], limits=[1])[0]
    except BeamIOError as error:
        causes = "; ".join(str(e) for e in (error.exception_details or {}).values())
        return f"cannot list it: {causes or error}"
    except ValueError as error:  # e.g. no filesystem for the scheme (gs:// without [gcp])
        return str(error)
    if not match.metadata_list:
        return "matches no file (quote the pattern so that the shell leaves it to Beam)"
    return None


def _unknown_options(options) -> list[str]:
    """Flags no registered ``PipelineOptions`` class defines (Beam would just drop them)."""
    known = options.get_all_options(retain_unknown_options=False)
    every = options.get_all_options(retain_unknown_options=True)
    return [f"--{name}" for name in every if name not in known]


def _drop_apitools_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("apitools not found, and bigquery client")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value
