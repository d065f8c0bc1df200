"""Server-side batching: the scheduler on its own (deterministic, with a fake session
run), then end to end through the REST API with TF Serving's batching metrics."""

from __future__ import annotations

import json
import threading
import urllib.request

import numpy as np
import pytest

from serving.server.batching import QUEUE_FULL, BatchingOptions, BatchScheduler
from serving.server.metrics import ServingMetrics
from serving.server.status import Code, ServingError


class FakeSession:
    """Records the batches it runs; can be held to keep a batch thread busy."""

    def __init__(self, hold: bool = False) -> None:
        self.batches: list[dict[str, np.ndarray]] = []
        self.release = threading.Event()
        self.started = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, feeds, fetches, timeout_ms):
        self.batches.append(feeds)
        self.started.set()
        self.release.wait(30)
        x = feeds["x:0"]
        return [x * 10]


def scheduler(**options) -> BatchScheduler:
    return BatchScheduler(BatchingOptions(**options), ServingMetrics())


def run_concurrently(batcher, session, inputs, owner="m"):
    results: dict[int, object] = {}
    barrier = threading.Barrier(len(inputs))

    def call(index):
        barrier.wait()
        try:
            feeds = {"x:0": inputs[index]}
            results[index] = batcher.run(owner, session, "m", feeds, ["y:0"], None)[0]
        except ServingError as error:
            results[index] = error

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_concurrent_tasks_are_merged_padded_and_split_back():
    batcher = scheduler(
        max_batch_size=8,
        batch_timeout_micros=1_000_000,
        num_batch_threads=1,
        allowed_batch_sizes=[4, 8],
    )
    session = FakeSession()
    inputs = [np.full((n, 2), i, np.float32) for i, n in enumerate([1, 2, 2])]
    results = run_concurrently(batcher, session, inputs)
    batcher.stop()
    # One run of 5 rows, padded to the allowed size 8 with copies of the first row.
    assert len(session.batches) == 1
    batch = session.batches[0]["x:0"]
    assert batch.shape == (8, 2)
    assert np.array_equal(batch[5:], np.repeat(batch[:1], 3, axis=0))
    for index, array in enumerate(inputs):
        assert np.array_equal(results[index], array * 10)
    metrics = batcher.metrics
    assert metrics.processed_batch_size.total("m") == 8
    assert metrics.padding_size.total("m", "8") == 3
    assert metrics.wrapped_run_count.value() == 1
    assert metrics.input_batch_size.count("m") == 3


def test_full_queue_is_unavailable(wait_for):
    batcher = scheduler(
        max_batch_size=1, batch_timeout_micros=0, num_batch_threads=1, max_enqueued_batches=1
    )
    session = FakeSession(hold=True)
    busy = threading.Thread(
        target=batcher.run, args=("m", session, "m", {"x:0": np.ones((1, 1))}, ["y:0"], None)
    )
    busy.start()
    assert session.started.wait(30)  # the only batch thread is now busy
    queued = threading.Thread(
        target=batcher.run, args=("m", session, "m", {"x:0": np.ones((1, 1))}, ["y:0"], None)
    )
    queued.start()
    wait_for(lambda: batcher.metrics.input_batch_size.count("m") == 2, what="a queued task")
    with pytest.raises(ServingError) as raised:
        batcher.run("m", session, "m", {"x:0": np.ones((1, 1))}, ["y:0"], None)
    assert raised.value.code == Code.UNAVAILABLE
    assert raised.value.message == QUEUE_FULL
    session.release.set()
    busy.join(30)
    queued.join(30)
    batcher.stop()


def test_task_larger_than_max_batch_size_and_splitting():
    batcher = scheduler(max_batch_size=4, num_batch_threads=1)
    with pytest.raises(ServingError) as raised:
        batcher.run("m", FakeSession(), "m", {"x:0": np.ones((5, 1))}, ["y:0"], None)
    assert raised.value.message == "Task size 5 is larger than maximum input batch size 4"
    batcher.stop()
    splitting = scheduler(
        max_batch_size=10,
        enable_large_batch_splitting=True,
        max_execution_batch_size=3,
        num_batch_threads=1,
    )
    session = FakeSession()
    x = np.arange(7, dtype=np.float32).reshape(7, 1)
    [y] = splitting.run("m", session, "m", {"x:0": x}, ["y:0"], None)
    splitting.stop()
    assert np.array_equal(y, x * 10)
    assert max(b["x:0"].shape[0] for b in session.batches) <= 3


def test_inputs_that_cannot_be_concatenated_run_alone():
    batcher = scheduler(max_batch_size=8, num_batch_threads=1)
    session = FakeSession()
    [y] = batcher.run("m", session, "m", {"x:0": np.float32(2.0)}, ["y:0"], None)  # a scalar
    batcher.stop()
    assert y == 20.0
    assert batcher.metrics.wrapped_run_count.value() == 0


def test_a_bad_request_fails_alone_and_an_internal_error_fails_the_batch():
    def picky(feeds, fetches, timeout_ms):
        x = feeds["x:0"]
        if (x < 0).any():
            raise ServingError(Code.INVALID_ARGUMENT, "negative input")
        return [x * 10]

    batcher = scheduler(max_batch_size=4, batch_timeout_micros=1_000_000, num_batch_threads=1)
    inputs = [np.full((1, 1), v, np.float32) for v in (1, -1, 2, 3)]
    results = run_concurrently(batcher, picky, inputs)
    assert isinstance(results[1], ServingError) and results[1].message == "negative input"
    for index in (0, 2, 3):
        assert np.array_equal(results[index], inputs[index] * 10)

    def broken(feeds, fetches, timeout_ms):
        raise ServingError(Code.INTERNAL, "broken")

    results = run_concurrently(batcher, broken, [np.ones((1, 1))] * 4, owner="other")
    batcher.stop()
    assert all(isinstance(r, ServingError) and r.message == "broken" for r in results.values())


def test_allowed_batch_sizes_validation():
    with pytest.raises(ServingError) as raised:
        BatchingOptions(max_batch_size=8, allowed_batch_sizes=[2, 4]).validate()
    assert raised.value.message == (
        "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; expected 8"
    )


def test_batching_end_to_end(tmp_path, half_plus_two_base_path, run_server):
    params = tmp_path / "batching.txt"
    params.write_text(
        "max_batch_size { value: 4 } batch_timeout_micros { value: 1000000 } "
        "num_batch_threads { value: 1 } max_enqueued_batches { value: 10 } "
        "allowed_batch_sizes: 2 allowed_batch_sizes: 4"
    )
    with run_server(
        model_base_path=str(half_plus_two_base_path),
        enable_batching=True,
        batching_parameters_file=str(params),
    ) as server:
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/default:predict"
        replies: dict[int, dict] = {}
        barrier = threading.Barrier(3)

        def client(value: float):
            barrier.wait()
            request = urllib.request.Request(
                url, data=json.dumps({"instances": [[value]]}).encode(), method="POST"
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                replies[int(value)] = json.loads(response.read())

        threads = [threading.Thread(target=client, args=(float(v),)) for v in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert replies == {v: {"predictions": [[0.5 * v + 2]]} for v in range(3)}
        metrics = server.metrics
        runs = metrics.wrapped_run_count.value()
        assert runs < 3  # merged
        assert metrics.processed_batch_size.count("default") == runs
        # 3 rows never fit the allowed sizes 2 and 4 exactly: some padding happened.
        assert (
            metrics.padding_size.count("default", "4") + metrics.padding_size.count("default", "2")
            == runs
        )
        padded = metrics.processed_batch_size.total("default")
        assert padded in (4, 6)  # one batch of 3 -> 4, or 2 + 1 -> 2 + 2

        page = urllib.request.urlopen(
            f"http://127.0.0.1:{server.rest_port}/v1/models/default", timeout=30
        ).read()
        assert b"AVAILABLE" in page


def test_bad_allowed_batch_sizes_stop_startup(tmp_path, half_plus_two_base_path, run_server):
    params = tmp_path / "batching.txt"
    params.write_text("max_batch_size { value: 8 } allowed_batch_sizes: 2 allowed_batch_sizes: 4")
    with pytest.raises(ServingError) as raised:
        with run_server(
            model_base_path=str(half_plus_two_base_path),
            enable_batching=True,
            batching_parameters_file=str(params),
        ):
            pass
    assert raised.value.message.startswith("Last entry in allowed_batch_sizes must match")
