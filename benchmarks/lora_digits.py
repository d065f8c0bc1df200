"""LoRA vs full fine-tuning (and a head-only probe) on a shifted digits task, same start.

A LoRA comparison needs a pretrained start, so this first trains the digits
recipe's ViT from scratch on digits 0-4 only ("pretraining"), then fine-tunes
that model on digits 5-9 (new labels, fresh zero head) three ways, from the
same weights and for the same epochs:

- full fine-tuning (every weight);
- LoRA (``lora_rank``, Keras's adapters on the attention query/value
  projections, plus the head; everything else frozen);
- head only (linear probe), as the floor.

Each is evaluated on the held-out digits 5-9 (the trainer's test split).

Usage: ``.venv/bin/python -m benchmarks.lora_digits [--pretrain-epochs 8 --epochs 4]``.
Writes ``benchmarks/results/lora-digits.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import (
    add_output_options,
    machine_info,
    markdown_table,
    results_path,
    write_results,
)

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _subset(source: Path, target: Path, digits: str) -> Path:
    """An image folder with only the given digit sub-folders (symlinks)."""
    target.mkdir(parents=True)
    for digit in digits:
        (target / digit).symlink_to(source / digit)
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-epochs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3, help="full fine-tuning and head")
    parser.add_argument("--lora-lr", type=float, default=5e-3, help="LoRA (PEFT guide: 5e-3)")
    add_output_options(parser, "lora-digits", aliases=["--output"])
    args = parser.parse_args(argv)

    from keras_vit.training import train
    from keras_vit.training.digits import write_digits
    from keras_vit.training.recipes import get_recipe

    recipe = get_recipe("digits")
    base = dict(recipe["training"])
    base.update(verbose=2, tensorboard=False)
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = write_digits(tmp / "digits")
        first = {
            s: _subset(getattr(folder, f"{s}_dir"), tmp / f"{s}04", "01234")
            for s in ("train", "test")
        }
        second = {
            s: _subset(getattr(folder, f"{s}_dir"), tmp / f"{s}59", "56789")
            for s in ("train", "test")
        }
        t0 = time.perf_counter()
        pre = train(
            None,
            first["train"],
            tmp / "pretrained",
            model_config=recipe["model_config"],
            test_data=first["test"],
            **{**base, "epochs": args.pretrain_epochs},
        )
        pre_accuracy = pre.metrics["test"]["accuracy"]
        pre_seconds = time.perf_counter() - t0
        runs = {
            "full fine-tuning": dict(learning_rate=args.lr),
            f"LoRA rank {args.rank} (query, value) + head": dict(
                learning_rate=args.lora_lr, lora_rank=args.rank
            ),
            "head only (linear probe)": dict(learning_rate=args.lr, freeze_backbone=True),
        }
        for name, options in runs.items():
            t0 = time.perf_counter()
            result = train(
                tmp / "pretrained",
                second["train"],
                tmp / name.split()[0],
                test_data=second["test"],
                **{**base, "epochs": args.epochs, **options},
            )
            trainable = _trainable(options, result.model)
            rows.append(
                [
                    name,
                    f"{trainable:,}",
                    options["learning_rate"],
                    f"{result.metrics['test']['accuracy']:.4f}",
                    f"{time.perf_counter() - t0:.0f}",
                ]
            )
            print(rows[-1], flush=True)
    table = markdown_table(
        ["fine-tuning", "trainable parameters", "peak lr", "held-out accuracy 5-9", "wall s"],
        rows,
    )
    body = f"""Command: `python -m benchmarks.lora_digits {" ".join(sys.argv[1:])}`

Start: the `digits` recipe's ViT ({recipe["model_config"]}) trained from scratch
on digits 0-4 for {args.pretrain_epochs} epochs: {pre_accuracy:.4f} held-out accuracy
on 0-4 ({pre_seconds:.0f} s). Then each row fine-tunes that model on digits 5-9
(new zero-initialised head) for {args.epochs} epochs with the recipe's other settings
(AdamW, warm-up + cosine, label smoothing 0.1, batch 32), and reports the accuracy on
the held-out digits 5-9 (359 x 1/2 images, never trained on).

{table}

One seed, one run each; on a machine shared with other jobs (wall times are not
comparable between rows). Total {time.perf_counter() - started:.0f} s.
"""
    print(table)
    title = "LoRA vs full fine-tuning on digits"
    write_results(results_path(args), title, machine_info(["keras"]), body)
    return 0


def _trainable(options: dict, model) -> int:
    """Trainable parameters of the run (the saved model is merged and all-trainable)."""
    config = model.get_config()
    config.pop("name", None)
    probe = type(model).from_config(config)
    if "lora_rank" in options:
        probe.enable_lora(options["lora_rank"])
    elif options.get("freeze_backbone"):
        from keras_vit.training.freeze import freeze_backbone

        freeze_backbone(probe)
    return sum(int(w.numpy().size) for w in probe.trainable_weights)


if __name__ == "__main__":
    sys.exit(main())
