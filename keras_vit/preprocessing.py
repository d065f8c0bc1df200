"""In-graph image preprocessing: resize, rescale and normalise, as the checkpoint expects."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import keras
from keras import ops

# transformers' ViTImageProcessor defaults (google/vit-base-patch16-224).
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)
DEFAULT_RESCALE = 1.0 / 255.0


@keras.saving.register_keras_serializable(package="keras_vit")
class ViTImagePreprocessor(keras.layers.Layer):
    """Turns raw RGB images into the normalised pixels a ViT checkpoint was trained on.

    Input: NHWC images, uint8 or float in ``[0, 255]``, any height and width.
    The images are resized to ``image_size`` (bilinear with antialiasing, like
    PIL's resize in transformers' ``ViTImageProcessor``), then mapped to
    ``(x * rescale_factor - mean) / std`` per channel. The affine part is folded
    into one ``scale`` and ``offset`` per channel.

    It always computes in float32, whatever the model's dtype policy: a
    bfloat16 resize would round pixel values to 8 significant bits before the
    first layer sees them. The next layer casts to its own compute dtype.

    Example:
    >>> import numpy as np
    >>> layer = ViTImagePreprocessor(image_size=(32, 32))
    >>> out = layer(np.full((1, 64, 48, 3), 255, dtype="uint8"))
    >>> tuple(out.shape), round(float(out[0, 0, 0, 0]), 4)
    ((1, 32, 32, 3), 1.0)
    """

    def __init__(
        self,
        image_size: Sequence[int] = (224, 224),
        image_mean: Sequence[float] = DEFAULT_MEAN,
        image_std: Sequence[float] = DEFAULT_STD,
        rescale_factor: float = DEFAULT_RESCALE,
        interpolation: str = "bilinear",
        antialias: bool = True,
        **kwargs,
    ):
        # Always float32 (see the class docstring); a policy passed in, e.g. by an older
        # saved model, is replaced rather than rejected.
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.image_size = tuple(int(s) for s in image_size)
        self.image_mean = tuple(float(m) for m in image_mean)
        self.image_std = tuple(float(s) for s in image_std)
        self.rescale_factor = float(rescale_factor)
        self.interpolation = interpolation
        self.antialias = bool(antialias)
        if len(self.image_size) != 2:
            raise ValueError(f"image_size must be (height, width), got {image_size!r}")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError("image_mean and image_std need one value per RGB channel")
        if any(s == 0 for s in self.image_std):
            raise ValueError(f"image_std must not contain zeros, got {image_std!r}")
        self.scale = [self.rescale_factor / s for s in self.image_std]
        self.offset = [-m / s for m, s in zip(self.image_mean, self.image_std, strict=True)]

    def call(self, images):
        if len(images.shape) != 4 or images.shape[-1] != 3:
            raise ValueError(
                "ViTImagePreprocessor expects NHWC RGB images of shape "
                f"(batch, height, width, 3); got shape {tuple(images.shape)}"
            )
        images = ops.cast(images, self.compute_dtype)
        # A resize to the same size returns the image (bit for bit for bilinear, bicubic,
        # nearest and area; within float rounding for lanczos), so it is skipped when the
        # traced shape already matches: that saves its cost and lets XLA compile the model
        # (TF's antialiased resize, ScaleAndTranslate, has no XLA kernel).
        if tuple(images.shape[1:3]) != self.image_size:
            images = ops.image.resize(
                images,
                self.image_size,
                interpolation=self.interpolation,
                antialias=self.antialias,
                data_format="channels_last",
            )
        scale = ops.cast(ops.convert_to_tensor(self.scale), self.compute_dtype)
        offset = ops.cast(ops.convert_to_tensor(self.offset), self.compute_dtype)
        return images * scale + offset

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.image_size, 3)

    def get_config(self):
        config = super().get_config()
        config.update(
            image_size=self.image_size,
            image_mean=self.image_mean,
            image_std=self.image_std,
            rescale_factor=self.rescale_factor,
            interpolation=self.interpolation,
            antialias=self.antialias,
        )
        return config


def read_preprocessor_config(path: str | os.PathLike) -> dict:
    """Reads an HF ``preprocessor_config.json`` into ViTImagePreprocessor arguments.

    Only the fields that change the pixels are taken: ``image_mean``,
    ``image_std``, ``rescale_factor`` and ``size``. Normalisation or rescaling
    switched off (``do_normalize``/``do_rescale`` false) becomes mean 0, std 1
    or a factor of 1.
    """
    with open(path) as f:
        hf = json.load(f)
    args = {}
    if hf.get("do_normalize", True):
        if "image_mean" in hf:
            args["image_mean"] = _per_channel(hf["image_mean"], "image_mean")
        if "image_std" in hf:
            args["image_std"] = _per_channel(hf["image_std"], "image_std")
    else:
        args["image_mean"], args["image_std"] = (0.0,) * 3, (1.0,) * 3
    if hf.get("do_rescale", True):
        if "rescale_factor" in hf:
            args["rescale_factor"] = float(hf["rescale_factor"])
    else:
        args["rescale_factor"] = 1.0
    size = hf.get("size")
    if isinstance(size, dict) and "height" in size and "width" in size:
        args["image_size"] = (int(size["height"]), int(size["width"]))
    elif isinstance(size, dict) and "shortest_edge" in size:
        args["image_size"] = (int(size["shortest_edge"]),) * 2
    elif isinstance(size, int):
        args["image_size"] = (size, size)
    return args


def _per_channel(value, name):
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    if len(value) != 3:
        raise ValueError(f"preprocessor_config.json: {name} must have 3 values, got {value!r}")
    return tuple(float(v) for v in value)
