"""The server's one network loop and the worker threads that compute its answers.

gRPC (``grpc.aio``) and REST (tornado) read and write every connection on one
asyncio loop in one thread, so idle, slow or silent connections hold no thread.
What a request costs (parsing, the model run) is done by a pool of
:class:`Workers`, reached with ``run_in_executor``, or by the batching threads
behind them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import queue
import threading


class Workers(concurrent.futures.Executor):
    """Up to ``count`` daemon threads (started as needed) for ``run_in_executor``.

    Daemon threads, unlike ``ThreadPoolExecutor``'s: a request still in the TensorFlow
    runtime after the shutdown grace period must not hold the process open."""

    def __init__(self, count: int, name: str) -> None:
        self._count = max(count, 1)
        self._name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((future, fn, args, kwargs))
        if not self._idle.acquire(blocking=False):
            with self._lock:
                if len(self._threads) < self._count:
                    thread = threading.Thread(
                        target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True
                    )
                    self._threads.append(thread)
                    thread.start()
        return future

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as error:  # noqa: BLE001 - handed to the awaiting task
                    future.set_exception(error)
            self._idle.release()

    def shutdown(self, wait: bool = False, *, cancel_futures: bool = False) -> None:
        with self._lock:
            for _ in self._threads:
                self._queue.put(None)


class LoopThread:
    """An asyncio loop running in a daemon thread of its own."""

    def __init__(self, name: str = "serving_loop") -> None:
        # Every open connection holds a few dozen objects; thousands of them make the
        # cyclic GC run full collections, which walk TensorFlow's ~400 000 objects (1.8 s
        # on the 2-CPU benchmark machine) while the loop stands still. What exists once
        # the models are loaded is kept out of those collections.
        gc.freeze()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine, timeout: float | None = None):
        """Runs ``coroutine`` on the loop; its result (or exception) here."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
            # What is left (connections being closed, answers past the grace period) ends
            # here, cancelled, rather than being destroyed pending with the loop.
            left = asyncio.all_tasks(self.loop)
            for task in left:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        finally:
            self.loop.close()

    def stop(self, timeout: float = 2.0) -> None:
        if not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self.loop.stop)
            except RuntimeError:  # closed meanwhile
                pass
        self._thread.join(timeout)
