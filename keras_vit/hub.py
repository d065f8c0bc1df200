"""Hugging Face Hub ids (``google/vit-base-patch16-224``) -> a local checkpoint directory.

Only the files ViTClassifier needs are fetched with ``huggingface_hub``:
``config.json``, ``preprocessor_config.json`` (if any) and the weights,
``model.safetensors`` (or its shards) in preference to ``tf_model.h5``. They
land in the usual HF cache, so ``HF_HUB_OFFLINE=1`` reuses them without
network access.
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

import huggingface_hub
from huggingface_hub import constants, errors

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "tf_model.h5")


class HubDownloadError(OSError):
    """A hub id could not be resolved to local files (no network, unknown repo, no weights)."""


def looks_like_hub_id(source: str) -> bool:
    """``owner/name`` with hub-legal characters, e.g. ``google/vit-base-patch16-224``."""
    return bool(_HUB_ID.match(source)) and ".." not in source


def download_checkpoint(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
) -> Path:
    """Fetches a ViT checkpoint from the hub (or the cache) and returns its local directory."""
    unreachable = _unresolvable_endpoint()

    def fetch(filename):
        return huggingface_hub.hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=unreachable is not None,
        )

    where = f"{repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    try:
        config = Path(fetch("config.json"))
    except errors.LocalEntryNotFoundError as error:
        reason = unreachable or "the Hugging Face Hub is not reachable (or HF_HUB_OFFLINE is set)"
        raise HubDownloadError(
            f"Cannot load {where}: {reason} and the files are not in the local cache"
            f"{f' {os.fspath(cache_dir)!r}' if cache_dir else ''}. Download the checkpoint "
            "where the network allows (e.g. `hf download "
            f"{repo_id} config.json preprocessor_config.json model.safetensors`) and pass its "
            "local directory, or fill the cache and set HF_HUB_OFFLINE=1. "
            f"({type(error).__name__}: {error})"
        ) from error
    except errors.GatedRepoError as error:
        raise HubDownloadError(
            f"Cannot load {where}: the repository is gated; accept its terms on the hub and pass "
            f"token=... ({error})"
        ) from error
    except errors.RepositoryNotFoundError as error:
        raise HubDownloadError(
            f"Cannot load {where}: no such repository on the Hugging Face Hub (or it is private: "
            f"pass token=...). ({error})"
        ) from error
    except errors.RevisionNotFoundError as error:
        raise HubDownloadError(f"Cannot load {where}: no such revision. ({error})") from error
    except errors.EntryNotFoundError as error:
        raise HubDownloadError(
            f"Cannot load {where}: the repository has no config.json, so it is not a "
            f"transformers checkpoint. ({error})"
        ) from error
    except (errors.HfHubHTTPError, OSError) as error:
        raise HubDownloadError(f"Cannot load {where}: {type(error).__name__}: {error}") from error

    try:
        fetch("preprocessor_config.json")
    except (errors.EntryNotFoundError, errors.HfHubHTTPError, OSError):
        pass  # optional: the defaults of ViTImageProcessor apply
    tried = []
    for filename in WEIGHT_FILES:
        try:
            local = Path(fetch(filename))
        except (errors.EntryNotFoundError, errors.HfHubHTTPError, OSError) as error:
            tried.append(f"{filename} ({type(error).__name__})")
            continue
        if filename.endswith(".index.json"):
            _fetch_shards(local, fetch)
        return config.parent
    offline = all("LocalEntryNotFoundError" in t for t in tried)
    raise HubDownloadError(
        f"Cannot load {where}: none of its weight files could be fetched: {', '.join(tried)}. "
        + (
            "The hub is unreachable and they are not in the cache: pass a local directory. "
            if offline
            else ""
        )
        + "Only safetensors and TF HDF5 weights are read (pytorch_model.bin is a pickle and "
        "flax_model.msgpack is not supported)."
    )


def _unresolvable_endpoint() -> str | None:
    """Why the hub cannot be reached, when its host name does not resolve; else None.

    huggingface_hub retries a failed connection five times with back-off
    (about 25 s) before it falls back to the cache; a failed DNS lookup already
    tells us the outcome, so we go to the cache directly. With a proxy
    configured the local resolver proves nothing, so we let the client try.
    """
    if constants.HF_HUB_OFFLINE or any(
        os.environ.get(name)
        for name in (
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
        )
    ):
        return None
    host = urlparse(constants.ENDPOINT).hostname
    if not host:
        return None
    try:
        socket.getaddrinfo(host, 443)
    except OSError as error:
        return f"the hub host {host!r} cannot be resolved ({error})"
    return None


def _fetch_shards(index: Path, fetch) -> None:
    with open(index) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
    for shard in shards:
        fetch(shard)
