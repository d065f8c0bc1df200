"""``ServingClient``: one typed interface to a TF Serving model over gRPC or REST."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from serving.client.batching import BatchEngine
from serving.client.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    MalformedResponseError,
    NotFoundError,
    ServingError,
    UnavailableError,
)
from serving.client.images import ImageInput
from serving.client.results import (
    ModelVersionStatus,
    Prediction,
    embedding_from_row,
    prediction_from_row,
)
from serving.client.retry import RetryPolicy

GRPC_MAX_REQUEST_BYTES = 4 * 1024 * 1024
"""gRPC's default maximum message size, which many servers and proxies keep."""
REST_MAX_REQUEST_BYTES = 64 * 1024 * 1024
"""TF Serving's REST server sets no body limit; this only bounds what one request may hold."""
VERTEX_MAX_REQUEST_BYTES = 1_572_864
"""Google online prediction's documented request limit (1.5 MB)."""

Images = ImageInput | Iterable[ImageInput]


class ServingClient:
    """Client for a model served by TF Serving (or ``keras-vit serve``), over gRPC or REST.

    The gRPC channel or HTTP session is created once, here, and reused by every call;
    ``close()`` (or a ``with`` block) releases it.

    Args:
        target: ``host:port`` (gRPC, REST), or an ``http(s)://host:port`` URL (REST).
        model_name: the served model's name (``--model_name``).
        protocol: ``"grpc"`` (port 8500) or ``"rest"`` (port 8501); neither imports
            TensorFlow.
        version: a specific model version; default the latest.
        version_label: a version label (``stable``, ``canary``); exclusive with ``version``.
        signature_name: the signature ``predict`` calls.
        timeout: deadline in seconds of each request (each retry gets a new one).
        retries: how often a request is retried after UNAVAILABLE / HTTP 503.
        batch_size: at most this many images per request.
        max_concurrency: requests of one call that run at once.
        max_request_bytes: request size limit; ``None`` = protocol default (gRPC 4 MiB,
            REST 64 MiB). Requests are split to stay under it; an image that alone is too
            big is downscaled.
        downscale: shrink images that cannot fit into one request (aspect kept, short side
            never below ``image_size``, re-encoded as JPEG). ``False`` raises
            :class:`~serving.client.errors.PayloadTooLargeError` instead.
        image_size: the model's input resolution.
        image_format: how PIL images and arrays are encoded: ``"png"`` (lossless) or
            ``"jpeg"`` (smaller).
        max_image_bytes: the largest image file read from a path (default 64 MiB, or
            ``$KERAS_VIT_MAX_IMAGE_BYTES``); larger files, and paths that are not regular
            files (devices, pipes, sockets), fail as that image's
            :class:`~serving.client.errors.InputImageError` without being read.
        embedding_signature: the signature ``embed`` calls.
        classify_signature: the signature ``classify`` calls.
        retry_policy: full control over backoff; overrides ``retries``.
        grpc_credentials: ``grpc.ssl_channel_credentials(...)`` for TLS; default plaintext.
        session: a ``requests.Session`` to use for REST (auth, proxies, TLS settings).
        transport: a ready transport instead of the one ``protocol`` names (what
            :class:`~serving.client.vertex.VertexClient` passes); ``protocol`` is then its name.

    Example:
        >>> client = ServingClient("localhost:8501", protocol="rest")
        >>> client.predict("cat.jpg")[0].label  # doctest: +SKIP
        'Egyptian cat'
    """

    def __init__(
        self,
        target: str,
        model_name: str = "vit",
        protocol: str = "grpc",
        version: int | None = None,
        version_label: str | None = None,
        signature_name: str = "serving_default",
        *,
        timeout: float | None = 30.0,
        retries: int = 3,
        batch_size: int = 16,
        max_concurrency: int = 4,
        max_request_bytes: int | None = None,
        downscale: bool = True,
        image_size: int = 224,
        image_format: str = "png",
        max_image_bytes: int | None = None,
        embedding_signature: str = "embedding",
        classify_signature: str = "classify",
        retry_policy: RetryPolicy | None = None,
        grpc_credentials: Any = None,
        session: Any = None,
        transport: Any = None,
    ) -> None:
        protocol = protocol.lower()
        if transport is None and protocol not in ("grpc", "rest"):
            raise ValueError(f"protocol must be 'grpc' or 'rest', got {protocol!r}")
        if not model_name:
            raise ValueError("model_name must not be empty")
        if version is not None and version_label is not None:
            raise ValueError("give either version or version_label, not both")
        if version is not None and (isinstance(version, bool) or int(version) != version):
            raise ValueError(f"version must be an integer, got {version!r}")
        if version_label is not None and not version_label:
            raise ValueError("version_label must not be empty")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive seconds or None, got {timeout}")
        self.target = target
        self.model_name = model_name
        self.protocol = protocol
        self.version = int(version) if version is not None else None
        self.version_label = version_label
        self.signature_name = signature_name
        self.embedding_signature = embedding_signature
        self.classify_signature = classify_signature
        self.timeout = timeout
        self.retry_policy = retry_policy or RetryPolicy(retries=retries)
        if max_request_bytes is None:
            max_request_bytes = (
                GRPC_MAX_REQUEST_BYTES if protocol == "grpc" else REST_MAX_REQUEST_BYTES
            )
        self.engine = BatchEngine(
            batch_size=batch_size,
            max_concurrency=max_concurrency,
            max_request_bytes=max_request_bytes,
            downscale=downscale,
            image_size=image_size,
            image_format=image_format,
            max_image_bytes=max_image_bytes,
        )
        if transport is not None:
            self.transport: Any = transport
        elif protocol == "grpc":
            # Lazy: REST users need not install or load grpcio.
            try:
                from serving.client.grpc_transport import GrpcTransport  # noqa: PLC0415
            except ImportError as error:
                raise ImportError(
                    f"protocol='grpc' needs grpcio ({error}); install it, or use "
                    "protocol='rest', which does not"
                ) from error

            self.transport = GrpcTransport(
                target,
                model_name,
                self.version,
                version_label,
                max_request_bytes,
                credentials=grpc_credentials,
            )
        else:
            from serving.client.rest import RestTransport  # noqa: PLC0415 - http.client, ssl

            self.transport = RestTransport(
                target, model_name, self.version, version_label, max_concurrency, session=session
            )

    @property
    def max_request_bytes(self) -> int | None:
        return self.engine.max_request_bytes

    def __repr__(self) -> str:
        which = f", version={self.version}" if self.version is not None else ""
        which += f", version_label={self.version_label!r}" if self.version_label else ""
        return (
            f"ServingClient({self.target!r}, model_name={self.model_name!r}, "
            f"protocol={self.protocol!r}{which})"
        )

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    def predict(
        self,
        images: Images,
        *,
        signature_name: str | None = None,
        timeout: float | None = None,
        return_errors: bool = False,
    ) -> list[Prediction] | list[Prediction | ServingError]:
        """Predictions for one image or a list of images, in input order.

        Images are file paths, encoded bytes, PIL images or ``uint8`` arrays (HWC).

        A bad image fails only itself: when the server refuses a request for one of its
        images, that image gets the error and the others are sent again. With
        ``return_errors=True`` the list holds, per image, its :class:`Prediction` or its
        :class:`~serving.client.errors.ServingError` (``.indices == [position]`` for an
        image refused alone); otherwise the first error is raised.
        """
        signature = signature_name or self.signature_name
        deadline = self._timeout(timeout)

        def send(batch: list[bytes]) -> list[Prediction]:
            rows = self.retry_policy.call(self.transport.predict, batch, signature, deadline)
            return [prediction_from_row(_named_row(row)) for row in rows]

        size = self.transport.predict_size(signature)
        return self.engine.run(images, size, send, return_errors)

    def embed(
        self,
        images: Images,
        *,
        signature_name: str | None = None,
        timeout: float | None = None,
        return_errors: bool = False,
    ) -> np.ndarray | list[np.ndarray | ServingError]:
        """Embeddings ``[N, D]`` (float32) from the embedding signature.

        With ``return_errors=True``: a list of one vector ``[D]`` or one error per image.
        """
        signature = signature_name or self.embedding_signature
        deadline = self._timeout(timeout)

        def send(batch: list[bytes]) -> list[np.ndarray]:
            rows = self.retry_policy.call(self.transport.predict, batch, signature, deadline)
            return [embedding_from_row(row) for row in rows]

        size = self.transport.predict_size(signature)
        vectors = self.engine.run(images, size, send, return_errors)
        if return_errors:
            return vectors
        if not vectors:
            return np.zeros((0, 0), dtype=np.float32)
        if len({v.shape for v in vectors}) != 1:
            raise ServingError("the server returned embeddings of different sizes")
        return np.stack(vectors)

    def classify(
        self,
        images: Images,
        *,
        signature_name: str | None = None,
        timeout: float | None = None,
        return_errors: bool = False,
    ) -> list[list[tuple[str, float]]] | list[list[tuple[str, float]] | ServingError]:
        """``(label, score)`` lists through the Classify API (``tf.Example`` ``image/encoded``).

        ``return_errors`` as in :meth:`predict`.
        """
        signature = signature_name or self.classify_signature
        deadline = self._timeout(timeout)

        def send(batch: list[bytes]) -> list[list[tuple[str, float]]]:
            return self.retry_policy.call(self.transport.classify, batch, signature, deadline)

        size = self.transport.classify_size(signature)
        return self.engine.run(images, size, send, return_errors)

    def metadata(self, *, timeout: float | None = None) -> dict[str, Any]:
        """Model metadata in the JSON of TF Serving's REST route (gRPC answers are converted)."""
        return self.retry_policy.call(self.transport.metadata, self._timeout(timeout))

    def signatures(self, *, timeout: float | None = None) -> dict[str, Any]:
        """Signature name -> SignatureDef (as JSON) of the served model."""
        meta = self.metadata(timeout=timeout)
        return dict(meta["metadata"]["signature_def"].get("signature_def", {}))

    def status(self, *, timeout: float | None = None) -> list[ModelVersionStatus]:
        """States of the model's versions (or of ``version``), newest first."""
        return self.retry_policy.call(self.transport.status, self._timeout(timeout))

    def wait_until_available(
        self, timeout: float = 60.0, poll_interval: float = 0.5
    ) -> list[ModelVersionStatus]:
        """Block until the model (or ``version``/``version_label``) can serve; return its status.

        Raises:
            DeadlineExceededError: not available within ``timeout`` seconds; the message
                says what the server last answered.
        """
        # gRPC polls on a channel of its own that reconnects promptly (GrpcTransport.probe).
        probe = getattr(self.transport, "probe", None)
        transport = probe() if probe is not None else self.transport
        try:
            return self._wait(transport, timeout, poll_interval)
        finally:
            if transport is not self.transport:
                transport.close()

    def _wait(self, transport, timeout: float, poll_interval: float):
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceededError(
                    f"model {self.model_name!r} at {self.target} not available after "
                    f"{timeout:g} s; last: {last}"
                )
            per_call = min(remaining, max(poll_interval, 1.0))
            try:
                states = transport.status(per_call)
                if any(s.state == "AVAILABLE" for s in states):
                    if self.version_label is not None:
                        # Status ignores labels; metadata resolves them.
                        transport.metadata(per_call)
                    return states
                last = ", ".join(f"version {s.version}: {s.state}" for s in states) or "no versions"
            except (UnavailableError, NotFoundError) as error:
                last = str(error)
            except DeadlineExceededError as error:
                # Usually our own clipped poll deadline: keep the server's last real answer.
                last = str(error) if last == "no answer yet" else last
            except InvalidArgumentError as error:
                if self.version_label is None:
                    raise
                last = str(error)  # the label may not be assigned yet
            time.sleep(max(0.0, min(poll_interval, deadline - time.monotonic())))

    def close(self) -> None:
        """Release the channel/session and the request threads."""
        self.engine.close()
        self.transport.close()

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _named_row(row: Any) -> dict[str, Any]:
    if isinstance(row, dict) and not set(row) == {"b64"}:
        return row
    # REST returns only the value when a signature has one output: there is no name to use.
    raise MalformedResponseError(
        f"the predict signature returned one unnamed output per image ({type(row).__name__}); "
        "predict() needs the serving contract's label, score, top_k_labels and top_k_scores"
    )
