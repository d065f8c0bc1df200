"""benchmarks/tune_serving.py: every setting it sweeps is a batching file TF Serving's checks
accept, its objective refuses what it should, and the server it starts is pinned to the
pod's CPUs (every thread, TensorFlow's pools included)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from benchmarks import tune_serving as tune
from benchmarks.harness import ServedModel


def all_settings(cores: int) -> list[tune.Setting]:
    settings = tune.screen(cores)
    for setting in list(settings):
        if setting.batching is not None:
            settings += tune.refine(setting, cores)
    return settings


@pytest.mark.parametrize("cores", [1, 2, 4])
def test_every_swept_setting_is_a_valid_batching_file(cores, tmp_path) -> None:
    from google.protobuf import text_format

    from serving.server.batching import BatchingOptions
    from serving.server.extra_protos import BatchingParameters

    settings = all_settings(cores)
    assert settings[0].key() == tune.defaults(cores).key()
    assert any(s.batching and s.batching.allowed_batch_sizes for s in settings)
    for setting in settings:
        flags = setting.flags(tmp_path, tmp_path / "monitoring.config")
        assert f"--tensorflow_intra_op_parallelism={setting.intra}" in flags
        assert f"--tensorflow_inter_op_parallelism={setting.inter}" in flags
        if setting.batching is None:
            assert "--enable_batching" not in flags
            continue
        path = Path(flags[-1].split("=", 1)[1])
        params = text_format.Parse(path.read_text(), BatchingParameters())
        options = BatchingOptions.from_proto(params)
        options.validate()  # TF Serving's checks: allowed sizes end at max_batch_size...
        b = setting.batching
        assert (options.max_batch_size, options.batch_timeout_micros) == (
            b.max_batch_size,
            b.batch_timeout_micros,
        )
        assert options.num_batch_threads == b.num_batch_threads
        assert options.allowed_batch_sizes == list(b.allowed_batch_sizes)
        # The queue holds the highest concurrency's one-image requests: nothing refused.
        assert b.max_enqueued_batches * b.max_batch_size >= max(tune.CONCURRENCIES)


def test_the_common_mistake_is_tf_servings_example_with_a_thread_per_core() -> None:
    mistake = next(s for s in tune.screen(4) if s.name == "common-mistake")
    assert mistake.batching == tune.Batching(128, 0, 4, 1000000)
    assert (mistake.intra, mistake.inter) == (4, 4)


def level(c: int, throughput: float, p50: float, p99: float, errors: int = 0) -> tune.Level:
    return tune.Level(c, throughput, errors, p50, p99, None, None, None)


def point(c1_p50: float, p99_16: float, errors: int = 0) -> tune.Point:
    result = tune.Point(tune.defaults(2), "test", 1)
    result.levels = {
        1: level(1, 1000 / c1_p50, c1_p50, c1_p50 * 1.2),
        4: level(4, 10.0, 400.0, 450.0),
        16: level(16, 10.0, 1600.0, p99_16, errors),
    }
    return result


def test_score_refuses_errors_starved_requests_and_slow_lone_requests() -> None:
    good = point(c1_p50=100.0, p99_16=1800.0)
    assert tune.score(good, best_c1_p50_ms=100.0) == pytest.approx(10.0)
    # A failed request, whatever the speed.
    assert tune.score(point(100.0, 1800.0, errors=1), 100.0) == -math.inf
    # p99 at 16 above 1.5 x the mean latency (16 / 10 img/s = 1.6 s): someone starved.
    assert tune.score(point(100.0, 2500.0), 100.0) == -math.inf
    # Lone requests 30 % slower than the best setting's.
    assert tune.score(point(130.0, 1800.0), 100.0) == -math.inf


def test_medians_of_several_measurements() -> None:
    points = [point(100.0, 1800.0), point(120.0, 1700.0), point(110.0, 1900.0)]
    merged = tune.Point.merged(points)
    assert merged.round == 3
    assert merged.levels[1].p50_ms == 110.0
    assert merged.levels[16].p99_ms == 1800.0


@pytest.mark.slow  # a server process: 5 CPU-s (tests/support/cpu_report.py)
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin to one")
def test_server_process_is_pinned_to_the_given_cpus(half_plus_two_base_path) -> None:
    cpu = max(os.sched_getaffinity(0))
    with ServedModel(half_plus_two_base_path, cpus=[cpu], timeout=120) as server:
        tasks = os.listdir(f"/proc/{server.pid}/task")
        assert len(tasks) > 5  # gRPC's and TensorFlow's threads exist by now
        for task in tasks:
            assert os.sched_getaffinity(int(task)) == {cpu}


def test_report_says_when_no_setting_met_the_conditions() -> None:
    import argparse

    env = {"window": {c: 1.0 for c in tune.CONCURRENCIES}}
    args = argparse.Namespace(cores=2, quick=False)
    starved = point(100.0, 2500.0)  # p99 at 16 above the bound
    text = tune.report([starved], args, env, {}, 60.0, starved.setting)
    assert "No setting met all the conditions" in text
    fine = point(100.0, 1800.0)
    text = tune.report([fine], args, env, {}, 60.0, fine.setting)
    assert "**Best overall: `tfs-default`" in text
    assert "| 16 | 10.00 | 10.00 | **1.00** |" in text  # the gain table, defaults vs itself
