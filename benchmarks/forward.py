"""ViT-B/16 forward throughput on the CPU: keras-vit vs transformers' TFViT and keras-hub's ViT.

All models are built in this process with random weights (ours are copied
into the peers, so every model computes the same function; ``--skip-parity``
skips that copy and check), called the same way — one ``tf.function`` around
``model(x, training=False)``, with ``jit_compile`` off and on — at each batch
size, and timed round-robin (see ``harness.run_interleaved``). The tables give
images/s (wall clock) and images per CPU-second as median [q1–q3], and the
ratio ours / best peer.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.forward            # full run, about 5 minutes on 2 cores
    .venv/bin/python -m benchmarks.forward --quick    # about 1 minute: batch 1, 2-4 rounds

Writes ``benchmarks/results/forward.md`` (``--quick``: ``forward-quick.md``;
``--out NAME`` or ``--out PATH`` to choose).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from benchmarks.harness import (
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

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

PRESET = "vit-base-patch16-224"
# ViT-B/16 at 224: the keras-hub and transformers configurations of the same network.
IMAGE_SIZE, PATCH, LAYERS, HEADS, HIDDEN, MLP, CLASSES = 224, 16, 12, 12, 768, 3072, 1000
LAYER_NORM_EPS = 1e-12  # transformers' default; set on keras-hub too (its default is 1e-6)

OURS = "ours"
OURS_RAW = "ours, no preprocessing"
KERAS_HUB = "keras-hub"
TRANSFORMERS = "transformers"
PEERS = (KERAS_HUB, TRANSFORMERS)


def log(message: str) -> None:
    print(f"[forward {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build_models(with_raw: bool) -> dict:
    """Our ViT-B/16 and both peers, random weights; returns name -> (model, input layout)."""
    import keras
    import tensorflow as tf

    try:
        import keras_hub
        from transformers import TFViTForImageClassification, ViTConfig
    except ImportError as error:
        raise SystemExit(
            f"benchmarks.forward needs the peers' packages ({error}); install them with "
            "`.venv/bin/pip install -r benchmarks/requirements.txt`"
        ) from error

    from keras_vit import ViTClassifier

    ours = ViTClassifier.from_preset(PRESET, load_weights=False)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
        patch_size=PATCH,
        num_layers=LAYERS,
        num_heads=HEADS,
        hidden_dim=HIDDEN,
        mlp_dim=MLP,
        layer_norm_epsilon=LAYER_NORM_EPS,
    )
    hub = keras_hub.models.ViTImageClassifier(backbone, num_classes=CLASSES, preprocessor=None)
    hf = TFViTForImageClassification(
        ViTConfig(
            image_size=IMAGE_SIZE,
            patch_size=PATCH,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            hidden_size=HIDDEN,
            intermediate_size=MLP,
            num_labels=CLASSES,
            layer_norm_eps=LAYER_NORM_EPS,
        )
    )
    hf(pixel_values=tf.zeros((1, 3, IMAGE_SIZE, IMAGE_SIZE)), training=False)  # builds it
    models = {OURS: (ours, "raw NHWC"), KERAS_HUB: (hub, "normalised NHWC")}
    models[TRANSFORMERS] = (hf, "normalised NCHW")
    if with_raw:
        # Same layers and weights, entered after the preprocessing layer.
        raw = keras.Model(ours.get_layer("patch_embedding").input, ours.output, name="ours_raw")
        models[OURS_RAW] = (raw, "normalised NHWC")
    for name, (model, _) in models.items():
        log(f"{name}: {model.count_params():,} parameters")
    return models


def copy_weights_to_peers(ours, hub, hf) -> None:
    """Assigns our weights to keras-hub's and transformers' ViT (layouts differ for HF)."""
    import numpy as np

    arrays = {v.path: np.asarray(v) for v in ours.weights}

    def ours_w(path: str) -> np.ndarray:
        return arrays[path]

    # keras-hub: same Keras layer classes, so whole layers are copied.
    embedding = hub.backbone.get_layer("vit_patching_and_embedding")
    embedding.class_token.assign(ours_w("class_token/class_token"))
    embedding.patch_embedding.set_weights(
        ours.get_layer("patch_embedding").projection.get_weights()
    )
    # (1, 197, D) -> (197, D): keras-hub keeps positions in an Embedding table.
    embedding.position_embedding.set_weights([ours_w("position_embedding/position_embedding")[0]])
    encoder = hub.backbone.get_layer("vit_encoder")
    for i, block in enumerate(encoder.encoder_layers):
        mine = ours.get_layer(f"encoder_block_{i}")
        block.layer_norm_1.set_weights(mine.norm_1.get_weights())
        block.mha.set_weights(mine.attention.get_weights())
        block.layer_norm_2.set_weights(mine.norm_2.get_weights())
        block.mlp.dense_1.set_weights(mine.mlp_dense_1.get_weights())
        block.mlp.dense_2.set_weights(mine.mlp_dense_2.get_weights())
    encoder.layer_norm.set_weights(ours.get_layer("encoder_norm").get_weights())
    hub.output_dense.set_weights(ours.get_layer("head").get_weights())

    # transformers: q/k/v/out are (D, D) Dense kernels where ours are per-head einsum kernels.
    targets = {}
    for v in hf.weights:
        name = v.name.split("/", 1)[1].removesuffix(":0")
        targets[name] = v
    table = {
        "vit/embeddings/cls_token": "class_token/class_token",
        "vit/embeddings/position_embeddings": "position_embedding/position_embedding",
        "vit/embeddings/patch_embeddings/projection/kernel": "patch_embedding/projection/kernel",
        "vit/embeddings/patch_embeddings/projection/bias": "patch_embedding/projection/bias",
        "vit/layernorm/gamma": "encoder_norm/gamma",
        "vit/layernorm/beta": "encoder_norm/beta",
        "classifier/kernel": "head/kernel",
        "classifier/bias": "head/bias",
    }
    for i in range(LAYERS):
        hf_block, block = f"vit/encoder/layer_._{i}", f"encoder_block_{i}"
        for proj in ("query", "key", "value"):
            for kind in ("kernel", "bias"):
                table[f"{hf_block}/attention/attention/{proj}/{kind}"] = (
                    f"{block}/attention/{proj}/{kind}"
                )
        for kind in ("kernel", "bias"):
            table[f"{hf_block}/attention/output/dense/{kind}"] = (
                f"{block}/attention/attention_output/{kind}"
            )
            table[f"{hf_block}/intermediate/dense/{kind}"] = f"{block}/mlp_dense_1/{kind}"
            table[f"{hf_block}/output/dense/{kind}"] = f"{block}/mlp_dense_2/{kind}"
        for kind in ("gamma", "beta"):
            table[f"{hf_block}/layernorm_before/{kind}"] = f"{block}/norm_1/{kind}"
            table[f"{hf_block}/layernorm_after/{kind}"] = f"{block}/norm_2/{kind}"
    if set(table) != set(targets):
        unmapped, gone = sorted(set(targets) - set(table)), sorted(set(table) - set(targets))
        raise RuntimeError(f"transformers' TFViT weights changed: unmapped {unmapped}, gone {gone}")
    for name, source in table.items():
        # (D, heads, head_dim) -> (D, D), (heads, head_dim) -> (D,), (heads, head_dim, D) -> (D, D)
        targets[name].assign(ours_w(source).reshape(targets[name].shape))


def check_parity(models: dict, images) -> dict[str, float]:
    """Max |logits - ours| of every other model on ``images`` (raw NHWC in [0, 255])."""
    import numpy as np

    reference = np.asarray(models[OURS][0](images, training=False))
    diffs = {}
    for name, (model, layout) in models.items():
        if name == OURS:
            continue
        logits = np.asarray(call_model(model, layout)(to_layout(images, layout)))
        diffs[name] = float(np.abs(logits - reference).max())
    return diffs


def to_layout(images, layout: str):
    """Raw NHWC images in [0, 255] -> what a model takes (default ViT mean = std = 0.5)."""
    import numpy as np

    if layout == "raw NHWC":
        return images
    normalised = (images / np.float32(127.5) - np.float32(1.0)).astype("float32")
    if layout == "normalised NCHW":
        return np.ascontiguousarray(normalised.transpose(0, 3, 1, 2))
    return normalised


def call_model(model, layout: str):
    """The plain inference call of a model (its logits)."""
    if layout == "normalised NCHW":  # transformers: keyword input, output object
        return lambda x: model(pixel_values=x, training=False).logits
    return lambda x: model(x, training=False)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=10, help="at most this many samples per case")
    parser.add_argument(
        "--min-rounds", type=int, default=3, help="at least this many, budget or not"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=300.0,
        help="seconds since the start after which no timing round starts (min-rounds still run)",
    )
    parser.add_argument("--sample-seconds", type=float, default=0.6, help="target per sample")
    parser.add_argument("--xla", choices=("off", "on", "both"), default="both")
    parser.add_argument(
        "--threads", type=int, default=0, help="TF intra-op threads (0: TensorFlow's default)"
    )
    parser.add_argument("--skip-parity", action="store_true", help="do not copy weights and check")
    parser.add_argument(
        "--raw", action="store_true", help=f"also time '{OURS_RAW}' (ours minus preprocessing)"
    )
    add_output_options(
        parser,
        "forward",
        quick="batch 1 only, 2-4 rounds, 60 s budget, no parity",
        aliases=["--output"],
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.rounds, args.min_rounds = [1], 4, 2
        args.budget, args.skip_parity = 60.0, True
    if min(args.batch_sizes) < 1 or args.rounds < 1 or args.min_rounds < 1 or args.threads < 0:
        parser.error("batch sizes, rounds and threads must be positive")
    args.min_rounds = min(args.min_rounds, args.rounds)
    return args


def case_key(name: str, batch: int, xla: bool) -> str:
    return f"{name} | b{batch} | xla {'on' if xla else 'off'}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    xla_settings = {"off": [False], "on": [True], "both": [False, True]}[args.xla]
    started = time.perf_counter()
    import numpy as np
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    info = machine_info(["tensorflow", "keras", "tf-keras", "transformers", "keras-hub"])
    info["TF_ENABLE_ONEDNN_OPTS"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (TF default)")
    info["TF intra-op threads"] = str(args.threads or "TensorFlow's default (all cores)")
    models = build_models(args.raw)

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (max(args.batch_sizes), IMAGE_SIZE, IMAGE_SIZE, 3))
    images = images.astype("float32")
    parity = {}
    if not args.skip_parity:
        copy_weights_to_peers(models[OURS][0], models[KERAS_HUB][0], models[TRANSFORMERS][0])
        parity = check_parity(models, images[:2])
        log("parity, max |logits - ours|: " + ", ".join(f"{k} {v:.2e}" for k, v in parity.items()))

    # One tf.function per model and XLA setting; each batch size is its own trace.
    cases, calls, first_call = {}, {}, {}
    for xla in xla_settings:
        for name, (model, layout) in models.items():
            fn = tf.function(call_model(model, layout), jit_compile=xla)
            for batch in args.batch_sizes:
                x = tf.constant(to_layout(images[:batch], layout))
                key = case_key(name, batch, xla)

                def case(fn=fn, x=x):
                    return fn(x).numpy()  # .numpy() waits for the result

                start = time.perf_counter()
                case()
                first_call[key] = time.perf_counter() - start
                calls[key] = calibrate(case, args.sample_seconds)
                cases[key] = case
                log(f"{key}: first call {first_call[key]:.1f} s, {calls[key]} call(s)/sample")

    log(f"timing {len(cases)} cases round-robin, {args.min_rounds}-{args.rounds} rounds")
    timings = run_interleaved(
        cases,
        calls,
        args.rounds,
        args.min_rounds,
        budget_s=max(0.0, args.budget - (time.perf_counter() - started)),
        progress=log,
    )
    rounds = len(next(iter(timings.values())))
    batch_of = {
        case_key(n, b, x): b for n in models for b in args.batch_sizes for x in xla_settings
    }
    wall = {k: Stats.from_rates([batch_of[k] / t.wall for t in ts]) for k, ts in timings.items()}
    cpu = {k: Stats.from_rates([batch_of[k] / t.cpu for t in ts]) for k, ts in timings.items()}

    names = list(models)
    best = {
        k: Stats.from_rates([max(batch_of[k] / t.wall for t in ts)]) for k, ts in timings.items()
    }
    wall_table = comparison_table(wall, names, args.batch_sizes, xla_settings)
    cpu_table = comparison_table(cpu, names, args.batch_sizes, xla_settings)
    ratio_table = ratio_summary(
        {"wall, medians": wall, "wall, best samples": best, "CPU time, medians": cpu},
        names,
        args.batch_sizes,
        xla_settings,
    )
    first_rows = [
        [batch, "on" if xla else "off"]
        + [f"{first_call[case_key(n, batch, xla)]:.1f}" for n in names]
        for batch in args.batch_sizes
        for xla in xla_settings
    ]
    first_table = markdown_table(["batch", "XLA"] + [f"{n} (s)" for n in names], first_rows)
    elapsed = time.perf_counter() - started
    tables = {"wall": wall_table, "cpu": cpu_table, "ratios": ratio_table, "first": first_table}
    body = report(args, rounds, parity, tables, elapsed)
    print(f"images/s (wall clock), median [q1–q3] of {rounds} samples\n{wall_table}\n")
    print(f"ours / best peer, three ways\n{ratio_table}\n")
    print(f"images per CPU-second, median [q1–q3]\n{cpu_table}\n")
    print(f"first call (trace + compile + run), seconds\n{first_table}")
    title = "ViT-B/16 forward throughput on the CPU"
    if args.quick:
        title += " (--quick run)"
    path = write_results(results_path(args), title, info, body)
    log(f"wrote {path} in {elapsed:.0f} s")
    return 0


def comparison_table(stats: dict, names: list[str], batch_sizes, xla_settings) -> str:
    """One row per batch size and XLA setting: every model, the best peer, ours / best."""
    peers = [n for n in names if n in PEERS]
    rows = []
    for batch in batch_sizes:
        for xla in xla_settings:
            of = {n: stats[case_key(n, batch, xla)] for n in names}
            best = max(peers, key=lambda n: of[n].median)
            row = [batch, "on" if xla else "off"] + [of[n].format() for n in names]
            rows.append(row + [best, f"**{ratio(of[OURS], of[best]):.2f}**"])
    return markdown_table(["batch", "XLA", *names, "best peer", "ours / best"], rows)


def ratio_summary(measures: dict, names: list[str], batch_sizes, xla_settings) -> str:
    """Ours / best peer under several measures, one column each, to show how robust it is."""
    peers = [n for n in names if n in PEERS]
    rows = []
    for batch in batch_sizes:
        for xla in xla_settings:
            row = [batch, "on" if xla else "off"]
            for stats in measures.values():
                of = {n: stats[case_key(n, batch, xla)] for n in names}
                best = max(peers, key=lambda n: of[n].median)
                row.append(f"{ratio(of[OURS], of[best]):.2f} (vs {best})")
            rows.append(row)
    return markdown_table(["batch", "XLA", *measures], rows)


def report(args, rounds, parity, tables: dict[str, str], elapsed) -> str:
    batches = ", ".join(map(str, args.batch_sizes))
    command = " ".join(["python -m benchmarks.forward", *sys.argv[1:]])
    return f"""Command: `{command}`

## Throughput: images/s (wall clock), median [q1–q3] of {rounds} samples

{tables["wall"]}

## Ours / best peer, three ways

Wall-clock medians (what a user waits), the best wall-clock sample of each
case (least disturbed by other processes) and CPU-time medians (the work done;
waiting for a core that another process holds does not count).

{tables["ratios"]}

## Work: images per CPU-second of this process, median [q1–q3]

{tables["cpu"]}

## First call (trace + compile + one run), seconds

{tables["first"]}

## How this was measured

- Model: ViT-B/16 at 224×224 (`{PRESET}`, 86,567,656 parameters, 1000 classes), float32,
  random weights. {parity_note(parity)}
- Call path, the same for every model: `tf.function(lambda x: model(x, training=False),
  jit_compile=XLA)` on a constant input tensor, plus `.numpy()` of the logits: the fastest
  path a Keras user has. `model.predict_on_batch` runs the same call in a `tf.function`
  (XLA per `compile(jit_compile=...)`, off by default on the CPU) and measured the same
  within noise; `model.predict` (per-call dataset set-up) and eager `model(x)` are slower.
- Inputs: ours takes raw RGB in [0, 255] (float32, NHWC) and runs its in-graph preprocessing
  (cast, rescale, normalise). The inputs are already 224×224, so the resize is skipped (the
  same image out, bit for bit). The peers take images already normalised outside the timed
  call (mean = std = 0.5): keras-hub NHWC, transformers NCHW `pixel_values` (its model
  transposes them to NHWC because TF's CPU Conv2D is NHWC-only). `--raw` adds
  "{OURS_RAW}": our model entered after the preprocessing layer, same weights.
- keras-hub: `ViTImageClassifier(ViTBackbone(...B/16...), num_classes=1000,
  preprocessor=None)`; transformers: `TFViTForImageClassification(ViTConfig(...))` on
  tf-keras; both with LayerNorm epsilon 1e-12 like ours.
- Each sample is {args.sample_seconds} s worth of back-to-back calls (at least one call);
  cases are timed round-robin (the start rotates each round) after one warm-up call that
  also calibrates the calls per sample; new rounds stop {args.budget:.0f} s after the start
  (at least {args.min_rounds} rounds). Batch sizes {batches}; total wall time {elapsed:.0f} s;
  load average at the end {load_average()}.
- The machine is shared: other agents were running builds, tests and benchmarks on it at
  the same time. When the load average exceeds the core count, TensorFlow's thread pool
  waits for descheduled threads and wall-clock samples swing by 2x; the ratios come from
  interleaved samples, and the CPU-time ratio is the one to trust then.
"""


def load_average() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def parity_note(parity: dict[str, float]) -> str:
    if not parity:
        return "Parity was not checked in this run (`--quick` or `--skip-parity`)."
    diffs = ", ".join(f"{name} {diff:.1e}" for name, diff in parity.items())
    return (
        "Our weights were copied into the peers; max |logits − ours| on 2 random images: "
        f"{diffs} (logits of order 1), so all compute the same function."
    )


if __name__ == "__main__":
    sys.exit(main())
