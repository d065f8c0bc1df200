"""``keras-vit explain``: where the model looks, as one PNG per image.

Each PNG shows the input with the attention-rollout map (Abnar & Zuidema,
2020) overlaid on a perceptual colormap at alpha 0.5, and the top-3 labels
beside it. ``--method gradient`` draws the gradient-weighted, class-specific
map instead (Chefer et al., 2021), for ``--label`` or the top-1 class.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from keras_vit.cli.exports import export_problem


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="draw attention maps (rollout or gradient-weighted) over images",
        description="Write one PNG per image: the attention map over the image and the "
        "top-3 labels beside it.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="HF directory or hub id, Google .npz, .keras file or keras-vit model directory",
    )
    parser.add_argument("--output", required=True, help="folder for the PNGs (created if missing)")
    parser.add_argument(
        "--method",
        choices=("rollout", "gradient"),
        default="rollout",
        help="rollout: attention rollout (class-agnostic); gradient: gradient-weighted, "
        "class-specific (default rollout)",
    )
    parser.add_argument(
        "--label", help="with --method gradient: the class to explain (default: the top-1)"
    )
    parser.add_argument("--top-k", type=int, default=3, help="labels beside the map (default 3)")
    parser.add_argument(
        "--recursive",
        "-r",
        action="store_true",
        help="also take the images in subdirectories of directory arguments",
    )
    parser.add_argument(
        "images",
        nargs="+",
        help="image files (JPEG, PNG, GIF, BMP, WebP) or directories of them",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.label is not None and args.method != "gradient":
        print("error: --label needs --method gradient (rollout is class-agnostic)", file=sys.stderr)
        return 2
    if args.top_k < 1:
        print("error: --top-k must be at least 1", file=sys.stderr)
        return 2

    if problem := export_problem(args.model, "explain"):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from serving.client.files import expand_image_arguments

    # Folders (and -r) as predict takes them; each argument's problem is named.
    args.images, problems = expand_image_arguments(args.images, args.recursive)
    for argument, problem in problems:
        print(f"error: {argument}: {problem}", file=sys.stderr)
    if not args.images:
        return 1
    from keras_vit.explain.explainer import Explainer
    from keras_vit.images import ImageReadError, read_image
    from keras_vit.loading import load_pretrained

    try:
        model = load_pretrained(args.model)
    except (OSError, ValueError) as error:
        print(f"error: cannot load model {args.model!r}: {error}", file=sys.stderr)
        return 1
    class_index = None
    if args.label is not None:
        if args.label not in model.labels:
            print(f"error: the model has no label {args.label!r}", file=sys.stderr)
            return 2
        class_index = model.labels.index(args.label)
    explainer = Explainer(model)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    status = 0
    written: dict[str, int] = {}
    for path in args.images:
        try:
            pixels = read_image(path, model.image_size)
        except ImageReadError as error:
            print(f"error: {error}", file=sys.stderr)
            status = 1  # an input failed (docs/cli-options.md, exit codes)
            continue
        explanation = explainer.explain(
            pixels, method=args.method, class_index=class_index, top_k=args.top_k
        )
        stem = Path(path).stem
        count = written.get(stem, 0)
        written[stem] = count + 1
        target = output / (f"{stem}.png" if count == 0 else f"{stem}_{count}.png")
        target.write_bytes(explanation.figure_png())
        top = ", ".join(f"{label}:{score:.4f}" for label, score in explanation.top_k)
        print(f"{path}\t{target}\t{top}")
    return status or (1 if problems else 0)
