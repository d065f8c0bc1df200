"""``train()``: fine-tune (or train from scratch) a ViT with Keras ``model.fit``.

One call resolves the data, builds or loads the model with a head for the
labels, compiles it with the optimiser and schedule of
:mod:`keras_vit.training.optim`, fits it with the callbacks of
:mod:`keras_vit.training.callbacks` and writes the model directory of
:mod:`keras_vit.training.output`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import keras
import tensorflow as tf

from keras_vit.loading import adapt_model, load_pretrained
from keras_vit.model import ViTClassifier
from keras_vit.presets import get_preset
from keras_vit.training import backup as backup_lib
from keras_vit.training import callbacks as callbacks_lib
from keras_vit.training import multi_worker, output, sharding
from keras_vit.training.curve import write_training_curve
from keras_vit.training.data import (
    DataError,
    DataSplits,
    FileImageDataset,
    ImageDataset,
    load_data,
)
from keras_vit.training.distribute import resolve_precision, resolve_strategy, worker_role
from keras_vit.training.freeze import freeze_backbone
from keras_vit.training.optim import build_loss, build_optimizer, build_schedule
from keras_vit.training.pipeline import AugmentConfig, eval_pipeline, train_pipeline
from keras_vit.training.progress import fit_verbosity

logger = logging.getLogger(__name__)

# Decoded images are cached in memory when the encoded files add up to less than this.
AUTO_CACHE_BYTES = 256 * 2**20


@dataclass
class TrainingConfig:
    """Every option of a training run; ``training_config.json`` in the output records it.

    ``batch_size`` is global (split across the replicas of a strategy).
    ``learning_rate`` is the peak of the schedule: a linear warm-up over
    ``warmup_steps`` (default 5% of all steps) then a cosine decay to
    ``end_learning_rate``. ``freeze_backbone`` trains the head only (linear
    probe) until ``unfreeze_at_epoch`` (0-based; None: never). ``lora_rank``
    trains LoRA adapters of that rank on the attention query/value projections
    plus the head, everything else frozen (``ViTClassifier.enable_lora``); the
    saved model has the adapters merged in.
    ``tensorboard="auto"`` writes ``OUTPUT/logs`` when the tensorboard
    package is installed. ``monitor`` picks the epoch whose weights are kept (``val_accuracy``, or
    ``accuracy`` without validation data; ties go to the later epoch); None
    keeps the last epoch. ``backup_dir`` defaults to ``OUTPUT/backup``:
    running the same command again after a kill resumes from the last
    finished epoch; ``resume=False`` deletes the backup and starts over.
    """

    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adamw"
    learning_rate: float = 1e-3
    end_learning_rate: float = 0.0
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup_steps: int | None = None
    global_clipnorm: float | None = 1.0
    label_smoothing: float = 0.1
    image_size: int | tuple[int, int] | None = None
    validation_split: float = 0.1
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    freeze_backbone: bool = False
    unfreeze_at_epoch: int | None = None
    lora_rank: int | None = None
    mixed_precision: str | None = None
    jit_compile: bool = False
    steps_per_execution: int = 1
    strategy: str | None = None
    devices: tuple[str, ...] | None = None
    backup_dir: str | None = None
    early_stopping_patience: int | None = None
    monitor: str | None = "val_accuracy"
    tensorboard: bool | str = "auto"
    cache: bool | str = "auto"
    verify_images: bool = True
    on_corrupt: str = "skip"
    seed: int = 0
    verbose: str | int = "auto"
    resume: bool = True

    def __post_init__(self):
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.unfreeze_at_epoch is not None and not self.freeze_backbone:
            raise ValueError("unfreeze_at_epoch needs freeze_backbone=True")
        if self.lora_rank is not None and self.freeze_backbone:
            raise ValueError("lora_rank and freeze_backbone exclude each other")
        if self.on_corrupt not in ("skip", "error"):
            raise ValueError(f"on_corrupt must be 'skip' or 'error', got {self.on_corrupt!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """What ``train()`` returns: the trained model (best epoch) and where things were written."""

    model: ViTClassifier
    output_dir: str
    history: list[dict]
    metrics: dict
    class_names: list[str]

    @property
    def model_path(self) -> str:
        return os.path.join(self.output_dir, output.MODEL_FILE)


def train(
    model: keras.Model | str | None = None,
    data: str | os.PathLike | ImageDataset | None = None,
    output_dir: str | os.PathLike | None = None,
    *,
    preset: str | None = None,
    model_config: dict | None = None,
    validation_data: str | os.PathLike | ImageDataset | None = None,
    test_data: str | os.PathLike | ImageDataset | None = None,
    config: TrainingConfig | None = None,
    strategy: str | tf.distribute.Strategy | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    **options,
) -> TrainResult:
    """Trains ``model`` on ``data`` and writes the model directory ``output_dir``.

    Args:
        model: a ViTClassifier, a checkpoint source for
            :func:`keras_vit.loading.load_pretrained` (HF directory or hub id,
            ``.npz``, ``.keras``, a keras-vit model directory), or None to
            train a new model of ``preset`` / ``model_config`` from scratch.
        data: an image folder, ``tfds:NAME`` or ``hf:ID`` (see
            :mod:`keras_vit.training.data`), or an :class:`ImageDataset`.
        output_dir: the model directory to write (created if needed).
        preset: a ViT preset name (``"vit-tiny-patch16-224"``, ``"B/16"``)
            when ``model`` is None.
        model_config: ViTClassifier arguments over the preset (or alone).
        validation_data: a separate validation set; without it a stratified
            ``validation_split`` of ``data`` is held out.
        test_data: held-out data evaluated once with the best weights at the end.
        config: a TrainingConfig; ``options`` override its fields
            (``epochs=30, learning_rate=3e-3, ...``).
        strategy: a ``tf.distribute.Strategy`` object, or a name (overrides
            ``config.strategy``).
        callbacks: more Keras callbacks for ``fit``, run before ours.

    Returns:
        A TrainResult with the best model (float32), history and metrics.
    """
    if data is None or output_dir is None:
        raise ValueError("train() needs data and output_dir")
    config = dataclasses.replace(config or TrainingConfig(), **options)
    # The strategy first: MultiWorkerMirroredStrategy must exist before any other TF op.
    strategy = resolve_strategy(strategy or config.strategy, config.devices)
    precision = resolve_precision(config.mixed_precision)
    keras.utils.set_random_seed(config.seed)
    output_dir = os.fspath(output_dir)
    # Every worker of a cluster restores from the chief's backup (multi_worker.py).
    shared_backup_dir = config.backup_dir or os.path.join(output_dir, "backup")
    is_chief, task = worker_role(strategy)
    if not is_chief:
        # Other workers train the same model in step; only the chief writes the directory.
        output_dir = os.path.join(output_dir, f".worker-{task}")
    os.makedirs(output_dir, exist_ok=True)

    splits = load_data(
        data,
        validation=validation_data,
        validation_split=config.validation_split,
        test=test_data,
        seed=config.seed,
        verify=config.verify_images,
        on_corrupt=config.on_corrupt,
    )
    labels = splits.class_names
    _log_data(splits)
    if config.monitor and config.monitor.startswith("val_") and splits.validation is None:
        config = dataclasses.replace(config, monitor=config.monitor[4:])

    backup_dir = shared_backup_dir
    if not config.resume and is_chief and backup_lib.remove_backup(backup_dir):
        print(f"Deleted the backup in {backup_dir} (--no-resume)")
    output.write_json(
        {
            **config.to_dict(),
            "model": _describe(model, preset, model_config),
            "labels": labels,
            # Where the training images came from: `export --precision int8` calibrates on it.
            "data": _data_source(data),
        },
        os.path.join(output_dir, output.CONFIG_FILE),
    )

    # Variables of a model built outside a strategy's scope are not distributed: rebuild it.
    distributed = strategy is not tf.distribute.get_strategy()
    with strategy.scope():
        vit = _build_model(
            model, preset, model_config, labels, config.image_size, precision, distributed
        )
        if config.lora_rank is not None:
            vit.enable_lora(config.lora_rank)
        image_size = vit.image_size
        train_ds, steps_per_epoch, fit_steps = _training_data(
            strategy, splits.train, image_size, config
        )
        total_steps = steps_per_epoch * config.epochs
        warmup = config.warmup_steps
        if warmup is None:
            warmup = int(round(0.05 * total_steps))
        schedule = build_schedule(
            config.learning_rate,
            total_steps=total_steps,
            warmup_steps=min(warmup, total_steps),
            end_learning_rate=config.end_learning_rate,
        )
        optimizer = build_optimizer(
            config.optimizer,
            schedule,
            weight_decay=config.weight_decay,
            momentum=config.momentum,
            global_clipnorm=config.global_clipnorm,
        )
        if precision == "mixed_float16":
            # Wrapped here rather than by compile(): the slots are built below.
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        # Built on every variable before any freezing, so that unfreezing later (and
        # restoring a backup) finds optimizer slots for the backbone too.
        optimizer.build(vit.trainable_variables)
        if config.freeze_backbone:
            freeze_backbone(vit)
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
        if len(labels) > 5:
            metrics.append(keras.metrics.TopKCategoricalAccuracy(k=5, name="top5_accuracy"))
        vit.compile(
            optimizer=optimizer,
            loss=build_loss(config.label_smoothing),
            metrics=metrics,
            jit_compile=config.jit_compile,
            steps_per_execution=config.steps_per_execution,
        )

    # Before fit: a damaged newest backup falls back to the previous one, and the history
    # is cut to the epochs of the backup actually loaded. BackupError says what to do.
    # --no-resume: no worker restores, whether or not the chief has deleted the backup yet.
    backup = backup_lib.restore(vit, backup_dir) if config.resume else None
    if backup is not None:
        # Rows of epochs the backup does not hold are trained again: drop them.
        callbacks_lib.trim_history(os.path.join(output_dir, output.HISTORY_FILE), backup.epochs)
        for reason in backup.skipped:
            print(f"Warning: {reason}; using the previous backup")
        print(
            f"Resuming from the backup in {backup_dir}: "
            f"{backup.epochs} of {config.epochs} epochs done"
        )
    else:
        # A fresh run: no best checkpoint or history of an earlier run may leak into this one.
        if is_chief:
            backup_lib.remove_backup(backup_dir)  # leftovers of a first backup never committed
        shutil.rmtree(os.path.join(output_dir, "checkpoints"), ignore_errors=True)
        for name in (output.HISTORY_FILE, output.METRICS_FILE):
            if os.path.exists(os.path.join(output_dir, name)):
                os.remove(os.path.join(output_dir, name))
        print(f"Starting a new run (no backup in {backup_dir})")

    eval_batch = max(config.batch_size, 1)
    val_ds = (
        eval_pipeline(
            splits.validation,
            image_size,
            eval_batch,
            # One cache file per worker: two processes cannot write one.
            cache=_cache_choice(
                config.cache,
                splits.validation,
                suffix=".validation" + ("" if is_chief else f".worker-{task}"),
            ),
        )
        if splits.validation is not None
        else None
    )
    history_path = os.path.join(output_dir, output.HISTORY_FILE)
    all_callbacks = list(callbacks) + callbacks_lib.build_callbacks(
        output_dir,
        backup_dir,
        backup,
        monitor=config.monitor,
        best_so_far=callbacks_lib.best_epoch(
            callbacks_lib.read_history(history_path), config.monitor
        )[1],
        early_stopping_patience=config.early_stopping_patience,
        tensorboard=_tensorboard_choice(config.tensorboard),
        unfreeze_at_epoch=config.unfreeze_at_epoch if config.freeze_backbone else None,
    )
    all_callbacks = multi_worker.cluster_callbacks(all_callbacks, strategy, is_chief)
    started = time.monotonic()
    try:
        vit.fit(
            train_ds,
            validation_data=val_ds,
            epochs=config.epochs,
            callbacks=all_callbacks,
            steps_per_epoch=fit_steps,
            shuffle=False,  # the pipeline shuffles, seeded
            verbose=fit_verbosity(config.verbose),  # no ANSI codes in log files
        )
    except tf.errors.UnavailableError as error:  # a peer of a multi-worker cluster died
        reason = error.message.splitlines()[0]
        raise RuntimeError(multi_worker.PEER_LOST.format(reason=reason)) from error
    except tf.errors.InvalidArgumentError as error:
        if "image" in str(error).lower() or "decode" in str(error).lower():
            raise DataError(
                f"An image failed to decode during training ({error.message.splitlines()[0]}). "
                "Run with image verification on (the default) to find and skip corrupt files."
            ) from error
        raise
    train_seconds = time.monotonic() - started

    best_path = os.path.join(output_dir, "checkpoints", callbacks_lib.BEST_WEIGHTS)
    if os.path.exists(best_path):
        vit.load_weights(best_path)
    final = adapt_model(
        vit.merge_lora() if vit.lora_enabled else vit, dtype="float32", rebuild=True
    )  # uncompiled, float32
    history = callbacks_lib.read_history(history_path)
    best_epoch, best_value = callbacks_lib.best_epoch(history, config.monitor)
    results = {
        "monitor": config.monitor,
        "best_epoch": best_epoch,
        "best_value": best_value,
        "train_seconds": round(train_seconds, 1),
        "epochs_run": len(history),
    }
    # Saved before compiling: the model file carries no training state.
    output.write_model_dir(final, output_dir)
    final.compile(loss=build_loss(0.0), metrics=["categorical_accuracy"])
    for name, dataset in (("validation", splits.validation), ("test", splits.test)):
        if dataset is not None:
            scores = final.evaluate(
                eval_pipeline(dataset, image_size, eval_batch), verbose=0, return_dict=True
            )
            results[name] = {
                "loss": float(scores["loss"]),
                "accuracy": float(scores["categorical_accuracy"]),
                "examples": dataset.size,
            }
    write_training_curve(history, os.path.join(output_dir, output.CURVE_FILE))
    output.write_json(results, os.path.join(output_dir, output.METRICS_FILE))
    if is_chief:
        # Only now: a stop before this point reruns no epoch (the backup says all are done).
        backup_lib.remove_backup(backup_dir)
    return TrainResult(final, output_dir, history, results, labels)


def _data_source(data) -> str | None:
    """An image folder as an absolute path, ``tfds:``/``hf:`` as given, else None."""
    if isinstance(data, (str, os.PathLike)):
        text = os.fspath(data)
        return text if text.startswith(("tfds:", "hf:")) else os.path.abspath(text)
    return None


def _build_model(
    model, preset, model_config, labels: Sequence[str], image_size, precision, distributed: bool
) -> ViTClassifier:
    """The model to train, with a head for ``labels``: kept if its labels match, else new."""
    if isinstance(model, keras.Model):
        return adapt_model(model, labels, image_size, dtype=precision, rebuild=distributed)
    if isinstance(model, (str, os.PathLike)):
        # Any checkpoint, with a head or without (ViTModel, -in21k): the data's labels size it.
        return load_pretrained(
            os.fspath(model), labels=labels, image_size=image_size, dtype=precision
        )
    if model is not None:
        raise TypeError(
            f"model must be a ViTClassifier, a checkpoint source or None, got {model!r}"
        )
    if preset is None and not model_config:
        raise ValueError("Give a model (or checkpoint source), a preset or a model_config")
    arguments = get_preset(preset) if preset else {}
    arguments.update(model_config or {})
    arguments.update(num_classes=len(labels), labels=list(labels), dtype=precision)
    if image_size is not None:
        arguments["image_size"] = image_size
    return ViTClassifier(**arguments)


def _training_data(strategy, data: ImageDataset, image_size, config: TrainingConfig):
    """``(dataset, steps per epoch, steps_per_epoch for fit)`` of the training data.

    In a multi-worker cluster an image folder is sharded by file, each worker reading
    only its shard, and ``fit`` gets the steps every worker can run (sharding.py);
    otherwise one pipeline that tf.data shards by element, and ``fit`` counts its batches.
    """
    if multi_worker.in_multi_worker_mode(strategy) and isinstance(data, FileImageDataset):

        def make_dataset(shard, batch_size, index, batches):
            print(
                f"This worker reads file shard {index}: {shard.size} of {data.size} "
                f"training images, {batches} batches of {batch_size} per epoch"
            )
            return train_pipeline(
                shard,
                image_size,
                batch_size,
                augment=config.augment,
                seed=sharding.shard_seed(config.seed, index),
                cache=_cache_choice(config.cache, shard, suffix=f".worker-{index}"),
                batches=batches,
                auto_shard_policy=tf.data.experimental.AutoShardPolicy.OFF,
            )

        dataset, steps = sharding.distribute_files(strategy, data, config.batch_size, make_dataset)
        return dataset, steps, steps
    dataset = train_pipeline(
        data,
        image_size,
        config.batch_size,
        augment=config.augment,
        seed=config.seed,
        cache=_cache_choice(config.cache, data),
    )
    return dataset, _steps_per_epoch(data, config.batch_size), None


def _steps_per_epoch(data: ImageDataset, batch_size: int) -> int:
    if data.size is None:
        raise DataError(f"{data.description}: the number of examples is unknown")
    if data.size >= batch_size:
        return data.size // batch_size  # the training pipeline drops the last partial batch
    return 1


def _cache_choice(cache: bool | str, data: ImageDataset, suffix: str = "") -> bool | str:
    if isinstance(cache, str) and cache != "auto":
        return cache + suffix  # one cache file prefix per dataset
    if cache != "auto":
        return cache
    size = data.encoded_bytes
    return size is not None and size <= AUTO_CACHE_BYTES


def _tensorboard_choice(choice: bool | str) -> bool:
    """TensorBoard logs need the ``tensorboard`` package: "auto" uses it when installed."""
    if importlib.util.find_spec("tensorboard") is None:
        if choice is True:
            raise ValueError(
                "TensorBoard logging needs the tensorboard package: pip install tensorboard"
            )
        if choice == "auto":
            print("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
        return False
    return bool(choice)


def _describe(model, preset, model_config) -> dict:
    if isinstance(model, keras.Model):
        return {"from": "model object", "name": model.name}
    if model is not None:
        return {"from": os.fspath(model)}
    return {"preset": preset, "config": model_config}


def _log_data(splits: DataSplits) -> None:
    parts = [f"train: {splits.train.size}"]
    if splits.validation is not None:
        parts.append(f"validation: {splits.validation.size}")
    if splits.test is not None:
        parts.append(f"test: {splits.test.size}")
    print(f"{len(splits.class_names)} classes; " + ", ".join(parts) + " images")
