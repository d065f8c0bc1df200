"""Freezing the backbone for a linear probe, and unfreezing it later in the same run."""

from __future__ import annotations

import keras

# Layers that stay trainable in a linear probe: the classifier only.
HEAD_LAYERS = ("head",)


def freeze_backbone(model: keras.Model, head_layers: tuple[str, ...] = HEAD_LAYERS) -> None:
    """Makes every layer except ``head_layers`` non-trainable (a linear probe).

    Keras traces the train step with the trainable variables of the moment:
    call this before ``compile``/``fit``, or use :class:`UnfreezeBackbone`
    to change it during ``fit``.
    """
    missing = [name for name in head_layers if name not in {layer.name for layer in model.layers}]
    if missing:
        raise ValueError(f"Model has no layer named {missing}; cannot freeze around it")
    model.trainable = True
    for layer in model.layers:
        layer.trainable = layer.name in head_layers


def unfreeze_backbone(model: keras.Model) -> None:
    """Makes every layer trainable again."""
    model.trainable = True
    for layer in model.layers:
        layer.trainable = True


def backbone_is_frozen(model: keras.Model) -> bool:
    return any(not layer.trainable for layer in model.layers if layer.weights)


class UnfreezeBackbone(keras.callbacks.Callback):
    """Unfreezes the whole model at the start of epoch ``epoch`` (0-based) of ``fit``.

    The train step is traced again so that the newly trainable variables get
    gradients. The optimizer must already know them: build it on all the
    model's variables before freezing (``trainer.train`` does).
    Resuming a run from a backup past ``epoch`` unfreezes at its first epoch.
    """

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = int(epoch)

    def on_epoch_begin(self, epoch, logs=None):
        if epoch >= self.epoch and backbone_is_frozen(self.model):
            unfreeze_backbone(self.model)
            self.model.make_train_function(force=True)
            print(
                f"Epoch {epoch + 1}: backbone unfrozen, "
                f"{len(self.model.trainable_weights)} trainable weights"
            )
