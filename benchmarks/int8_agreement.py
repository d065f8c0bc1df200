"""Does ``keras-vit export --precision int8`` answer like the float32 export?

1. Trains the ``digits`` recipe's ViT on scikit-learn's digits, as ``keras-vit
   demo`` does (``--model`` reuses a trained model directory), and writes the
   held-out split it never trains on.
2. Exports it float32 and int8 (``--calibration-data`` = the training folder:
   the run's own training data, 300 images).
3. Evaluates each export with ``keras-vit evaluate --server`` against our
   server on the held-out digits: accuracy, top-5.
4. Runs both versions as ``keras-vit serve`` runs them (``Servable.load``,
   ``serving_default``, every class probability) on the held-out digits and
   on real photos (skimage.data, scikit-learn's samples; each also mirrored
   and centre-cropped) that the int8 calibration never saw: top-1 agreement,
   max and mean probability difference.

Usage::

    .venv/bin/python -m benchmarks.int8_agreement [--model DIR] [--workdir DIR]

Writes ``benchmarks/results/int8-agreement.md`` (``--out`` to change it; the
random-weight ViT-B/16's agreement comes from ``python -m benchmarks.precision``'s
run, quoted with its caveat).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
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

GOAL_POINTS = 0.5  # held-out accuracy within 0.5 points of float32 (issue 22)
GOAL_AGREEMENT = 0.99  # top-1 agreement on the held-out digits


def photos() -> dict[str, bytes]:
    """Real photos as JPEGs: whole, mirrored and centre-cropped (never calibrated on)."""
    import numpy as np
    from PIL import Image
    from skimage import data
    from sklearn.datasets import load_sample_images

    names = (
        "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina",
        "immunohistochemistry", "camera", "coins", "moon", "page", "clock", "text",
        "brick", "grass", "gravel",
    )  # fmt: skip
    arrays = {name: np.asarray(getattr(data, name)()) for name in names}
    samples = load_sample_images()
    for path, image in zip(samples.filenames, samples.images, strict=True):
        arrays[Path(path).stem] = image
    out = {}
    for name, array in arrays.items():
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=-1)
        array = array[..., :3].astype(np.uint8)
        height, width = array.shape[:2]
        views = {
            name: array,
            f"{name} (mirrored)": array[:, ::-1],
            f"{name} (centre crop)": array[height // 4 : -height // 4, width // 4 : -width // 4],
        }
        for label, view in views.items():
            buffer = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(view)).save(buffer, "JPEG", quality=90)
            out[label] = buffer.getvalue()
    return out


def served_outputs(version_dir: Path, images: list[bytes], batch: int = 32) -> dict:
    """``serving_default`` as ``keras-vit serve`` runs the version: labels, probabilities."""
    import numpy as np
    from tensorflow.core.protobuf import config_pb2

    from serving.server.servable import Servable

    servable = Servable.load("vit", 1, str(version_dir), ["serve"], config_pb2.ConfigProto())
    signature = servable.signature_defs["serving_default"]
    fed = signature.inputs["image_bytes"].name
    fetched = [signature.outputs[k].name for k in ("label", "probabilities")]
    labels, probabilities = [], []
    for start in range(0, len(images), batch):
        chunk = np.array(images[start : start + batch], dtype=object)
        label, probability = servable.runner({fed: chunk}, fetched, None)
        labels += [x.decode() for x in label]
        probabilities.append(probability)
    servable.close()
    return {"label": np.array(labels), "probabilities": np.concatenate(probabilities)}


def evaluate_served(base: Path, data_dir: Path, output: Path) -> dict:
    """``keras-vit evaluate --server`` against our server serving ``base``; its metrics."""
    from serving.client import ServingClient

    server = ServedModel(base)
    server.start()  # until the model is AVAILABLE
    client = ServingClient(f"127.0.0.1:{server.grpc_port}", protocol="grpc", timeout=120)
    try:
        command = [sys.executable, "-m", "keras_vit", "evaluate"]
        command += ["--server", f"127.0.0.1:{server.grpc_port}", "--protocol", "grpc"]
        command += ["--data", str(data_dir), "--output", str(output), "--no-progress"]
        subprocess.run(command, check=True, cwd=ROOT, capture_output=True, timeout=900)
    finally:
        client.close()
        server.stop()
    return json.loads((output / "metrics.json").read_text())


def compare(fp32: dict, int8: dict) -> dict:
    import numpy as np

    diff = np.abs(fp32["probabilities"] - int8["probabilities"])
    top = fp32["probabilities"].argmax(axis=1)
    rows = np.arange(len(top))
    return {
        "n": len(fp32["label"]),
        "agree": int((fp32["label"] == int8["label"]).sum()),
        "max_diff": float(diff.max()),
        "mean_diff": float(diff.mean()),
        "top1_prob_max_diff": float(diff[rows, top].max()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a trained keras-vit model directory to reuse")
    parser.add_argument("--workdir", help="keep the digits, model and exports here")
    parser.add_argument("--calibration-images", type=int, default=300)
    add_output_options(parser, "int8-agreement")
    args = parser.parse_args(argv)

    from keras_vit.loading import load_pretrained
    from serving.export import export_saved_model
    from serving.int8_export import read_calibration_folder
    from serving.precision import cpu_flags

    started = time.perf_counter()
    info = machine_info(["tensorflow", "keras", "openvino", "nncf"])
    flags = cpu_flags() or set()
    info["cpu int8/bf16 flags"] = " ".join(
        sorted(f for f in flags if "vnni" in f or "amx" in f or "bf16" in f)
    )
    run = digits_run(args.workdir, args.model, "int8-agreement")
    workdir, folder, model_dir, train_seconds = (
        run.workdir,
        run.folder,
        run.model_dir,
        run.train_seconds,
    )
    model = load_pretrained(str(model_dir))

    calibration, names = read_calibration_folder(folder.train_dir, args.calibration_images)
    exports = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for precision in ("float32", "int8"):
            options = {}
            if precision == "int8":
                options = dict(
                    calibration_images=calibration,
                    calibration_source=f"digits training folder ({len(names)} images)",
                )
            exports[precision] = export_saved_model(
                model, workdir / "exports" / precision, version=1, overwrite=True,
                with_probabilities=True, precision=precision, **options,
            )  # fmt: skip
    held_out = sorted(folder.test_dir.rglob("*.png"))
    held_out_bytes = [p.read_bytes() for p in held_out]
    photo_bytes = photos()
    evaluated, outputs = {}, {}
    for precision, path in exports.items():
        evaluated[precision] = evaluate_served(
            path.parent, folder.test_dir, workdir / f"evaluate-{precision}"
        )
        outputs[precision] = {
            "digits": served_outputs(path, held_out_bytes),
            "photos": served_outputs(path, list(photo_bytes.values())),
        }
    digits = compare(outputs["float32"]["digits"], outputs["int8"]["digits"])
    real = compare(outputs["float32"]["photos"], outputs["int8"]["photos"])
    accuracy = {p: evaluated[p]["accuracy"] for p in evaluated}
    top5 = {p: evaluated[p][f"top_{evaluated[p]['top_k']}_accuracy"] for p in evaluated}
    points = 100 * (accuracy["int8"] - accuracy["float32"])
    agreement = digits["agree"] / digits["n"]
    verdicts = (
        "met" if abs(points) <= GOAL_POINTS else "NOT met",
        "met" if agreement >= GOAL_AGREEMENT else "NOT met",
    )
    sizes = {
        p: sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6
        for p, path in exports.items()
    }
    body = [
        f"Model: the `digits` recipe's ViT ({model.num_layers} layers, hidden "
        f"{model.hidden_dim}, {model.count_params():,} parameters) trained on "
        f"{folder.num_train} digits"
        + (f" in {train_seconds:.0f} s" if train_seconds else f" (reused: {model_dir})")
        + f"; held-out: {folder.num_test} digits it never trained on. int8: "
        f"`export --precision int8` calibrated on {len(names)} images of the training folder "
        "(the run's own training data).",
        "",
        "## Held-out accuracy, `keras-vit evaluate --server` (our server, gRPC)",
        "",
        markdown_table(
            ["export", "accuracy", "top-5 accuracy", "version on disk (MB)"],
            [
                [p, f"{accuracy[p]:.4f}", f"{top5[p]:.4f}", f"{sizes[p]:.2f}"]
                for p in ("float32", "int8")
            ],
        ),
        "",
        f"- int8 - float32: {points:+.2f} points (goal: within {GOAL_POINTS}: {verdicts[0]}).",
        f"- top-1 agreement on the held-out digits: {agreement:.2%} (goal ≥ "
        f"{GOAL_AGREEMENT:.0%}: {verdicts[1]}).",
        "",
        "## Agreement of the two versions (`serving_default`, every class probability)",
        "",
        markdown_table(
            ["images", "n", "top-1 agreement", "max abs Δp", "mean abs Δp", "max Δ top-1 p"],
            [
                [
                    name,
                    c["n"],
                    f"{c['agree']}/{c['n']} ({c['agree'] / c['n']:.2%})",
                    f"{c['max_diff']:.4f}",
                    f"{c['mean_diff']:.5f}",
                    f"{c['top1_prob_max_diff']:.4f}",
                ]
                for name, c in (
                    ("held-out digits", digits),
                    ("real photos (skimage.data, sklearn; + mirrored, centre crop)", real),
                )
            ],
        ),  # fmt: skip
        "",
        "Δp: the difference of one class probability between the two versions, over every "
        "image and class; `max Δ top-1 p`: of the float32 top class's probability. The "
        "photos are out of distribution for a digits model (its answers on them mean "
        "nothing); they test that int8 and float32 pick the same class on natural images "
        "decoded by the same decoder, with activations outside the calibration range.",
        f"\nTotal {time.perf_counter() - started:.0f} s.",
    ]
    title = "int8 vs float32 export: agreement"
    path = write_results(results_path(args), title, info, "\n".join(body))
    print(path.read_text())
    run.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
