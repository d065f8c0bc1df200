"""Learning-rate schedule, optimiser weight-decay exclusions and the loss."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.training.conftest import SMALL_VIT


def test_schedule_warms_up_linearly_then_follows_a_cosine():
    from keras_vit.training.optim import build_schedule

    peak, end, total, warmup = 3e-3, 1e-5, 1000, 100
    schedule = build_schedule(peak, total, warmup, end_learning_rate=end)
    for step in (0, 1, 25, 50, 99):
        assert float(schedule(step)) == pytest.approx(peak * step / warmup, rel=1e-5, abs=1e-12)
    for step in (100, 250, 550, 900, 1000):
        t = (step - warmup) / (total - warmup)
        expected = end + (peak - end) * 0.5 * (1 + math.cos(math.pi * t))
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5)
    assert float(schedule(100)) == pytest.approx(peak, rel=1e-6)  # the peak, right after warm-up
    assert float(schedule(1000)) == pytest.approx(end, rel=1e-4)
    assert float(schedule(5000)) == pytest.approx(end, rel=1e-4)  # stays at the end value


def test_schedule_without_warmup_starts_at_the_peak():
    from keras_vit.training.optim import build_schedule

    schedule = build_schedule(1e-3, 100, 0)
    assert float(schedule(0)) == pytest.approx(1e-3, rel=1e-6)
    assert float(schedule(50)) == pytest.approx(5e-4, rel=1e-5)
    with pytest.raises(ValueError, match="warmup_steps"):
        build_schedule(1e-3, 100, 101)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_weight_decay_skips_norms_biases_and_embeddings(name):
    """With zero gradients only the decay moves a variable: the excluded ones stay put."""
    import keras

    from keras_vit import ViTClassifier
    from keras_vit.training.optim import build_optimizer, decayed_variables

    model = ViTClassifier(**SMALL_VIT, num_classes=3)
    for variable in model.trainable_variables:  # non-zero everywhere, so decay is visible
        variable.assign(np.full(variable.shape, 0.5, "float32"))
    optimizer = build_optimizer(name, learning_rate=0.1, weight_decay=0.5, global_clipnorm=None)
    before = {v.path: _numpy(v) for v in model.trainable_variables}
    optimizer.apply(
        [keras.ops.zeros_like(v) for v in model.trainable_variables], model.trainable_variables
    )
    moved = {
        v.path for v in model.trainable_variables if not np.allclose(_numpy(v), before[v.path])
    }
    kernels = {v.path for v in model.trainable_variables if v.name == "kernel"}
    assert moved == kernels
    assert {v.path for v in decayed_variables(optimizer, model.trainable_variables)} == kernels
    excluded = {v.path for v in model.trainable_variables} - kernels
    assert {"class_token/class_token", "position_embedding/position_embedding"} <= excluded
    assert "encoder_block_0/attention/query/bias" in excluded  # a 2-D bias
    assert "encoder_block_0/norm_1/gamma" in excluded and "encoder_norm/beta" in excluded
    # Decoupled decay: w <- w - lr * wd * w.
    head = next(v for v in model.trainable_variables if v.path == "head/kernel")
    np.testing.assert_allclose(_numpy(head), 0.5 * (1 - 0.1 * 0.5), rtol=1e-6)


def test_global_clipnorm_and_unknown_optimizer():
    from keras_vit.training.optim import build_optimizer

    assert build_optimizer("adamw", global_clipnorm=1.0).global_clipnorm == 1.0
    assert build_optimizer("sgd", momentum=0.9).momentum == 0.9
    with pytest.raises(ValueError, match="adamw' or 'sgd"):
        build_optimizer("adagrad")


def test_label_smoothing_matches_the_formula():
    from keras_vit.training.optim import build_loss

    logits = np.array([[2.0, 0.0, -1.0]], "float32")
    labels = np.array([[1.0, 0.0, 0.0]], "float32")
    smoothed = labels * (1 - 0.3) + 0.3 / 3
    log_softmax = logits - np.log(np.exp(logits).sum())
    expected = -(smoothed * log_softmax).sum()
    assert float(build_loss(0.3)(labels, logits)) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError):
        build_loss(1.0)


def _numpy(variable) -> np.ndarray:
    import keras

    return np.array(keras.ops.convert_to_numpy(variable), copy=True)
