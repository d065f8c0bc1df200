"""Serving throughput of our exported SavedModel vs the 2022 blog recipe, on the same images.

Both SavedModels hold the same randomly initialised ViT-B/16 (transformers'
``TFViTForImageClassification`` is built with a fixed seed and saved as an HF
directory; ours is loaded from that directory with ``keras_vit.load_pretrained``),
so they compute the same network; they differ in what surrounds it:

- ours: ``keras-vit``'s ``serving_default`` on raw JPEG bytes (as gRPC sends
  them): in-graph header checks, DCT-scaled JPEG decoding for large images, an
  antialiased resize, our Keras 3 ViT;
- the recipe (HF blog, 2022): ``tf.map_fn`` that base64-decodes URL-safe text,
  ``decode_jpeg`` at full size, resizes without antialiasing, normalises and
  transposes to NCHW, then TFViT; no XLA.

Measured: images/s at batch 1 and 8 for 224-px JPEGs and 12-megapixel photos
(skimage/sklearn photos upscaled to 4000x3000, JPEG quality 90), the
decode+resize cost per image, export time, size on disk, and fidelity on the
large photos: top-1 agreement with transformers' ``ViTImageProcessor``
pipeline (PIL decode, antialiased bilinear resize) and the mean pixel error of
the 224x224 model input against that pipeline's.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.export            # about 6 minutes on 2 busy cores
    .venv/bin/python -m benchmarks.export --quick    # 2 rounds, 8 fidelity images

Writes ``benchmarks/results/export.md`` (``export-quick.md`` with ``--quick``; ``--out``
to change it); the exports
go to ``benchmarks/.cache/export/``.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import shutil
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from benchmarks.harness import (  # noqa: E402
    ROOT,
    Stats,
    add_output_options,
    calibrate,
    machine_info,
    markdown_table,
    ratio,
    results_path,
    run_interleaved,
    write_results,
)

CACHE = str(ROOT / "benchmarks" / ".cache" / "export")
SIZE = 224
LARGE = (4000, 3000)  # width, height: 12 megapixels
SEED = 2022


def log(message: str) -> None:
    print(f"[export {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- Inputs ---------------------------------------------------------------------------


def photos() -> dict:
    """Eight real photos (skimage and scikit-learn sample images)."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    found = {
        name: getattr(data, name)()
        for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina")
    }
    samples = load_sample_images()
    for name, image in zip(samples.filenames, samples.images, strict=True):
        found[os.path.splitext(os.path.basename(name))[0]] = image
    return found


def encode_jpeg(pixels, size: tuple[int, int], quality: int = 90) -> bytes:
    """Resizes (bicubic) to ``size`` (width, height) with PIL and encodes as JPEG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").resize(size, Image.BICUBIC).save(
        buffer, "JPEG", quality=quality
    )
    return buffer.getvalue()


# --- The two SavedModels ---------------------------------------------------------------


def build_transformers_model():
    import tensorflow as tf
    from transformers import TFViTForImageClassification, ViTConfig

    tf.keras.utils.set_random_seed(SEED)
    model = TFViTForImageClassification(ViTConfig(num_labels=1000))  # ViT-B/16 at 224
    model(pixel_values=tf.zeros((1, 3, SIZE, SIZE)), training=False)
    return model


def recipe_preprocess(hf_model):
    """The blog recipe's preprocessing (rewritten from its description)."""
    import tensorflow as tf

    mean = tf.constant([0.5, 0.5, 0.5])
    std = tf.constant([0.5, 0.5, 0.5])

    def one(text):
        image = tf.io.decode_jpeg(tf.io.decode_base64(text), channels=3)
        image = tf.image.resize(image, (SIZE, SIZE))  # bilinear, no antialiasing
        image = (image / 255.0 - mean) / std
        return tf.transpose(image, (2, 0, 1))  # transformers' TF ViT takes NCHW

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def preprocess(texts):
        return tf.map_fn(one, texts, fn_output_signature=tf.float32)

    return preprocess


def export_recipe(hf_model, path: str) -> float:
    import tensorflow as tf

    started = time.perf_counter()
    preprocess = recipe_preprocess(hf_model)
    call = tf.function(hf_model.call).get_concrete_function(
        tf.TensorSpec([None, 3, SIZE, SIZE], tf.float32, name="pixel_values")
    )
    labels = tf.constant([hf_model.config.id2label[i] for i in range(hf_model.config.num_labels)])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="string_input")])
    def serving_fn(string_input):
        logits = call(pixel_values=preprocess(string_input)).logits
        probabilities = tf.nn.softmax(logits, axis=1)
        return {
            "label": tf.gather(labels, tf.argmax(logits, axis=1)),
            "confidence": tf.reduce_max(probabilities, axis=1),
        }

    shutil.rmtree(path, ignore_errors=True)
    tf.saved_model.save(hf_model, path, signatures={"serving_default": serving_fn})
    return time.perf_counter() - started


def export_ours(hf_dir: str, base: str) -> tuple[float, str]:
    from keras_vit.loading import load_pretrained
    from serving.export import export_saved_model

    started = time.perf_counter()
    model = load_pretrained(hf_dir)
    path = export_saved_model(model, base, 1, overwrite=True, with_probabilities=True)
    return time.perf_counter() - started, str(path)


def disk_size(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, files in os.walk(path)
        for name in files
    )


# --- Measurements ------------------------------------------------------------------------


def throughput(ours, recipe, inputs, rounds, budget_s) -> dict:
    """images/s (wall and CPU) per (input, batch, implementation), interleaved."""
    import tensorflow as tf

    cases, images_per_call = {}, {}
    for size_name, (jpegs, texts) in inputs.items():
        for batch in (1, 8):
            raw = tf.constant(jpegs[:batch])
            b64 = tf.constant(texts[:batch])
            cases[(size_name, batch, "ours")] = lambda raw=raw: ours(image_bytes=raw)[
                "label"
            ].numpy()
            cases[(size_name, batch, "recipe")] = lambda b64=b64: recipe(string_input=b64)[
                "label"
            ].numpy()
            images_per_call[(size_name, batch, "ours")] = batch
            images_per_call[(size_name, batch, "recipe")] = batch
    calls = {}
    for key, fn in cases.items():
        fn()  # warm-up (tracing, allocation)
        calls[key] = calibrate(fn, target_s=0.5, max_calls=4)
        log(f"warmed up {key}")
    timings = run_interleaved(
        {str(k): v for k, v in cases.items()},
        {str(k): v for k, v in calls.items()},
        rounds=rounds,
        min_rounds=2,
        budget_s=budget_s,
        progress=log,
    )
    results = {}
    for key in cases:
        samples = timings[str(key)]
        n = images_per_call[key]
        results[key] = (
            Stats.from_rates([n / t.wall for t in samples]),
            Stats.from_rates([n / t.cpu for t in samples]),
        )
    return results


def decode_costs(hf_model, inputs, rounds: int) -> dict:
    """ms per image of decode + resize (batch of 8), ours vs the recipe's map_fn."""
    import tensorflow as tf

    from keras_vit.decode import decode_images

    ours = tf.function(
        lambda x: decode_images(x, (SIZE, SIZE)),
        input_signature=[tf.TensorSpec([None], tf.string)],
        autograph=False,
    )
    recipe = recipe_preprocess(hf_model)
    cases = {}
    for size_name, (jpegs, texts) in inputs.items():
        raw, b64 = tf.constant(jpegs[:8]), tf.constant(texts[:8])
        cases[f"{size_name} ours"] = lambda raw=raw: ours(raw).numpy()
        cases[f"{size_name} recipe"] = lambda b64=b64: recipe(b64).numpy()
    calls = {}
    for name, fn in cases.items():
        fn()
        calls[name] = calibrate(fn, target_s=0.5, max_calls=20)
    timings = run_interleaved(cases, calls, rounds=rounds, min_rounds=2, budget_s=90)
    return {
        name: (
            1000 * sorted(t.wall for t in samples)[len(samples) // 2] / 8,
            1000 * sorted(t.cpu for t in samples)[len(samples) // 2] / 8,
        )
        for name, samples in timings.items()
    }


def fidelity(hf_model, ours, recipe, large_jpegs) -> dict:
    """Top-1 agreement with ViTImageProcessor + TFViT, and pixel error of the model input."""
    import numpy as np
    import tensorflow as tf
    from PIL import Image
    from transformers import ViTImageProcessor

    import keras_vit.decode as decode_module

    processor = ViTImageProcessor()  # 224, bilinear (PIL, antialiased), mean = std = 0.5
    labels = hf_model.config.id2label
    recipe_pixels = recipe_preprocess(hf_model)

    def ours_pixels(margin):
        # The exported decoder with another DCT margin (0: never scaled), for the trade-off table.
        def fn(x):
            saved = decode_module.DCT_SCALE_MARGIN
            decode_module.DCT_SCALE_MARGIN = margin if margin else 1e9
            try:
                return decode_module.decode_images(x, (SIZE, SIZE))
            finally:
                decode_module.DCT_SCALE_MARGIN = saved

        return tf.function(fn, input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)

    margins = {"ours (margin 2, default)": 2.0, "ours, margin 1": 1.0, "ours, full decode": 0}
    decoders = {name: ours_pixels(margin) for name, margin in margins.items()}
    agree = {"ours": 0, "recipe": 0}
    errors = {name: [] for name in [*margins, "recipe"]}
    logit_gaps = []
    for jpeg in large_jpegs:
        reference = processor(images=Image.open(io.BytesIO(jpeg)), return_tensors="np")
        reference = reference["pixel_values"]  # (1, 3, 224, 224), in [-1, 1]
        logits = hf_model(pixel_values=tf.constant(reference), training=False).logits.numpy()[0]
        top = np.sort(logits)[-2:]
        logit_gaps.append(top[1] - top[0])
        expected = labels[int(np.argmax(logits))]
        b64 = base64.urlsafe_b64encode(jpeg)
        agree["ours"] += (
            ours(image_bytes=tf.constant([jpeg]))["label"].numpy()[0].decode() == expected
        )
        agree["recipe"] += (
            recipe(string_input=tf.constant([b64]))["label"].numpy()[0].decode() == expected
        )
        nhwc = reference[0].transpose(1, 2, 0)
        for name, decoder in decoders.items():
            pixels = decoder(tf.constant([jpeg])).numpy()[0] / 127.5 - 1.0
            errors[name].append(np.abs(pixels - nhwc).mean())
        recipe_nhwc = recipe_pixels(tf.constant([b64])).numpy()[0].transpose(1, 2, 0)
        errors["recipe"].append(np.abs(recipe_nhwc - nhwc).mean())
    return {
        "n": len(large_jpegs),
        "agree": agree,
        "pixel_error": {name: float(np.mean(values)) for name, values in errors.items()},
        "median_logit_gap": float(np.median(logit_gaps)),
    }


def sanity_check(ours, recipe, jpeg: bytes) -> float:
    """Both SavedModels hold the same weights: same top-1, confidences within 1e-3."""
    import tensorflow as tf

    a = ours(image_bytes=tf.constant([jpeg]))
    b = recipe(string_input=tf.constant([base64.urlsafe_b64encode(jpeg)]))
    if a["label"].numpy()[0] != b["label"].numpy()[0]:
        raise SystemExit("the two SavedModels disagree on a 224-px image: not the same weights?")
    return abs(float(a["score"].numpy()[0]) - float(b["confidence"].numpy()[0]))


# --- Main --------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds (default 6)")
    parser.add_argument("--budget", type=float, default=200, help="seconds for throughput")
    add_output_options(parser, "export", quick="2 rounds, 8 fidelity images", aliases=["--output"])
    args = parser.parse_args(argv)
    rounds = 2 if args.quick else args.rounds
    started = time.perf_counter()
    info = machine_info(("tensorflow", "keras", "tf-keras", "transformers", "pillow"))

    import tensorflow as tf

    os.makedirs(CACHE, exist_ok=True)
    log("building transformers' TFViT (ViT-B/16, random weights, fixed seed)")
    hf_model = build_transformers_model()
    hf_dir = os.path.join(CACHE, "hf")
    hf_model.save_pretrained(hf_dir)  # config.json + tf_model.h5

    log("exporting ours")
    ours_seconds, ours_path = export_ours(hf_dir, os.path.join(CACHE, "ours"))
    log(f"exported ours in {ours_seconds:.1f} s; exporting the recipe")
    recipe_path = os.path.join(CACHE, "recipe", "1")
    recipe_seconds = export_recipe(hf_model, recipe_path)
    sizes = {"ours": disk_size(ours_path), "recipe": disk_size(recipe_path)}
    ours = tf.saved_model.load(ours_path).signatures["serving_default"]
    recipe = tf.saved_model.load(recipe_path).signatures["serving_default"]

    pictures = photos()
    small = [encode_jpeg(p, (SIZE, SIZE)) for p in pictures.values()]
    large = [encode_jpeg(p, LARGE) for p in pictures.values()]
    inputs = {
        "224-px JPEG": (small, [base64.urlsafe_b64encode(j) for j in small]),
        "12-MP JPEG": (large, [base64.urlsafe_b64encode(j) for j in large]),
    }
    gap = sanity_check(ours, recipe, small[0])
    log(f"same weights: same top-1, |confidence difference| {gap:.1e}")

    log("decode + resize cost")
    costs = decode_costs(hf_model, inputs, rounds=max(rounds, 3))
    log("throughput")
    rates = throughput(ours, recipe, inputs, rounds, args.budget)
    log("fidelity on large photos")
    flipped = [
        encode_jpeg(p[:, ::-1], LARGE)
        for p in list(pictures.values())[: 4 if args.quick else len(pictures)]
    ]
    fidelity_images = (large[:4] if args.quick else large) + flipped
    faithful = fidelity(hf_model, ours, recipe, fidelity_images)

    body = report(
        rates, costs, faithful, sizes, ours_seconds, recipe_seconds, gap, large, small, rounds
    )
    body += f"\n- Total wall time {time.perf_counter() - started:.0f} s.\n"
    title = "Exported SavedModel vs the 2022 blog recipe (ViT-B/16, CPU)"
    path = write_results(results_path(args), title, info, body)
    log(f"wrote {path}")
    return 0


def report(rates, costs, faithful, sizes, ours_s, recipe_s, gap, large, small, rounds) -> str:
    rows = []
    for size_name in ("224-px JPEG", "12-MP JPEG"):
        for batch in (1, 8):
            ours_wall, ours_cpu = rates[(size_name, batch, "ours")]
            peer_wall, peer_cpu = rates[(size_name, batch, "recipe")]
            rows.append(
                [
                    size_name,
                    batch,
                    ours_wall.format(),
                    peer_wall.format(),
                    f"{ratio(ours_wall, peer_wall):.2f}",
                    f"{ratio(ours_cpu, peer_cpu):.2f}",
                ]
            )
    table = markdown_table(
        ["input", "batch", "ours img/s", "recipe img/s", "ours/recipe (wall)", "ours/recipe (CPU)"],
        rows,
    )
    cost_rows = [
        [
            size_name,
            f"{costs[f'{size_name} ours'][0]:.1f} ({costs[f'{size_name} ours'][1]:.1f})",
            f"{costs[f'{size_name} recipe'][0]:.1f} ({costs[f'{size_name} recipe'][1]:.1f})",
        ]
        for size_name in ("224-px JPEG", "12-MP JPEG")
    ]
    cost_table = markdown_table(
        ["input", "ours ms/img wall (CPU)", "recipe ms/img wall (CPU)"], cost_rows
    )
    goal_lines = []
    for size_name, batch, goal in (
        ("224-px JPEG", 1, 1.0),
        ("224-px JPEG", 8, 1.0),
        ("12-MP JPEG", 8, 1.15),
    ):
        (ours_wall, ours_cpu), (peer_wall, peer_cpu) = (
            rates[(size_name, batch, "ours")],
            rates[(size_name, batch, "recipe")],
        )
        wall, cpu = ratio(ours_wall, peer_wall), ratio(ours_cpu, peer_cpu)
        verdict = (
            "met"
            if min(wall, cpu) >= goal
            else "met on one measure"
            if max(wall, cpu) >= goal
            else "not met"
        )
        goal_lines.append(
            f"- {size_name}, batch {batch}: goal {goal:.2f}×, "
            f"wall {wall:.2f}×, CPU {cpu:.2f}×: {verdict}"
        )
    goals = "\n".join(goal_lines)
    # How much faster decoding alone can make a 12-MP batch: the recipe's CPU time
    # per image minus what our decoder saves.
    recipe_total = 1000 / rates[("12-MP JPEG", 8, "recipe")][1].median  # CPU ms per image
    recipe_decode = costs["12-MP JPEG recipe"][1]
    saving = recipe_decode - costs["12-MP JPEG ours"][1]
    bound = recipe_total / (recipe_total - saving)
    needed = 1 - 1 / 1.15
    analysis = (
        f"Decoding bounds this comparison: for a 12-MP photo at batch 8 the recipe spends "
        f"{recipe_decode:.0f} ms of CPU decoding and resizing out of {recipe_total:.0f} ms per "
        f"image ({recipe_decode / recipe_total:.0%}); our decoder saves {saving:.0f} ms of it, "
        f"so on this CPU it can speed the whole request up by at most {bound:.2f}× (the rest "
        f"is the same ViT-B/16 forward pass in both). A 1.15× gain needs the saving to be "
        f"{needed:.0%} of the recipe's time per image: that holds where the model is cheap "
        f"next to decoding (a GPU server, a smaller ViT) or on a CPU much faster at matrix "
        f"products than at Huffman decoding, not on these 2 cores."
    )
    n = faithful["n"]
    errors = faithful["pixel_error"]
    fidelity_rows = [
        [name, f"{errors[name]:.4f}"]
        for name in ("ours (margin 2, default)", "ours, margin 1", "ours, full decode", "recipe")
    ]
    mb = 1024 * 1024
    return (
        f"""## Throughput: serving_default, images/s (median [q1–q3] of up to {rounds} samples)

{table}

Goals: ≥ 1.0× at 224 px (batch 1 and 8), ≥ 1.15× for 12-MP photos at batch 8.

{goals}

The wall-clock ratio is what a client sees; the CPU ratio (process CPU seconds per
image) is steadier on this shared machine, where other agents' jobs take cores.

{analysis}

## Decode + resize to 224×224, ms per image (batch of 8), median

{cost_table}

Ours: header checks, `decode_jpeg` at 1/4 DCT scale for the 12-MP photos (1000×750,
the smallest scale keeping twice the model resolution), antialiased resize; the
224-px images need no resize. The recipe: base64 decode, full-size `decode_jpeg`,
bilinear resize without antialiasing, normalisation, NCHW transpose.

## Export

| | ours | recipe |
|---|---|---|
| export time (s) | {ours_s:.1f} | {recipe_s:.1f} |
| size on disk (MB) | {sizes["ours"] / mb:.1f} | {sizes["recipe"] / mb:.1f} |

Ours includes loading the HF checkpoint, four signatures and the warm-up file;
the recipe is one `tf.saved_model.save` of the in-memory model.

## Fidelity on 12-MP photos ({n} images: {n // 2} photos at 4000×3000 and their mirror images)

| top-1 agreement with ViTImageProcessor + TFViT | ours | recipe |
|---|---|---|
| same top-1 | {faithful["agree"]["ours"]}/{n} | {faithful["agree"]["recipe"]}/{n} |

| model input (224×224, normalised to [-1, 1]) | mean abs. error vs ViTImageProcessor |
|---|---|
"""
        + "\n".join(f"| {a} | {b} |" for a, b in fidelity_rows)
        + f"""

The weights are random (no checkpoint can be downloaded here): one fixed
random ViT-B/16 shared by all three pipelines. Its logits are nearly flat (median
gap between the two highest logits: {faithful["median_logit_gap"]:.3f}), so top-1
agreement is a harsh test that small pixel differences can fail; the pixel error
of the model input measures fidelity independently of the weights. "margin 1" and
"full decode" are our decoder with the DCT scale chosen to keep only the model
resolution, or never scaled: the default (keep 2×) is the speed/fidelity choice.

## How this was measured

- Same network in both SavedModels: transformers'
  `TFViTForImageClassification(ViTConfig(num_labels=1000))` with seed {SEED}, saved with
  `save_pretrained` and loaded into ours with `keras_vit.load_pretrained`; on a 224-px
  JPEG both give the same top-1 and confidences within {gap:.1e}.
- Calls: `tf.saved_model.load(dir).signatures["serving_default"]` in this process, the
  graph TF Serving runs. Ours gets raw JPEG bytes (`image_bytes`, as gRPC sends them); the
  recipe gets URL-safe base64 text (`string_input`), as its clients send.
- Inputs: 8 photos (skimage: astronaut, chelsea, coffee, rocket, hubble_deep_field, retina;
  scikit-learn: china, flower) resized with PIL bicubic to 224×224 (mean
  {sum(map(len, small)) / len(small) / 1024:.0f} KB) or 4000×3000 (mean
  {sum(map(len, large)) / len(large) / mb:.1f} MB), JPEG quality 90. Batch 8 uses all 8.
- Timing: one warm-up call per case, then samples of about 0.5 s (at least one call),
  cases round-robin with a rotating start (`benchmarks/harness.py`), medians.
- Default TF thread pools, no XLA, CPU only. The machine has 2 cores shared with other
  agents' builds and tests: absolute numbers are noisy, the ratios come from interleaved
  samples of the same run.
"""
    )


if __name__ == "__main__":
    sys.exit(main())
