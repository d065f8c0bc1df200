"""Mixed precision and XLA: a training step runs, and the variables stay float32."""

from __future__ import annotations

import numpy as np
import pytest

from tests.training.conftest import SMALL_VIT

# 11 CPU-s in all (tests/support/cpu_report.py): `make test` runs it, `make test-fast` not
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_step_keeps_float32_variables(policy):
    import keras

    from keras_vit import ViTClassifier
    from keras_vit.loading import adapt_model
    from keras_vit.training.optim import build_loss, build_optimizer

    base = ViTClassifier(**SMALL_VIT, num_classes=3)
    model = adapt_model(base, dtype=policy)
    assert model.dtype_policy.name == policy
    compute = "bfloat16" if policy == "mixed_bfloat16" else "float16"
    assert model.get_layer("encoder_block_0").compute_dtype == compute
    # The weights came over unchanged.
    for mine, theirs in zip(model.weights, base.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(mine), theirs.numpy())
    optimizer = build_optimizer("adamw", 1e-2)
    if policy == "mixed_float16":  # as trainer.train does: scale the loss against underflow
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, loss=build_loss(0.1))
    images = np.random.default_rng(0).uniform(0, 255, (4, 20, 20, 3)).astype("float32")
    labels = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    before = keras.ops.convert_to_numpy(model.get_layer("head").kernel).copy()
    # Dynamic loss scaling skips the steps whose scaled gradients overflow float16 and halves
    # the scale (from 2**15) each time: within 20 steps one must apply.
    for _ in range(20):
        logs = model.train_on_batch(images, labels, return_dict=True)
        head = keras.ops.convert_to_numpy(model.get_layer("head").kernel)
        if not np.array_equal(head, before):
            break
    assert np.isfinite(logs["loss"])
    assert {w.dtype for w in model.weights} == {"float32"}
    assert not np.array_equal(head, before)


def test_jit_compile_trains_and_matches_eager_step():
    """An XLA-compiled step gives the same update as the plain graph step."""
    import keras

    from keras_vit import ViTClassifier
    from keras_vit.training.optim import build_loss, build_optimizer

    images = np.random.default_rng(1).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    labels = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    results = []
    initial = None
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        model = ViTClassifier(**SMALL_VIT, num_classes=3)
        # Both steps start from the very same weights, whatever the random state.
        if initial is None:
            initial = model.get_weights()
        model.set_weights(initial)
        # SGD: its update is linear in the gradient, so float rounding differences between
        # XLA and the plain kernels stay small (Adam's first step amplifies them near zero).
        model.compile(optimizer=build_optimizer("sgd", 0.1), loss=build_loss(0.0), jit_compile=jit)
        loss = model.train_on_batch(images, labels)
        results.append((loss, [keras.ops.convert_to_numpy(w) for w in model.weights]))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-4)
    for plain, compiled in zip(results[0][1], results[1][1], strict=True):
        np.testing.assert_allclose(plain, compiled, rtol=1e-3, atol=1e-5)
