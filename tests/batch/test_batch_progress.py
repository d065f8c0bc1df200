"""``batch-predict`` shows progress while it runs (Beam counters); logs stay clean otherwise."""

from __future__ import annotations

import threading
import time

import pytest

from tests.batch.conftest import NEEDS_BEAM

pytest.importorskip("apache_beam", reason=NEEDS_BEAM)


@pytest.mark.parametrize("mode", ["in_memory", "multi_threading"])
def test_live_counters_see_a_bundle_in_flight(mode):
    """Counts arrive before the bundle ends: in-process ticks, or the runner's progress answers."""
    import apache_beam as beam
    from apache_beam.metrics import Metrics
    from apache_beam.options.pipeline_options import PipelineOptions

    from serving.batch import pipeline, progress

    elements = 30
    seen: list[int] = []

    class Slow(beam.DoFn):
        def __init__(self):
            self.counter = Metrics.counter(pipeline.NAMESPACE, pipeline.PREDICTED)

        def process(self, element):
            time.sleep(0.05)
            pipeline._count(self.counter, pipeline.PREDICTED)
            yield element

    live = progress.LiveCounters()
    stop = threading.Event()

    def watch():
        while not stop.wait(0.05):
            seen.append(live.totals().get(pipeline.PREDICTED, 0))

    options = PipelineOptions([f"--direct_running_mode={mode}"])
    watcher = threading.Thread(target=watch, daemon=True)
    with progress.live_counters(live) as installed:
        assert installed
        watcher.start()
        p = beam.Pipeline(runner=pipeline.local_runner(options, 0.1), options=options)
        _ = p | beam.Create(range(elements)) | beam.ParDo(Slow())
        result = p.run()
        result.wait_until_finish()
    stop.set()
    watcher.join()
    assert pipeline.counts(result).predictions == elements
    mid_run = [value for value in seen if 0 < value < elements]
    assert mid_run, f"no count seen while the bundle ran: {sorted(set(seen))}"
    assert seen == sorted(seen)  # it only grows
    if mode != "in_memory":  # a gRPC worker: Beam's own progress answers carried counts too
        assert any(values.get(pipeline.PREDICTED) for values in live._bundles.values())


def _run(capsys, exported, image_folder, tmp_path, *more):
    from keras_vit.cli import main

    folder, _ = image_folder
    status = main(
        [
            "batch-predict",
            "--model-dir", str(exported),
            "--input", f"{folder}/**",
            "--output", str(tmp_path / "out"),
            *more,
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0, captured.out + captured.err
    return captured.out, captured.err


@pytest.mark.slow  # a pipeline run: 5.3 CPU-s (tests/support/cpu_report.py)
def test_progress_forced_on_shows_a_bar_and_the_final_table(
    exported, image_folder, tmp_path, capsys
):
    out, err = _run(capsys, exported, image_folder, tmp_path, "--progress")
    folder, bad = image_folder
    total = sum(1 for p in folder.rglob("*") if not p.is_dir())  # FIFOs and sockets too
    assert "images:" in err and f"/{total}" in err  # tqdm: "images: 100%|...| 16/16 ..."
    assert f"predicted={total - len(bad)}" in err and f"dead={len(bad)}" in err
    table = {
        line.rsplit(maxsplit=1)[0].strip(): line.rsplit(maxsplit=1)[1]
        for line in out.splitlines()
        if line.startswith("  ") and not line.strip().startswith("time")
        and ":" not in line
    }  # fmt: skip
    assert table == {
        "images in": str(total),
        "predictions": str(total - len(bad)),
        "dead letters": str(len(bad)),
    }


def test_without_a_terminal_stderr_stays_clean(exported, image_folder, tmp_path, capsys):
    out, err = _run(capsys, exported, image_folder, tmp_path)
    assert "\r" not in err and "images:" not in err and "\x1b[" not in err
    assert "images in" in out and "\r" not in out
