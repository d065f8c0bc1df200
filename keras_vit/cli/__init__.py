"""The ``keras-vit`` command line.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``, which adds an ``argparse`` parser whose default
``func`` runs the command. Heavy imports (TensorFlow, Keras) happen inside
the command functions so that ``keras-vit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from keras_vit import quiet

# Sub-command modules, in the order ``--help`` lists them.
COMMANDS = (
    "predict",
    "info",
    "export",
    "serve",
    "train",
    "deploy",
    "evaluate",
    "explain",
    "ui",
    "batch_predict",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-vit",
        description="Vision Transformers in Keras 3: load checkpoints, fine-tune, "
        "export for TF Serving, serve and query.",
    )
    parser.add_argument(
        "--tf-logs",
        dest="tf_logs",
        action="store_true",
        help="show TensorFlow's and gRPC's start-up log lines (hidden by default; "
        "KERAS_VIT_TF_LOGS=1 or TF_CPP_MIN_LOG_LEVEL=0 in the environment also shows them)",
    )
    # The old spelling, before `train --verbose` (Keras' verbosity) took the name.
    parser.add_argument("--verbose", dest="tf_logs", action="store_true", help=argparse.SUPPRESS)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"keras_vit.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"keras_vit.cli.{name}":
                raise
            continue  # command not built yet
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_beam_options", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    # batch-predict hands the options it does not know to Beam's PipelineOptions.
    args.beam_args = extra
    # TensorFlow is imported by the commands that run a model, filtered (keras_vit/quiet.py).
    quiet.for_program(tf_logs=args.tf_logs)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
