"""Splitting many images into requests that fit, and running those requests concurrently."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from serving.client.errors import (
    InvalidArgumentError,
    MalformedResponseError,
    PayloadTooLargeError,
    ServingError,
)
from serving.client.image_errors import blamed_image
from serving.client.images import as_image_list, encode_image, shrink_to_fit

T = TypeVar("T")


@dataclass(frozen=True)
class RequestSize:
    """Upper bound of a request's size on the wire: ``fixed + sum(image_cost(len(image)))``.

    Attributes:
        fixed: bytes of everything but the images (envelope, model spec, keys).
        per_image: framing bytes around each image (JSON object and separator, or protobuf
            tag and length).
        base64: images travel as base64 text (REST, Vertex), 4 bytes per 3.
    """

    fixed: int
    per_image: int
    base64: bool

    def image_cost(self, num_bytes: int) -> int:
        encoded = 4 * ((num_bytes + 2) // 3) if self.base64 else num_bytes
        return self.per_image + encoded

    def request_bytes(self, sizes: Sequence[int]) -> int:
        return self.fixed + sum(self.image_cost(n) for n in sizes)

    def max_image_bytes(self, limit: int) -> int:
        """The largest encoded image that fits alone into a request of ``limit`` bytes."""
        room = limit - self.fixed - self.per_image
        if room <= 0:
            return 0
        return (room // 4) * 3 if self.base64 else room


class BatchEngine:
    """Turns one call's images into size-bounded requests, runs them, keeps input order.

    Images are encoded once, and any image that alone exceeds the request limit is
    downscaled (or refused) before the first request is sent, so a call fails early
    instead of half-way. Requests of one call run on a thread pool of ``max_concurrency``
    threads; the pool is created on first use and reused by later calls.
    """

    def __init__(
        self,
        *,
        batch_size: int,
        max_concurrency: int,
        max_request_bytes: int | None,
        downscale: bool,
        image_size: int,
        image_format: str,
        max_image_bytes: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_request_bytes is not None and max_request_bytes < 1:
            raise ValueError(f"max_request_bytes must be positive or None, got {max_request_bytes}")
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        if image_format.lower() not in ("png", "jpeg", "jpg"):
            raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        self.max_request_bytes = max_request_bytes
        self.downscale = downscale
        self.image_size = image_size
        self.image_format = image_format
        self.max_image_bytes = max_image_bytes
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._closed = False

    def prepare(self, images: Any, size: RequestSize) -> list[bytes | ServingError]:
        """Per image, encoded bytes small enough to travel alone, or why it cannot be sent."""
        items = as_image_list(images)
        if len(items) <= 1:
            return [self._prepare_or_error(item, index, size) for index, item in enumerate(items)]
        # Encoding arrays and downscaling photos is CPU work that releases the GIL.
        return list(
            self._executor().map(
                self._prepare_or_error, items, range(len(items)), [size] * len(items)
            )
        )

    def _prepare_or_error(self, image: Any, index: int, size: RequestSize) -> bytes | ServingError:
        try:
            return self._prepare_one(image, index, size)
        except ServingError as error:  # InputImageError, PayloadTooLargeError
            error.indices = [index]
            return error

    def _prepare_one(self, image: Any, index: int, size: RequestSize) -> bytes:
        data = encode_image(image, index, self.image_format, self.max_image_bytes)
        if self.max_request_bytes is None:
            return data
        if size.request_bytes([len(data)]) <= self.max_request_bytes:
            return data
        max_bytes = size.max_image_bytes(self.max_request_bytes)
        if not self.downscale:
            raise PayloadTooLargeError(
                f"image {index} is {len(data):,} bytes; a request of this image alone would be "
                f"{size.request_bytes([len(data)]):,} bytes, over max_request_bytes="
                f"{self.max_request_bytes:,} (at most {max_bytes:,} image bytes fit). "
                "Downscaling is off (downscale=False): send a smaller image or raise the limit"
            )
        if max_bytes <= 0:
            raise PayloadTooLargeError(
                f"max_request_bytes={self.max_request_bytes:,} leaves no room for any image"
            )
        return shrink_to_fit(data, max_bytes, self.image_size, index)

    def plan(self, payloads: Sequence[bytes | ServingError], size: RequestSize) -> list[list[int]]:
        """Input positions of each request: at most ``batch_size`` images and the byte limit.

        Positions whose payload is an error (the image could not be prepared) are left out.
        """
        chunks: list[list[int]] = []
        current: list[int] = []
        current_bytes = size.fixed
        for index, data in enumerate(payloads):
            if not isinstance(data, bytes):
                continue
            cost = size.image_cost(len(data))
            too_big = (
                self.max_request_bytes is not None and current_bytes + cost > self.max_request_bytes
            )
            if current and (len(current) == self.batch_size or too_big):
                chunks.append(current)
                current, current_bytes = [], size.fixed
            current.append(index)
            current_bytes += cost
        if current:
            chunks.append(current)
        return chunks

    def run(
        self,
        images: Any,
        size: RequestSize,
        send: Callable[[list[bytes]], Sequence[T]],
        return_errors: bool = False,
    ) -> list[Any]:
        """``send`` each planned request; one result per image, in input order.

        With ``return_errors`` an image that failed has its :class:`ServingError` in its
        place and the others still get their results. Otherwise the first failure is
        raised: an image that cannot be prepared before anything is sent, else the
        first failed request's error (the others are cancelled).
        """
        if self._closed:
            raise RuntimeError("the client is closed")
        payloads = self.prepare(images, size)
        outcomes: list[Any] = list(payloads)
        if not return_errors:
            for payload in payloads:
                if isinstance(payload, ServingError):
                    raise payload
        chunks = self.plan(payloads, size)
        if len(chunks) <= 1:
            # One request: run it on the caller's thread, no pool hop.
            futures_or_results: list[Any] = [
                self._run_chunk(send, payloads, chunk) for chunk in chunks
            ]
        else:
            pool = self._executor()
            futures_or_results = [
                pool.submit(self._run_chunk, send, payloads, chunk) for chunk in chunks
            ]
        try:
            for item in futures_or_results:
                results = item.result() if isinstance(item, Future) else item
                for index, result in results.items():
                    if isinstance(result, ServingError) and not return_errors:
                        raise result
                    outcomes[index] = result
        except BaseException:
            for item in futures_or_results:
                if isinstance(item, Future):
                    item.cancel()
            raise
        return outcomes

    def _run_chunk(
        self,
        send: Callable[[list[bytes]], Sequence[T]],
        payloads: Sequence[Any],
        chunk: list[int],
    ) -> dict[int, Any]:
        """Results of one request by input position; a bad image fails only itself.

        When the server refuses a request of several images as INVALID_ARGUMENT, the image
        its message blames (``image_bytes[2]: ...``) gets that error and the others are
        sent again (one more request); when it blames none, the request is split in halves
        until each bad image is alone: for one bad image among ``n``, ``2 * log2(n)`` more
        requests. No request is ever sent twice as it was.
        """
        try:
            out = list(send([payloads[i] for i in chunk]))
        except ServingError as error:
            if len(chunk) == 1:
                return {chunk[0]: _for_one_image(error, chunk[0])}
            if not isinstance(error, InvalidArgumentError):
                error.indices = list(chunk)
                return dict.fromkeys(chunk, error)
            blamed = blamed_image(error.message, len(chunk))
            if blamed is not None:
                position, reason = blamed
                bad = chunk[position]
                results = {bad: _copy(error, reason, bad)}
                rest = [i for i in chunk if i != bad]
                results.update(self._run_chunk(send, payloads, rest))
                return results
            half = len(chunk) // 2
            results = self._run_chunk(send, payloads, chunk[:half])
            results.update(self._run_chunk(send, payloads, chunk[half:]))
            return results
        if len(out) != len(chunk):
            error = MalformedResponseError(
                f"the server returned {len(out)} results for a request of {len(chunk)} images",
                indices=chunk,
            )
            return dict.fromkeys(chunk, error)
        return dict(zip(chunk, out, strict=True))

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._closed:
                raise RuntimeError("the client is closed")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.max_concurrency, thread_name_prefix="serving-client"
                )
            return self._pool

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _copy(error: ServingError, message: str, index: int) -> ServingError:
    """An error of the same type and status about one image."""
    return type(error)(message, code=error.code, http_status=error.http_status, indices=[index])


def _for_one_image(error: ServingError, index: int) -> ServingError:
    blamed = blamed_image(error.message, 1) if isinstance(error, InvalidArgumentError) else None
    return _copy(error, blamed[1], index) if blamed else _copy(error, error.message, index)
