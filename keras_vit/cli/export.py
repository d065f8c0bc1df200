"""``keras-vit export``: write a model as a TF Serving model version (SavedModel).

Example::

    keras-vit export --model google/vit-base-patch16-224 --output models/vit
    tensorflow_model_server --model_name=vit --model_base_path=$PWD/models/vit ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

from serving import precision as precision_lib
from serving.image_files import ImageFileError, read_image_file
from serving.precision import PRECISIONS, BF16CPUWarning, bf16_cpu_warning


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a model as a TF Serving SavedModel version taking image bytes",
        description="Write BASE_PATH/<version>/ (saved_model.pb, variables/, assets/, "
        "assets.extra/) with the signatures serving_default (encoded image bytes), "
        "serving_pixels (uint8 pixels), embedding and classify. The version appears "
        "atomically; an existing version is never replaced without --overwrite.",
    )
    parser.add_argument(
        "--model",
        required=True,
        metavar="SOURCE",
        help="checkpoint: HF directory or hub id, Google .npz, .keras file, keras-vit model "
        "directory, or a preset name such as vit-base-patch16-224 (its published checkpoint)",
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="BASE_PATH",
        help="the model base path TF Serving watches (--model_base_path); created if missing",
    )
    parser.add_argument(
        "--version",
        type=_non_negative,
        metavar="N",
        help="version number (default: one more than the highest existing version, or 1)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace the version if it exists")
    parser.add_argument(
        "--top-k",
        type=_positive,
        default=5,
        metavar="K",
        help="classes in top_k_labels/top_k_scores and classify (default 5)",
    )
    parser.add_argument(
        "--with-probabilities",
        action="store_true",
        help="also output every class probability (large REST replies)",
    )
    parser.add_argument(
        "--max-pixels",
        type=_positive,
        default=None,
        metavar="N",
        help="reject images whose header declares more pixels (default 40000000)",
    )
    parser.add_argument(
        "--max-request-pixels",
        type=_positive,
        default=None,
        metavar="N",
        help="reject requests whose images decode to more pixels in all (a JPEG counts its "
        "reduced DCT scale; default: --max-pixels)",
    )
    parser.add_argument(
        "--xla",
        action="store_true",
        help="compile the model part with XLA (TF Serving then needs "
        "--xla_cpu_compilation_enabled=true on CPU)",
    )
    parser.add_argument(
        "--with-explain",
        action="store_true",
        help="add the 'explain' signature: label, score, attention rollout map and overlay PNG",
    )
    parser.add_argument(
        "--quantize",
        choices=("int8",),
        help="quantize the weights with Keras (model.quantize) before exporting",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="bfloat16: the encoder computes in bf16 (about 2x faster on CPUs with "
        "AVX512_BF16 or AMX-BF16, several times slower without); int8: the transformer "
        "body is quantized to int8 (NNCF, calibrated) and runs in OpenVINO, served by "
        "`keras-vit serve` only (tensorflow_model_server cannot load it). Preprocessing, "
        "softmax and every output stay float32, the signatures are unchanged (default float32)",
    )
    parser.add_argument(
        "--calibration-data",
        metavar="DIR",
        help="--precision int8: calibrate on up to --calibration-images images of this "
        "folder (searched recursively; default: the training run's own image folder when "
        "--model is a run directory, else sample photos shipped with scikit-image and "
        "scikit-learn, with flips and crops)",
    )
    parser.add_argument(
        "--calibration-images",
        type=_positive,
        default=None,
        metavar="N",
        help="--precision int8: how many images of --calibration-data to calibrate on "
        "(default 300)",
    )
    parser.add_argument(
        "--mixed-base-path",
        action="store_true",
        help="--precision int8: write the int8 version even if the base path holds SavedModel "
        "versions (only `keras-vit serve` can then serve every version)",
    )
    parser.add_argument(
        "--warmup-image",
        action="append",
        default=None,
        metavar="FILE",
        help="encoded image for the warm-up requests (repeatable; default: sample photos)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    int8_only = [
        flag
        for flag, value in (
            ("--calibration-data", args.calibration_data),
            ("--calibration-images", args.calibration_images),
            ("--mixed-base-path", args.mixed_base_path),
        )
        if value
    ]
    if int8_only and args.precision != "int8":
        print(f"error: {int8_only[0]} is only used with --precision int8", file=sys.stderr)
        return 2
    if args.precision == "int8" and (args.quantize or args.with_explain or args.xla):
        flag = (
            f"--quantize {args.quantize}"
            if args.quantize
            else ("--with-explain" if args.with_explain else "--xla")
        )
        reason = {
            "--with-explain": "the attention rollout needs the float model",
            "--xla": "the int8 body runs in OpenVINO, not in TensorFlow",
        }.get(flag, "it quantizes the float model itself (static int8 in OpenVINO, faster "
                    "than Keras' int8 kernels)")  # fmt: skip
        print(
            f"error: --precision int8 cannot be combined with {flag}: {reason}",
            file=sys.stderr,
        )
        return 2
    if args.quantize and args.precision != "float32":
        # Keras int8 kernels run on TF's int8 matmuls whatever the policy: nothing to gain.
        print(
            f"error: --precision {args.precision} cannot be combined with --quantize "
            f"{args.quantize}: choose one (bfloat16 is the faster on CPUs with AVX512_BF16 "
            "or AMX-BF16; int8 only saves memory)",
            file=sys.stderr,
        )
        return 2
    warmup_images = None
    if args.warmup_image:
        try:  # regular files only, size capped (serving/image_files.py)
            warmup_images = [read_image_file(path) for path in args.warmup_image]
        except ImageFileError as error:
            print(f"error: cannot read warm-up image {error}", file=sys.stderr)
            return 1

    from keras_vit.decode import DEFAULT_MAX_PIXELS
    from serving.export import ExportError, existing_versions, export_saved_model

    if args.precision == "bfloat16":
        message = bf16_cpu_warning()
        if message:
            print(f"warning: {message}", file=sys.stderr)
    calibration = None
    if args.precision == "int8":
        calibration = _int8_preamble(args)
        if calibration is None:
            return 1

    if args.version is not None and not args.overwrite:
        # Fail before the (slow) model loading.
        if args.version in existing_versions(args.output):
            print(
                f"error: version {args.version} already exists under {args.output}; "
                "pass --overwrite to replace it",
                file=sys.stderr,
            )
            return 1
    # Loading and exporting a large model take minutes: say what is going on (stderr, so
    # that stdout stays the result).
    loading = time.perf_counter()
    print(f"loading {args.model} ...", file=sys.stderr, flush=True)
    try:
        model = _load(args.model)
    except (OSError, ValueError) as error:
        print(f"error: cannot load model {args.model!r}: {error}", file=sys.stderr)
        return 1
    if args.quantize:
        model.quantize(args.quantize)
    started = time.perf_counter()
    print(
        f"loaded in {started - loading:.1f} s; tracing the signatures and writing the "
        "SavedModel ...",
        file=sys.stderr,
        flush=True,
    )
    from serving.export import Int8ServingWarning
    from serving.int8_export import Int8CPUWarning

    images, source = calibration if calibration else (None, None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BF16CPUWarning)  # printed above, once
            warnings.simplefilter("ignore", Int8ServingWarning)  # printed above, once
            warnings.simplefilter("ignore", Int8CPUWarning)
            path = export_saved_model(
                model,
                args.output,
                args.version,
                top_k=args.top_k,
                with_probabilities=args.with_probabilities,
                max_pixels=args.max_pixels if args.max_pixels is not None else DEFAULT_MAX_PIXELS,
                max_request_pixels=args.max_request_pixels,
                xla=args.xla,
                overwrite=args.overwrite,
                warmup_images=warmup_images,
                with_explain=args.with_explain,
                precision=args.precision,
                calibration_images=images,
                calibration_source=source,
                mixed_base_path=args.mixed_base_path,
            )
    except (ExportError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    top_k = min(args.top_k, model.num_classes)
    print(f"exported {path} in {time.perf_counter() - started:.1f} s")
    print("signatures:")
    print(
        "  serving_default  image_bytes (string [-1]) -> label, score, top_k_labels, "
        f"top_k_scores (k={top_k}){', probabilities' if args.with_probabilities else ''}"
    )
    print("  serving_pixels   images (uint8 [-1, -1, -1, 3]) -> as serving_default")
    print(f"  embedding        image_bytes -> embedding (float [-1, {model.hidden_dim}])")
    print(f"  classify         inputs (tf.Example, image/encoded) -> classes, scores (k={top_k})")
    if args.with_explain:
        rows, cols = (s // model.patch_size for s in model.image_size)
        print(
            "  explain          image_bytes -> label, score, attention_map "
            f"(float [-1, {rows}, {cols}]), overlay_bytes (PNG)"
        )
    if args.precision == "int8":
        print(
            "precision: int8 body (OpenVINO, NNCF static int8); decoding, inputs, scores and "
            f"embeddings as float32; calibrated on {source or 'sample photos'}"
        )
        print("serve it with: keras-vit serve (tensorflow_model_server cannot load it)")
    elif args.precision != "float32":
        print(f"precision: {args.precision} encoder; inputs, scores and embeddings float32")
    if args.xla:
        print("XLA: start TF Serving with --xla_cpu_compilation_enabled=true")
    return 0


def _int8_preamble(args) -> tuple[list[bytes] | None, str | None] | tuple[()] | None:
    """Warnings and the calibration images of --precision int8 (None: an error was printed)."""
    from serving.export import TF_SERVING_INT8_MESSAGE
    from serving.int8_export import (
        DEFAULT_CALIBRATION_IMAGES,
        int8_cpu_warning,
        read_calibration_folder,
    )

    print(f"warning: {TF_SERVING_INT8_MESSAGE}", file=sys.stderr)
    message = int8_cpu_warning(precision_lib.cpu_flags())  # the module's: tests patch it
    if message:
        print(f"warning: {message}", file=sys.stderr)
    folder, origin = args.calibration_data, "--calibration-data"
    if not folder:
        folder = _training_folder(args.model)
        if folder is None:
            print(
                "note: calibrating on the sample photos of scikit-image and scikit-learn "
                "(--model is not a training run with a local image folder); "
                "--calibration-data DIR calibrates on your own images",
                file=sys.stderr,
            )
            return ()
        origin = "the run's training data"
    limit = args.calibration_images or DEFAULT_CALIBRATION_IMAGES
    try:
        images, names = read_calibration_folder(folder, limit)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return None
    print(f"Calibrating on {len(names)} images of {origin} ({folder})")
    return images, f"{folder} ({origin}: {len(names)} images, first {names[0]})"


def _training_folder(model: str) -> str | None:
    """The local image folder a ``keras-vit train`` run directory was trained on, if any."""

    from keras_vit.training.output import CONFIG_FILE

    try:
        with open(os.path.join(model, CONFIG_FILE), encoding="utf-8") as handle:
            data = json.load(handle).get("data")
    except (OSError, ValueError, AttributeError):
        return None
    return data if isinstance(data, str) and os.path.isdir(data) else None


def _load(source: str):
    # A preset name loads its published checkpoint, as ViTClassifier.from_preset does.
    from keras_vit.loading import load_pretrained

    return load_pretrained(source)


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value
