"""Presets: the list, the nearest-name suggestion, the ImageNet-1k labels and ``from_preset``'s
rule (load the preset's checkpoint, or ``load_weights=False`` for random weights)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from keras_vit import ViTClassifier, load_pretrained
from keras_vit.cli import main
from keras_vit.convert.common import CheckpointError
from keras_vit.hub import HubDownloadError
from keras_vit.imagenet import imagenet_1k_labels
from keras_vit.presets import ALIASES, CHECKPOINTS, PRESETS, parameter_count, suggest_presets

ROOT = Path(__file__).resolve().parents[1]


def test_imagenet_labels_are_the_1000_names_of_the_vit_checkpoints():
    labels = imagenet_1k_labels()
    assert len(labels) == 1000
    # Indices as in google/vit-base-patch16-224's config.json id2label (and transformers'
    # ViT docs: COCO's cats image is "Egyptian cat").
    assert labels[0] == "tench, Tinca tinca"
    assert labels[1] == "goldfish, Carassius auratus"
    assert labels[281] == "tabby, tabby cat"
    assert labels[285] == "Egyptian cat"
    assert labels[400] == "academic gown, academic robe, judge's robe"
    assert labels[999] == "toilet tissue, toilet paper, bathroom tissue"
    # Two ImageNet classes share a name (the bird and the machine), so names are not ids.
    assert labels[134] == labels[517] == "crane"
    assert len(set(labels)) == 999


def test_labels_file_has_the_config_json_id2label_layout():
    data = json.loads((ROOT / "keras_vit/data/imagenet-1k-id2label.json").read_text())
    assert list(data) == ["id2label"]
    assert list(data["id2label"]) == [str(i) for i in range(1000)]


def test_labels_file_is_package_data_in_the_built_wheel(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if built.returncode != 0 and "No module named" in built.stderr:
        pytest.skip(f"cannot build a wheel here: {built.stderr.strip()[-200:]}")
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("keras_vit-*.whl")
    assert "keras_vit/data/imagenet-1k-id2label.json" in zipfile.ZipFile(wheel).namelist()


def test_from_preset_without_weights_has_imagenet_labels_and_the_published_count():
    model = ViTClassifier.from_preset("Ti/16", load_weights=False)
    assert model.count_params() == 5_717_416 == parameter_count("vit-tiny-patch16-224")
    assert model.labels == imagenet_1k_labels()
    other = ViTClassifier.from_preset("Ti/16", load_weights=False, num_classes=3)
    assert other.labels == ["LABEL_0", "LABEL_1", "LABEL_2"]


def test_from_preset_loads_the_checkpoint_and_says_so_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubDownloadError, match="load_weights=False") as error:
        ViTClassifier.from_preset("vit-base-patch16-224", cache_dir=tmp_path)
    assert "google/vit-base-patch16-224" in str(error.value)


def test_from_preset_without_a_checkpoint_asks_for_load_weights_false():
    with pytest.raises(ValueError, match="no published checkpoint.*load_weights=False"):
        ViTClassifier.from_preset("vit-tiny-patch16-224")
    with pytest.raises(CheckpointError, match="no published checkpoint"):
        load_pretrained("S/16")


def test_checkpoints_name_presets_of_their_architecture():
    for name, repo in CHECKPOINTS.items():
        assert name in PRESETS and repo == f"google/{name}"


@pytest.mark.parametrize(
    "wrong, nearest",
    [("vit-nano", "vit-tiny-patch32-384"), ("vit-bse-patch16-224", "vit-base-patch16-224"),
     ("B16", "B/16")],
)  # fmt: skip
def test_a_wrong_name_suggests_the_nearest_preset(wrong, nearest, capsys):
    assert suggest_presets(wrong)[0] == nearest
    assert main(["info", "--model", wrong]) == 1
    err = capsys.readouterr().err
    assert f"Did you mean {nearest!r}" in err and "--list-presets" in err


def test_a_path_gets_no_preset_suggestion():
    assert suggest_presets("/data/models/resnet") == []


def test_list_presets_gives_every_preset_with_resolution_and_parameters(capsys):
    assert main(["info", "--list-presets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == list(PRESETS)
    by_name = {row["name"]: row for row in rows}
    assert by_name["vit-base-patch16-224"]["parameters"] == 86_567_656
    assert by_name["vit-base-patch16-384"]["resolution"] == 384
    assert by_name["vit-large-patch16-224"]["alias"] == "L/16"
    assert by_name["vit-base-patch16-224"]["checkpoint"] == "google/vit-base-patch16-224"
    assert main(["info", "--list-presets"]) == 0
    text = capsys.readouterr().out
    for name in list(PRESETS) + list(ALIASES):
        assert name in text
    assert "86,567,656" in text and "632,045,800" in text


def test_info_on_a_preset_prints_imagenet_labels(capsys):
    assert main(["info", "--model", "B/16", "--max-labels", "2"]) == 0
    out = capsys.readouterr().out
    assert "0: tench, Tinca tinca" in out and "998 more" in out
