"""``keras-vit train``: fine-tune a checkpoint, or train from scratch, into a model directory."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace

EXAMPLES = """\
examples:
  python -m keras_vit.training.digits --output data/digits
  keras-vit train --recipe digits --data data/digits/train --test-data data/digits/test \\
      --output runs/digits
  keras-vit train --model google/vit-base-patch16-224-in21k --data flowers/ \\
      --output runs/flowers --epochs 5 --batch-size 32 --lr 3e-5 --weight-decay 0.01
  keras-vit train --model runs/flowers --data flowers/ --output runs/probe \\
      --freeze-backbone --unfreeze-at-epoch 2

A stopped run (Ctrl-C, SIGTERM, even SIGKILL) resumes from its last finished
epoch when the same command is run again (the backup lives in OUTPUT/backup
unless --backup-dir says otherwise); --no-resume deletes it and starts over.
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a ViT on an image folder, TFDS or HF dataset (Keras model.fit)",
        description="Fine-tune a checkpoint, or train a preset from scratch, with Keras "
        "model.fit, and write a model directory (model.keras, labels.txt, "
        "preprocessor_config.json, history.csv) that keras-vit export takes as is.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        required=True,
        help="image folder (one sub-folder per class), tfds:NAME[:SPLIT] or hf:ID[:SPLIT]",
    )
    data.add_argument("--validation-data", help="separate validation data (image folder)")
    data.add_argument(
        "--validation-split",
        type=float,
        help="share of --data held out for validation, stratified and seeded (default 0.1; "
        "0 = no validation)",
    )
    data.add_argument(
        "--test-data",
        help="held-out data evaluated once at the end with the best weights (image folder, "
        "or a split name for tfds:/hf: data)",
    )
    data.add_argument(
        "--cache",
        default=None,
        help="cache decoded images: auto (in memory when the files total <= 256 MiB), "
        "memory, none, or a file prefix for a disk cache (default auto)",
    )
    data.add_argument(
        "--on-corrupt",
        choices=("skip", "error"),
        help="image files that do not decode: skip them with a warning (default) or fail",
    )
    data.add_argument(
        "--no-verify-images",
        action="store_true",
        help="do not decode every file once before training (faster start; a corrupt file "
        "then stops training with an error)",
    )

    model = parser.add_argument_group("model")
    source = model.add_mutually_exclusive_group()
    source.add_argument(
        "--model",
        help="checkpoint to fine-tune: HF directory or hub id, .npz, .keras, or a keras-vit "
        "model directory",
    )
    source.add_argument(
        "--preset", help="train this architecture from scratch (e.g. vit-tiny-patch16-224, B/16)"
    )
    model.add_argument(
        "--model-config",
        help="ViTClassifier arguments as JSON or a JSON file, over the preset or recipe "
        '(e.g. \'{"hidden_dim": 64, "num_layers": 4}\')',
    )
    model.add_argument(
        "--recipe",
        help="named model + training settings (digits); explicit flags override it",
    )
    model.add_argument(
        "--image-size", type=int, help="train at this resolution (position embeddings interpolated)"
    )

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=int, help="default 10")
    optim.add_argument("--batch-size", type=int, help="global batch size (default 32)")
    optim.add_argument("--optimizer", choices=("adamw", "sgd"), help="default adamw")
    optim.add_argument(
        "--lr", "--learning-rate", dest="learning_rate", type=float, help="peak (default 1e-3)"
    )
    optim.add_argument(
        "--end-lr",
        "--end-learning-rate",
        dest="end_learning_rate",
        type=float,
        help="at the end of the schedule (default 0)",
    )
    optim.add_argument("--weight-decay", type=float, help="decoupled; default 0.05")
    optim.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    optim.add_argument("--warmup-steps", type=int, help="default 5%% of all steps")
    optim.add_argument(
        "--clipnorm", dest="global_clipnorm", type=float, help="global norm (default 1; 0 = off)"
    )
    optim.add_argument("--label-smoothing", type=float, help="default 0.1")
    optim.add_argument(
        "--crop-scale",
        nargs=2,
        type=float,
        metavar=("MIN", "MAX"),
        help="random resized crop area range (default 0.08 1)",
    )
    optim.add_argument(
        "--no-crop", action="store_true", help="resize the whole image instead of cropping"
    )
    optim.add_argument("--no-flip", action="store_true", help="no random horizontal flip")
    optim.add_argument(
        "--randaugment", type=int, metavar="N", help="N RandAugment ops per image (default 0)"
    )
    optim.add_argument("--mixup", type=float, metavar="ALPHA", help="mixup alpha (default 0)")
    optim.add_argument(
        "--freeze-backbone", action="store_true", help="train the head only (linear probe)"
    )
    optim.add_argument(
        "--lora-rank",
        type=int,
        metavar="RANK",
        help="parameter-efficient fine-tuning: train LoRA adapters of this rank on the "
        "attention query/value projections, and the head; the rest stays frozen and the "
        "saved model has the adapters merged in",
    )
    optim.add_argument(
        "--unfreeze-at-epoch",
        type=int,
        help="with --freeze-backbone: train everything from this epoch on (1-based)",
    )

    run_group = parser.add_argument_group("run")
    run_group.add_argument("--output", required=True, help="model directory to write")
    run_group.add_argument(
        "--mixed-precision",
        choices=("float32", "mixed_float16", "mixed_bfloat16"),
        help="compute dtype policy (variables stay float32)",
    )
    run_group.add_argument("--jit-compile", action="store_true", help="compile steps with XLA")
    run_group.add_argument(
        "--strategy",
        choices=("default", "auto", "mirrored", "multi_worker"),
        help="tf.distribute strategy (multi_worker reads TF_CONFIG)",
    )
    run_group.add_argument(
        "--devices", help="comma-separated devices for --strategy mirrored (e.g. /gpu:0,/gpu:1)"
    )
    run_group.add_argument(
        "--backup-dir", help="BackupAndRestore directory (default OUTPUT/backup)"
    )
    run_group.add_argument(
        "--no-resume",
        action="store_true",
        help="delete the backup of an earlier run of this command and start over",
    )
    run_group.add_argument(
        "--early-stopping", type=int, metavar="PATIENCE", help="stop after PATIENCE bad epochs"
    )
    run_group.add_argument(
        "--monitor",
        help="metric that picks the epoch to keep and drives early stopping (default "
        "val_accuracy); 'last' keeps the last epoch",
    )
    run_group.add_argument("--no-tensorboard", action="store_true", help="no OUTPUT/logs")
    run_group.add_argument("--seed", type=int, help="seed of everything random (default 0)")
    run_group.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        nargs="?",
        const=1,
        metavar="{0,1,2}",
        help="Keras' verbosity: 0 silent, 1 progress bar (on a terminal; a line per epoch "
        "elsewhere; --verbose alone), 2 a line per epoch",
    )
    parser.set_defaults(func=run)


def options_from_args(args: argparse.Namespace) -> tuple[dict, dict | None]:
    """The ``train()`` options and the model configuration the flags (and recipe) ask for."""
    from keras_vit.training.pipeline import AugmentConfig
    from keras_vit.training.recipes import get_recipe

    options: dict = {}
    model_config = None
    if args.recipe:
        recipe = get_recipe(args.recipe)
        options.update(recipe["training"])
        if not (args.model or args.preset):
            model_config = recipe["model_config"]
    if args.model_config:
        model_config = {**(model_config or {}), **_json_argument(args.model_config)}
    for name in (
        "epochs",
        "batch_size",
        "optimizer",
        "learning_rate",
        "end_learning_rate",
        "weight_decay",
        "momentum",
        "warmup_steps",
        "global_clipnorm",
        "label_smoothing",
        "validation_split",
        "mixed_precision",
        "strategy",
        "backup_dir",
        "monitor",
        "seed",
        "verbose",
        "on_corrupt",
        "image_size",
        "lora_rank",
    ):
        value = getattr(args, name)
        if value is not None:
            options[name] = value
    if options.get("monitor") == "last":
        options["monitor"] = None
    if args.jit_compile:
        options["jit_compile"] = True
    if args.devices:
        options["devices"] = tuple(d.strip() for d in args.devices.split(",") if d.strip())
    if args.early_stopping is not None:
        options["early_stopping_patience"] = args.early_stopping
    if args.no_tensorboard:
        options["tensorboard"] = False
    if args.no_verify_images:
        options["verify_images"] = False
    if args.cache is not None:
        options["cache"] = {"auto": "auto", "memory": True, "none": False}.get(
            args.cache, args.cache
        )
    if args.freeze_backbone:
        options["freeze_backbone"] = True
    if args.no_resume:
        options["resume"] = False
    if args.lora_rank is not None and args.lora_rank < 1:
        raise ValueError("--lora-rank must be at least 1")
    if args.unfreeze_at_epoch is not None:
        if args.unfreeze_at_epoch < 1:
            raise ValueError("--unfreeze-at-epoch counts from 1")
        options["unfreeze_at_epoch"] = args.unfreeze_at_epoch - 1

    augment = options.get("augment") or AugmentConfig()
    changes = {}
    if args.crop_scale:
        changes["crop_scale"] = tuple(args.crop_scale)
    if args.no_crop:
        changes["random_resized_crop"] = False
    if args.no_flip:
        changes["horizontal_flip"] = False
    if args.randaugment is not None:
        changes["randaugment_ops"] = args.randaugment
    if args.mixup is not None:
        changes["mixup_alpha"] = args.mixup
    if changes or "augment" in options:
        options["augment"] = replace(augment, **changes)
    return options, model_config


def run(args: argparse.Namespace) -> int:
    try:
        options, model_config = options_from_args(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not (args.model or args.preset or model_config):
        print(
            "error: say what to train: --model SOURCE (fine-tune), --preset NAME, "
            "--model-config JSON or --recipe NAME (from scratch)",
            file=sys.stderr,
        )
        return 2

    from keras_vit.training.data import DataError
    from keras_vit.training.interrupt import Stopped, stop_on_signals, stopped_message
    from keras_vit.training.trainer import TrainingConfig, train

    try:
        with stop_on_signals():
            result = train(
                args.model,
                args.data,
                args.output,
                preset=args.preset,
                model_config=model_config,
                validation_data=args.validation_data,
                test_data=args.test_data,
                **options,
            )
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM (Stopped)
        backup_dir = args.backup_dir or os.path.join(args.output, "backup")
        epochs = options.get("epochs", TrainingConfig.epochs)
        print(stopped_message(stop, backup_dir, epochs), file=sys.stderr, flush=True)
        return stop.exit_status if isinstance(stop, Stopped) else 130
    except (DataError, ValueError, TypeError, OSError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    metrics = result.metrics
    print(f"model directory: {os.path.abspath(result.output_dir)}")
    if metrics.get("best_epoch"):
        if metrics["monitor"] is None:
            print(f"kept epoch: {metrics['best_epoch']} (the last)")
        else:
            best = f"{metrics['monitor']} {metrics['best_value']:.4f}"
            print(f"best epoch: {metrics['best_epoch']} ({best})")
    for split in ("validation", "test"):
        if split in metrics:
            scores = metrics[split]
            print(f"{split} accuracy: {scores['accuracy']:.4f} ({scores['examples']} images)")
    return 0


def _json_argument(text: str) -> dict:
    if os.path.isfile(text):
        with open(text) as f:
            text = f.read()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--model-config is neither a JSON file nor JSON: {error}") from error
    if not isinstance(value, dict):
        raise ValueError("--model-config must be a JSON object")
    return value
