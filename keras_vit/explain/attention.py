"""Attention probabilities of every encoder block, computed from the blocks' own weights.

The encoder blocks may compute attention with a fused kernel that never
materialises the probabilities (``keras.ops.dot_product_attention``), so this
module runs the classifier's forward pass itself, layer by layer, looked up by
name (``preprocessing``, ``patch_embedding``, ``class_token``,
``position_embedding``, ``encoder_block_{i}`` with its ``norm_1``,
``attention``, ``norm_2``, ``mlp_dense_1``, ``mlp_dense_2``, then
``encoder_norm``, ``pooling``, ``pre_logits``, ``head``). Its logits equal the
model's (a test checks it), and the probabilities are the ones that produced them,
which is what gradients with respect to them need.
"""

from __future__ import annotations

import math

from keras import ops


def forward_with_attention(model, images):
    """Runs ``model`` (a ``ViTClassifier``) in inference mode, keeping the attention maps.

    Args:
        model: a ``keras_vit.ViTClassifier``.
        images: NHWC RGB pixels in ``[0, 255]``, any size (the model's
            preprocessing layer resizes them).

    Returns:
        ``(logits, attentions)``: logits ``(batch, num_classes)`` and a list with
        one float32 tensor ``(batch, heads, tokens, tokens)`` per encoder block,
        rows summing to one (``tokens`` = 1 class token + grid patches).
    """
    x = model.get_layer("preprocessing")(images)
    x = model.get_layer("patch_embedding")(x)
    x = model.get_layer("class_token")(x)
    x = model.get_layer("position_embedding")(x)
    attentions = []
    for i in range(model.num_layers):
        block = model.get_layer(f"encoder_block_{i}")
        x, probabilities = block_with_attention(block, x)
        attentions.append(probabilities)
    x = model.get_layer("encoder_norm")(x)
    x = model.get_layer("pooling")(x)
    if model.representation_size:
        x = model.get_layer("pre_logits")(x)
    return model.get_layer("head")(x), attentions


def block_with_attention(block, x):
    """One pre-LN encoder block in inference mode: ``(output, probabilities)``."""
    y, probabilities = self_attention(block, block.norm_1(x))
    x = x + y
    y = block.mlp_dense_2(block.mlp_dense_1(block.norm_2(x)))
    return x + y, probabilities


def self_attention(block, x):
    """Multi-head self-attention with the kernels of ``block.attention``.

    Returns the attention output ``(batch, tokens, hidden_dim)`` and the
    probabilities ``softmax(q k^T / sqrt(d))`` as float32 ``(batch, heads, tokens, tokens)``.
    """
    mha = block.attention
    heads, hidden = block.num_heads, block.hidden_dim
    head_dim = hidden // heads

    def project(dense):
        kernel = ops.cast(dense.kernel, x.dtype)  # (D, H, d)
        y = ops.einsum("bnd,dhk->bhnk", x, kernel)  # (B, H, N, d)
        bias = ops.reshape(ops.cast(dense.bias, x.dtype), (1, heads, 1, head_dim))
        return y + bias

    query = project(mha.query_dense)
    key = project(mha.key_dense)
    value = project(mha.value_dense)
    logits = ops.einsum("bhqk,bhnk->bhqn", query, key) / math.sqrt(head_dim)
    probabilities = ops.softmax(ops.cast(logits, "float32"), axis=-1)  # (B, H, N, N)
    context = ops.einsum("bhqn,bhnk->bqhk", ops.cast(probabilities, x.dtype), value)
    out_kernel = ops.cast(mha.output_dense.kernel, x.dtype)  # (H, d, D)
    y = ops.einsum("bqhk,hkd->bqd", context, out_kernel) + ops.cast(mha.output_dense.bias, x.dtype)
    return y, probabilities


def patch_grid(model) -> tuple[int, int]:
    """The ``(rows, cols)`` of patches the model sees."""
    return (model.image_size[0] // model.patch_size, model.image_size[1] // model.patch_size)
