"""``keras-vit deploy vertex``: put an exported model version on a Vertex AI endpoint.

    keras-vit deploy vertex --model-dir models/vit/1 --project my-project \\
        --region us-central1 --bucket gs://my-bucket/models --endpoint-name vit \\
        --machine-type n1-standard-4 --accelerator-type NVIDIA_TESLA_T4 \\
        --accelerator-count 1 --min-replica-count 1 --max-replica-count 2 --dry-run

Without ``--endpoint-name`` or ``--endpoint-id`` the endpoint is the one named
after ``--model-display-name`` (reused, or created). ``--dry-run`` prints the
SDK calls (each checked against google-cloud-aiplatform's signatures) as JSON and
needs neither network nor credentials. Kubernetes needs no command: see docs/deployment.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from keras_vit.cli import deploy_batch, deploy_train


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "deploy",
        help="deploy an exported model (Vertex AI)",
        description="Deploy an exported SavedModel version. Kubernetes: "
        "`kubectl apply -k kubernetes/overlays/cpu` (see docs/deployment.md).",
    )
    targets = parser.add_subparsers(dest="deploy_target", metavar="TARGET")
    targets.required = True
    vertex = targets.add_parser(
        "vertex",
        help="Model.upload, deploy to an endpoint, predict, optionally clean up",
        description="Deploy to a Vertex AI endpoint with google-cloud-aiplatform. Steps: "
        "Model.upload of the SavedModel version (staged to --bucket by the SDK) with the "
        "prebuilt TF serving container (or --container-image-uri), reuse or create the "
        "endpoint, deploy, predict through serving.client.VertexClient, and with --cleanup "
        "undeploy and delete everything.",
        epilog="example (prints every call; drop --dry-run to run it):\n"
        "  keras-vit deploy vertex --model-dir models/vit/1 --project my-project \\\n"
        "      --region europe-west4 --bucket gs://my-bucket --dry-run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_vertex_arguments(vertex, required=False)  # checked in run(): `vertex train` has its own
    actions = vertex.add_subparsers(dest="vertex_action", metavar="ACTION")

    deploy_train.register(actions)
    deploy_batch.register(actions)
    parser.set_defaults(func=run, vertex_parser=vertex)


def add_vertex_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    where = parser.add_argument_group("where")
    where.add_argument("--project", required=required, help="Google Cloud project id")
    where.add_argument("--region", required=required, help="Vertex AI region, e.g. us-central1")
    where.add_argument(
        "--bucket",
        help="gs://BUCKET[/PREFIX] where Model.upload stages the model (required with the "
        "prebuilt container): PREFIX/vertex_ai_auto_staging/<timestamp>/",
    )
    what = parser.add_argument_group("what")
    what.add_argument(
        "--model-dir",
        type=Path,
        help="the SavedModel version directory written by `keras-vit export` (BASE/1)",
    )
    what.add_argument("--model-display-name", default="keras-vit")
    what.add_argument(
        "--container-image-uri",
        help="serve with an image of ours (pushed to Artifact Registry; model baked in) "
        "instead of Vertex's prebuilt tf2 container: see --container",
    )
    what.add_argument(
        "--container",
        choices=("tf-serving", "keras-vit-serve"),
        default="tf-serving",
        help="what --container-image-uri is: tf-serving (`make image`, TF Serving's REST "
        "routes) or keras-vit-serve (`make image-serve`, our server: Vertex's "
        "AIP_HTTP_PORT, AIP_HEALTH_ROUTE and AIP_PREDICT_ROUTE; needed for int8 exports)",
    )
    endpoint = what.add_mutually_exclusive_group()
    endpoint.add_argument(
        "--endpoint-name",
        help="display name: reuse that endpoint or create it (default: --model-display-name)",
    )
    endpoint.add_argument("--endpoint-id", help="an existing endpoint's id")
    how = parser.add_argument_group("how")
    how.add_argument(
        "--precision",
        choices=("float32", "bfloat16"),
        help="the export's precision (keras-vit export --precision); checked against "
        "--model-dir's export (default: what the export says). bfloat16 needs a machine "
        "series with AVX512_BF16 or AMX-BF16 (c3, c3d, n4, c4, c4d)",
    )
    how.add_argument(
        "--machine-type",
        help="default n1-standard-4, or c3-standard-4 (Sapphire Rapids, AMX-BF16) for a "
        "bfloat16 export",
    )
    how.add_argument("--accelerator-type", help="e.g. NVIDIA_TESLA_T4, NVIDIA_L4")
    how.add_argument("--accelerator-count", type=int, default=None)
    # gcloud's spellings (`gcloud ai endpoints deploy-model`), as batch-predict's.
    how.add_argument("--min-replica-count", type=int, default=1)
    how.add_argument("--max-replica-count", type=int, default=1)
    how.add_argument("--min-replicas", dest="min_replica_count", type=int, help=argparse.SUPPRESS)
    how.add_argument("--max-replicas", dest="max_replica_count", type=int, help=argparse.SUPPRESS)
    traffic = how.add_mutually_exclusive_group()
    traffic.add_argument(
        "--traffic-percentage",
        type=int,
        help="share of the endpoint's traffic for the new model (default 100)",
    )
    traffic.add_argument(
        "--traffic-split",
        help="full split as DEPLOYED_MODEL_ID=PERCENT,...; 0 is the model being deployed, "
        "e.g. 0=10,1234567890=90 for a canary",
    )
    how.add_argument("--service-account", help="service account the replicas run as")
    how.add_argument(
        "--labels",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra Vertex label (repeat for more; gcloud's spelling)",
    )
    # `--label` before gcloud's spelling; explain's --label is a class.
    how.add_argument("--label", dest="labels", action="append", help=argparse.SUPPRESS)
    run_group = parser.add_argument_group("run")
    run_group.add_argument(
        "--predict-image",
        action="append",
        default=[],
        type=Path,
        help="image for the smoke-test prediction (repeatable; default a generated JPEG)",
    )
    run_group.add_argument(
        "--cleanup",
        action="store_true",
        help="after the prediction undeploy, delete the endpoint (if created), the model "
        "and the uploaded files",
    )
    run_group.add_argument(
        "--dry-run",
        action="store_true",
        help="print every SDK call with its arguments as JSON (checked against the SDK's "
        "signatures); no network, no credentials",
    )


def config_from_args(args: argparse.Namespace):
    from serving.vertex import (
        DEFAULT_MACHINE_TYPES,
        VertexDeployConfig,
        export_precision,
        parse_traffic_split,
    )

    labels = {"app": "keras-vit"}
    for item in args.labels:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--labels must be KEY=VALUE, got {item!r}")
        labels[key] = value
    precision = args.precision
    known = precision or (None if args.container_image_uri else export_precision(args.model_dir))
    if known:
        labels.setdefault("precision", known)
    accelerator_count = args.accelerator_count
    if accelerator_count is None:
        accelerator_count = 1 if args.accelerator_type else 0
    return VertexDeployConfig(
        project=args.project,
        region=args.region,
        model_dir=args.model_dir,
        bucket=args.bucket,
        # Neither given: the endpoint is named after the model (reused or created).
        endpoint_name=args.endpoint_name or (None if args.endpoint_id else args.model_display_name),
        endpoint_id=args.endpoint_id,
        model_display_name=args.model_display_name,
        # An int8 export, refused by validate() on the prebuilt container: float32's.
        machine_type=args.machine_type or DEFAULT_MACHINE_TYPES.get(known, "n1-standard-4"),
        accelerator_type=args.accelerator_type,
        accelerator_count=accelerator_count,
        min_replicas=args.min_replica_count,
        max_replicas=args.max_replica_count,
        traffic_percentage=args.traffic_percentage,
        traffic_split=parse_traffic_split(args.traffic_split) if args.traffic_split else None,
        container_image_uri=args.container_image_uri,
        container=args.container,
        service_account=args.service_account,
        labels=labels,
        predict_images=list(args.predict_image),
        cleanup=args.cleanup,
        precision=precision,
    )


def run(args: argparse.Namespace) -> int:
    from serving.vertex import deploy
    from serving.vertex_sdk import run_on_sdk

    missing = [flag for flag in ("project", "region") if not getattr(args, flag)]
    if missing:
        wanted = ", ".join(f"--{flag}" for flag in missing)
        args.vertex_parser.error(f"the following arguments are required: {wanted}")
    try:
        config = config_from_args(args)
    except ValueError as error:
        print(f"keras-vit deploy vertex: {error}", file=sys.stderr)
        return 2
    code, done = run_on_sdk("keras-vit deploy vertex", config, deploy, args.dry_run)
    if done is not None and not args.dry_run and not config.cleanup:
        print(done.endpoint.resource_name)
    return code
