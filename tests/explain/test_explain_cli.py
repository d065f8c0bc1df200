"""``keras-vit explain`` and ``keras-vit export --with-explain`` from the command line."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest

# 13 CPU-s in all (tests/support/cpu_report.py): `make test` runs it, `make test-fast` not
pytestmark = pytest.mark.slow

LABELS = ["tabby cat", "tiger", "lynx", "astronaut", "rocket", "coffee mug", "espresso"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    import keras

    from keras_vit import ViTClassifier
    from tests.conftest import TINY_CONFIG

    keras.utils.set_random_seed(5)
    path = tmp_path_factory.mktemp("explain_cli") / "tiny.keras"
    ViTClassifier(**TINY_CONFIG, labels=LABELS).save(path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    from PIL import Image
    from skimage import data

    root = tmp_path_factory.mktemp("explain_photos")
    paths = [root / "chelsea.jpg", root / "coffee.png"]
    Image.fromarray(data.chelsea()).save(paths[0], quality=90)
    Image.fromarray(data.coffee()).save(paths[1])
    return paths


def test_one_png_per_image_with_the_top3(model_file, photos, tmp_path, capsys):
    import keras
    from PIL import Image

    from keras_vit.cli import main
    from keras_vit.images import read_image

    out = tmp_path / "maps"
    assert (
        main(["explain", "--model", str(model_file), "--output", str(out), *map(str, photos)]) == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    model = keras.saving.load_model(model_file)
    for photo, line in zip(photos, lines, strict=True):
        written = out / f"{photo.stem}.png"
        with Image.open(written) as image:
            assert image.format == "PNG" and image.size == (800, 400)
        logits = np.asarray(model(read_image(photo, model.image_size)[None]))[0]
        top3 = [LABELS[i] for i in np.argsort(-logits)[:3]]
        shown = [pair.rsplit(":", 1)[0] for pair in line.split("\t")[2].split(", ")]
        assert shown == top3


def test_gradient_method_and_bad_arguments(model_file, photos, tmp_path, capsys):
    from keras_vit.cli import main

    base = ["explain", "--model", str(model_file), "--output", str(tmp_path / "g")]
    assert main([*base, "--method", "gradient", "--label", "tiger", str(photos[0])]) == 0
    assert (tmp_path / "g" / "chelsea.png").stat().st_size > 10_000
    capsys.readouterr()
    assert main([*base, "--label", "tiger", str(photos[0])]) == 2
    assert "--label needs --method gradient" in capsys.readouterr().err
    assert main([*base, "--method", "gradient", "--label", "zebra", str(photos[0])]) == 2
    assert "no label 'zebra'" in capsys.readouterr().err
    # A missing file is reported; the others are still drawn.
    assert main([*base, str(tmp_path / "missing.jpg"), str(photos[1])]) == 1
    assert "no such file" in capsys.readouterr().err
    assert (tmp_path / "g" / "coffee.png").exists()


def test_folders_and_recursive_as_predict_takes_them(model_file, photos, tmp_path, capsys):
    """``explain photos_test/5`` said ``is a directory``; it takes folders (and -r) now."""
    import shutil

    from keras_vit.cli import main

    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    shutil.copy(photos[0], folder / "chelsea.jpg")
    shutil.copy(photos[1], folder / "more" / "coffee.png")
    base = ["explain", "--model", str(model_file)]
    assert main([*base, "--output", str(tmp_path / "flat"), str(folder)]) == 0
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["chelsea.png"]
    capsys.readouterr()
    assert main([*base, "--output", str(tmp_path / "deep"), "-r", str(folder)]) == 0
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["chelsea.png", "coffee.png"]


def _reachable_ops(graph_def, output_names) -> collections.Counter:
    """Op types of the nodes the outputs depend on, through every function they call."""
    functions = {f.signature.name: f for f in graph_def.library.function}
    nodes = {n.name: n for n in graph_def.node}
    pending = [nodes[name.split(":")[0]] for name in output_names]
    seen_nodes, seen_functions, counts = set(), set(), collections.Counter()
    while pending:
        node = pending.pop()
        counts[node.op] += 1
        for value in node.attr.values():
            name = value.func.name if value.HasField("func") else None
            if name and name not in seen_functions and name in functions:
                seen_functions.add(name)
                pending.extend(functions[name].node_def)
        for source in node.input:
            source = source.lstrip("^").split(":")[0]
            if source in nodes and source not in seen_nodes:
                seen_nodes.add(source)
                pending.append(nodes[source])
    return counts


def _signature_ops(module, name: str) -> collections.Counter:
    function = module.signatures()[name]
    return _reachable_ops(function.graph.as_graph_def(), [t.name for t in function.outputs])


def test_export_with_explain_adds_the_signature(model_file, tmp_path, capsys):
    from tensorflow.core.protobuf import saved_model_pb2

    from keras_vit.cli import main

    out = tmp_path / "explained"
    assert main(["export", "--model", str(model_file), "--output", str(out), "--with-explain"]) == 0
    assert "explain          image_bytes -> label, score, attention_map" in capsys.readouterr().out
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((out / "1" / "saved_model.pb").read_bytes())
    signature = saved_model.meta_graphs[0].signature_def["explain"]
    assert sorted(signature.outputs) == ["attention_map", "label", "overlay_bytes", "score"]
    dims = [d.size for d in signature.outputs["attention_map"].tensor_shape.dim]
    assert dims == [-1, 4, 4]


def test_serving_default_runs_the_same_graph_with_explain(model_file):
    import keras

    from serving.export import ServingModule

    model = keras.saving.load_model(model_file)
    plain = ServingModule(model)
    explained = ServingModule(model, with_explain=True)
    assert "explain" not in plain.signature_names
    explain_ops = _signature_ops(explained, "explain")
    assert explain_ops["EncodePng"] >= 1 and explain_ops["Einsum"] > 0
    default_ops = _signature_ops(explained, "serving_default")
    # No rollout and no PNG in serving_default: it is the graph of an export without explain.
    assert default_ops == _signature_ops(plain, "serving_default")
    assert "EncodePng" not in default_ops
