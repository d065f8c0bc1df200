"""``keras-vit info``: a model's configuration, parameter count and labels; the presets."""

from __future__ import annotations

import argparse
import json
import sys

from keras_vit.cli.exports import export_problem
from keras_vit.presets import ALIASES, CHECKPOINTS, PRESETS, parameter_count, resolve_preset


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "info",
        help="print a model's configuration, parameter count and labels",
        description="Load a model and print its configuration, parameter count and labels, "
        "or list the presets.",
        epilog="examples:\n"
        "  keras-vit info --list-presets\n"
        "  keras-vit info --model vit-base-patch16-224 --max-labels 3\n"
        "  keras-vit info --model runs/photos --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--model",
        help="checkpoint: HF directory or hub id, Google .npz, .keras file, keras-vit model "
        "directory, or a preset name such as vit-base-patch16-224 (its architecture and "
        "labels; nothing is downloaded)",
    )
    what.add_argument(
        "--list-presets",
        action="store_true",
        help="list every preset with its alias, resolution, parameter count and checkpoint",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--max-labels", type=int, default=20, help="labels to list (0 = all; default 20)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list_presets:
        return list_presets(args.json)

    if problem := export_problem(args.model, "info"):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from keras_vit.model import ViTClassifier

    try:
        if resolve_preset(args.model):
            model = ViTClassifier.from_preset(args.model, load_weights=False)
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


def list_presets(as_json: bool = False) -> int:
    """Every preset: alias, resolution, patch size, depth, width, parameters, checkpoint."""

    alias_of = {name: alias for alias, name in ALIASES.items()}
    rows = [
        {
            "name": name,
            "alias": alias_of.get(name),
            "resolution": config["image_size"],
            "patch_size": config["patch_size"],
            "num_layers": config["num_layers"],
            "hidden_dim": config["hidden_dim"],
            "parameters": parameter_count(name),
            "checkpoint": CHECKPOINTS.get(name),
        }
        for name, config in PRESETS.items()
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("preset", "alias", "resolution", "patch", "layers", "width", "parameters")
    print(f"{header[0]:24s} {header[1]:6s} {header[2]:>10s} {header[3]:>5s} {header[4]:>6s} "
          f"{header[5]:>5s} {header[6]:>13s}  checkpoint (from_preset loads it)")  # fmt: skip
    for row in rows:
        print(
            f"{row['name']:24s} {row['alias'] or '':6s} {row['resolution']:>10d} "
            f"{row['patch_size']:>5d} {row['num_layers']:>6d} {row['hidden_dim']:>5d} "
            f"{row['parameters']:>13,d}  {row['checkpoint'] or '-'}"
        )
    print(
        "All presets have a 1000-class ImageNet-1k head and its labels. Presets without a "
        "checkpoint: ViTClassifier.from_preset(name, load_weights=False) (random weights)."
    )
    return 0
