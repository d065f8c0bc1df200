"""Data sources, splits, corrupt files and the tf.data pipelines."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from tests.training.conftest import COLOURS, SMALL_VIT


def test_image_folder_lists_classes_in_sorted_order(colour_folder):
    from keras_vit.training.data import image_folder

    dataset = image_folder(colour_folder)
    assert dataset.class_names == sorted(COLOURS)
    assert dataset.size == 36
    assert np.bincount(dataset.labels).tolist() == [12, 12, 12]
    # Every file sits in the folder of its label.
    for path, label in zip(dataset.paths, dataset.labels, strict=True):
        assert f"/{dataset.class_names[label]}/" in path


def test_image_folder_errors_are_clear(tmp_path):
    from keras_vit.training.data import DataError, image_folder

    with pytest.raises(DataError, match="does not exist"):
        image_folder(tmp_path / "missing")
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match="at least two classes"):
        image_folder(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not an image")
    (tmp_path / "only" / "a.png").unlink()
    with pytest.raises(DataError, match="No images"):
        image_folder(tmp_path)


def test_stratified_split_is_seeded_and_keeps_class_shares(colour_folder):
    from keras_vit.training.data import image_folder, stratified_split

    dataset = image_folder(colour_folder)
    train, validation = stratified_split(dataset, 0.25, seed=3)
    again_train, again_validation = stratified_split(dataset, 0.25, seed=3)
    _, other_validation = stratified_split(dataset, 0.25, seed=4)
    assert validation.paths == again_validation.paths and train.paths == again_train.paths
    assert validation.paths != other_validation.paths
    assert np.bincount(validation.labels).tolist() == [3, 3, 3]
    assert np.bincount(train.labels).tolist() == [9, 9, 9]
    assert not set(train.paths) & set(validation.paths)


def test_validation_folder_must_not_add_classes(colour_folder, tmp_path):
    from keras_vit.training.data import DataError, load_data
    from tests.training.conftest import write_colour_folder

    extra = write_colour_folder(tmp_path / "validation", per_class=2)
    (extra / "purple").mkdir()
    with pytest.raises(DataError, match="purple"):
        load_data(colour_folder, validation=extra)


def test_corrupt_files_are_skipped_with_a_warning(colour_folder, caplog):
    from keras_vit.training.data import load_data

    truncated = colour_folder / "red" / "truncated.png"
    truncated.write_bytes((colour_folder / "red" / "001.png").read_bytes()[:40])
    empty = colour_folder / "blue" / "empty.jpg"
    empty.write_bytes(b"")
    text = colour_folder / "green" / "text.png"
    text.write_text("this is not a PNG file")
    with caplog.at_level(logging.WARNING):
        splits = load_data(colour_folder, validation_split=0)
    assert splits.train.size == 36
    assert not {str(truncated), str(empty), str(text)} & set(splits.train.paths)
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "Skipping 3 files" in warning
    for path in (truncated, empty, text):
        assert str(path) in warning


def test_corrupt_files_fail_when_asked(colour_folder):
    from keras_vit.training.data import DataError, load_data

    (colour_folder / "red" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match=r"1 of 37 files .*/red/bad\.png"):
        load_data(colour_folder, on_corrupt="error")


def test_unverified_corrupt_file_stops_training_with_an_explanation(colour_folder, tmp_path):
    from keras_vit.training import train
    from keras_vit.training.data import DataError

    (colour_folder / "red" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match="failed to decode during training"):
        train(
            None,
            colour_folder,
            tmp_path / "out",
            model_config=SMALL_VIT,
            epochs=1,
            batch_size=8,
            verify_images=False,
            validation_split=0,
            tensorboard=False,
            verbose=0,
        )


@pytest.mark.parametrize(
    "prefix, module, hint",
    [
        ("tfds:", "tensorflow_datasets", "pip install tensorflow-datasets"),
        ("hf:", "datasets", "pip install datasets"),
    ],
)
def test_missing_optional_packages_give_install_hints(monkeypatch, prefix, module, hint):
    """The package is made absent (a None entry in sys.modules fails its import), whether or
    not this machine has it installed."""
    import sys

    from keras_vit.training.data import DataError, load_data

    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(DataError, match=hint) as raised:
        load_data(prefix + "beans")
    assert isinstance(raised.value.__cause__, ImportError)


def test_eval_pipeline_scores_like_the_raw_image(colour_folder):
    """Evaluation pixels are exactly what the in-graph preprocessing makes of the raw image."""
    import tensorflow as tf
    from PIL import Image

    from keras_vit import ViTClassifier
    from keras_vit.training.data import image_folder
    from keras_vit.training.pipeline import eval_pipeline

    dataset = image_folder(colour_folder)
    model = ViTClassifier(**SMALL_VIT, num_classes=3)
    images, labels = next(iter(eval_pipeline(dataset, model.image_size, batch_size=6)))
    assert images.shape == (6, 16, 16, 3) and images.dtype == tf.float32
    batched = model.predict_on_batch(images)
    for i in range(6):
        # PIL decodes (a reference decoder); the model resizes the raw image itself.
        raw = np.asarray(Image.open(dataset.paths[i]).convert("RGB"))
        if dataset.paths[i].endswith(".png"):
            single = model.predict_on_batch(raw[None])
            np.testing.assert_allclose(batched[i], single[0], rtol=1e-5, atol=1e-5)
        assert labels[i].numpy().argmax() == dataset.labels[i]


def test_the_decoder_is_traced_once_for_every_pipeline_of_a_size(colour_folder):
    """The image check, training and evaluation pipelines share one traced decoder per
    size, which decodes as ``keras_vit.decode.decode_image`` itself does."""
    import tensorflow as tf

    from keras_vit.decode import decode_image as reference
    from keras_vit.decode import traced
    from keras_vit.training import data as data_lib
    from keras_vit.training.pipeline import eval_pipeline, train_pipeline

    dataset = data_lib.image_folder(colour_folder)  # the image check: its own 16 x 16 size
    size = (24, 40)  # a size no other test uses: this test makes its first trace
    decoder = traced(reference, size, ())
    for _ in range(2):
        eval_pipeline(dataset, size, batch_size=4)
        train_pipeline(dataset, size, batch_size=4, seed=0)
    assert decoder.experimental_get_tracing_count() == 1
    encoded = tf.io.read_file(dataset.paths[0])
    np.testing.assert_array_equal(
        data_lib.decode_image(encoded, size).numpy(), reference(encoded, size).numpy()
    )


def test_train_pipeline_is_seeded_and_changes_every_epoch(colour_folder):
    from keras_vit.training.data import image_folder
    from keras_vit.training.pipeline import AugmentConfig, train_pipeline

    dataset = image_folder(colour_folder)

    def batches(seed):
        pipeline = train_pipeline(dataset, (16, 16), 8, AugmentConfig(), seed=seed, cache=True)
        return [[b[0].numpy() for b in pipeline] for _ in range(2)]  # two epochs

    first, again, other = batches(1), batches(1), batches(2)
    assert len(first[0]) == 36 // 8  # the partial batch is dropped
    np.testing.assert_array_equal(first[0][0], again[0][0])
    np.testing.assert_array_equal(first[1][2], again[1][2])
    assert not np.array_equal(first[0][0], first[1][0])  # a new epoch reshuffles and re-augments
    assert not np.array_equal(first[0][0], other[0][0])
    assert first[0][0].shape == (8, 16, 16, 3)
    assert 0.0 <= first[0][0].min() and first[0][0].max() <= 255.0


def test_mixup_and_randaugment_keep_shapes_and_label_mass(colour_folder):
    from keras_vit.training.data import image_folder
    from keras_vit.training.pipeline import AugmentConfig, train_pipeline

    augment = AugmentConfig(randaugment_ops=2, mixup_alpha=0.4)
    pipeline = train_pipeline(image_folder(colour_folder), (16, 16), 8, augment, seed=0)
    images, labels = next(iter(pipeline))
    assert images.shape == (8, 16, 16, 3) and labels.shape == (8, 3)
    np.testing.assert_allclose(labels.numpy().sum(axis=1), 1.0, rtol=1e-6)
    # Mixed-up labels are soft: not every row is one-hot any more.
    assert (labels.numpy().max(axis=1) < 1.0).any()


def test_bad_augment_settings_are_rejected():
    from keras_vit.training.pipeline import AugmentConfig

    with pytest.raises(ValueError, match="crop_scale"):
        AugmentConfig(crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="mixup_alpha"):
        AugmentConfig(mixup_alpha=-1)


def test_digits_folder_is_a_stratified_png_image_folder(tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    from keras_vit.training.digits import _stratified_mask, write_digits

    folder = write_digits(tmp_path / "a", image_size=16)
    names = list((tmp_path / "a").rglob("*.png"))
    assert folder.num_train + folder.num_test == len(names) == 1797
    targets = load_digits().target
    np.testing.assert_array_equal(
        _stratified_mask(targets, 0.2, 0), _stratified_mask(targets, 0.2, 0)
    )
    counts = np.bincount(targets)
    for digit in range(10):
        held_out = len(list((folder.test_dir / str(digit)).glob("*.png")))
        assert held_out == round(0.2 * counts[digit])
    image = Image.open(next(folder.test_dir.glob("7/*.png")))
    assert image.size == (16, 16) and image.mode == "RGB"
    # The written pixels are the digit, upscaled: the 8x8 downscale matches the original.
    index = int(Path(image.filename).stem)
    small = np.asarray(image.convert("L").resize((8, 8), Image.Resampling.BOX), "float32")
    original = load_digits().images[index] * 255 / 16
    assert np.corrcoef(small.ravel(), original.ravel())[0, 1] > 0.9
