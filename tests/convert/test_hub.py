"""Hub ids: served from the HF cache offline, and a clear error when neither works.

The network is never used: ``huggingface_hub``'s offline switch is turned on,
so these tests behave the same with or without internet access.
"""

from __future__ import annotations

import shutil

import keras
import numpy as np
import pytest

from keras_vit import load_pretrained
from keras_vit.hub import HubDownloadError, looks_like_hub_id
from tests.convert.hf_reference import reference
from tests.convert.parity import TOLERANCE

NAME = "h48_p8_s32"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _fill_cache(cache, repo_id, files):
    """The layout huggingface_hub writes: models--owner--name/{refs/main, snapshots/<commit>/}."""
    storage = cache / f"models--{repo_id.replace('/', '--')}"
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(COMMIT)
    snapshot = storage / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for file in files:
        shutil.copy(file, snapshot / file.name)


@pytest.mark.parametrize("folder", ["pt", "tf_h5"])
def test_hub_id_loads_from_the_cache_offline(hf_reference, tmp_path, offline, folder):
    source = hf_reference / NAME / folder
    _fill_cache(tmp_path, "test-org/tiny-vit", sorted(source.iterdir()))
    model = load_pretrained("test-org/tiny-vit", cache_dir=tmp_path)
    ref = reference(hf_reference, NAME)
    logits = keras.ops.convert_to_numpy(model(ref["images"]))
    assert np.abs(logits - ref["logits_tf"]).max() <= TOLERANCE
    assert model.labels == [f"LABEL_{i}" for i in range(7)]


def test_unreachable_hub_names_the_id_and_the_ways_out(tmp_path, offline):
    with pytest.raises(HubDownloadError) as info:
        load_pretrained("google/vit-base-patch16-224", cache_dir=tmp_path)
    message = str(info.value)
    assert "'google/vit-base-patch16-224'" in message
    assert "HF_HUB_OFFLINE" in message and "local directory" in message
    assert "No local file or directory 'google/vit-base-patch16-224' exists" in message
    assert isinstance(info.value, OSError)


def test_cached_config_without_weights_is_explained(hf_reference, tmp_path, offline):
    _fill_cache(tmp_path, "test-org/no-weights", [hf_reference / NAME / "pt" / "config.json"])
    with pytest.raises(HubDownloadError, match="none of its weight files") as info:
        load_pretrained("test-org/no-weights", cache_dir=tmp_path)
    assert "model.safetensors" in str(info.value) and "tf_model.h5" in str(info.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("google/vit-base-patch16-224", True),
        ("org/model.v2", True),
        ("vit-base", False),
        ("a/b/c", False),
        ("../x", False),
        ("/abs/path", False),
        ("org/../x", False),
    ],
)
def test_hub_id_syntax(text, expected):
    assert looks_like_hub_id(text) is expected


@pytest.fixture
def no_dns(monkeypatch):
    """A machine whose resolver cannot find the hub (no proxy configured)."""
    import socket

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for name in (
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)

    def fail(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)


def test_unresolvable_hub_goes_straight_to_the_cache(hf_reference, tmp_path, no_dns):
    with pytest.raises(HubDownloadError, match="'huggingface.co' cannot be resolved"):
        load_pretrained("google/vit-base-patch16-224", cache_dir=tmp_path)
    _fill_cache(tmp_path, "test-org/tiny-vit", sorted((hf_reference / NAME / "pt").iterdir()))
    assert load_pretrained("test-org/tiny-vit", cache_dir=tmp_path).num_classes == 7
