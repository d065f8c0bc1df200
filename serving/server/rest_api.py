"""The ``/v1/`` REST API: routing, handlers and error bodies of ``HttpRestApiHandler``.

Independent of the HTTP transport: :meth:`RestApi.handle` takes the method,
the raw request target (query string included, as libevent hands it to TF
Serving) and the body, and returns the status, headers and body TF Serving
would send.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Mapping

from google.protobuf import json_format
from tensorflow_serving.apis import model_pb2

from serving.server import inference, json_tensor
from serving.server.core import ServerCore
from serving.server.inference import InferenceContext
from serving.server.json_tensor import error_body
from serving.server.logs import get_logger
from serving.server.status import Code, ServingError, http_status, invalid_argument

# http_rest_api_util.cc; RE2 FullMatch, case-insensitive, on the raw path + query.
_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?"
    r":(classify|regress|predict)",
    re.IGNORECASE | re.DOTALL,
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE | re.DOTALL,
)
V1_PATH = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
JSON_HEADERS = [("Content-Type", "application/json")]
CORS_HEADERS = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "POST, GET"),
    ("Access-Control-Allow-Headers", "Content-Type"),
]
_INT64_MAX = 2**63 - 1
log = get_logger()


def message_to_json(message) -> str:
    """``MessageToJsonString`` with TF Serving's REST options (every field printed)."""
    return json_format.MessageToJson(message, always_print_fields_with_no_presence=True, indent=1)


def _message_to_dict(message) -> dict:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _decode(value: str) -> str:
    """``curl_easy_unescape``: %XX sequences only (``+`` stays), invalid ones kept."""
    return urllib.parse.unquote_to_bytes(value).decode("utf-8", "surrogateescape")


class RestApi:
    """TF Serving's REST handler over a :class:`ServerCore`."""

    def __init__(
        self,
        core: ServerCore,
        context: InferenceContext,
        timeout_in_ms: int,
        enable_cors: bool = False,
    ) -> None:
        self.core = core
        self.context = context
        self.timeout_ms = timeout_in_ms if timeout_in_ms > 0 else None
        self.headers = JSON_HEADERS + (CORS_HEADERS if enable_cors else [])

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, list, bytes]:
        """Returns (HTTP status, headers, body) for one request under ``/v1/``."""
        try:
            output = self._process(method, path, body)
        except ServingError as error:
            return http_status(error.code), self.headers, error_body(error.message)
        except Exception as error:  # noqa: BLE001 - a bug must not take the connection down
            log.exception("REST request %s %s failed", method, path)
            message = f"Internal error: {type(error).__name__}: {error}"
            return http_status(Code.INTERNAL), self.headers, error_body(message)
        return 200, self.headers, output.encode("utf-8", "surrogateescape")

    def _process(self, method: str, path: str, body: bytes) -> str:
        malformed = invalid_argument(f"Malformed request: {method} {path}")
        if method == "POST":
            match = _PREDICT_PATH.fullmatch(path)
        elif method == "GET":
            match = _STATUS_PATH.fullmatch(path)
        else:
            raise malformed
        if match is None:
            raise malformed
        name, version_text, label, verb = match.groups()
        name = _decode(name) if name else ""
        version = None
        if version_text:
            version = int(version_text)
            if version > _INT64_MAX:
                raise invalid_argument(f"Failed to convert version: {version_text} to numeric.")
        if label:
            label = _decode(label)
        spec = model_pb2.ModelSpec(name=name)
        if version is not None:
            spec.version.value = version
        elif label:
            spec.version_label = label
        if method == "GET":
            if not name:
                raise invalid_argument("Missing model name in request.")
            if verb == "metadata":
                return self._metadata(spec)
            return message_to_json(self.core.status_response(name, version))
        if verb not in ("classify", "regress", "predict"):
            raise malformed  # the verb is matched case-insensitively, compared exactly
        return self._timed(verb, spec, body)

    def _timed(self, api: str, spec: model_pb2.ModelSpec, body: bytes) -> str:
        start = time.monotonic()
        try:
            if api == "predict":
                output = self._predict(spec, body)
            else:
                output = self._classify_regress(api, spec, body)
        except ServingError as error:
            self.context.metrics.request_count.increment(spec.name, error.code.name)
            raise
        self.context.metrics.request_count.increment(spec.name, Code.OK.name)
        self.context.metrics.request_latency.add(
            spec.name, api, "REST", value=(time.monotonic() - start) * 1e6
        )
        return output

    def _predict(self, spec: model_pb2.ModelSpec, body: bytes) -> str:
        handles = []

        def input_dtypes(signature_name: str) -> Mapping[str, int]:
            handle = self.core.get_servable(spec)
            handles.append(handle)
            key = signature_name or inference.DEFAULT_SIGNATURE
            signature = handle.servable.signature_defs.get(key)
            if signature is None:
                raise invalid_argument(
                    f'Serving signature name: "{key}" not found in signature def'
                )
            return {alias: info.dtype for alias, info in signature.inputs.items()}

        try:
            request = json_tensor.parse_predict_request(
                body, input_dtypes, self.context.costs.check_elements
            )
            servable = handles[0].servable
            _, outputs = inference.predict(
                self.context,
                servable,
                spec.name,
                request.signature_name,
                request.inputs,
                timeout_ms=self.timeout_ms,
            )
        finally:
            for handle in handles:
                handle.__exit__(None, None, None)
        return json_tensor.predict_response(outputs, request.request_format)

    def _classify_regress(self, api: str, spec: model_pb2.ModelSpec, body: bytes) -> str:
        signature_name, request_input = json_tensor.parse_classify_regress_request(
            body, self.context.costs.check_elements
        )
        run, respond = {
            "classify": (inference.classify, json_tensor.classify_response),
            "regress": (inference.regress, json_tensor.regress_response),
        }[api]
        with self.core.get_servable(spec) as servable:
            results = run(
                self.context, servable, spec.name, signature_name, request_input, self.timeout_ms
            )
        return respond(results)

    def _metadata(self, spec: model_pb2.ModelSpec) -> str:
        with self.core.get_servable(spec) as servable:
            response = inference.metadata_response(servable, spec.name)
            signatures = inference.signature_def_map(servable)
        # http_rest_api_util.cc prints the two parts separately and glues them together.
        metadata = {
            "model_spec": _message_to_dict(response.model_spec),
            "metadata": {"signature_def": _message_to_dict(signatures)},
        }
        return json.dumps(metadata, indent=1) + "\n"
