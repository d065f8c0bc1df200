"""Any supported checkpoint -> a ready model of the class the caller names.

As keras-hub's converters do, the loader takes the model class
(:meth:`keras_vit.ViTClassifier.from_pretrained` passes itself), so that this
module never imports the model: the layers go model -> loader, one way.
:mod:`keras_vit.loading` holds the public ``load_pretrained`` / ``adapt_model``.

Sources, in the order they are recognised:

1. an existing ``.keras`` file, or a directory holding ``model.keras`` (what our
   trainer writes; its ``labels.txt`` and ``preprocessor_config.json`` are
   informational, the ``.keras`` file carries both);
2. an existing ``.npz`` file (Google vit_jax / AugReg / big_vision);
3. an HF-format directory (``config.json`` + ``model.safetensors`` or
   ``tf_model.h5``, optional ``preprocessor_config.json``), or one of those
   weight files inside such a directory;
4. a preset name with a published checkpoint (``vit-base-patch16-224``,
   ``"B/16"``): its hub id, read as 5;
5. a Hugging Face Hub id (``google/vit-base-patch16-224``), fetched into the HF
   cache and then read as 3.

No transformers, torch or flax is imported.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras

from keras_vit.convert import hf_h5, hf_safetensors, jax_npz, keras_file
from keras_vit.convert.common import CheckpointError, Context, load_weights
from keras_vit.convert.hf_config import read_hf_config, vit_args_from_hf_config
from keras_vit.hub import HubDownloadError, download_checkpoint, looks_like_hub_id
from keras_vit.layers import pair as _pair
from keras_vit.preprocessing import read_preprocessor_config
from keras_vit.presets import CHECKPOINTS, get_preset, resolve_preset, unknown_preset_hint

HEAD_PATHS = ("head/kernel", "head/bias")
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "tf_model.h5")
_DEDICATED = ("num_classes", "labels", "image_size", "dtype")


@dataclass
class _Options:
    model_class: type | None = None
    num_classes: int | None = None
    labels: Sequence[str] | None = None
    image_size: int | Sequence[int] | None = None
    strict: bool = True
    dtype: object = None
    preset: str | None = None
    overrides: dict = field(default_factory=dict)

    @property
    def sizes_head(self) -> bool:
        """Whether the caller says what the head should be (a checkpoint without one needs it)."""
        return self.num_classes is not None or self.labels is not None


def load_checkpoint(
    model_class: type,
    source: str | os.PathLike,
    *,
    num_classes: int | None = None,
    labels: Sequence[str] | None = None,
    image_size: int | Sequence[int] | None = None,
    strict: bool = True,
    dtype=None,
    preset: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    **overrides,
):
    """Builds a ``model_class`` model and loads a checkpoint into it.

    Args:
        model_class: the model to build (:class:`keras_vit.ViTClassifier`).
        source: a local HF-format directory (or its weights file), a hub id, a
            Google ``.npz``, a ``.keras`` file, a directory with ``model.keras``,
            or a preset name with a published checkpoint (``keras_vit.presets.CHECKPOINTS``).
        num_classes: a new number of classes; the head is re-initialised (the
            checkpoint's head tensors are then expected but skipped).
        labels: class names (implies ``num_classes=len(labels)``). The head is
            re-initialised unless they are exactly the checkpoint's labels, in
            order; a checkpoint without a head (``ViTModel``, an -in21k
            backbone) gets a new one. A new head starts at zero (see
            :func:`adapt_model`).
        image_size: another resolution (int or ``(height, width)``); the position
            embeddings are resized bicubically with the class token kept aside.
        strict: by default nothing is assigned unless every tensor matches, and
            one error lists every missing, unexpected and wrongly-shaped one.
            ``False`` loads what matches and warns about the rest.
        dtype: the model's dtype policy (e.g. ``"mixed_bfloat16"``).
        preset: for ``.npz`` files, take the architecture from this preset
            (e.g. ``"B/16"``) instead of inferring it from the tensor shapes.
        revision, cache_dir, token: passed to ``huggingface_hub`` for hub ids.
        **overrides: other ViTClassifier arguments, e.g. ``dropout_rate=0.1``,
            ``drop_path_rate=0.1`` for fine-tuning, or ``representation_size=None``
            to drop a pre-logits layer.

    Returns:
        The model; ``model.labels`` holds the class names.

    Raises:
        keras_vit.convert.CheckpointError: unreadable, unsupported or mismatching
            checkpoints (``CheckpointMismatchError`` for the strict diff).
        keras_vit.hub.HubDownloadError: a hub id that cannot be fetched.
    """
    options = _Options(
        model_class, num_classes, labels, image_size, strict, dtype, preset, overrides
    )
    _check_options(options)
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_file():
        return _load_file(path, options)
    if path.is_dir():
        return _load_directory(path, options)
    preset = resolve_preset(text)
    if preset is not None:  # before hub ids: "B/16" has the form owner/name
        if preset not in CHECKPOINTS:
            raise CheckpointError(
                f"Cannot load {text!r}: the preset {preset!r} has no published checkpoint. "
                f"For its architecture with random weights use ViTClassifier.from_preset("
                f"{text!r}, load_weights=False). Presets with weights: {', '.join(CHECKPOINTS)}"
            )
        text = CHECKPOINTS[preset]
    if looks_like_hub_id(text):
        try:
            directory = download_checkpoint(
                text, revision=revision, cache_dir=cache_dir, token=token
            )
        except HubDownloadError as error:
            note = (
                f"The preset {preset!r} names this checkpoint; for its architecture with random "
                f"weights use ViTClassifier.from_preset({preset!r}, load_weights=False)."
                if preset
                else f"No local file or directory {text!r} exists either."
            )
            raise HubDownloadError(f"{error} ({note})") from error
        return _load_hf(directory, None, options, description=f"{text} (Hugging Face Hub)")
    raise CheckpointError(
        f"Cannot load {text!r}: it is not an existing file or directory, and not a Hugging Face "
        "Hub id of the form 'owner/name'. Expected an HF directory (config.json + "
        "model.safetensors or tf_model.h5), a .npz, a .keras file, a directory with "
        f"model.keras, a hub id or a preset name. {unknown_preset_hint(text)}"
    )


def _check_options(options: _Options) -> None:
    model_class = options.model_class
    known = set(inspect.signature(model_class.__init__).parameters) - {"self", "kwargs"}
    known |= {"name"}
    unknown = sorted(set(options.overrides) - known)
    if unknown:
        raise TypeError(
            f"load_pretrained() got unknown arguments {unknown}; {model_class.__name__} "
            "arguments are "
            f"{sorted(known - set(_DEDICATED))}"
        )
    if options.num_classes is not None and (
        isinstance(options.num_classes, bool)
        or not isinstance(options.num_classes, int)
        or options.num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive integer, got {options.num_classes!r}")
    if options.labels is not None:
        if isinstance(options.labels, str) or len(options.labels) == 0:
            raise ValueError("labels must be a non-empty sequence of class names")
        if options.num_classes is not None and options.num_classes != len(options.labels):
            raise ValueError(
                f"num_classes={options.num_classes} but {len(options.labels)} labels given"
            )


# === Source dispatch ===


def _load_file(path: Path, options: _Options):
    name = path.name
    if name.endswith(".keras"):
        return _load_keras(path, options)
    if name.endswith(".npz"):
        return _load_npz(path, options)
    if name == "config.json":
        return _load_hf(path.parent, None, options)
    if name.endswith((".safetensors", ".safetensors.index.json", ".h5")):
        if not (path.parent / "config.json").is_file():
            raise CheckpointError(
                f"Cannot load {str(path)!r}: a transformers weights file needs the config.json "
                f"of its checkpoint beside it (in {str(path.parent)!r})."
            )
        return _load_hf(path.parent, path, options)
    raise CheckpointError(
        f"Cannot load {str(path)!r}: unsupported file type. Expected a .keras file, a .npz "
        "(Google JAX) file, or model.safetensors / tf_model.h5 beside a config.json."
    )


def _load_directory(path: Path, options: _Options):
    if (path / "model.keras").is_file():
        return _load_keras(path / "model.keras", options)
    if (path / "config.json").is_file():
        return _load_hf(path, None, options)
    present = sorted(p.name for p in path.iterdir())[:20]
    raise CheckpointError(
        f"Cannot load directory {str(path)!r}: it has neither model.keras (a keras-vit model) "
        f"nor config.json (an HF checkpoint). It contains: {present or 'nothing'}."
    )


# === transformers checkpoints ===


def _hf_weights(directory: Path) -> Path:
    for name in HF_WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    others = [n for n in ("pytorch_model.bin", "flax_model.msgpack") if (directory / n).exists()]
    raise CheckpointError(
        f"Cannot load {str(directory)!r}: no {', '.join(HF_WEIGHT_FILES)} found"
        + (
            f" ({', '.join(others)} cannot be read without torch/flax: convert it to "
            "safetensors with transformers' save_pretrained(safe_serialization=True))"
            if others
            else ""
        )
        + "."
    )


def _load_hf(directory: Path, weights: Path | None, options: _Options, description: str = ""):
    directory = Path(directory)
    config_path = directory / "config.json"
    args = vit_args_from_hf_config(read_hf_config(config_path), source=str(config_path))
    preprocessor = directory / "preprocessor_config.json"
    if preprocessor.is_file():
        try:
            pixels = read_preprocessor_config(preprocessor)
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise CheckpointError(f"{preprocessor} cannot be read: {error}") from error
        size = pixels.pop("image_size", None)
        args.update(pixels)
        if "image_size" not in args and size is not None:
            args["image_size"] = size
    args.setdefault("image_size", (224, 224))

    weights = Path(weights) if weights else _hf_weights(directory)
    if weights.name.endswith(".h5"):
        reader = hf_h5.LegacyH5Reader(weights)
        layout, prefix = "tf", hf_h5.tf_prefix(reader.shapes())
    else:
        reader = hf_safetensors.SafetensorsReader(weights)
        layout, prefix = hf_safetensors.detect_layout(reader.shapes())
        reader.description = (
            f"{weights} ({'TF' if layout == 'tf' else 'PyTorch'}-named safetensors)"
        )
    if description:
        reader.description = f"{description}: {reader.description}"
    table = hf_h5.tf_rows if layout == "tf" else hf_safetensors.pt_rows
    pooler_keys = hf_h5.tf_pooler_keys if layout == "tf" else hf_safetensors.pt_pooler_keys
    head_keys = [row.source_key for row in table(0, prefix) if row.keras_path in HEAD_PATHS]

    def rows_for(model):
        return table(model.num_layers, prefix, pre_logits=bool(model.representation_size))

    try:
        if not all(k in reader.shapes() for k in head_keys):
            args.pop("labels", None)
            args["num_classes"] = None  # no head: the caller's labels or num_classes size it
        return _build_and_load(args, reader, rows_for, options, droppable=set(pooler_keys(prefix)))
    finally:
        reader.close()


# === Google JAX .npz ===


def _load_npz(path: Path, options: _Options):
    reader = jax_npz.NpzReader(path)
    try:
        shapes = reader.shapes()
        inferred = jax_npz.infer_config(shapes)
        variant = jax_npz.detect_variant(shapes)
        if options.preset:
            args = get_preset(options.preset)
            args.update(
                num_classes=inferred["num_classes"],
                representation_size=inferred["representation_size"],
                layer_norm_epsilon=jax_npz.FLAX_LAYER_NORM_EPSILON,
            )
        else:
            args = inferred

        def rows_for(model):
            return jax_npz.npz_rows(
                model.num_layers, variant, pre_logits=bool(model.representation_size)
            )

        return _build_and_load(
            args, reader, rows_for, options, droppable=set(jax_npz.PRE_LOGITS_KEYS)
        )
    finally:
        reader.close()


# === Our own .keras models ===


def _load_keras(path: Path, options: _Options):
    try:
        loaded = keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for bad archives
        raise CheckpointError(
            f"Cannot load {str(path)!r} as a Keras model: {type(error).__name__}: {error}"
        ) from error
    if not isinstance(loaded, options.model_class):
        raise CheckpointError(
            f"{str(path)!r} holds a {type(loaded).__name__}, not a keras_vit "
            f"{options.model_class.__name__}"
        )
    if options == _Options(options.model_class):
        return loaded
    return _adapt(loaded, options, f"{path} (Keras model)")


def adapt_model(
    model,
    labels: Sequence[str] | None = None,
    image_size: int | Sequence[int] | None = None,
    dtype=None,
    *,
    num_classes: int | None = None,
    rebuild: bool = False,
    **overrides,
):
    """A ViTClassifier like ``model`` with new labels, resolution or dtype policy, weights kept.

    This is the path every checkpoint takes in :func:`load_pretrained`, applied
    to a model in memory (``trainer.train`` uses it for model objects):

    - ``labels`` other than the model's (or ``num_classes``): a new ``head``,
      initialised to **zero**, as the ViT paper fine-tunes (Dosovitskiy et al.,
      2021, Sec. 3.1) and google-research/vision_transformer does
      (``head_zeroinit``); the same labels keep the head.
    - ``image_size``: the ``position_embedding`` grid is resized bicubically,
      class token kept aside.
    - ``dtype`` (e.g. ``"mixed_bfloat16"``): the model's policy; variables stay
      float32 under a mixed policy.

    When nothing changes and ``rebuild`` is False, ``model`` itself is returned;
    ``rebuild=True`` always builds a new model (e.g. to create its variables
    under a ``tf.distribute`` strategy scope).
    """
    if not callable(getattr(type(model), "from_pretrained", None)):
        raise TypeError(
            f"Expected a keras_vit ViTClassifier, got {type(model).__name__}; "
            "load checkpoints with keras_vit.load_pretrained"
        )
    options = _Options(type(model), num_classes, labels, image_size, True, dtype, None, overrides)
    _check_options(options)
    if not rebuild and not _changes(model, options):
        return model
    return _adapt(model, options, f"{model.name} (Keras model)")


def _changes(model, options: _Options) -> bool:
    config = model.get_config()
    return (
        options.num_classes is not None
        or (options.labels is not None and [str(x) for x in options.labels] != model.labels)
        or (options.image_size is not None and _pair(options.image_size) != model.image_size)
        or (
            options.dtype is not None
            and keras.dtype_policies.get(options.dtype).name != model.dtype_policy.name
        )
        or any(config.get(k) != v for k, v in options.overrides.items())
    )


def _adapt(model, options: _Options, description: str):
    args = model.get_config()
    args.pop("trainable", None)
    args.pop("name", None)
    reader = keras_file.keras_model_reader(model, description)
    return _build_and_load(
        args,
        reader,
        keras_file.keras_rows,
        options,
        droppable={"pre_logits/kernel", "pre_logits/bias"},
    )


# === Shared: options -> model -> strict load ===


def _build_and_load(args: dict, reader, rows_for, options: _Options, droppable: set[str]):
    """Builds the model the options ask for and loads ``reader`` into it: the one adapt path.

    ``args`` are the checkpoint's own ViTClassifier arguments (``num_classes``
    None when it has no head). A head is new, and starts at zero, when the
    checkpoint has none, when ``num_classes`` is given, or when ``labels``
    differ from the checkpoint's; the position embeddings are resized when
    ``image_size`` changes the patch grid; ``dtype`` sets the model's policy.
    """

    args = dict(args)
    native_grid = tuple(s // args["patch_size"] for s in _pair(args["image_size"]))
    has_head = args.get("num_classes") is not None
    source_labels = None
    if has_head:
        source_labels = [str(x) for x in args.get("labels") or []] or [
            f"LABEL_{i}" for i in range(args["num_classes"])
        ]
    if options.labels is not None:
        args["labels"] = [str(label) for label in options.labels]
        args["num_classes"] = len(args["labels"])
    elif options.num_classes is not None:
        args["num_classes"] = options.num_classes
        args["labels"] = None
    if args.get("num_classes") is None:
        raise CheckpointError(
            f"{reader.description} has no classification head (a backbone checkpoint such as "
            "ViTModel or an -in21k feature extractor): pass num_classes= or labels= to add a "
            "new head (keras-vit train adds one sized by the data's labels)."
        )
    new_head = (
        not has_head
        or options.num_classes is not None
        or (options.labels is not None and args["labels"] != source_labels)
    )
    if options.image_size is not None:
        args["image_size"] = options.image_size
    args.update(options.overrides)
    if options.dtype is not None:
        args["dtype"] = options.dtype
    if isinstance(args.get("dtype"), dict):
        args["dtype"] = keras.dtype_policies.deserialize(args["dtype"])
    model = options.model_class(**args)

    grid = tuple(s // model.patch_size for s in model.image_size)
    context = Context(grid=grid, resize_position_embedding=grid != native_grid)
    # Tensors the model does not need by construction: the pooler/pre-logits
    # when the model has no pre_logits layer.
    drop = set() if model.representation_size else set(droppable)

    def hint(plan):
        head_rows = [r for r in plan.missing if r.keras_path in HEAD_PATHS]
        head_rows += [r for r, _, _ in plan.mismatched if r.keras_path in HEAD_PATHS]
        if head_rows and not options.sizes_head:
            return (
                "To use other classes, pass num_classes= or labels= (the head is then "
                "re-initialised and the checkpoint's head skipped)."
            )
        return ""

    load_weights(
        model,
        reader,
        rows_for(model),
        skip=HEAD_PATHS if new_head else (),
        ignore=drop.__contains__,
        context=context,
        strict=options.strict,
        hint=hint,
    )
    if new_head:
        # Zero-initialised classifier: the ViT paper's fine-tuning head (Sec. 3.1) and
        # google-research/vision_transformer's head_zeroinit; see docs/training.md.
        for variable in model.get_layer("head").weights:
            variable.assign(keras.ops.zeros(variable.shape, variable.dtype))
    return model


__all__ = ["adapt_model", "load_checkpoint"]
