"""``keras-vit deploy vertex batch-input`` and ``batch-predict``: Vertex AI batch prediction.

    keras-vit deploy vertex batch-input photos/ --output instances.jsonl
    keras-vit deploy vertex batch-predict --project my-project --region us-central1 \\
        --bucket gs://my-bucket/batch --instances instances.jsonl \\
        --output gs://my-bucket/predictions --model-dir models/vit/1 --dry-run

``batch-input`` writes the JSON Lines input (one ``{"image_bytes": {"b64": ...}}`` per
image) and refuses images over Vertex's size limit. ``batch-predict`` builds the
``BatchPredictionJob``. With ``--dry-run`` it prints every SDK call as JSON and needs
neither network nor credentials. See serving/vertex_batch.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(vertex_actions: argparse._SubParsersAction) -> None:
    _register_input(vertex_actions)
    _register_predict(vertex_actions)


def _register_input(vertex_actions: argparse._SubParsersAction) -> None:
    parser = vertex_actions.add_parser(
        "batch-input",
        help="write the JSON Lines input of a batch prediction job from images",
        description='Write one JSON line per image, {"image_bytes": {"b64": ...}}, the '
        "instance format of the exported model on Vertex AI, and OUTPUT.files.csv naming "
        "each line's file and SHA-256. Images over the per-instance limit (1,179,612 bytes, "
        "Vertex's 1.5 MB request limit after base64) or that are not JPEG/PNG/GIF/BMP/WebP "
        "are all listed and nothing is written.",
        epilog="example:\n  keras-vit deploy vertex batch-input photos/ --output instances.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "images",
        nargs="+",
        help="image files, folders (searched recursively) or quoted globs ('photos/**/*.jpg')",
    )
    parser.add_argument("--output", required=True, type=Path, help="the .jsonl file to write")
    parser.set_defaults(func=run_input)


def _register_predict(vertex_actions: argparse._SubParsersAction) -> None:
    parser = vertex_actions.add_parser(
        "batch-predict",
        help="a Vertex AI BatchPredictionJob over JSON Lines of images",
        description="Run the exported model over JSON Lines instances with Vertex AI batch "
        "prediction: upload local instance files (checked first) and, with --model-dir, the "
        "model, then BatchPredictionJob.create with jsonl in and out. No endpoint is needed.",
        epilog="example (prints every call; drop --dry-run to run it):\n"
        "  keras-vit deploy vertex batch-predict --project my-project --region us-central1 \\\n"
        "      --bucket gs://my-bucket/batch --instances instances.jsonl \\\n"
        "      --output gs://my-bucket/predictions --model-dir models/vit/1 --dry-run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--project", required=True, help="Google Cloud project id")
    parser.add_argument("--region", required=True, help="Vertex AI region, e.g. us-central1")
    parser.add_argument(
        "--instances",
        action="append",
        required=True,
        help="a JSON Lines file of batch-input (uploaded) or gs:// URI (repeatable)",
    )
    parser.add_argument(
        "--output", required=True, help="gs://BUCKET[/PREFIX] for the prediction files"
    )
    parser.add_argument(
        "--bucket",
        help="gs://BUCKET[/PREFIX] for uploads (local instances, --model-dir) and staging",
    )
    model = parser.add_argument_group("model (one of)")
    model.add_argument(
        "--registry-model",
        metavar="MODEL",
        help="a Model Registry resource name or id, used as it is",
    )
    # Was --model, which never parsed here (`deploy vertex`'s own --model-dir and
    # --model-display-name made it ambiguous); elsewhere --model is a checkpoint.
    model.add_argument(
        "--model-dir", type=Path, help="a SavedModel version directory (BASE/1) to upload"
    )
    model.add_argument(
        "--container-image-uri",
        help="an image of ours (model baked in) instead of the prebuilt container",
    )
    model.add_argument(
        "--container",
        choices=("tf-serving", "keras-vit-serve"),
        default="tf-serving",
        help="what --container-image-uri is: tf-serving (`make image`) or keras-vit-serve "
        "(`make image-serve`, our server)",
    )
    model.add_argument("--model-display-name", default="keras-vit")
    how = parser.add_argument_group("how")
    how.add_argument("--job-display-name", default="keras-vit-batch")
    how.add_argument("--machine-type", default="n1-standard-4")
    how.add_argument("--accelerator-type", help="e.g. NVIDIA_TESLA_T4, NVIDIA_L4")
    how.add_argument("--accelerator-count", type=int, default=None)
    how.add_argument(
        "--starting-replica-count",
        type=int,
        default=1,
        help="replicas the input is split over (batch jobs do not autoscale)",
    )
    how.add_argument("--max-replica-count", type=int, default=None, help="default: the start")
    how.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="instances per request to a replica (Vertex's default 64)",
    )
    how.add_argument("--service-account")
    how.add_argument(
        "--labels",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra Vertex label (repeat for more; gcloud's spelling)",
    )
    # `--label` before gcloud's spelling; explain's --label is a class.
    how.add_argument("--label", dest="labels", action="append", help=argparse.SUPPRESS)
    how.add_argument(
        "--overwrite", action="store_true", help="replace existing objects in the bucket"
    )
    how.add_argument(
        "--dry-run",
        action="store_true",
        help="print every call with its arguments as JSON; no network, no credentials",
    )
    parser.set_defaults(func=run_predict)


def run_input(args: argparse.Namespace) -> int:
    from serving.vertex_batch import InstanceError, expand_images, write_instances

    try:
        rows = write_instances(expand_images(args.images), args.output)
    except InstanceError as error:
        print(f"keras-vit deploy vertex batch-input: {error}", file=sys.stderr)
        return 2
    total = sum(row["bytes"] for row in rows)
    print(f"{len(rows)} instances ({total:,} image bytes) written to {args.output}")
    print(f"line -> file: {args.output}.files.csv")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from serving.vertex_batch import (
        InstanceError,
        VertexBatchConfig,
        batch_predict,
        check_instances_file,
    )
    from serving.vertex_sdk import run_on_sdk

    labels = {"app": "keras-vit"}
    for item in args.labels:
        key, sep, value = item.partition("=")
        if not sep:
            print(
                f"keras-vit deploy vertex batch-predict: --labels must be KEY=VALUE: {item!r}",
                file=sys.stderr,
            )
            return 2
        labels[key] = value
    count = args.accelerator_count
    if count is None:
        count = 1 if args.accelerator_type else 0
    config = VertexBatchConfig(
        project=args.project,
        region=args.region,
        instances=list(args.instances),
        output=args.output,
        bucket=args.bucket,
        model=args.registry_model,
        model_dir=args.model_dir,
        model_display_name=args.model_display_name,
        container_image_uri=args.container_image_uri,
        container=args.container,
        job_display_name=args.job_display_name,
        machine_type=args.machine_type,
        accelerator_type=args.accelerator_type,
        accelerator_count=count,
        starting_replica_count=args.starting_replica_count,
        max_replica_count=args.max_replica_count,
        batch_size=args.batch_size,
        service_account=args.service_account,
        labels=labels,
        overwrite=args.overwrite,
    )
    command = "keras-vit deploy vertex batch-predict"
    try:
        for source in config.instances:
            if not source.startswith("gs://") and os.path.isfile(source):
                check_instances_file(source)
    except InstanceError as error:
        print(f"{command}: bad instances: {error}", file=sys.stderr)
        return 2
    code, job = run_on_sdk(command, config, batch_predict, args.dry_run, check_files=False)
    if job is not None and not args.dry_run:
        print(job.resource_name)
        print(f"predictions: {job.output_info.gcs_output_directory}")
    return code
