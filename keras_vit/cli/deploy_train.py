"""``keras-vit deploy vertex train``: multi-worker fine-tuning on Vertex AI.

    keras-vit deploy vertex train --project my-project --region us-central1 \\
        --bucket gs://my-bucket/staging \\
        --container-image-uri us-docker.pkg.dev/my-project/ml/keras-vit-train:0.1.0 \\
        --data gs://my-bucket/flowers/train --output gs://my-bucket/runs/flowers \\
        --workers 2 --machine-type n1-standard-8 --accelerator-type NVIDIA_L4 \\
        -- --model google/vit-base-patch16-224-in21k --epochs 5 --lr 3e-5 --dry-run

Arguments after ``--`` go to ``keras-vit train`` on every replica. ``--dry-run``
prints every SDK call with its arguments as JSON; no network, no credentials.
"""

from __future__ import annotations

import argparse
import sys

from keras_vit.cli import build_parser


def register(vertex_actions: argparse._SubParsersAction) -> None:
    parser = vertex_actions.add_parser(
        "train",
        help="multi-worker fine-tuning: a CustomContainerTrainingJob of our training image",
        description="Run `keras-vit train --strategy multi_worker` on Vertex AI: one "
        "CustomContainerTrainingJob of our training image with --workers replicas (the "
        "SDK makes one the chief and the rest workers). Vertex sets TF_CONFIG in each.",
    )
    parser.add_argument("--project", required=True, help="Google Cloud project id")
    parser.add_argument("--region", required=True, help="Vertex AI region, e.g. us-central1")
    parser.add_argument("--bucket", required=True, help="gs://BUCKET[/PREFIX] for staging")
    image = parser.add_mutually_exclusive_group(required=True)
    image.add_argument(
        "--container-image-uri",
        help="our training image (training/Dockerfile) in a registry",
    )
    # The old spelling; --container-image-uri as in `deploy vertex` and `batch-predict`.
    image.add_argument("--image", dest="container_image_uri", help=argparse.SUPPRESS)
    parser.add_argument("--data", required=True, help="gs:// image folder to train on")
    parser.add_argument("--output", required=True, help="gs:// model directory to write")
    parser.add_argument("--workers", type=int, default=2, help="replicas in all (default 2)")
    parser.add_argument("--machine-type", default="n1-standard-8")
    parser.add_argument("--accelerator-type", help="e.g. NVIDIA_L4")
    parser.add_argument("--accelerator-count", type=int, default=None)
    parser.add_argument("--display-name", default="keras-vit-train")
    parser.add_argument("--service-account")
    parser.add_argument(
        "--job-timeout",
        type=int,
        default=24 * 3600,
        metavar="SECONDS",
        help="the job's time limit in seconds (default 1 day)",
    )
    # The old spelling; elsewhere --timeout is seconds per request.
    parser.add_argument("--timeout", dest="job_timeout", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dry-run", action="store_true", help="print the plan as JSON")
    parser.add_argument(
        "train_args", nargs=argparse.REMAINDER, help="-- then arguments of keras-vit train"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from serving.vertex_sdk import run_on_sdk
    from serving.vertex_training import VertexTrainConfig, train

    train_args = list(args.train_args)
    if train_args[:1] == ["--"]:
        train_args = train_args[1:]
    count = args.accelerator_count
    if count is None:
        count = 1 if args.accelerator_type else 0
    config = VertexTrainConfig(
        project=args.project,
        region=args.region,
        image_uri=args.container_image_uri,
        data=args.data,
        output=args.output,
        bucket=args.bucket,
        workers=args.workers,
        machine_type=args.machine_type,
        accelerator_type=args.accelerator_type,
        accelerator_count=count,
        display_name=args.display_name,
        train_args=train_args,
        service_account=args.service_account,
        timeout_seconds=args.job_timeout,
    )
    try:
        _check_train_args(train_args)
    except ValueError as error:
        print(f"keras-vit deploy vertex train: {error}", file=sys.stderr)
        return 2
    code, job = run_on_sdk("keras-vit deploy vertex train", config, train, args.dry_run)
    if job is not None and not args.dry_run:
        print(job.resource_name)
    return code


def _check_train_args(train_args: list[str]) -> None:
    """The replicas' ``keras-vit train`` must accept the arguments: parsed here first."""

    argv = ["train", "--data=x", "--output=y", "--strategy=multi_worker", *train_args]
    try:
        build_parser().parse_args(argv)
    except SystemExit as error:
        raise ValueError(f"keras-vit train rejects {' '.join(train_args)!r}") from error
