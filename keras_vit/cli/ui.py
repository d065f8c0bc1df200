"""``keras-vit ui``: a page on 127.0.0.1 to try a served (or in-process) model on images.

Drop or choose an image: the page shows the top-5 as bars and, when the model
has an ``explain`` signature (``keras-vit export --with-explain``) or runs
in-process, the attention-rollout overlay. No external assets: it works
offline. The page answers only for its own address (``--allowed-host`` adds
names) and takes predictions only from itself (docs/evaluate.md, "Security").
"""

from __future__ import annotations

import argparse
import sys

from keras_vit.cli.exports import export_problem
from keras_vit.ui.guard import split_host

# The defaults of keras_vit/ui/app.py, here so --help does not import tornado.
UPLOAD_BUDGET_MIB = 64
MAX_IMAGE_MIB = 20
UPLOAD_TIMEOUT_S = 60.0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "ui",
        help="serve a small page on 127.0.0.1 to try a model on your images",
        description="Serve a page on 127.0.0.1 that classifies dropped or chosen images "
        "with a TF-Serving-compatible server (--server) or an in-process model (--model).",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="in-process: checkpoint, .keras file or model directory")
    which.add_argument("--server", metavar="HOST:PORT", help="a served model (gRPC or REST)")
    parser.add_argument(
        "--port",
        type=int,
        default=7860,
        help="this page's own port on 127.0.0.1, as TensorBoard's --port (default 7860, 0: any "
        "free one); the model server's port is part of --server",
    )
    page = parser.add_argument_group("page limits and access")
    page.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME[:PORT]",
        help="also answer for this Host name (repeatable; e.g. behind `ssh -L` on another "
        "port: localhost:9000); others get 421 (DNS rebinding)",
    )
    page.add_argument(
        "--upload-budget-mib",
        type=float,
        default=UPLOAD_BUDGET_MIB,
        metavar="MIB",
        help=f"MiB of uploads all requests in flight may hold together; past it 503 "
        f"(default {UPLOAD_BUDGET_MIB:g}, at least {MAX_IMAGE_MIB:g}: one largest image)",
    )
    page.add_argument(
        "--upload-timeout",
        type=float,
        default=UPLOAD_TIMEOUT_S,
        metavar="SECONDS",
        help=f"seconds an upload may take to arrive (default {UPLOAD_TIMEOUT_S:g})",
    )
    group = parser.add_argument_group("server")
    group.add_argument(
        "--protocol",
        choices=("grpc", "rest"),
        help="default: what --server says (port 8500 or grpc:// gRPC; 8501 or http(s):// REST)",
    )
    group.add_argument("--model-name", default="vit", help="served model name (default: vit)")
    group.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        print(f"error: --port must be in 0..65535, got {args.port}", file=sys.stderr)
        return 2
    error = _limits_error(args)
    if error:  # before the model loads, which takes a while
        print(f"error: {error}", file=sys.stderr)
        return 2

    if problem := export_problem(args.model, "ui"):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from serving.client.errors import ServingError

    try:
        backend = make_backend(args)
    except (OSError, ValueError, ServingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    from keras_vit.ui.app import UIServer

    try:
        ui = UIServer(
            backend,
            port=args.port,
            allowed_hosts=args.allowed_host,
            upload_budget=int(args.upload_budget_mib * 1024 * 1024),
            upload_timeout=args.upload_timeout,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        backend.close()
        return 2
    except OSError as error:
        print(f"error: cannot listen on 127.0.0.1:{args.port}: {error}", file=sys.stderr)
        backend.close()
        return 1
    print(f"keras-vit ui: {ui.url} ({backend.description}); Ctrl-C stops it", flush=True)
    try:
        ui.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        ui.close()
        backend.close()
    return 0


def _limits_error(args: argparse.Namespace) -> str | None:
    if not args.upload_budget_mib >= MAX_IMAGE_MIB:
        return (
            f"--upload-budget-mib must be at least {MAX_IMAGE_MIB} (one image of the largest "
            f"size), got {args.upload_budget_mib:g}"
        )
    if not args.upload_timeout > 0:
        return f"--upload-timeout must be positive, got {args.upload_timeout:g}"
    for name in args.allowed_host:
        if split_host(name) is None:
            return f"--allowed-host {name!r} is not NAME or NAME:PORT"
    return None


def make_backend(args: argparse.Namespace):
    from keras_vit.ui.backends import LocalBackend, ServerBackend

    if args.server:
        from serving.client import ServingClient
        from serving.client.files import protocol_for_target

        client = ServingClient(
            args.server,
            model_name=args.model_name,
            protocol=args.protocol or protocol_for_target(args.server),
            timeout=args.timeout,
        )
        try:
            return ServerBackend(client)
        except BaseException:
            client.close()
            raise
    from keras_vit.loading import load_pretrained

    try:
        return LocalBackend(load_pretrained(args.model))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load model {args.model!r}: {error}") from error
