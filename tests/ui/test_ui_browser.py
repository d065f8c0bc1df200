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

from tests.support.servers import serving

# 18 CPU-s in all (tests/support/cpu_report.py): `make test` runs it, `make test-fast` not
pytestmark = pytest.mark.slow

LABELS = ["tabby cat", "tiger", "lynx", "astronaut", "rocket", "coffee mug", "espresso"]
CHROMIUM = os.environ.get("KERAS_VIT_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(
    os.environ.get(
        "KERAS_VIT_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "build" / "test-artifacts"
    )
)


@pytest.fixture(scope="module")
def playwright():
    """One Playwright per module: its sync API cannot run two at once in a thread."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"no chromium at {CHROMIUM} (`make test` installs Debian's chromium)")
    with sync_api.sync_playwright() as playwright:
        yield playwright


def _launch(playwright, *args: str):
    return playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=["--no-sandbox", *args]
    )


@pytest.fixture(scope="module")
def browser(playwright):
    browser = _launch(playwright)
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

    logits = np.asarray(model.predict_on_batch(read_image(photo, model.image_size)[None]))[0]
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
        request.add_header("X-Keras-Vit-Token", ui.guard.token)  # a local script's request
        request.add_header("Content-Type", "application/octet-stream")
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


def test_evaluation_report_renders_offline(browser, model, tmp_path):
    """report.html in chromium with every network request refused: all figures still show."""
    from PIL import Image

    from keras_vit.evaluate.predictors import LocalPredictor
    from keras_vit.evaluate.runner import evaluate
    from keras_vit.training.data import image_folder

    rng = np.random.default_rng(1)
    for label in LABELS[:3]:
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / label / f"{i}.png")
    data = image_folder(tmp_path / "data")
    evaluate(LocalPredictor(model), data, tmp_path / "report", batch_size=4, progress=False)

    requested = []
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    try:

        def refuse_network(route):
            requested.append(route.request.url)
            if route.request.url.startswith("file:"):
                route.continue_()
            else:
                route.abort()

        page.route("**/*", refuse_network)
        page.goto((tmp_path / "report" / "report.html").as_uri())
        loaded = page.evaluate(
            "Array.from(document.images).map((i) => i.complete && i.naturalWidth > 0)"
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        heading = page.text_content("h1")
    finally:
        page.close()
    assert heading == "Evaluation report"
    assert loaded == [True] * 4
    assert all(url.startswith("file:") for url in requested)


def test_ui_command_serves_on_loopback(model, tmp_path):
    """``keras-vit ui --model FILE --port 0`` prints its URL, answers /api/info, stops on SIGINT."""
    import json
    import select
    import signal
    import subprocess
    import sys

    path = tmp_path / "tiny.keras"
    model.save(path)
    command = [sys.executable, "-m", "keras_vit", "ui", "--model", str(path), "--port", "0"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 180)
        assert ready, "keras-vit ui printed nothing within 180 s"
        line = process.stdout.readline()
        assert line.startswith("keras-vit ui: http://127.0.0.1:"), line
        url = line.split()[2]
        with urllib.request.urlopen(url + "api/info", timeout=30) as response:
            info = json.loads(response.read())
        assert info["explain"] is True and "in-process" in info["model"]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    assert process.returncode == 0


# What another site open in the same browser tries against the page: a simple (no
# preflight) POST, a POST with a guessed token (needs a preflight), reading the API.
ATTACK_JS = """
async (target) => {
  const out = {};
  try {
    await fetch(target + "api/predict", {method: "POST", mode: "no-cors",
      headers: {"Content-Type": "text/plain"}, body: "\\xff\\xd8\\xff not a photo"});
    out.simple = "sent";
  } catch (error) { out.simple = "blocked"; }
  try {
    await fetch(target + "api/predict", {method: "POST", body: "x",
      headers: {"X-Keras-Vit-Token": "guess", "Content-Type": "application/octet-stream"}});
    out.with_token = "answered";
  } catch (error) { out.with_token = "blocked"; }
  try {
    out.read = JSON.stringify(await (await fetch(target + "api/info")).json());
  } catch (error) { out.read = "blocked"; }
  return out;
}
"""


def test_another_site_in_the_browser_cannot_use_the_page(browser):
    """A page of another origin (here: another port on 127.0.0.1) in the same browser."""
    from keras_vit.ui.app import UIServer
    from tests.ui.raw_http import StubBackend

    target = UIServer(StubBackend(), port=0).start()
    other = UIServer(StubBackend(), port=0).start()
    page = browser.new_page()
    try:
        page.goto(other.url + "api/info")  # a document of that origin without the page's CSP
        shown = page.evaluate(ATTACK_JS, target.url)
    finally:
        page.close()
        other.stop()
        target.stop()
    assert shown == {"simple": "sent", "with_token": "blocked", "read": "blocked"}
    assert target.backend.calls == 0  # the simple POST reached the page and was refused


def test_dns_rebinding_in_the_browser_gets_421(playwright):
    """Chromium resolving evil.example to 127.0.0.1 (what a rebinding DNS server does)."""
    from keras_vit.ui.app import UIServer
    from tests.ui.raw_http import StubBackend

    ui = UIServer(StubBackend(), port=0).start()
    try:
        rebinding = _launch(
            playwright, "--no-proxy-server", "--host-resolver-rules=MAP evil.example 127.0.0.1"
        )
        try:
            page = rebinding.new_page()
            response = page.goto(f"http://evil.example:{ui.port}/")
            status, text = response.status, page.text_content("body")
            own = page.goto(f"http://localhost:{ui.port}/")  # the same browser, own name
            own_status = own.status
        finally:
            rebinding.close()
    finally:
        ui.stop()
    assert status == 421 and "DNS rebinding" in text
    assert ui.guard.token not in text
    assert own_status == 200
