"""``keras-vit predict``: top-k labels for image files, in-process or through a server.

One line per image: ``<image>\\t<label>\\t<score>\\t<label:score, ...>`` (``--json``:
one JSON object per line), the same output whether the model runs here
(``--model``) or behind TF Serving / ``keras-vit serve`` (``--server``).
"""

from __future__ import annotations

import argparse
import json
import sys

from keras_vit.cli.exports import export_problem


def register(subparsers) -> None:
    from serving.client.cli import add_arguments

    parser = subparsers.add_parser(
        "predict",
        help="classify image files and print the top-k labels and scores",
        description="Classify image files with a model loaded in-process (--model) or "
        "through a running TF Serving compatible server (--server).",
    )
    parser.add_argument(
        "--model",
        help="run in-process: HF directory or hub id, Google .npz, .keras file or "
        "keras-vit model directory",
    )
    parser.add_argument("--top-k", type=int, default=5, help="labels per image (default 5)")
    add_arguments(parser)
    parser.add_argument(
        "images",
        nargs="+",
        help="image files (JPEG, PNG, GIF, BMP, WebP) or directories of them",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if (args.model is None) == (args.server is None):
        print("error: give exactly one of --model (in-process) or --server", file=sys.stderr)
        return 2
    if args.top_k < 1:
        print("error: --top-k must be at least 1", file=sys.stderr)
        return 2

    if problem := export_problem(args.model, "predict"):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.server:
        from serving.client.cli import cli_predict

        return cli_predict(
            args.server,
            args.images,
            protocol=args.protocol,
            model_name=args.model_name,
            version=args.model_version,
            version_label=args.model_version_label,
            signature_name=args.signature_name,
            timeout=args.timeout,
            batch_size=args.batch_size,
            max_concurrency=args.max_concurrency,
            output_json=args.json,
            top_k=args.top_k,
            recursive=args.recursive,
        )
    from serving.client.files import expand_image_arguments

    args.images, problems = expand_image_arguments(args.images, args.recursive)
    for argument, problem in problems:
        print(f"error: {argument}: {problem}", file=sys.stderr)
    if not args.images:
        return 1  # each argument's problem is printed above
    status = _run_local(args)
    return status or (1 if problems else 0)


def _run_local(args) -> int:
    import numpy as np

    from keras_vit.images import ImageReadError, read_image
    from keras_vit.loading import load_pretrained

    try:
        model = load_pretrained(args.model)
    except (OSError, ValueError) as error:
        print(f"error: cannot load model {args.model!r}: {error}", file=sys.stderr)
        return 1
    status = 0
    k = min(args.top_k, len(model.labels))
    for path in args.images:
        try:
            pixels = read_image(path, model.image_size)
        except ImageReadError as error:
            print(f"error: {error}", file=sys.stderr)
            status = 1  # an input failed: as through a server (docs/cli-options.md)
            continue
        logits = np.asarray(model.predict_on_batch(pixels[None]))[0]
        logits = logits.astype("float64")
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        order = np.argsort(-probabilities)[:k]
        pairs = [(model.labels[i], float(probabilities[i])) for i in order]
        if args.json:
            record = {"image": path, "label": pairs[0][0], "score": pairs[0][1]}
            print(json.dumps({**record, "top_k": [list(pair) for pair in pairs]}))
        else:
            top = ", ".join(f"{label}:{score:.4f}" for label, score in pairs)
            print(f"{path}\t{pairs[0][0]}\t{pairs[0][1]:.4f}\t{top}")
    return status
