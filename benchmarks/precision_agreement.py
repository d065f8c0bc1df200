"""Does ``keras-vit export --precision bfloat16`` answer like the float32 export?

1. Trains the ``digits`` recipe's ViT on scikit-learn's digits, as ``keras-vit
   demo`` does (``--epochs`` overrides the recipe's 20; ``--model`` reuses a
   trained model directory), and writes the held-out split it never trains on.
2. Exports it twice, float32 and bfloat16, exactly as ``keras-vit export``.
3. Evaluates each export with ``keras-vit evaluate --server`` against our
   TF-Serving-compatible server on the held-out digits: accuracy, top-5.
4. Runs both exports' ``serving_default`` signature (the loaded SavedModel) on
   the held-out digits and on real photos (``skimage.data``, scikit-learn's
   sample images): top-1 agreement and the largest probability difference.
5. With ``--speed`` (default on): a speed sanity check on ViT-B/16 (random
   weights): both exports' ``serving_pixels`` signature at batch 8, interleaved
   rounds, median img/s (``benchmarks/precision.py`` has the full table).

Usage (it loads ViT-B/16: run it alone on the machine)::

    .venv/bin/python -m benchmarks.precision_agreement

Writes ``benchmarks/results/precision-agreement.md``.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from benchmarks.harness import (
    ROOT,
    ServedModel,
    add_output_options,
    digits_run,
    machine_info,
    markdown_table,
    results_path,
    write_results,
)

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

GOAL_POINTS = 0.3  # held-out accuracy within 0.3 points of float32 (issue 11)


def photos() -> dict[str, bytes]:
    """Real photos as JPEG bytes: skimage.data's colour photos and scikit-learn's samples."""
    import numpy as np
    from PIL import Image
    from skimage import data
    from sklearn.datasets import load_sample_images

    names = (
        "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
        "retina", "camera", "coins", "moon", "page", "clock", "text", "brick", "grass", "gravel",
    )  # fmt: skip
    arrays = {name: getattr(data, name)() for name in names}
    samples = load_sample_images()
    for path, image in zip(samples.filenames, samples.images, strict=True):
        arrays[Path(path).stem] = image
    out = {}
    for name, array in arrays.items():
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=-1)
        buffer = io.BytesIO()
        Image.fromarray(array[..., :3].astype(np.uint8)).save(buffer, "JPEG", quality=90)
        out[name] = buffer.getvalue()
        buffer = io.BytesIO()  # the mirror image: a second, different input
        Image.fromarray(array[:, ::-1, :3].astype(np.uint8)).save(buffer, "JPEG", quality=90)
        out[f"{name} (mirrored)"] = buffer.getvalue()
    return out


def signature_outputs(export_dir: Path, images: list[bytes], batch: int = 32) -> dict:
    """``serving_default`` of the loaded SavedModel, in batches: labels and probabilities."""
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(str(export_dir))
    serve = loaded.signatures["serving_default"]
    labels, probabilities = [], []
    for start in range(0, len(images), batch):
        out = serve(image_bytes=tf.constant(images[start : start + batch]))
        labels += [x.decode() for x in out["label"].numpy()]
        probabilities.append(out["probabilities"].numpy())
        assert out["probabilities"].dtype == tf.float32
    return {"label": np.array(labels), "probabilities": np.concatenate(probabilities)}


def evaluate_served(base: Path, data_dir: Path, output: Path) -> dict:
    """``keras-vit evaluate --server`` against our server serving ``base``; its metrics."""
    with ServedModel(base) as server:
        command = [sys.executable, "-m", "keras_vit", "evaluate"]
        command += ["--server", f"127.0.0.1:{server.grpc_port}", "--protocol", "grpc"]
        command += ["--data", str(data_dir), "--output", str(output), "--no-progress"]
        subprocess.run(command, check=True, cwd=ROOT, capture_output=True, timeout=600)
    return json.loads((output / "metrics.json").read_text())


def compare(fp32: dict, bf16: dict) -> dict:
    import numpy as np

    return {
        "n": len(fp32["label"]),
        "agree": int((fp32["label"] == bf16["label"]).sum()),
        "max_diff": float(np.abs(fp32["probabilities"] - bf16["probabilities"]).max()),
        "mean_diff": float(np.abs(fp32["probabilities"] - bf16["probabilities"]).mean()),
    }


def speed(rounds: int, batch: int) -> dict:
    """img/s of ViT-B/16 (random weights) at ``batch``, every case in the same rounds.

    The float32 and bfloat16 exports through their loaded ``serving_pixels``
    signature, and, for the choice of policy, the Keras model itself in a
    ``tf.function`` under ``float32``, ``mixed_bfloat16`` (what the export uses)
    and ``bfloat16`` (weights stored in bf16).
    """
    import numpy as np
    import tensorflow as tf

    from keras_vit import ViTClassifier
    from keras_vit.loading import adapt_model
    from serving.export import export_saved_model

    scratch = tempfile.TemporaryDirectory(prefix="bf16-speed-")
    model = ViTClassifier.from_preset("vit-base-patch16-224", load_weights=False)
    paths = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for precision in ("float32", "bfloat16"):
            base = Path(scratch.name) / precision
            paths[precision] = export_saved_model(
                model, base, version=1, precision=precision, warmup_images=[b"-"]
            )
    gc.collect()
    pixels = np.random.default_rng(0).integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
    pixels = tf.constant(pixels)
    functions = {}
    for precision, path in paths.items():
        signature = tf.saved_model.load(str(path)).signatures["serving_pixels"]
        functions[f"export {precision}"] = lambda s=signature: s(images=pixels)["score"]
    floats = tf.cast(pixels, tf.float32)
    for policy in ("float32", "mixed_bfloat16", "bfloat16"):
        keras_model = model if policy == "float32" else adapt_model(model, dtype=policy)
        call = tf.function(
            lambda x, m=keras_model: tf.cast(m(x, training=False), tf.float32), autograph=False
        )
        functions[f"Keras {policy}"] = lambda c=call: c(floats)
    for function in functions.values():
        for _ in range(2):  # trace + oneDNN primitive caches
            function().numpy()
    rates: dict[str, list[float]] = {name: [] for name in functions}
    names = list(functions)
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            functions[name]().numpy()
            rates[name].append(batch / (time.perf_counter() - started))
    sizes = {
        f"export {name}": sum(f.stat().st_size for f in (path / "variables").iterdir()) / 1e6
        for name, path in paths.items()
    }
    scratch.cleanup()
    return {"rates": rates, "sizes_mb": sizes}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's 20")
    parser.add_argument("--model", help="a trained keras-vit model directory to reuse")
    parser.add_argument("--workdir", help="keep the digits, model and exports here")
    parser.add_argument("--speed", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--rounds", type=int, default=8, help="speed rounds (batch 8 each)")
    add_output_options(parser, "precision-agreement")
    args = parser.parse_args(argv)

    from keras_vit.loading import load_pretrained
    from serving.export import export_saved_model
    from serving.precision import cpu_flags

    started = time.perf_counter()
    info = machine_info(["tensorflow", "keras"])
    flags = cpu_flags() or set()
    info["cpu bf16 flags"] = " ".join(sorted(f for f in flags if "bf16" in f)) or "none"
    run = digits_run(args.workdir, args.model, "precision-agreement", args.epochs)
    workdir, folder, model_dir, train_seconds = (
        run.workdir,
        run.folder,
        run.model_dir,
        run.train_seconds,
    )
    model = load_pretrained(str(model_dir))

    exports, evaluated, outputs = {}, {}, {}
    held_out = sorted(p for p in folder.test_dir.rglob("*.png"))
    held_out_bytes = [p.read_bytes() for p in held_out]
    truth = [p.parent.name for p in held_out]
    photo_bytes = photos()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for precision in ("float32", "bfloat16"):
            exports[precision] = export_saved_model(
                model, workdir / "exports" / precision, version=1, overwrite=True,
                with_probabilities=True, precision=precision,
            )  # fmt: skip
    for precision, path in exports.items():
        evaluated[precision] = evaluate_served(
            path.parent, folder.test_dir, workdir / f"evaluate-{precision}"
        )
        outputs[precision] = {
            "digits": signature_outputs(path, held_out_bytes),
            "photos": signature_outputs(path, list(photo_bytes.values())),
        }
    digits = compare(outputs["float32"]["digits"], outputs["bfloat16"]["digits"])
    real = compare(outputs["float32"]["photos"], outputs["bfloat16"]["photos"])
    in_process_accuracy = {
        p: float((outputs[p]["digits"]["label"] == truth).mean()) for p in outputs
    }
    accuracy = {p: evaluated[p]["accuracy"] for p in evaluated}
    points = 100 * (accuracy["bfloat16"] - accuracy["float32"])
    top5 = {p: evaluated[p][f"top_{evaluated[p]['top_k']}_accuracy"] for p in evaluated}
    verdict = "met" if abs(points) <= GOAL_POINTS else "NOT met"

    rows = [
        [p, f"{accuracy[p]:.4f}", f"{top5[p]:.4f}",
         f"{in_process_accuracy[p]:.4f}"]
        for p in ("float32", "bfloat16")
    ]  # fmt: skip
    body = [
        f"Model: the `digits` recipe's ViT ({model.num_layers} layers, hidden "
        f"{model.hidden_dim}, {model.count_params():,} parameters) trained on "
        f"{folder.num_train} digits"
        + (
            (f" for {args.epochs or 20} epochs in {train_seconds:.0f} s")
            if train_seconds
            else f" (reused: {model_dir})"
        )
        + f"; held-out: {folder.num_test} digits it never trained on.",
        "",
        "## Held-out accuracy, `keras-vit evaluate --server` (our server, gRPC)",
        "",
        markdown_table(
            ["export", "accuracy", "top-5 accuracy", "accuracy (signature in-process)"], rows
        ),
        "",
        f"bfloat16 - float32: {points:+.2f} points (goal: within {GOAL_POINTS} points: {verdict}).",
        "",
        "## Agreement of the two exports (`serving_default`, every class probability)",
        "",
        markdown_table(
            ["images", "n", "top-1 agreement", "max abs Δp", "mean abs Δp"],
            [
                [
                    name,
                    c["n"],
                    f"{c['agree']}/{c['n']} ({c['agree'] / c['n']:.2%})",
                    f"{c['max_diff']:.4f}",
                    f"{c['mean_diff']:.5f}",
                ]
                for name, c in (
                    ("held-out digits", digits),
                    ("real photos (skimage.data, sklearn samples, + mirrored)", real),
                )
            ],
        ),  # fmt: skip
        "",
        "The photos are out of distribution for a digits model (its answers on them are "
        "not meaningful); they test that bf16 and fp32 pick the same class on natural "
        "images, decoded by the same in-graph decoder. Δp: the difference of one class "
        "probability between the two exports, over every image and class.",
    ]
    print("\n".join(body), flush=True)  # the agreement, before the long speed part
    if args.speed:
        measured = speed(args.rounds, batch=8)
        rates = measured["rates"]
        medians = {name: statistics.median(values) for name, values in rates.items()}
        body += [
            "",
            "## Speed sanity check: ViT-B/16 (random weights), batch 8, `serving_pixels`",
            "",
            markdown_table(
                ["case", "median img/s", "min–max img/s", "variables MB", "× float32"],
                [
                    [
                        name,
                        f"{medians[name]:.2f}",
                        f"{min(v):.2f}–{max(v):.2f}",
                        f"{measured['sizes_mb'][name]:.0f}" if name in measured["sizes_mb"] else "",
                        # Exports against the float32 export, Keras rows against Keras float32.
                        f"{medians[name] / medians[name.split()[0] + ' float32']:.2f}",
                    ]
                    for name, v in rates.items()
                ],
            ),  # fmt: skip
            "",
            f"{args.rounds} interleaved rounds of one batch each (the order rotates each "
            "round); exports through the loaded SavedModel signature (tf.saved_model.load), "
            "pixels already decoded; Keras rows: the model in a tf.function (× its float32 "
            "row). "
            "`benchmarks/precision.py` has the full table (TF1 session, batch 1/8/32, peers).",
        ]
    body.append(f"\nTotal {time.perf_counter() - started:.0f} s.")
    title = "bfloat16 vs float32 export: agreement"
    path = write_results(results_path(args), title, info, "\n".join(body))
    print(Path(path).read_text())
    run.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
