"""ViT-B/16 training-step throughput on the CPU: keras-vit vs transformers' TFViT, both under Keras.

Both models are ViT-B/16 at 224 px with a 1000-class head and random weights,
compiled the same way — AdamW (lr 1e-4, weight decay 0.01, global clip norm
1), cross-entropy on logits — and stepped with ``train_on_batch``, the
compiled train function that ``fit`` calls each step: ours with Keras 3 and
the optimiser of ``keras_vit.training.optim``, transformers'
``TFViTForImageClassification`` with tf-keras. Ours takes uint8 NHWC images
and does its preprocessing in the graph; TFViT takes normalised NCHW floats.
Batch 8; after two warm-up steps per model, the steps are timed round-robin
(``harness.run_interleaved``) within a time budget. The table gives images/s
as median [q1–q3] over steps, by wall clock and by process CPU time, and the
ratio ours / transformers.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.train              # about 5 minutes on 2 cores
    .venv/bin/python -m benchmarks.train --rounds 2   # a quicker look

Writes ``benchmarks/results/train.md`` (``--out`` to change it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from benchmarks.harness import (
    Stats,
    add_output_options,
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

BATCH = 8
IMAGE_SIZE, CLASSES = 224, 1000
LEARNING_RATE, WEIGHT_DECAY, CLIPNORM = 1e-4, 0.01, 1.0
OURS, OURS_XLA, TRANSFORMERS = "keras-vit (Keras 3)", "keras-vit, jit_compile", "transformers TFViT"


def log(message: str) -> None:
    print(f"[train {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def our_step(jit_compile: bool):
    """A train_on_batch closure for our ViT-B/16 (uint8 NHWC images, in-graph preprocessing)."""
    import numpy as np

    from keras_vit import ViTClassifier
    from keras_vit.training.optim import build_loss, build_optimizer

    model = ViTClassifier.from_preset(
        "vit-base-patch16-224", load_weights=False, num_classes=CLASSES
    )
    model.compile(
        optimizer=build_optimizer("adamw", LEARNING_RATE, WEIGHT_DECAY, global_clipnorm=CLIPNORM),
        loss=build_loss(0.0),
        jit_compile=jit_compile,
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (BATCH, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    labels = np.eye(CLASSES, dtype="float32")[rng.integers(0, CLASSES, BATCH)]
    return lambda: model.train_on_batch(images, labels)


def transformers_step():
    """A train_on_batch closure for transformers' TFViTForImageClassification (tf-keras)."""
    import numpy as np
    import tf_keras
    from transformers import TFViTForImageClassification, ViTConfig

    config = ViTConfig(image_size=IMAGE_SIZE, patch_size=16, num_labels=CLASSES)
    model = TFViTForImageClassification(config)
    model.compile(
        optimizer=tf_keras.optimizers.AdamW(
            learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY, global_clipnorm=CLIPNORM
        ),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    pixels = rng.uniform(-1, 1, (BATCH, 3, IMAGE_SIZE, IMAGE_SIZE)).astype("float32")
    labels = rng.integers(0, CLASSES, BATCH)
    return lambda: model.train_on_batch(pixels, labels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed steps per model (default 5)")
    parser.add_argument(
        "--budget", type=float, default=200.0, help="seconds of timed rounds at most (default 200)"
    )
    parser.add_argument("--with-xla", action="store_true", help="also time ours with jit_compile")
    add_output_options(parser, "train", aliases=["--output-name"])
    args = parser.parse_args()

    info = machine_info(["tensorflow", "keras", "tf-keras", "transformers"])
    cases = {}
    log("building our ViT-B/16")
    cases[OURS] = our_step(jit_compile=False)
    if args.with_xla:
        log("building our ViT-B/16 with jit_compile")
        cases[OURS_XLA] = our_step(jit_compile=True)
    log("building transformers' TFViTForImageClassification")
    cases[TRANSFORMERS] = transformers_step()
    for name, step in cases.items():
        started = time.perf_counter()
        for _ in range(2):  # trace/compile, then one more to settle allocations
            step()
        log(f"{name}: warm-up {time.perf_counter() - started:.0f} s")

    timings = run_interleaved(
        cases,
        {name: 1 for name in cases},
        rounds=args.rounds,
        min_rounds=2,
        budget_s=args.budget,
        progress=log,
    )
    wall = {n: Stats.from_rates([BATCH / t.wall for t in ts]) for n, ts in timings.items()}
    cpu = {n: Stats.from_rates([BATCH / t.cpu for t in ts]) for n, ts in timings.items()}
    rows = []
    for name in cases:
        rows.append(
            [
                name,
                wall[name].format(2),
                f"{ratio(wall[name], wall[TRANSFORMERS]):.2f}x",
                cpu[name].format(2),
                f"{ratio(cpu[name], cpu[TRANSFORMERS]):.2f}x",
                wall[name].n,
            ]
        )
    table = markdown_table(
        [
            "model",
            "images/s (wall)",
            "ratio vs transformers (wall)",
            "images/s per CPU-second",
            "ratio (CPU)",
            "steps",
        ],
        rows,
    )
    body = (
        f"ViT-B/16, {IMAGE_SIZE} px, batch {BATCH}, AdamW with global clip norm, one "
        "`train_on_batch` per timed sample (the step `fit` runs), medians [q1–q3] over "
        "steps timed round-robin after two warm-up steps. CPU rate = images per second of "
        "process CPU time (all threads), steadier than wall time on a shared machine.\n\n"
        f"{table}\n\n"
        f"Goal: ours / transformers >= 1.0x. The machine is shared with other work; "
        f"load average at start: {info.get('load average (1/5/15 min) at start', '?')}."
    )
    path = write_results(results_path(args), "ViT-B/16 training step on the CPU", info, body)
    print(table)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
