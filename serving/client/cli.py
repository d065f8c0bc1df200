"""Command-line predict against a server: what ``keras-vit predict --server`` runs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TextIO

from serving.client.errors import InputImageError, PayloadTooLargeError, ServingError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the server options to a ``predict`` parser (the images are the caller's)."""
    group = parser.add_argument_group("server (TF Serving or keras-vit serve)")
    group.add_argument(
        "--server",
        metavar="HOST:PORT",
        help="query a served model instead of running one in-process "
        "(gRPC port 8500, REST port 8501, or an http(s):// URL for REST)",
    )
    group.add_argument("--protocol", choices=("grpc", "rest"), default="grpc")
    group.add_argument("--model-name", default="vit", help="served model name (default: vit)")
    which = group.add_mutually_exclusive_group()
    which.add_argument("--model-version", type=int, help="a specific version (default: latest)")
    which.add_argument("--model-version-label", help="a version label, e.g. stable")
    group.add_argument("--signature-name", default="serving_default")
    group.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    group.add_argument("--batch-size", type=int, default=16, help="images per request")
    group.add_argument("--max-concurrency", type=int, default=4, help="requests at once")
    group.add_argument("--json", action="store_true", help="one JSON object per image")


def predict_from_args(args: argparse.Namespace, images: Sequence[str]) -> int:
    """Run :func:`cli_predict` with the options :func:`add_arguments` defined."""
    return cli_predict(
        args.server,
        images,
        protocol=args.protocol,
        model_name=args.model_name,
        version=args.model_version,
        version_label=args.model_version_label,
        signature_name=args.signature_name,
        timeout=args.timeout,
        batch_size=args.batch_size,
        max_concurrency=args.max_concurrency,
        output_json=args.json,
    )


def cli_predict(
    server: str,
    images: Sequence[str],
    *,
    protocol: str = "grpc",
    model_name: str = "vit",
    version: int | None = None,
    version_label: str | None = None,
    signature_name: str = "serving_default",
    timeout: float = 30.0,
    batch_size: int = 16,
    max_concurrency: int = 4,
    output_json: bool = False,
    top_k: int | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Predict image files through a server and print one result per image.

    Text output: ``<image>\\t<label>\\t<score>\\t<top-k as label:score, ...>``; with
    ``output_json`` one JSON object per line; ``top_k`` limits the pairs shown (default: all
    the model returns). Returns the exit code: 0 success,
    1 the server failed the request, 2 bad arguments or unreadable images.
    """
    from serving.client.client import ServingClient

    out = out or sys.stdout
    err = err or sys.stderr
    if not images:
        print("error: no images given", file=err)
        return 2
    if top_k is not None and top_k < 1:
        print("error: top_k must be at least 1", file=err)
        return 2
    try:
        client = ServingClient(
            server,
            model_name,
            protocol,
            version,
            version_label,
            signature_name,
            timeout=timeout,
            batch_size=batch_size,
            max_concurrency=max_concurrency,
        )
    except ValueError as error:
        print(f"error: {error}", file=err)
        return 2
    try:
        predictions = client.predict(list(images))
    except (InputImageError, PayloadTooLargeError) as error:
        print(f"error: {error.message}", file=err)
        return 2
    except ServingError as error:
        print(f"error: {protocol} request to {server} failed: {error}", file=err)
        return 1
    finally:
        client.close()
    for image, p in zip(images, predictions, strict=True):
        pairs = p.top_k[:top_k] if top_k else p.top_k
        if output_json:
            record = {
                "image": image,
                "label": p.label,
                "score": p.score,
                "top_k": [[label, score] for label, score in pairs],
            }
            print(json.dumps(record), file=out)
        else:
            top = ", ".join(f"{label}:{score:.4f}" for label, score in pairs)
            print(f"{image}\t{p.label}\t{p.score:.4f}\t{top}", file=out)
    return 0
