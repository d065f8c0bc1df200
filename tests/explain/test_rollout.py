"""Attention maps against references nobody here wrote: transformers' attentions and numpy.

The attention probabilities computed from the encoder blocks' weights must
equal transformers' ``output_attentions=True`` on the same checkpoint; the
rollout must equal a plain numpy rollout of *transformers'* attentions; the
gradient-weighted variant must equal the same rule applied to torch autograd's
gradients.
"""

from __future__ import annotations

import numpy as np
import pytest


def numpy_rollout(attentions: np.ndarray) -> np.ndarray:
    """Abnar & Zuidema (2020) in float64 numpy: ``attentions`` is (layers, B, H, N, N)."""
    layers, batch, _, tokens, _ = attentions.shape
    maps = []
    for b in range(batch):
        joint = np.eye(tokens)
        for layer in range(layers):
            a = attentions[layer, b].astype(np.float64).mean(axis=0) + np.eye(tokens)
            a = a / a.sum(axis=1, keepdims=True)
            joint = a @ joint
        maps.append(joint[0, 1:])
    return np.stack(maps)


def numpy_gradient_rollout(attentions: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Chefer et al. (2021), Eq. 5-6, in float64 numpy."""
    layers, batch, _, tokens, _ = attentions.shape
    maps = []
    for b in range(batch):
        relevance = np.eye(tokens)
        for layer in range(layers):
            weighted = np.maximum(gradients[layer, b] * attentions[layer, b], 0).mean(axis=0)
            relevance = relevance + weighted.astype(np.float64) @ relevance
        maps.append(relevance[0, 1:])
    return np.stack(maps)


@pytest.fixture(scope="module")
def converted(hf_attentions):
    from keras_vit.loading import load_pretrained

    return load_pretrained(str(hf_attentions / "pt"))


@pytest.fixture(scope="module")
def ref(hf_attentions):
    return dict(np.load(hf_attentions / "ref.npz"))


def test_attention_probabilities_match_transformers(converted, ref):
    from keras_vit.explain.attention import forward_with_attention

    logits, attentions = forward_with_attention(converted, ref["images"])
    np.testing.assert_allclose(np.asarray(logits), ref["logits"], atol=1e-4)
    ours = np.stack([np.asarray(a) for a in attentions])
    assert ours.shape == ref["attentions"].shape == (3, 2, 3, 17, 17)
    np.testing.assert_allclose(ours, ref["attentions"], atol=1e-5)
    # The model's own forward pass gives the same logits as the layer-by-layer one.
    np.testing.assert_allclose(np.asarray(converted(ref["images"])), np.asarray(logits), atol=1e-5)


def test_rollout_equals_numpy_rollout_of_transformers_attentions(converted, ref):
    from keras_vit.explain.rollout import attention_rollout

    _, maps = attention_rollout(converted, ref["images"])
    expected = numpy_rollout(ref["attentions"]).reshape(2, 4, 4)
    np.testing.assert_allclose(np.asarray(maps), expected, atol=1e-5)
    # A real map: not uniform, and images differ.
    assert np.ptp(expected[0]) > 1e-3
    assert not np.allclose(expected[0], expected[1], atol=1e-4)


def test_gradient_rollout_equals_the_rule_on_torch_gradients(converted, ref):
    from keras_vit.explain.gradient import gradient_rollout

    _, maps = gradient_rollout(converted, ref["images"])
    expected = numpy_gradient_rollout(ref["attentions"], ref["gradients"]).reshape(2, 4, 4)
    np.testing.assert_allclose(np.asarray(maps), expected, rtol=1e-3, atol=1e-5)
    # Class-specific: another class gives another map.
    other = (int(ref["top1"][0]) + 1) % 7
    _, other_maps = gradient_rollout(converted, ref["images"][:1], other)
    assert not np.allclose(np.asarray(other_maps)[0], expected[0], atol=1e-4)


def test_gradient_rollout_rejects_unknown_class(converted, ref):
    from keras_vit.explain.gradient import gradient_rollout

    with pytest.raises(ValueError, match="out of range for 7 classes"):
        gradient_rollout(converted, ref["images"][:1], 7)
