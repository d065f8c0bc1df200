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
        "--verbose",
        dest="tf_logs",
        action="store_true",
        help="show TensorFlow's C++ start-up log lines (hidden by default; setting "
        "TF_CPP_MIN_LOG_LEVEL yourself also shows them, at that level)",
    )
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
    if _needs_tensorflow(args):
        from keras_vit.cli.quiet import quiet_tensorflow

        # batch-predict's worker processes filter their TensorFlow import the same way.
        args.quiet_tensorflow = quiet_tensorflow(verbose=args.tf_logs)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


def _needs_tensorflow(args: argparse.Namespace) -> bool:
    """Every command but ``deploy`` and REST ``predict --server`` runs TensorFlow."""
    if args.command == "deploy":
        return False
    if args.command == "predict" and getattr(args, "server", None):
        return getattr(args, "protocol", "grpc") != "rest"
    return True


if __name__ == "__main__":
    sys.exit(main())
