"""Attention rollout (Abnar & Zuidema, 2020, "Quantifying Attention Flow in Transformers").

For every block the heads are averaged, the identity is added (the residual
connection) and the rows are renormalised; the blocks' matrices are multiplied
(last block on the left), and the class token's row over the patches is the map.
"""

from __future__ import annotations

from keras import ops

from keras_vit.explain.attention import forward_with_attention, patch_grid


def rollout(attentions, grid: tuple[int, int]):
    """Rollout of a list of ``(batch, heads, N, N)`` attention tensors.

    Returns ``(batch, grid_rows, grid_cols)`` float32: the class token's rolled-out
    attention to each patch (the class token's own share is left out, so a row
    sums to less than one).
    """
    joint = None
    for probabilities in attentions:
        mean = ops.mean(ops.cast(probabilities, "float32"), axis=1)  # (B, N, N)
        tokens = ops.shape(mean)[-1]
        mixed = mean + ops.eye(tokens, dtype="float32")
        mixed = mixed / ops.sum(mixed, axis=-1, keepdims=True)
        joint = mixed if joint is None else ops.matmul(mixed, joint)
    return ops.reshape(joint[:, 0, 1:], (-1, grid[0], grid[1]))


def attention_rollout(model, images):
    """``(logits, maps)``: the model's logits and the rollout maps ``(batch, rows, cols)``."""
    logits, attentions = forward_with_attention(model, images)
    return logits, rollout(attentions, patch_grid(model))
