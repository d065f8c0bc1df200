"""Splitting many images into requests that fit, and running those requests concurrently."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from serving.client.errors import MalformedResponseError, PayloadTooLargeError, ServingError
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
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._closed = False

    def prepare(self, images: Any, size: RequestSize) -> list[bytes]:
        """Encoded bytes for every image, each small enough to travel alone."""
        items = as_image_list(images)
        if len(items) <= 1:
            return [self._prepare_one(item, index, size) for index, item in enumerate(items)]
        # Encoding arrays and downscaling photos is CPU work that releases the GIL.
        return list(
            self._executor().map(self._prepare_one, items, range(len(items)), [size] * len(items))
        )

    def _prepare_one(self, image: Any, index: int, size: RequestSize) -> bytes:
        data = encode_image(image, index, self.image_format)
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

    def plan(self, payloads: Sequence[bytes], size: RequestSize) -> list[list[int]]:
        """Input positions of each request: at most ``batch_size`` images and the byte limit."""
        chunks: list[list[int]] = []
        current: list[int] = []
        current_bytes = size.fixed
        for index, data in enumerate(payloads):
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
    ) -> list[T]:
        """``send`` each planned request and return the results flattened in input order."""
        if self._closed:
            raise RuntimeError("the client is closed")
        payloads = self.prepare(images, size)
        chunks = self.plan(payloads, size)
        if len(chunks) <= 1:
            # One request: run it on the caller's thread, no pool hop.
            return [r for chunk in chunks for r in self._send_chunk(send, payloads, chunk)]
        pool = self._executor()
        futures: list[Future[list[T]]] = [
            pool.submit(self._send_chunk, send, payloads, chunk) for chunk in chunks
        ]
        results: list[T] = []
        try:
            for future in futures:
                results.extend(future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        return results

    @staticmethod
    def _send_chunk(
        send: Callable[[list[bytes]], Sequence[T]], payloads: Sequence[bytes], chunk: list[int]
    ) -> list[T]:
        try:
            out = list(send([payloads[i] for i in chunk]))
        except ServingError as error:
            error.indices = list(chunk)
            raise
        if len(out) != len(chunk):
            raise MalformedResponseError(
                f"the server returned {len(out)} results for a request of {len(chunk)} images",
                indices=chunk,
            )
        return out

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
