"""Labels are text: every figure of ``evaluate`` and ``explain`` shows hostile names literally.

matplotlib reads ``$...$`` as mathematics; a class folder named ``$\\foo{$``
used to stop ``evaluate`` with ParseFatalException, leaving only
predictions.jsonl. Each figure is read back from its Text objects: what
they hold must be the label (shortened by ``display_label`` when long), and
drawing must not fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from keras_vit import plot_text
from keras_vit.plot_text import display_label

LONG = "a-very-long-class-name-" * 6 + "end"
HOSTILE = [
    "$\\foo{$",  # the reported one: mathtext that does not parse
    "price $5 and $6",  # mathtext that parses, and must not be used
    "back\\slash {braces} ^_%&#~",
    "<img src=x onerror=alert(1)>&amp;",
    LONG,
    "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627",  # right-to-left text
    "cat \U0001f431 \u2764\ufe0f",  # emoji
]
COLOURS = [(30, 60, 220), (40, 200, 60), (220, 40, 40)]


def test_display_label_keeps_short_names_and_both_ends_of_long_ones():
    for label in HOSTILE[:4]:
        assert display_label(label) == label
    short = display_label(LONG)
    assert len(short) == plot_text.DEFAULT_LIMIT
    assert short.startswith(LONG[:20]) and short.endswith("end") and plot_text.ELLIPSIS in short
    assert display_label("a\tb\nc") == "a b c"


@pytest.fixture
def drawn(monkeypatch):
    """Every figure saved through plot_text.save_figure, with the strings of its Text objects."""
    from matplotlib.text import Text

    figures = []
    real = plot_text.save_figure

    def recording(figure, target, **kwargs):
        real(figure, target, **kwargs)  # draws: a mathtext error would raise here
        figures.append([t.get_text() for t in figure.findobj(Text) if t.get_visible()])

    for module in ("keras_vit.evaluate.plots", "keras_vit.explain.overlay"):
        monkeypatch.setattr(f"{module}.save_figure", recording)
    return figures


def _assert_shown_literally(texts: list[str], label: str):
    shown = display_label(label)
    assert any(shown in text for text in texts), (shown, texts)


@pytest.fixture
def hostile_folder(tmp_path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for index, label in enumerate(HOSTILE):
        (root / label).mkdir(parents=True)
        for i in range(2):
            noise = rng.normal(0, 40, size=(32, 32, 3))
            pixels = np.clip(np.asarray(COLOURS[index % 3]) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


@pytest.mark.slow  # a whole evaluate run: 10 CPU-s (tests/support/cpu_report.py)
def test_evaluate_writes_every_report_file_with_hostile_class_names(
    hostile_folder, tmp_path, drawn
):
    import keras

    from keras_vit import ViTClassifier
    from keras_vit.cli import main
    from tests.conftest import TINY_CONFIG

    keras.utils.set_random_seed(3)
    model = tmp_path / "tiny.keras"
    ViTClassifier(**TINY_CONFIG, labels=HOSTILE).save(model)
    out = tmp_path / "report"
    args = ["evaluate", "--model", str(model), "--data", str(hostile_folder), "--output", str(out)]
    assert main(args + ["--no-progress"]) == 0
    written = {p.name for p in out.iterdir()}
    expected = {"predictions.jsonl", "metrics.json", "report.html", "confusion_matrix.png"}
    expected |= {"confusion_matrix_normalized.png", "reliability.png"}
    assert expected <= written, written
    assert sorted(json.loads((out / "metrics.json").read_text())["labels"]) == sorted(HOSTILE)
    # The two confusion matrices carry every class name on both axes.
    for texts in drawn[:2]:
        for label in HOSTILE:
            assert texts.count(display_label(label)) == 2, (label, texts)
    if "misclassified.png" in written:
        gallery = drawn[3]
        assert any(text.startswith("true: ") for text in gallery)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<img src=x" not in page and "&lt;img src=x" in page


def test_gallery_titles_show_the_labels(drawn, tmp_path):
    import io

    from PIL import Image

    from keras_vit.evaluate import plots

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    items = [
        (buffer.getvalue(), true, predicted, 0.5)
        for true, predicted in zip(HOSTILE, HOSTILE[1:], strict=False)
    ]
    assert plots.gallery_png(items, tmp_path / "gallery.png").is_file()
    texts = drawn[0]
    for true, predicted in zip(HOSTILE, HOSTILE[1:], strict=False):
        title = f"true: {display_label(true, 30)}\npredicted: {display_label(predicted, 30)} (0.50)"
        assert title in texts


def test_explanation_figure_shows_labels_and_title_literally(drawn):
    from PIL import Image

    from keras_vit.explain import overlay

    image = np.zeros((16, 16, 3), np.uint8)
    top = [(label, 1.0 / (i + 2)) for i, label in enumerate(HOSTILE)]
    png = overlay.explanation_figure(image, np.eye(4), top, title="explained: $\\foo{$ \u2764")
    assert Image.open(__import__("io").BytesIO(png)).size == (800, 400)
    texts = drawn[0]
    assert "explained: $\\foo{$ \u2764" in texts
    for label in HOSTILE:
        _assert_shown_literally(texts, label)
