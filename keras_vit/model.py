"""The ViT image classifier: preprocessing, patch embedding, Transformer encoder, head."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_vit.convert.loader import load_checkpoint
from keras_vit.imagenet import imagenet_1k_labels
from keras_vit.layers import (
    ClassToken,
    ClassTokenPooling,
    EncoderBlock,
    PatchEmbedding,
    PositionEmbedding,
    pair,
)
from keras_vit.preprocessing import (
    DEFAULT_MEAN,
    DEFAULT_RESCALE,
    DEFAULT_STD,
    ViTImagePreprocessor,
)
from keras_vit.presets import CHECKPOINTS, DEFAULT_PRESET, get_preset, resolve_preset
from keras_vit.quantize_gc import collect_once

# The projections of each encoder block that LoRA can adapt, by the names in checkpoints.
LORA_TARGETS = ("query", "key", "value", "attention_output", "mlp_dense_1", "mlp_dense_2")
# Query and value, as keras-hub's Backbone.enable_lora and HF's PEFT ViT guide adapt by default.
DEFAULT_LORA_TARGETS = ("query", "value")


@keras.saving.register_keras_serializable(package="keras_vit")
class ViTClassifier(keras.Model):
    """Vision Transformer image classifier (Dosovitskiy et al., 2021) with in-graph preprocessing.

    Call it on a batch of NHWC RGB images in ``[0, 255]`` (uint8 or float, any
    size): it resizes and normalises them (layer ``preprocessing``), embeds
    16x16 patches (``patch_embedding``), prepends the ``class_token``, adds the
    ``position_embedding``, runs ``num_layers`` pre-LN ``encoder_block_{i}``,
    applies ``encoder_norm``, pools the class token (``pooling``), optionally a
    tanh ``pre_logits`` layer, and returns the logits of ``head``.

    Every constructor argument is returned by ``get_config()``; ``labels`` are
    the class names (``model.labels``) and travel with the saved model.

    Example:
    >>> import numpy as np
    >>> model = ViTClassifier(image_size=32, patch_size=8, num_layers=2, num_heads=3,
    ...                       hidden_dim=48, mlp_dim=96, num_classes=5)
    >>> model(np.zeros((2, 40, 50, 3), "uint8")).shape
    TensorShape([2, 5])
    >>> model.labels[:2]
    ['LABEL_0', 'LABEL_1']
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 224,
        patch_size: int = 16,
        num_layers: int = 12,
        num_heads: int = 12,
        hidden_dim: int = 768,
        mlp_dim: int = 3072,
        num_classes: int = 1000,
        dropout_rate: float = 0.0,
        attention_dropout_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_norm_epsilon: float = 1e-12,
        representation_size: int | None = None,
        labels: Sequence[str] | None = None,
        image_mean: Sequence[float] = DEFAULT_MEAN,
        image_std: Sequence[float] = DEFAULT_STD,
        rescale_factor: float = DEFAULT_RESCALE,
        dtype=None,
        **kwargs,
    ):
        image_size = pair(image_size)
        if image_size[0] % patch_size or image_size[1] % patch_size:
            raise ValueError(
                f"image_size {image_size} is not a multiple of patch_size {patch_size}"
            )
        if labels is not None:
            labels = [str(label) for label in labels]
            if len(labels) != num_classes:
                raise ValueError(f"{len(labels)} labels given for num_classes={num_classes}")
        grid = (image_size[0] // patch_size, image_size[1] // patch_size)

        # === Functional model ===
        images = keras.Input(shape=(None, None, 3), name="images")
        x = ViTImagePreprocessor(
            image_size=image_size,
            image_mean=image_mean,
            image_std=image_std,
            rescale_factor=rescale_factor,
            name="preprocessing",
        )(images)
        x = PatchEmbedding(hidden_dim, patch_size, dtype=dtype, name="patch_embedding")(x)
        x = ClassToken(dtype=dtype, name="class_token")(x)
        x = PositionEmbedding(grid[0] * grid[1] + 1, dtype=dtype, name="position_embedding")(x)
        x = keras.layers.Dropout(dropout_rate, dtype=dtype, name="embedding_dropout")(x)
        for i in range(num_layers):
            x = EncoderBlock(
                hidden_dim=hidden_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                dropout_rate=dropout_rate,
                attention_dropout_rate=attention_dropout_rate,
                # Stochastic depth grows linearly with depth (Huang et al., 2016).
                drop_path_rate=drop_path_rate * i / max(num_layers - 1, 1),
                layer_norm_epsilon=layer_norm_epsilon,
                dtype=dtype,
                name=f"encoder_block_{i}",
            )(x)
        x = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="encoder_norm"
        )(x)
        x = ClassTokenPooling(dtype=dtype, name="pooling")(x)
        if representation_size:
            x = keras.layers.Dense(
                representation_size, activation="tanh", dtype=dtype, name="pre_logits"
            )(x)
        # Under mixed precision the logits stay float32, so losses and softmax are stable.
        policy = keras.dtype_policies.get(dtype) if dtype is not None else None
        policy = policy or keras.config.dtype_policy()
        mixed = policy.compute_dtype != policy.variable_dtype
        head_dtype = policy.variable_dtype if mixed else dtype
        logits = keras.layers.Dense(num_classes, dtype=head_dtype, name="head")(x)
        kwargs.setdefault("name", "vit_classifier")
        super().__init__(inputs=images, outputs=logits, **kwargs)
        # The policy lives on the model, as keras-hub's Backbone keeps it: a functional
        # model drops the `dtype` argument and would otherwise report float32 (and Keras
        # would not add loss scaling for mixed_float16 in compile()).
        self.dtype_policy = policy

        # === Config ===
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.mlp_dim = mlp_dim
        self.num_classes = num_classes
        self.dropout_rate = dropout_rate
        self.attention_dropout_rate = attention_dropout_rate
        self.drop_path_rate = drop_path_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.representation_size = representation_size
        self.labels = labels if labels is not None else [f"LABEL_{i}" for i in range(num_classes)]
        self.image_mean = tuple(float(v) for v in image_mean)
        self.image_std = tuple(float(v) for v in image_std)
        self.rescale_factor = float(rescale_factor)

    @property
    def preprocessor(self) -> ViTImagePreprocessor:
        return self.get_layer("preprocessing")

    def embedding_model(self) -> keras.Model:
        """A model sharing these weights that returns the image representation.

        That is the final class-token representation after ``encoder_norm``
        (before ``pre_logits`` and ``head``), shape ``(batch, hidden_dim)``.
        """
        return keras.Model(self.input, self.get_layer("pooling").output, name="vit_embedding")

    def quantize(self, mode=None, config=None, filters=None, **kwargs) -> None:
        """Keras' ``Model.quantize``, without a full garbage collection per replaced kernel
        (17 of 18 seconds on ViT-Ti/16) or a warning per layer with nothing to quantize
        (:mod:`keras_vit.quantize_gc`)."""
        with collect_once():
            super().quantize(mode, config=config, filters=filters, **kwargs)

    def enable_lora(
        self,
        rank: int,
        target_names: Sequence[str] = DEFAULT_LORA_TARGETS,
        *,
        train_head: bool = True,
        lora_alpha: float | None = None,
    ) -> None:
        """Parameter-efficient fine-tuning: low-rank adapters on the encoder's projections.

        Calls Keras's own ``enable_lora(rank)`` on the ``target_names`` layers of
        every encoder block (``query``, ``key``, ``value``, ``attention_output``,
        ``mlp_dense_1``, ``mlp_dense_2``; default query and value, as keras-hub
        and HF's PEFT ViT guide do), then freezes every other variable, biases
        included, except the ``head`` when ``train_head`` (a new head must learn;
        PEFT's ``modules_to_save=["classifier"]``). ``model.save()`` and
        :meth:`merge_lora` write the kernels with the update merged in.

        Example:
        >>> model = ViTClassifier(image_size=32, patch_size=8, num_layers=2, num_heads=3,
        ...                       hidden_dim=48, mlp_dim=96, num_classes=5)
        >>> model.enable_lora(4)
        >>> sorted({v.path.split("/")[-1] for v in model.trainable_weights})
        ['bias', 'kernel', 'lora_kernel_a', 'lora_kernel_b']
        """
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"LoRA rank must be a positive integer, got {rank!r}")
        target_names = tuple(target_names)
        unknown = sorted(set(target_names) - set(LORA_TARGETS))
        if unknown or not target_names:
            raise ValueError(
                f"Unknown LoRA targets {unknown or target_names!r}; choose from {LORA_TARGETS}"
            )
        layers = [
            self._lora_target(i, name) for i in range(self.num_layers) for name in target_names
        ]
        if any(layer.lora_enabled for layer in layers):
            raise ValueError("LoRA is already enabled on this model")
        self.trainable = True  # every layer; the variables' own flags decide below
        for layer in layers:
            layer.enable_lora(rank, lora_alpha=lora_alpha)
        adapters = {id(v) for layer in layers for v in (layer.lora_kernel_a, layer.lora_kernel_b)}
        for variable in self.weights:
            in_head = variable.path.startswith("head/")
            variable.trainable = id(variable) in adapters or (train_head and in_head)

    @property
    def lora_enabled(self) -> bool:
        """Whether any projection carries LoRA adapters."""
        return any(
            getattr(layer, "lora_enabled", False)
            for layer in self._flatten_layers(include_self=False)
        )

    def merge_lora(self) -> ViTClassifier:
        """A plain ViTClassifier (same config) whose kernels have the LoRA updates merged in.

        It has the variables of a model that never had adapters, so it saves,
        exports and serves like any other. Without LoRA it is a plain copy.
        """
        config = self.get_config()
        config.pop("name", None)
        merged = type(self).from_config(config)
        pairs = zip(self._flatten_layers(), merged._flatten_layers(), strict=True)
        for source, target in pairs:
            if type(source) is not type(target):
                raise RuntimeError(f"Layer order differs: {source.name!r} vs {target.name!r}")
            if source is self or not source.weights:
                continue
            # Keras's own serialisation merges LoRA: kernel + (alpha / rank) * A @ B.
            store = {}
            source.save_own_variables(store)
            target.load_own_variables(store)
        return merged

    def _lora_target(self, block: int, name: str):
        layer = self.get_layer(f"encoder_block_{block}")
        if name in ("mlp_dense_1", "mlp_dense_2"):
            return getattr(layer, name)
        attention = layer.attention
        return {
            "query": attention.query_dense,
            "key": attention.key_dense,
            "value": attention.value_dense,
            "attention_output": attention.output_dense,
        }[name]

    @classmethod
    def from_preset(
        cls, preset: str = DEFAULT_PRESET, *, load_weights: bool = True, **kwargs
    ) -> ViTClassifier:
        """The model of ``preset`` (e.g. ``"vit-base-patch16-224"`` or ``"B/16"``), as in keras-hub.

        With ``load_weights=True`` (the default) it loads the checkpoint the
        preset names in ``keras_vit.presets.CHECKPOINTS`` (from the Hugging Face
        Hub or its cache; ``kwargs`` go to :meth:`from_pretrained`).
        A preset without a published checkpoint, or a checkpoint that cannot be
        fetched (offline), raises an error that says so.

        With ``load_weights=False`` it builds the architecture with random
        weights (``kwargs`` are ViTClassifier arguments); a 1000-class model
        gets the ImageNet-1k class names. ``keras-vit info --list-presets``
        lists the presets.

        Example:
        >>> model = ViTClassifier.from_preset("vit-tiny-patch16-224", load_weights=False)
        >>> model.count_params(), model.labels[285]
        (5717416, 'Egyptian cat')
        """

        config = get_preset(preset)
        name = resolve_preset(preset)
        if load_weights:
            if name not in CHECKPOINTS:
                with_weights = ", ".join(sorted(CHECKPOINTS))
                raise ValueError(
                    f"Preset {preset!r} has no published checkpoint to load; pass "
                    f"load_weights=False for random weights. Presets with weights: {with_weights}"
                )
            return cls.from_pretrained(name, **kwargs)  # resolved to CHECKPOINTS[name]
        config.update(kwargs)
        if config.get("labels") is None and config.get("num_classes", 1000) == 1000:
            config["labels"] = imagenet_1k_labels()
        return cls(**config)

    @classmethod
    def from_pretrained(cls, source: str, **kwargs) -> ViTClassifier:
        """Loads a checkpoint: an HF directory or hub id, a Google ``.npz`` or a ``.keras`` file.

        See :func:`keras_vit.convert.loader.load_checkpoint` for the options.
        """
        return load_checkpoint(cls, source, **kwargs)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "hidden_dim": self.hidden_dim,
            "mlp_dim": self.mlp_dim,
            "num_classes": self.num_classes,
            "dropout_rate": self.dropout_rate,
            "attention_dropout_rate": self.attention_dropout_rate,
            "drop_path_rate": self.drop_path_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "representation_size": self.representation_size,
            "labels": list(self.labels),
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "rescale_factor": self.rescale_factor,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)
