"""Fine-tuning a tiny checkpoint written by transformers, and changing its resolution."""

from __future__ import annotations

import numpy as np
import pytest

# 20 CPU-s in all (tests/support/cpu_report.py): `make test` runs it, `make test-fast` not
pytestmark = pytest.mark.slow

# transformers' ViTConfig for a checkpoint that builds in well under a second.
HF_CONFIG = dict(
    image_size=32,
    patch_size=8,
    num_channels=3,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    hidden_act="gelu",
    layer_norm_eps=1e-12,
    num_labels=5,
)


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    """A randomly initialised TFViTForImageClassification saved with ``save_pretrained``."""
    tf_keras = pytest.importorskip("tf_keras", reason="transformers' TF models need tf-keras")
    transformers = pytest.importorskip("transformers")

    tf_keras.utils.set_random_seed(0)
    config = transformers.ViTConfig(**HF_CONFIG)
    model = transformers.TFViTForImageClassification(config)
    model(np.zeros((1, 3, 32, 32), "float32"))  # creates the weights
    directory = tmp_path_factory.mktemp("hf_vit")
    model.save_pretrained(directory)
    return directory, model


def test_fine_tuning_a_transformers_checkpoint_lowers_the_loss_and_exports(
    hf_checkpoint, colour_folder, tmp_path
):
    import tensorflow as tf

    from keras_vit.training import train

    directory, _ = hf_checkpoint
    result = train(
        str(directory),
        colour_folder,
        tmp_path / "tuned",
        epochs=4,
        batch_size=6,
        learning_rate=2e-3,
        warmup_steps=0,
        validation_split=0.25,
        tensorboard=False,
        verbose=0,
    )
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0] * 0.8, losses
    assert result.model.labels == ["blue", "green", "red"]  # a new head for the folder's classes
    assert result.model.num_classes == 3

    from serving.export import export_saved_model

    version = export_saved_model(result.model, tmp_path / "export" / "vit", version=1)
    serving = tf.saved_model.load(str(version)).signatures["serving_default"]
    png = (colour_folder / "red" / "001.png").read_bytes()
    outputs = serving(image_bytes=tf.constant([png]))
    exported_label = outputs["label"].numpy()[0].decode()
    keras_label = result.model.labels[int(np.argmax(result.model.predict_on_batch(_pixels(png))))]
    assert exported_label == keras_label
    assert exported_label in {"blue", "green", "red"}


def test_resolution_change_matches_transformers_interpolated_position_embeddings(hf_checkpoint):
    """Our model at 48 px (position grid 4x4 -> 6x6) embeds like transformers' own interpolation."""
    from keras_vit.loading import adapt_model, load_pretrained

    directory, hf_model = hf_checkpoint
    ours = adapt_model(load_pretrained(str(directory)), image_size=48)
    assert ours.get_layer("position_embedding").weights[0].shape == (1, 37, 32)
    image = np.random.default_rng(0).integers(0, 256, (2, 48, 48, 3)).astype("uint8")
    embedding = ours.embedding_model().predict_on_batch(image)

    pixels = (image.astype("float32") / 255.0 - 0.5) / 0.5  # ViTImageProcessor's defaults
    reference = hf_model.vit(
        np.transpose(pixels, (0, 3, 1, 2)), interpolate_pos_encoding=True
    ).last_hidden_state[:, 0]
    np.testing.assert_allclose(embedding, reference.numpy(), rtol=1e-4, atol=1e-4)


def _pixels(encoded: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))[None]
