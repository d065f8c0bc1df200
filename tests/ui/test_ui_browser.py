"""``keras-vit ui`` in a real headless browser: Debian's chromium driven by Playwright.

A real photo (skimage's ``chelsea``, a JPEG) is chosen in the page's file
input; the top-1 the page shows must be the client library's answer for the
same file, and the attention overlay must appear. Screenshots are saved as
test artefacts in ``$KERAS_VIT_TEST_ARTIFACTS`` (default ``build/test-artifacts``).
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.explain.serve_helpers import serving

LABELS = ["tabby cat", "tiger", "lynx", "astronaut", "rocket", "coffee mug", "espresso"]
CHROMIUM = os.environ.get("KERAS_VIT_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(
    os.environ.get(
        "KERAS_VIT_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "build" / "test-artifacts"
    )
)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"no chromium at {CHROMIUM} (`make test` installs Debian's chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def model():
    import keras

    from keras_vit import ViTClassifier
    from tests.conftest import TINY_CONFIG

    keras.utils.set_random_seed(3)
    return ViTClassifier(**TINY_CONFIG, labels=LABELS)


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("photos") / "chelsea.jpg"
    Image.fromarray(data.chelsea()).save(path, quality=92)
    return path


def _try_page(browser, url: str, photo: Path, screenshot: Path) -> dict:
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    try:
        page.goto(url)
        page.wait_for_function(
            "document.getElementById('model-name').textContent !== '…'", timeout=30_000
        )
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("#result:not([hidden])", timeout=60_000)
        page.wait_for_function(
            "document.getElementById('overlay').complete && "
            "document.getElementById('overlay').naturalWidth > 0",
            timeout=30_000,
        )
        bars = page.locator("#bars .bar")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
        return {
            "top1": page.text_content("#top1"),
            "bars": [bars.nth(i).locator(".name").text_content() for i in range(bars.count())],
            "overlay_visible": page.is_visible("#overlay"),
            "error": page.text_content("#error"),
        }
    finally:
        page.close()


def test_page_against_a_served_model(browser, model, photo, tmp_path):
    from keras_vit.ui.app import UIServer
    from keras_vit.ui.backends import ServerBackend
    from serving.client import ServingClient
    from serving.export import export_saved_model

    base = tmp_path / "models" / "vit"
    export_saved_model(model, base, with_explain=True)
    with serving(base) as server:
        target = f"127.0.0.1:{server.grpc_port}"
        with ServingClient(target, protocol="grpc") as client:
            expected = client.predict(str(photo))[0]
        ui = UIServer(ServerBackend(ServingClient(target, protocol="grpc")), port=0).start()
        try:
            shown = _try_page(browser, ui.url, photo, ARTIFACTS / "ui-served.png")
        finally:
            ui.stop()
            ui.backend.close()
    assert shown["error"] == ""
    assert shown["top1"] == expected.label
    assert shown["bars"] == [label for label, _ in expected.top_k]
    assert len(shown["bars"]) == 5
    assert shown["overlay_visible"]
    assert (ARTIFACTS / "ui-served.png").stat().st_size > 10_000


def test_page_in_process(browser, model, photo):
    from keras_vit.images import read_image
    from keras_vit.ui.app import UIServer
    from keras_vit.ui.backends import LocalBackend

    logits = np.asarray(model.predict_on_batch(read_image(photo)[None].astype("float32")))[0]
    ui = UIServer(LocalBackend(model), port=0).start()
    try:
        shown = _try_page(browser, ui.url, photo, ARTIFACTS / "ui-in-process.png")
    finally:
        ui.stop()
    assert shown["top1"] == LABELS[int(np.argmax(logits))]
    assert shown["overlay_visible"]


def test_bad_uploads_get_clear_errors(model):
    from keras_vit.ui import app
    from keras_vit.ui.app import UIServer
    from keras_vit.ui.backends import LocalBackend

    ui = UIServer(LocalBackend(model), port=0).start()

    def post(body: bytes, length: int | None = None):
        request = urllib.request.Request(ui.url + "api/predict", data=body, method="POST")
        if length is not None:
            request.add_header("Content-Length", str(length))
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    try:
        status, body = post(b"definitely not an image")
        assert status == 400 and b"not a usable image" in body
        status, body = post(b"", 0)
        assert status == 400 and b"empty upload" in body
        status, body = post(b"x", app.MAX_IMAGE_BYTES + 1)
        assert status == 413
        assert urllib.request.urlopen(ui.url, timeout=10).read().count(b"http") == 0
    finally:
        ui.stop()
