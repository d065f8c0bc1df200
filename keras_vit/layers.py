"""The ViT building blocks, named after Dosovitskiy et al. (2021).

Every layer takes its configuration as constructor arguments and returns
exactly those from ``get_config()``. Model code uses ``keras.ops`` only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import ops

_PACKAGE = "keras_vit"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PatchEmbedding(keras.layers.Layer):
    """Splits NHWC images into non-overlapping patches and projects each to ``hidden_dim``.

    A strided ``Conv2D`` (kernel HWIO ``(P, P, 3, D)``) is the linear projection
    of flattened patches (Eq. 1 of the paper); the output is a sequence
    ``(batch, num_patches, hidden_dim)`` in row-major patch order.
    """

    def __init__(self, hidden_dim: int, patch_size: int, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.patch_size = patch_size
        self.projection = keras.layers.Conv2D(
            hidden_dim,
            kernel_size=patch_size,
            strides=patch_size,
            padding="valid",
            data_format="channels_last",
            dtype=self.dtype_policy,
            name="projection",
        )

    def build(self, input_shape):
        self.projection.build(input_shape)

    def call(self, images):
        patches = self.projection(images)  # (B, H/P, W/P, D)
        shape = ops.shape(patches)
        return ops.reshape(patches, (shape[0], shape[1] * shape[2], self.hidden_dim))

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        if height is None or width is None:
            return (batch, None, self.hidden_dim)
        num = (height // self.patch_size) * (width // self.patch_size)
        return (batch, num, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim, patch_size=self.patch_size)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ClassToken(keras.layers.Layer):
    """Prepends the learned class token (``x_class`` of Eq. 1) to the patch sequence."""

    def build(self, input_shape):
        self.class_token = self.add_weight(
            name="class_token",
            shape=(1, 1, input_shape[-1]),
            initializer="zeros",
        )

    def call(self, tokens):
        batch = ops.shape(tokens)[0]
        token = ops.cast(self.class_token, tokens.dtype)
        token = ops.broadcast_to(token, (batch, 1, ops.shape(tokens)[-1]))
        return ops.concatenate([token, tokens], axis=1)

    def compute_output_shape(self, input_shape):
        length = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], length, input_shape[2])


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PositionEmbedding(keras.layers.Layer):
    """Adds learned absolute position embeddings ``E_pos`` of shape ``(1, sequence_length, D)``."""

    def __init__(self, sequence_length: int, **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = sequence_length

    def build(self, input_shape):
        self.position_embedding = self.add_weight(
            name="position_embedding",
            shape=(1, self.sequence_length, input_shape[-1]),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )

    def call(self, tokens):
        return tokens + ops.cast(self.position_embedding, tokens.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(sequence_length=self.sequence_length)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DropPath(keras.layers.Layer):
    """Stochastic depth: drops the whole residual branch per example while training."""

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # No weights to create: built from the start (as keras.layers.Dropout is), so that
        # Model.quantize(), which requires every layer to be built, accepts the model.
        self.built = True

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = keras.random.uniform(shape, seed=self.seed_generator, dtype=x.dtype) < keep
        return ops.where(mask, x / ops.cast(keep, x.dtype), ops.zeros_like(x))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class EncoderBlock(keras.layers.Layer):
    """One pre-LayerNorm Transformer encoder block (Eq. 2-3 of the paper).

    ``x + MSA(LN(x))`` then ``x + MLP(LN(x))``, with an exact-erf GELU MLP.
    Sub-layers: ``norm_1``, ``attention`` (``keras.layers.MultiHeadAttention``,
    kernels ``(D, heads, D/heads)`` as in Flax checkpoints), ``norm_2``,
    ``mlp_dense_1``, ``mlp_dense_2``.
    """

    def __init__(
        self,
        hidden_dim: int,
        num_heads: int,
        mlp_dim: int,
        dropout_rate: float = 0.0,
        attention_dropout_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_norm_epsilon: float = 1e-12,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim={hidden_dim} is not divisible by num_heads={num_heads}")
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.dropout_rate = dropout_rate
        self.attention_dropout_rate = attention_dropout_rate
        self.drop_path_rate = drop_path_rate
        self.layer_norm_epsilon = layer_norm_epsilon

        policy = self.dtype_policy
        self.norm_1 = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=policy, name="norm_1"
        )
        self.attention = keras.layers.MultiHeadAttention(
            num_heads=num_heads,
            key_dim=hidden_dim // num_heads,
            dropout=attention_dropout_rate,
            dtype=policy,
            name="attention",
        )
        self.attention_output_dropout = keras.layers.Dropout(dropout_rate, dtype=policy)
        self.norm_2 = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=policy, name="norm_2"
        )
        self.mlp_dense_1 = keras.layers.Dense(
            mlp_dim, activation="gelu", dtype=policy, name="mlp_dense_1"
        )
        self.mlp_dense_2 = keras.layers.Dense(hidden_dim, dtype=policy, name="mlp_dense_2")
        self.mlp_dropout = keras.layers.Dropout(dropout_rate, dtype=policy)
        self.drop_path = DropPath(drop_path_rate, dtype=policy)

    def build(self, input_shape):
        self.norm_1.build(input_shape)
        self.attention.build(input_shape, input_shape)
        self.norm_2.build(input_shape)
        self.mlp_dense_1.build(input_shape)
        self.mlp_dense_2.build(tuple(input_shape[:-1]) + (self.mlp_dim,))

    def call(self, x, training=None):
        y = self.norm_1(x)
        if self._matmul_projections(training):
            y = self._self_attention(y)
        else:
            y = self.attention(y, y, training=training)
        y = self.attention_output_dropout(y, training=training)
        x = x + self.drop_path(y, training=training)
        y = self._mlp(self.norm_2(x), training)
        return x + self.drop_path(y, training=training)

    def _mlp(self, x, training):
        """The MLP over the flattened tokens: ``(B, N, D)`` -> ``(B*N, D)`` -> ``(B, N, D)``.

        Same weights and values as the Dense layers on the 3-D tensor, but on the
        TensorFlow backend a Dense on 3-D input becomes a ``Tensordot`` whose
        reshape sits between MatMul and the bias add, so oneDNN cannot fuse
        MatMul + bias + GELU; in bf16 the unfused exact GELU alone took 16% of
        the encoder's op time (benchmarks/results/precision.md).
        """
        shape = ops.shape(x)
        y = ops.reshape(x, (-1, self.hidden_dim))
        y = self.mlp_dense_1(y)
        y = self.mlp_dropout(y, training=training)
        y = self.mlp_dense_2(y)
        y = self.mlp_dropout(y, training=training)
        return ops.reshape(y, (shape[0], shape[1], self.hidden_dim))

    def _matmul_projections(self, training) -> bool:
        """Whether ``_self_attention`` computes exactly what ``self.attention`` would.

        That is without attention dropout at work and with float (not quantized)
        kernels; LoRA-enabled kernels are fine (``kernel`` includes the update).
        Otherwise the block calls the Keras layer itself, which also ends in
        ``ops.dot_product_attention``.
        """
        dropout_active = bool(training) and self.attention_dropout_rate > 0
        denses = (
            self.attention.query_dense,
            self.attention.key_dense,
            self.attention.value_dense,
            self.attention.output_dense,
        )
        return not dropout_active and all(d.quantization_mode is None for d in denses)

    def _self_attention(self, x):
        """Multi-head self-attention with the weights of ``self.attention``.

        The attention itself is ``keras.ops.dot_product_attention`` (which the
        backend may run as flash attention), as in ``keras.layers.MultiHeadAttention``.
        Only the q/k/v and output projections differ: 2-D matmuls over the
        flattened tokens, where the Keras layer's einsums become a broadcast
        batch matmul plus a 4-D bias add on the TensorFlow backend, which
        measured slower on the CPU (see benchmarks/README.md).
        """
        mha = self.attention
        heads, head_dim = self.num_heads, self.hidden_dim // self.num_heads
        shape = ops.shape(x)
        batch, length = shape[0], shape[1]
        tokens = ops.reshape(x, (-1, self.hidden_dim))  # (B*N, D)

        def project(dense):
            kernel = ops.reshape(ops.cast(dense.kernel, x.dtype), (self.hidden_dim, -1))  # (D, H*d)
            bias = ops.reshape(ops.cast(dense.bias, x.dtype), (-1,))  # (H*d,)
            y = ops.matmul(tokens, kernel) + bias
            return ops.reshape(y, (batch, length, heads, head_dim))  # (B, N, H, d)

        query, key, value = (
            project(mha.query_dense),
            project(mha.key_dense),
            project(mha.value_dense),
        )
        # Softmax in float32 even under mixed precision (the op does so itself).
        context = ops.dot_product_attention(
            query, key, value, scale=1.0 / math.sqrt(head_dim)
        )  # (B, N, H, d)
        context = ops.reshape(context, (-1, heads * head_dim))  # (B*N, H*d)
        out_kernel = ops.cast(mha.output_dense.kernel, x.dtype)
        out_kernel = ops.reshape(out_kernel, (heads * head_dim, self.hidden_dim))  # (H*d, D)
        y = ops.matmul(context, out_kernel) + ops.cast(mha.output_dense.bias, x.dtype)
        return ops.reshape(y, (batch, length, self.hidden_dim))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            drop_path_rate=self.drop_path_rate,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ClassTokenPooling(keras.layers.Layer):
    """Takes the class-token representation ``z_L^0`` (Eq. 4) as the image representation."""

    def call(self, tokens):
        return tokens[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


def interpolate_position_embedding(position_embedding, grid_size, num_prefix_tokens=1):
    """Resizes a ``(1, prefix + h*w, D)`` position embedding to a new patch grid.

    The class token's embedding is kept aside and the square ``h x w`` grid is
    resized bicubically (as transformers and vision_transformer do) to
    ``grid_size = (new_h, new_w)``. Works on numpy arrays and tensors.
    """
    position_embedding = ops.convert_to_tensor(position_embedding, dtype="float32")
    prefix = position_embedding[:, :num_prefix_tokens]
    grid = position_embedding[:, num_prefix_tokens:]
    length, dim = grid.shape[1], grid.shape[2]
    old = int(math.isqrt(length))
    if old * old != length:
        raise ValueError(f"Position embedding grid of {length} tokens is not square")
    new_h, new_w = grid_size
    if (old, old) == (new_h, new_w):
        return ops.convert_to_numpy(position_embedding)
    grid = ops.reshape(grid, (1, old, old, dim))
    grid = ops.image.resize(grid, (new_h, new_w), interpolation="bicubic", antialias=False)
    grid = ops.reshape(grid, (1, new_h * new_w, dim))
    return ops.convert_to_numpy(ops.concatenate([prefix, grid], axis=1))


def pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``224`` or ``(224, 224)`` -> ``(224, 224)``: an image size as (height, width)."""
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"image_size must be an int or (height, width), got {size!r}")
    return size
