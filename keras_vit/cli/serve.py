"""``keras-vit serve``: the local TF-Serving-compatible model server.

The same flags as ``tensorflow_model_server`` (and ``python -m serving.server``),
e.g. ``keras-vit serve --model_name=vit --model_base_path=/abs/models/vit
--rest_api_port=8501``. Binds to 127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse

from serving.server.options import DESCRIPTION, build_parser, options_from_args


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve SavedModels over TF Serving's gRPC and REST APIs (binds to 127.0.0.1)",
        description=DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )
    build_parser(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from serving.server.main import serve  # the server's modules, when `serve` runs

    return serve(options_from_args(args))
