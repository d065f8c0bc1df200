"""Linear probe: freezing the backbone, and unfreezing it during fit."""

from __future__ import annotations

import numpy as np
import pytest

from tests.training.conftest import SMALL_VIT


def test_freeze_leaves_only_the_head_trainable_and_unfreeze_restores():
    from keras_vit import ViTClassifier
    from keras_vit.training.freeze import freeze_backbone, unfreeze_backbone

    model = ViTClassifier(**SMALL_VIT, num_classes=3)
    everything = len(model.trainable_weights)
    assert everything == len(model.weights) > 2
    freeze_backbone(model)
    assert [w.path for w in model.trainable_weights] == ["head/kernel", "head/bias"]
    assert len(model.non_trainable_weights) == everything - 2
    unfreeze_backbone(model)
    assert len(model.trainable_weights) == everything


@pytest.mark.slow  # a training run: 5.5 CPU-s (tests/support/cpu_report.py)
def test_unfreeze_at_epoch_trains_the_backbone_from_then_on(colour_folder, tmp_path):
    """Epoch 1 moves the head only; after unfreezing at epoch 2 the backbone moves too."""
    import keras

    from keras_vit import ViTClassifier
    from keras_vit.training import train

    seen = {}

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen[epoch] = {w.path: keras.ops.convert_to_numpy(w).copy() for w in self.model.weights}

    model = ViTClassifier(**SMALL_VIT, num_classes=3, labels=["blue", "green", "red"])
    start = {w.path: keras.ops.convert_to_numpy(w).copy() for w in model.weights}
    result = train(
        model,
        colour_folder,
        tmp_path / "probe",
        epochs=2,
        batch_size=8,
        learning_rate=1e-2,
        freeze_backbone=True,
        unfreeze_at_epoch=1,
        validation_split=0,
        tensorboard=False,
        verbose=0,
        callbacks=[Snapshot()],
    )
    backbone = "encoder_block_0/mlp_dense_1/kernel"
    np.testing.assert_array_equal(seen[0][backbone], start[backbone])
    assert not np.array_equal(seen[0]["head/kernel"], start["head/kernel"])
    assert not np.array_equal(seen[1][backbone], seen[0][backbone])
    # The saved model is fully trainable again, whatever the run froze.
    assert len(result.model.trainable_weights) == len(result.model.weights)
