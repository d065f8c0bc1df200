"""``SavedModelHandler`` / ``ImageClassifier``: one bad image never costs its batch-mates."""

from __future__ import annotations

import numpy as np
import pytest

from tests.batch.conftest import LABELS, NEEDS_BEAM, encode

# 10 CPU-s in all (tests/support/cpu_report.py): `make test` runs it, `make test-fast` not
pytestmark = pytest.mark.slow

pytest.importorskip("apache_beam", reason=NEEDS_BEAM)


def assert_same(results: list[dict], expected: list[dict]) -> None:
    """Same labels; scores within 1e-6 (another batch size may round the last bit otherwise)."""
    assert len(results) == len(expected)
    for ours, theirs in zip(results, expected, strict=True):
        assert ours["label"] == theirs["label"] and ours["top_k_labels"] == theirs["top_k_labels"]
        np.testing.assert_allclose(ours["top_k_scores"], theirs["top_k_scores"], atol=1e-6)
        assert ours["score"] == ours["top_k_scores"][0]


@pytest.fixture(scope="module")
def classifier(exported):
    from serving.batch.model_handler import ImageClassifier

    return ImageClassifier(str(exported))


@pytest.fixture(scope="module")
def good_images() -> list[bytes]:
    from skimage import data

    photos = [data.chelsea(), data.astronaut(), data.coffee(), data.rocket(), data.camera()]
    return [encode(p, "JPEG" if i % 2 else "PNG") for i, p in enumerate(photos)]


def test_bad_images_anywhere_in_a_batch_leave_the_others_predicted(classifier, good_images):
    alone = classifier.classify(good_images)
    assert all("label" in r and r["label"] in LABELS for r in alone)
    bad = {0: b"", 3: good_images[1][:500], 6: b"GIF89a not really"}
    batch = list(good_images)
    for position in sorted(bad):
        batch.insert(position, bad[position])
    calls = classifier.calls
    results = classifier.classify(batch)
    # One call per bad image, one for the rest: the good ones are never retried one by one.
    assert classifier.calls - calls == len(bad) + 1
    good_results = [r for i, r in enumerate(results) if i not in bad]
    assert_same(good_results, alone)
    assert "empty string" in results[0]["error"]
    assert "truncated" in results[3]["error"]
    assert "GIF" in results[6]["error"]


def test_a_batch_over_the_request_pixel_budget_is_split_not_dead_lettered(tmp_path):
    from keras_vit import ViTClassifier
    from serving.batch.model_handler import ImageClassifier
    from serving.export import export_saved_model
    from tests.conftest import TINY_CONFIG

    model = ViTClassifier(**TINY_CONFIG, labels=LABELS)
    # 64x64 PNGs are 4096 pixels: two fit in a request, three do not.
    path = export_saved_model(model, tmp_path / "vit", max_request_pixels=10_000)
    rng = np.random.default_rng(1)
    images = [encode(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "PNG") for _ in range(5)]
    too_large = encode(rng.integers(0, 256, (120, 120, 3), dtype=np.uint8), "PNG")
    classifier = ImageClassifier(str(path))
    one_by_one = [classifier.classify([image])[0] for image in images]
    results = classifier.classify([*images, too_large])
    assert_same(results[:5], one_by_one)
    assert results[5]["error"].startswith("the images of this request add up to 14400 pixels")


def test_handler_batches_at_the_fixed_size_and_shares_only_when_asked(exported):
    from serving.batch.model_handler import SavedModelHandler

    handler = SavedModelHandler(str(exported), batch_size=8)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 8, "max_batch_size": 8}
    assert not handler.share_model_across_processes()
    assert SavedModelHandler(str(exported), share_model=True).share_model_across_processes()
    assert handler.get_num_bytes([b"ab", b"cde"]) == 5
    with pytest.raises(ValueError, match="at least 1"):
        SavedModelHandler(str(exported), batch_size=0)
