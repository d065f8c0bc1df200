"""TF Serving's REST API (port 8501), without TensorFlow."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from serving.client.batching import RequestSize
from serving.client.errors import MalformedResponseError
from serving.client.http import JsonHttp, new_session
from serving.client.results import ModelVersionStatus, to_text

if TYPE_CHECKING:
    import requests

# {"b64": "..."}, -> 13 bytes around each base64 string (json.dumps' default separators).
_INSTANCE_OVERHEAD = len('{"b64": ""}, ')
_EXAMPLE_OVERHEAD = len('{"image/encoded": {"b64": ""}}, ')


def rest_base_url(target: str) -> str:
    """``host:port`` -> ``http://host:port``; full ``http(s)://`` URLs are kept."""
    target = target.strip().rstrip("/")
    if not target:
        raise ValueError("target must be host:port or an http(s):// URL, got an empty string")
    if target.startswith(("http://", "https://")):
        return target
    if "://" in target:
        raise ValueError(f"REST target must be host:port or an http(s):// URL, got {target!r}")
    return "http://" + target


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class RestTransport:
    """One model's REST routes on one reused ``requests`` session."""

    def __init__(
        self,
        target: str,
        model_name: str,
        version: int | None,
        version_label: str | None,
        pool_size: int,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = rest_base_url(target)
        self.model_name = model_name
        model_path = f"/v1/models/{quote(model_name, safe='')}"
        self.status_url = self.base_url + model_path
        if version is not None:
            model_path += f"/versions/{version}"
            self.status_url = self.base_url + model_path
        elif version_label is not None:
            # Status ignores labels in TF Serving; status() filters nothing, like the server.
            model_path += f"/labels/{quote(version_label, safe='')}"
        self.model_url = self.base_url + model_path
        self.http = JsonHttp(session if session is not None else new_session(pool_size))

    def predict_size(self, signature_name: str) -> RequestSize:
        envelope = {"signature_name": signature_name, "instances": []}
        return RequestSize(len(json.dumps(envelope)), _INSTANCE_OVERHEAD, base64=True)

    def classify_size(self, signature_name: str) -> RequestSize:
        envelope = {"signature_name": signature_name, "examples": []}
        return RequestSize(len(json.dumps(envelope)), _EXAMPLE_OVERHEAD, base64=True)

    def predict(
        self, images: Sequence[bytes], signature_name: str, timeout: float | None
    ) -> list[Any]:
        """Rows of outputs: a dict per image (several outputs) or the value (one output)."""
        body = {"signature_name": signature_name, "instances": [{"b64": b64(x)} for x in images]}
        reply = self.http.request(
            "POST", self.model_url + ":predict", timeout, json.dumps(body).encode()
        )
        if not isinstance(reply, dict) or not isinstance(reply.get("predictions"), list):
            raise MalformedResponseError(f"expected {{'predictions': [...]}}, got {_keys(reply)}")
        return reply["predictions"]

    def classify(
        self, images: Sequence[bytes], signature_name: str, timeout: float | None
    ) -> list[list[tuple[str, float]]]:
        examples = [{"image/encoded": {"b64": b64(x)}} for x in images]
        body = {"signature_name": signature_name, "examples": examples}
        reply = self.http.request(
            "POST", self.model_url + ":classify", timeout, json.dumps(body).encode()
        )
        if not isinstance(reply, dict) or not isinstance(reply.get("results"), list):
            raise MalformedResponseError(f"expected {{'results': [...]}}, got {_keys(reply)}")
        try:
            return [
                [(to_text(label), float(score)) for label, score in row] for row in reply["results"]
            ]
        except (TypeError, ValueError):
            raise MalformedResponseError(
                "classify results must be lists of [label, score] pairs"
            ) from None

    def metadata(self, timeout: float | None) -> dict[str, Any]:
        reply = self.http.request("GET", self.model_url + "/metadata", timeout)
        if not isinstance(reply, dict) or "metadata" not in reply:
            raise MalformedResponseError(f"expected model metadata, got {_keys(reply)}")
        return reply

    def status(self, timeout: float | None) -> list[ModelVersionStatus]:
        reply = self.http.request("GET", self.status_url, timeout)
        if not isinstance(reply, dict) or not isinstance(reply.get("model_version_status"), list):
            raise MalformedResponseError(f"expected model_version_status, got {_keys(reply)}")
        return [parse_version_status(entry) for entry in reply["model_version_status"]]

    def close(self) -> None:
        self.http.session.close()


def parse_version_status(entry: Mapping[str, Any]) -> ModelVersionStatus:
    """One ``model_version_status`` entry of the JSON (proto3 JSON: int64 as string)."""
    status = entry.get("status") or {}
    return ModelVersionStatus(
        version=int(entry.get("version", 0)),
        state=str(entry.get("state", "UNKNOWN")),
        error_code=str(status.get("error_code", "OK")),
        error_message=str(status.get("error_message", "")),
    )


def _keys(reply: Any) -> str:
    if isinstance(reply, dict):
        return f"an object with keys {sorted(reply)}"
    return f"a JSON {type(reply).__name__}"
