"""Server-side batching of concurrent session runs (TF Serving's ``BatchingSession``).

Requests that run the same tensors of the same model version wait in a queue;
a pool of ``num_batch_threads`` threads concatenates the queued inputs along
dimension 0 into one batch, pads it up to the next ``allowed_batch_sizes``
entry, runs the session once and splits the outputs back. A batch is run when
it is full (``max_batch_size``) or when its oldest request has waited
``batch_timeout_micros``; a queue holds at most ``max_enqueued_batches``
batches, past which requests fail with UNAVAILABLE.

Inputs that cannot be concatenated (a scalar, inputs disagreeing on
dimension 0) run on their own instead of being refused.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from serving.server.logs import get_logger
from serving.server.metrics import ServingMetrics
from serving.server.servable import RunFn
from serving.server.status import Code, ServingError, invalid_argument

log = get_logger()
QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"


@dataclass
class BatchingOptions:
    """``BatchingParameters`` with TensorFlow's defaults for unset fields."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    thread_pool_name: str = "batch_threads"
    allowed_batch_sizes: list[int] = field(default_factory=list)
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int | None = None

    @classmethod
    def from_proto(cls, params) -> BatchingOptions:
        """From a ``BatchingParameters`` message (``--batching_parameters_file``)."""
        options = cls()
        for name in (
            "max_batch_size",
            "batch_timeout_micros",
            "max_enqueued_batches",
            "num_batch_threads",
            "max_execution_batch_size",
        ):
            if params.HasField(name):
                setattr(options, name, int(getattr(params, name).value))
        if params.HasField("thread_pool_name"):
            options.thread_pool_name = params.thread_pool_name.value
        if params.HasField("enable_large_batch_splitting"):
            options.enable_large_batch_splitting = params.enable_large_batch_splitting.value
        options.allowed_batch_sizes = [int(size) for size in params.allowed_batch_sizes]
        options.pad_variable_length_inputs = params.pad_variable_length_inputs
        return options

    @property
    def execution_batch_size(self) -> int:
        """The largest batch ever run."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size:
            return self.max_execution_batch_size
        return self.max_batch_size

    def validate(self) -> None:
        """TF Serving's checks (``bundle_factory_util.cc``, ``BatchingSession``)."""
        for name in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
            if getattr(self, name) <= 0:
                raise invalid_argument(f"{name} must be positive; was {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise invalid_argument("batch_timeout_micros must be non-negative")
        sizes = self.allowed_batch_sizes
        if sizes:
            expected = self.execution_batch_size
            if sizes[-1] != expected:
                raise invalid_argument(
                    "Last entry in allowed_batch_sizes must match max_batch_size; last entry "
                    f"was {sizes[-1]}; expected {expected}"
                )
            if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)) or sizes[0] <= 0:
                raise invalid_argument(
                    "allowed_batch_sizes entries must be monotonically increasing"
                )


class _Task:
    """One request's share of a batch."""

    __slots__ = ("feeds", "size", "timeout_ms", "enqueued", "done", "outputs", "error")

    def __init__(self, feeds: dict[str, np.ndarray], size: int, timeout_ms: int | None):
        self.feeds = feeds
        self.size = size
        self.timeout_ms = timeout_ms
        self.enqueued = time.monotonic()
        self.done = threading.Event()
        self.outputs: list[np.ndarray] | None = None
        self.error: ServingError | None = None


class _Batch:
    __slots__ = ("tasks", "size", "opened", "closed", "signature")

    def __init__(self, signature) -> None:
        self.tasks: list[_Task] = []
        self.size = 0
        self.opened = time.monotonic()
        self.closed = False
        self.signature = signature


class _Queue:
    """The batches of one (model version, feed names, fetch names) combination."""

    def __init__(self, run: RunFn, fetches: tuple[str, ...], model_name: str) -> None:
        self.run = run
        self.fetches = fetches
        self.model_name = model_name
        self.batches: deque[_Batch] = deque()


def _batch_signature(feeds: dict[str, np.ndarray]):
    # Tasks are concatenated only when every input agrees on dtype and trailing shape.
    return tuple(sorted((name, value.dtype.str, value.shape[1:]) for name, value in feeds.items()))


def task_size(feeds: dict[str, np.ndarray]) -> int | None:
    """The shared dimension 0 of the inputs, or None when they cannot be batched."""
    sizes = {value.shape[0] if value.ndim else None for value in feeds.values()}
    if len(sizes) != 1 or None in sizes:
        return None
    return sizes.pop()


class BatchScheduler:
    """A shared pool of batch threads serving many queues (``SharedBatchScheduler``)."""

    def __init__(self, options: BatchingOptions, metrics: ServingMetrics) -> None:
        options.validate()
        self.options = options
        self.metrics = metrics
        self._queues: dict[tuple, _Queue] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._next_queue = 0
        self._threads = [
            threading.Thread(
                target=self._work, name=f"{options.thread_pool_name}_{index}", daemon=True
            )
            for index in range(options.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def runner(self, owner: object, run: RunFn, model_name: str) -> RunFn:
        """A run function for one servable that batches its calls."""

        def batched_run(feeds, fetches, timeout_ms):
            return self.run(owner, run, model_name, feeds, fetches, timeout_ms)

        return batched_run

    def run(
        self,
        owner: object,
        run: RunFn,
        model_name: str,
        feeds: dict[str, np.ndarray],
        fetches: Sequence[str],
        timeout_ms: int | None,
    ) -> list[np.ndarray]:
        size = task_size(feeds) if feeds else None
        if size is None or size == 0:
            return run(feeds, fetches, timeout_ms)
        limit = self.options.max_batch_size
        if size > limit:
            raise invalid_argument(
                f"Task size {size} is larger than maximum input batch size {limit}"
            )
        chunk = self.options.execution_batch_size
        if size <= chunk:
            return self._run_task(owner, run, model_name, feeds, fetches, size, timeout_ms)
        # enable_large_batch_splitting: the task is cut into batch-sized pieces.
        pieces = []
        for start in range(0, size, chunk):
            part = {name: value[start : start + chunk] for name, value in feeds.items()}
            pieces.append((part, min(chunk, size - start)))
        tasks = [
            self._enqueue(owner, run, model_name, part, fetches, count, timeout_ms)
            for part, count in pieces
        ]
        outputs = [self._wait(task) for task in tasks]
        return [np.concatenate([out[i] for out in outputs]) for i in range(len(fetches))]

    def _run_task(self, owner, run, model_name, feeds, fetches, size, timeout_ms):
        task = self._enqueue(owner, run, model_name, feeds, fetches, size, timeout_ms)
        return self._wait(task)

    @staticmethod
    def _wait(task: _Task) -> list[np.ndarray]:
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def _enqueue(self, owner, run, model_name, feeds, fetches, size, timeout_ms) -> _Task:
        task = _Task(feeds, size, timeout_ms)
        key = (id(owner), tuple(sorted(feeds)), tuple(fetches))
        signature = _batch_signature(feeds)
        limit = self.options.execution_batch_size
        with self._cond:
            if self._stopping:
                raise ServingError(Code.UNAVAILABLE, "The batch scheduler is shutting down")
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(run, tuple(fetches), model_name)
            batch = queue.batches[-1] if queue.batches else None
            if (
                batch is None
                or batch.closed
                or batch.signature != signature
                or batch.size + size > limit
            ):
                if batch is not None:
                    batch.closed = True
                if len(queue.batches) >= self.options.max_enqueued_batches:
                    raise ServingError(Code.UNAVAILABLE, QUEUE_FULL)
                batch = _Batch(signature)
                queue.batches.append(batch)
            batch.tasks.append(task)
            batch.size += size
            if batch.size >= limit:
                batch.closed = True
            self._cond.notify()
        self.metrics.input_batch_size.add(model_name, value=size)
        return task

    def remove(self, owner: object) -> None:
        """Forgets the queues of an unloaded servable (its requests have finished)."""
        with self._cond:
            for key in [k for k in self._queues if k[0] == id(owner)]:
                if not self._queues[key].batches:
                    del self._queues[key]

    def stop(self) -> None:
        """Runs what is queued, then stops the threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def _next_ready(self) -> tuple[_Queue, _Batch] | None:
        """Round-robin over queues: a closed batch, or an open one past its timeout."""
        queues = list(self._queues.values())
        if not queues:
            return None
        now = time.monotonic()
        timeout = self.options.batch_timeout_micros / 1e6
        for offset in range(len(queues)):
            queue = queues[(self._next_queue + offset) % len(queues)]
            if not queue.batches:
                continue
            batch = queue.batches[0]
            if batch.closed or self._stopping or now - batch.opened >= timeout:
                queue.batches.popleft()
                batch.closed = True
                self._next_queue = (self._next_queue + offset + 1) % len(queues)
                return queue, batch
        return None

    def _wait_time(self) -> float | None:
        timeout = self.options.batch_timeout_micros / 1e6
        opened = [q.batches[0].opened for q in self._queues.values() if q.batches]
        if not opened:
            return None
        return max(0.0, min(opened) + timeout - time.monotonic())

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    ready = self._next_ready()
                    if ready is not None:
                        break
                    if self._stopping and not any(q.batches for q in self._queues.values()):
                        return
                    self._cond.wait(self._wait_time())
            queue, batch = ready
            try:
                self._process(queue, batch)
            except Exception as error:  # noqa: BLE001 - a batch failure fails its tasks only
                failure = (
                    error
                    if isinstance(error, ServingError)
                    else ServingError(Code.INTERNAL, f"Batch processing failed: {error}")
                )
                for task in batch.tasks:
                    if not task.done.is_set():
                        task.error = failure
                        task.done.set()

    def _process(self, queue: _Queue, batch: _Batch) -> None:
        now = time.monotonic()
        for task in batch.tasks:
            self.metrics.queuing_latency.add(
                self.options.thread_pool_name, value=(now - task.enqueued) * 1e6
            )
        # The batch runs with the latest deadline among its tasks; when every task has
        # run out of time, it does not run at all (BatchingSession::ProcessBatch).
        deadlines = []
        for task in batch.tasks:
            if task.timeout_ms is None or task.timeout_ms <= 0:
                deadlines = None
                break
            deadline = task.enqueued + task.timeout_ms / 1000
            if deadline > now:
                deadlines.append(deadline)
        if deadlines is not None and not deadlines:
            raise ServingError(
                Code.RESOURCE_EXHAUSTED, "Run() timeout exceeded while waiting in batching queue"
            )
        timeout_ms = None if deadlines is None else max(1, int((max(deadlines) - now) * 1000))
        try:
            self._run_tasks(queue, batch.tasks, timeout_ms)
        except ServingError as error:
            if error.code != Code.INVALID_ARGUMENT or len(batch.tasks) == 1:
                raise
            # One bad request (say, an undecodable image) must not fail the requests
            # that happened to share its batch: run them one by one (TF Serving would
            # fail them all).
            for task in batch.tasks:
                try:
                    self._run_tasks(queue, [task], timeout_ms)
                except ServingError as task_error:
                    task.error = task_error
                    task.done.set()

    def _run_tasks(self, queue: _Queue, tasks: list[_Task], timeout_ms: int | None) -> None:
        """Concatenates, pads, runs once, splits the outputs back to ``tasks``."""
        size = sum(task.size for task in tasks)
        names = sorted(tasks[0].feeds)
        if len(tasks) == 1:
            feeds = dict(tasks[0].feeds)
        else:
            feeds = {name: np.concatenate([task.feeds[name] for task in tasks]) for name in names}
        padded = self._padded_size(size)
        if padded > size:
            # Padding repeats the first row, as TF Serving's batching session does.
            extra = padded - size
            feeds = {
                name: np.concatenate([value, np.repeat(value[:1], extra, axis=0)])
                for name, value in feeds.items()
            }
        self.metrics.processed_batch_size.add(queue.model_name, value=padded)
        self.metrics.padding_size.add(queue.model_name, str(padded), value=padded - size)
        self.metrics.wrapped_run_count.increment()
        outputs = queue.run(feeds, queue.fetches, timeout_ms)
        for output in outputs:
            if output.ndim == 0 or output.shape[0] != padded:
                raise ServingError(
                    Code.INTERNAL,
                    "Batched output tensor's 0th dimension does not equal the sum of the 0th "
                    "dimension sizes of the input tensors",
                )
        offset = 0
        for task in tasks:
            task.outputs = [output[offset : offset + task.size] for output in outputs]
            offset += task.size
            task.done.set()

    def _padded_size(self, size: int) -> int:
        for allowed in self.options.allowed_batch_sizes:
            if allowed >= size:
                return allowed
        return size
