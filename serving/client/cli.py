"""Command-line predict against a server: what ``keras-vit predict --server`` runs."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from typing import TextIO

from serving.client.client import ServingClient
from serving.client.errors import (
    InputImageError,
    InvalidArgumentError,
    PayloadTooLargeError,
    ServingError,
)
from serving.client.files import expand_image_arguments, protocol_for_target

_IMAGE_PREFIX = re.compile(r"^image \d+(?: \([\d,]+ bytes\))?: ")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the server options to a ``predict`` parser (the images are the caller's)."""
    parser.add_argument(
        "--recursive",
        "-r",
        action="store_true",
        help="also take the images in subdirectories of directory arguments",
    )
    group = parser.add_argument_group("server (TF Serving or keras-vit serve)")
    group.add_argument(
        "--server",
        metavar="HOST:PORT",
        help="query a served model instead of running one in-process "
        "(gRPC port 8500, REST port 8501, or an http(s):// URL for REST)",
    )
    group.add_argument(
        "--protocol",
        choices=("grpc", "rest"),
        default=None,
        help="default: from --server (http(s):// or port 8501: rest; port 8500: grpc)",
    )
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
        recursive=getattr(args, "recursive", False),
    )


def cli_predict(
    server: str,
    images: Sequence[str],
    *,
    protocol: str | None = None,
    model_name: str = "vit",
    version: int | None = None,
    version_label: str | None = None,
    signature_name: str = "serving_default",
    timeout: float = 30.0,
    batch_size: int = 16,
    max_concurrency: int = 4,
    output_json: bool = False,
    top_k: int | None = None,
    recursive: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Predict image files through a server and print one result per image.

    ``images`` are files or directories (their image files; ``recursive``: also those of
    subdirectories). ``protocol`` defaults to what ``server`` says (see
    :func:`~serving.client.files.protocol_for_target`).

    Text output: ``<image>\\t<label>\\t<score>\\t<top-k as label:score, ...>``; with
    ``output_json`` one JSON object per line; ``top_k`` limits the pairs shown (default: all
    the model returns). The images that failed are named on ``err``, one line each, with
    the reason; the others are still printed. Returns the exit code: 0 every image has a
    result, 1 some image failed (missing, unreadable, refused by the server, or the server
    failed), 2 bad arguments.
    """

    out = out or sys.stdout
    err = err or sys.stderr
    if not images:
        print("error: no images given", file=err)
        return 2
    if top_k is not None and top_k < 1:
        print("error: top_k must be at least 1", file=err)
        return 2
    try:
        protocol = protocol or protocol_for_target(server)
    except ValueError as error:
        print(f"error: {error}", file=err)
        return 2
    files, problems = expand_image_arguments(images, recursive)
    for argument, problem in problems:
        print(f"error: {argument}: {problem}", file=err)
    if not files:
        return 1  # each argument's problem is printed above
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
        outcomes = client.predict(list(files), return_errors=True)
    finally:
        client.close()
    # One line per image refused alone; one per distinct failure of whole requests.
    failed: dict[object, tuple[ServingError, list[str]]] = {}
    for image, outcome in zip(files, outcomes, strict=True):
        if isinstance(outcome, ServingError):
            about_image = isinstance(outcome, InvalidArgumentError | PayloadTooLargeError)
            key = id(outcome) if about_image else (outcome.code, outcome.message)
            failed.setdefault(key, (outcome, []))[1].append(image)
            continue
        pairs = outcome.top_k[:top_k] if top_k else outcome.top_k
        if output_json:
            record = {
                "image": image,
                "label": outcome.label,
                "score": outcome.score,
                "top_k": [[label, score] for label, score in pairs],
            }
            print(json.dumps(record), file=out)
        else:
            top = ", ".join(f"{label}:{score:.4f}" for label, score in pairs)
            print(f"{image}\t{outcome.label}\t{outcome.score:.4f}\t{top}", file=out)
    for error, names in failed.values():
        print(f"error: {_failure_line(error, names, protocol, server)}", file=err)
    return 1 if failed or problems else 0


def _failure_line(error: ServingError, names: list[str], protocol: str, server: str) -> str:
    """``<file>: <reason>`` for an image refused alone; the whole request's failure otherwise."""
    if isinstance(error, InputImageError | PayloadTooLargeError):
        return f"{names[0]}: {_IMAGE_PREFIX.sub('', error.message)}"
    if len(names) == 1 and isinstance(error, InvalidArgumentError):
        return f"{names[0]}: {error.message}"
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"{shown}: {protocol} request to {server} failed: {error.code}: {error.message}"
