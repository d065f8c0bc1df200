"""The accuracy bar: a small ViT trained from scratch on the digits image folder reaches >= 95%.

The held-out accuracy is measured twice: by the trainer, and here from the
saved ``model.keras`` on the PNG files decoded by PIL, so that neither our
pipeline nor our metric code can flatter the number.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # 20 epochs of training


def test_digits_recipe_reaches_95_percent_on_held_out_images(tmp_path):
    import keras
    from PIL import Image

    from keras_vit.training import train
    from keras_vit.training.digits import write_digits
    from keras_vit.training.recipes import get_recipe

    folder = write_digits(tmp_path / "digits")
    assert (folder.num_train, folder.num_test) == (1438, 359)
    recipe = get_recipe("digits")
    assert (
        recipe["training"]["monitor"] is None
        and "early_stopping_patience" not in recipe["training"]
    )
    result = train(
        None,
        folder.train_dir,
        tmp_path / "model",
        model_config=recipe["model_config"],
        # Evaluated after every epoch for the curve only: the recipe keeps the last
        # epoch and has no early stopping, so nothing is chosen on these images.
        validation_data=folder.test_dir,
        test_data=folder.test_dir,
        verbose=2,
        **recipe["training"],
    )
    history = result.history
    assert result.metrics["best_epoch"] == recipe["training"]["epochs"]  # the last epoch is kept
    assert [row["epoch"] for row in history] == list(range(1, recipe["training"]["epochs"] + 1))
    curve = ", ".join(f"{row['val_accuracy']:.3f}" for row in history)
    print(f"validation accuracy per epoch: {curve}")
    print(f"held-out accuracy (trainer): {result.metrics['test']['accuracy']:.4f}")

    model = keras.saving.load_model(tmp_path / "model" / "model.keras")
    labels = (tmp_path / "model" / "labels.txt").read_text().splitlines()
    assert labels == [str(d) for d in range(10)]
    paths = sorted(folder.test_dir.glob("*/*.png"))
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    truth = np.array([labels.index(p.parent.name) for p in paths])
    predicted = model.predict(images, batch_size=128, verbose=0).argmax(axis=1)
    accuracy = float((predicted == truth).mean())
    print(f"held-out accuracy (saved model, PIL-decoded PNGs): {accuracy:.4f}")
    assert len(paths) == 359
    # Lossless PNGs: both decoders give the same pixels, so at most a rounding tie differs.
    assert abs(accuracy - result.metrics["test"]["accuracy"]) <= 1 / len(paths)
    assert accuracy >= 0.95
