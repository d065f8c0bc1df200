"""Version directories as TF Serving expects them: numbering, atomic publication, no overwrite.

TF Serving (``file_system_storage_path_source.cc``) serves the children of the
base path whose names are integers. These tests swap the SavedModel builder
for a one-variable module, so they exercise the directory handling in a
second each; the real signatures are tested in test_export_signatures.py.
"""

from __future__ import annotations

import json

import pytest


class OneVariableModule:
    """Stands in for serving.export.ServingModule: a trivial module with the four signatures."""

    def __new__(cls, model, *, labels_file=None, **settings):
        import tensorflow as tf

        from serving.export import SIGNATURES

        module = tf.Module()
        module.scale = tf.Variable(2.0)
        module.labels_file = tf.saved_model.Asset(labels_file)
        function = tf.function(
            lambda x: {"y": x * module.scale}, input_signature=[tf.TensorSpec([None], tf.float32)]
        )
        concrete = function.get_concrete_function()
        module.signatures = lambda: {name: concrete for name in SIGNATURES}
        return module


@pytest.fixture
def quick_export(monkeypatch, tiny_model):
    from serving import export

    monkeypatch.setattr(export, "ServingModule", OneVariableModule)
    images = [b"\xff\xd8\xff fake jpeg for the warm-up file"]

    def run(base, version=None, **options):
        return export.export_saved_model(tiny_model, base, version, warmup_images=images, **options)

    return run


def children(base):
    return sorted(child.name for child in base.iterdir())


def test_versions_count_up_from_the_highest_integer_directory(quick_export, tmp_path):
    base = tmp_path / "vit"
    assert quick_export(base).name == "1"
    assert quick_export(base).name == "2"
    (base / "7").mkdir()
    (base / "0012").mkdir()  # TF Serving reads this as version 12
    (base / "notes").mkdir()
    (base / "99.bak").mkdir()
    (base / "50").write_text("a file, not a version")
    assert quick_export(base).name == "13"
    assert quick_export(base, version=4).name == "4"
    assert children(base) == ["0012", "1", "13", "2", "4", "50", "7", "99.bak", "notes"]


def test_a_version_is_complete_when_it_appears_and_nothing_else_is_left(quick_export, tmp_path):
    base = tmp_path / "vit"
    path = quick_export(base)
    assert children(base) == ["1"]
    assert sorted(p.name for p in path.iterdir()) == [
        "assets", "assets.extra", "fingerprint.pb", "saved_model.pb", "variables",
    ]  # fmt: skip
    assert sorted(p.name for p in (path / "assets.extra").iterdir()) == [
        "keras_vit_export.json",
        "tf_serving_warmup_requests",
    ]
    assert (path / "assets" / "labels.txt").read_text().count("\n") == 7


def test_an_existing_version_is_refused_and_left_untouched(quick_export, tmp_path):
    from serving.export import ExportError

    base = tmp_path / "vit"
    quick_export(base, version=3, top_k=2)
    settings = base / "3" / "assets.extra" / "keras_vit_export.json"
    before = settings.read_bytes()
    with pytest.raises(ExportError, match="Version 3 already exists.*overwrite"):
        quick_export(base, version=3, top_k=4)
    assert settings.read_bytes() == before
    assert children(base) == ["3"]


def test_overwrite_replaces_the_version_in_one_step(quick_export, tmp_path):
    base = tmp_path / "vit"
    quick_export(base, version=3, top_k=2)
    (base / "3" / "stale-file").write_text("from the old version")
    quick_export(base, version=3, top_k=4, overwrite=True)
    settings = json.loads((base / "3" / "assets.extra" / "keras_vit_export.json").read_text())
    assert settings["top_k"] == 4
    assert not (base / "3" / "stale-file").exists()
    assert children(base) == ["3"]


def test_a_failed_export_leaves_no_version_and_no_partial_files(
    quick_export, tmp_path, monkeypatch
):
    from serving import warmup

    base = tmp_path / "vit"
    quick_export(base)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(warmup, "write_warmup_file", broken)
    with pytest.raises(OSError, match="disk full"):
        quick_export(base)
    assert children(base) == ["1"]


def test_unusable_arguments_are_rejected_before_writing(quick_export, tmp_path):
    from serving.export import ExportError

    afile = tmp_path / "file"
    afile.write_text("")
    with pytest.raises(ExportError, match="not a directory"):
        quick_export(afile)
    for options in ({"top_k": 0}, {"max_pixels": 0}, {"version": -1}):
        with pytest.raises(ValueError):
            quick_export(tmp_path / "vit", **options)
    assert not (tmp_path / "vit").exists() or children(tmp_path / "vit") == []


def test_top_k_above_the_class_count_is_capped(quick_export, tmp_path):
    path = quick_export(tmp_path / "vit", top_k=50)
    settings = json.loads((path / "assets.extra" / "keras_vit_export.json").read_text())
    assert settings["top_k"] == 7
