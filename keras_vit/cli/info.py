"""``keras-vit info``: a model's configuration, parameter count and labels."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "info",
        help="print a model's configuration, parameter count and labels",
        description="Load a model and print its configuration, parameter count and labels.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="checkpoint: HF directory or hub id, Google .npz, .keras file, keras-vit model "
        "directory, or a preset name such as vit-base-patch16-224 (random weights)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--max-labels", type=int, default=20, help="labels to list (0 = all; default 20)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from keras_vit.model import ViTClassifier
    from keras_vit.presets import ALIASES, PRESETS

    try:
        if args.model in PRESETS or args.model in ALIASES:
            model = ViTClassifier.from_preset(args.model)
        else:
            from keras_vit.loading import load_pretrained

            model = load_pretrained(args.model)
    except (OSError, ValueError) as error:
        print(f"error: cannot load model {args.model!r}: {error}", file=sys.stderr)
        return 1
    config = model.get_config()
    labels = config.pop("labels")
    if isinstance(config.get("dtype"), dict):
        config["dtype"] = config["dtype"].get("config", {}).get("name", config["dtype"])
    info = {"config": config, "parameters": int(model.count_params()), "labels": labels}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"model: {args.model}")
    for key, value in config.items():
        print(f"  {key}: {value}")
    print(f"parameters: {info['parameters']:,}")
    shown = labels if args.max_labels <= 0 else labels[: args.max_labels]
    print(f"labels ({len(labels)}):")
    for i, label in enumerate(shown):
        print(f"  {i}: {label}")
    if len(shown) < len(labels):
        print(f"  ... {len(labels) - len(shown)} more (--max-labels 0 lists all)")
    return 0
