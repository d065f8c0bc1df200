"""Journey 3: train from data written by Hugging Face ``datasets``, offline, via ``--data hf:``.

The beans guide loads its data with ``datasets``. Here the library itself
writes the data locally: ``DatasetDict.save_to_disk`` with an ``Image`` and a
``ClassLabel`` feature. ``keras-vit train --data hf:PATH`` fine-tunes the
headless in21k checkpoint on it with ``HF_DATASETS_OFFLINE=1`` and takes the
labels from the ``ClassLabel``. (A plain imagefolder read by ``load_dataset``,
``--data hf:FOLDER``, is the resume journey's data.)
"""

from __future__ import annotations

import json

import pytest

from tests.journeys.conftest import CLASS_PHOTOS

pytestmark = pytest.mark.slow  # a journey: keras-vit in fresh processes


def _save_to_disk(photo_folder, path):
    import datasets

    labels = sorted(CLASS_PHOTOS)
    files = sorted(p for p in photo_folder.glob("*/*") if p.suffix in (".jpg", ".png"))
    features = datasets.Features(
        {"image": datasets.Image(), "labels": datasets.ClassLabel(names=labels)}
    )
    rows = {
        "image": [str(p) for p in files],
        "labels": [labels.index(p.parent.name) for p in files],
    }
    dataset = datasets.Dataset.from_dict(rows, features=features)
    # Embedded bytes, as a dataset pulled from the hub and saved again holds them.
    dataset = dataset.map(lambda row: row, features=features)
    datasets.DatasetDict({"train": dataset}).save_to_disk(str(path))
    return path


def test_save_to_disk_dataset_trains_offline(checkpoints, photo_folder, tmp_path, journey):
    pytest.importorskip("datasets", reason="the hf: source needs the datasets package")
    data = _save_to_disk(photo_folder, tmp_path / "saved")
    run_dir = tmp_path / "run"
    trained = journey.run(
        "train",
        "train",
        "--model",
        str(checkpoints / "in21k_tf"),
        "--data",
        f"hf:{data}",
        "--output",
        str(run_dir),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--validation-split",
        "0.25",
        "--no-tensorboard",
        env={"HF_DATASETS_CACHE": str(tmp_path / "hf-cache")},  # the user's cache stays clean
    )
    assert "3 classes" in trained.stdout
    assert (run_dir / "labels.txt").read_text().splitlines() == sorted(CLASS_PHOTOS)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1
    assert metrics["validation"]["examples"] == 6  # a stratified quarter of 24 images
