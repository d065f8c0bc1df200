"""``keras-vit ui``: a page on 127.0.0.1 to try a served (or in-process) model on images.

Drop or choose an image: the page shows the top-5 as bars and, when the model
has an ``explain`` signature (``keras-vit export --with-explain``) or runs
in-process, the attention-rollout overlay. Standard library HTTP, no
external assets: it works offline.
"""

from __future__ import annotations

import argparse
import sys


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
    from keras_vit.cli.exports import export_problem

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
        ui = UIServer(backend, port=args.port)
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
        ui.httpd.server_close()
        backend.close()
    return 0


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
