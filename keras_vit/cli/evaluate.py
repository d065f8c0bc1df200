"""``keras-vit evaluate``: accuracy, per-class metrics, confusion matrix, calibration, report.

The same report for a model loaded here (``--model``) and for a served one
(``--server``): ``predictions.jsonl``, ``metrics.json``, PNG figures and a
self-contained ``report.html`` in ``--output``.
"""

from __future__ import annotations

import argparse
import sys

from keras_vit.cli.exports import export_problem


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a model on labelled images and write a report (metrics, plots, HTML)",
        description="Classify a labelled data set with an in-process model (--model) or a "
        "TF-Serving-compatible server (--server) and write predictions.jsonl, metrics.json, "
        "confusion matrices, a reliability diagram, a gallery of the worst "
        "misclassifications (and the latency distribution with --server) and report.html.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--model",
        help="in-process: keras-vit run directory, HF directory or hub id, .npz or .keras file",
    )
    which.add_argument(
        "--server", metavar="HOST:PORT", help="a served model (gRPC 8500, REST 8501, or a URL)"
    )
    parser.add_argument(
        "--data",
        required=True,
        help="labelled images: DIR (one sub-folder per class), hf:ID[:SPLIT] or tfds:NAME[:SPLIT]",
    )
    parser.add_argument("--output", required=True, help="report directory (created if missing)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per call (default 32)")
    parser.add_argument("--top-k", type=int, default=5, help="k of the top-k accuracy (default 5)")
    parser.add_argument(
        "--gallery-size", type=int, default=16, help="misclassifications shown (default 16)"
    )
    group = parser.add_argument_group("server")
    group.add_argument(
        "--protocol",
        choices=("grpc", "rest"),
        help="default: what --server says (port 8500 or grpc:// gRPC; 8501 or http(s):// REST)",
    )
    group.add_argument("--model-name", default="vit", help="served model name (default: vit)")
    group.add_argument("--model-version", type=int, help="a specific version (default: latest)")
    group.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", action="store_true", default=None, help="progress bar")
    progress.add_argument("--no-progress", dest="progress", action="store_false")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for name in ("batch_size", "top_k"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    if args.gallery_size < 0:
        print("error: --gallery-size must not be negative", file=sys.stderr)
        return 2

    if problem := export_problem(args.model, "evaluate"):
        print(f"error: {problem}", file=sys.stderr)
        return 2

    from keras_vit.evaluate.runner import evaluate
    from keras_vit.image_folder import DataError

    try:
        dataset = load_eval_data(args.data, server=bool(args.server))
    except (DataError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        predictor = _predictor(args)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    from serving.client.errors import ServingError

    try:
        result = evaluate(
            predictor,
            dataset,
            args.output,
            batch_size=args.batch_size,
            top_k=args.top_k,
            gallery_size=args.gallery_size,
            progress=args.progress,
        )
    except (ServingError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        predictor.close()
    m = result.metrics
    k = m["top_k"]
    print(
        f"{m['num_images']} images in {m['seconds']:.1f} s ({m['images_per_second']:.1f} img/s): "
        f"accuracy {m['accuracy']:.4f}, top-{k} {m[f'top_{k}_accuracy']:.4f}, "
        f"macro F1 {m['macro_avg']['f1']:.4f}, ECE {m['ece']:.4f}"
    )
    if m.get("latency"):
        lat = m["latency"]
        print(f"latency per request: p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms")
    print(f"report: {result.output_dir / 'report.html'}")
    return 0


def load_eval_data(spec: str, server: bool = False):
    """The labelled images of ``--data``: a folder, or a split of a TFDS / HF data set.

    With ``server`` a folder is listed without TensorFlow (the server decodes): files
    that are not images by their first bytes are skipped with a warning, as the
    in-process mode skips the files its decoder refuses.
    """
    if server and not spec.startswith(("hf:", "tfds:")):
        from keras_vit.image_folder import list_folder, listing_text

        listing, dropped = list_folder(spec).without_non_images()
        skipped = listing.unreadable + dropped
        if skipped:
            print(
                f"warning: skipping {len(skipped)} files: {listing_text(skipped)}",
                file=sys.stderr,
            )
        return listing

    from keras_vit.training.data import image_folder, load_data

    if spec.startswith(("hf:", "tfds:")):
        explicit_split = spec.count(":") >= 2
        splits = load_data(spec, validation_split=0)
        if explicit_split or splits.test is None:
            return splits.train
        return splits.test
    return image_folder(spec)


def _predictor(args):
    from keras_vit.evaluate.predictors import LocalPredictor, ServerPredictor

    if args.server:
        from serving.client import ServingClient
        from serving.client.files import protocol_for_target

        client = ServingClient(
            args.server,
            model_name=args.model_name,
            protocol=args.protocol or protocol_for_target(args.server),
            version=args.model_version,
            timeout=args.timeout,
            batch_size=args.batch_size,
        )
        return ServerPredictor(client)
    from keras_vit.loading import load_pretrained

    try:
        model = load_pretrained(args.model)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load model {args.model!r}: {error}") from error
    return LocalPredictor(model, top_k=args.top_k)
