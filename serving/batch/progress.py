"""Live progress of a local batch job, from its Beam metrics counters, and the final table.

Beam reports a bundle's counters when the bundle ends; the local
``FnApiRunner`` runs the read-and-predict stage as one large bundle per
worker, so the job's counters stay at zero until nearly the end. The runner
can, however, ask its workers for the counters of the bundles in flight
(``progress_request_frequency``, Beam's ``ProcessBundleProgressRequest``): its
``ProgressRequester`` thread does so, but hands the answers to nobody.
:func:`live_counters` gives it a callback that adds them up per bundle
(``keras_vit.batch_predict`` namespace). That serves workers reached over
gRPC (``--direct_running_mode=multi_processing`` or ``multi_threading``); the
default ``in_memory`` worker runs a bundle inside the runner's own call, so
there the pipeline's DoFns also count into :data:`pipeline.LOCAL_PROGRESS`.
Of the two, the larger count is shown. :class:`ProgressBar` shows them with tqdm. On a
Beam version without that thread the bar simply stays empty; the final table
(:func:`counts_table`) always comes from the job's own committed metrics.
Remote runners (Dataflow, Flink, Spark) show their counters in their own UI.
"""

from __future__ import annotations

import contextlib
import sys
import threading

from serving.batch import pipeline
from serving.batch.pipeline import DEAD, IMAGES_IN, NAMESPACE, PREDICTED, Counts

# How often the runner asks the workers for in-flight counters (seconds).
FREQUENCY = 0.5


class LiveCounters:
    """The latest in-flight counters of each bundle, summed: ``{name: value}``."""

    def __init__(self):
        self._lock = threading.Lock()
        self._bundles: dict[str, dict[str, int]] = {}
        self._ticks: dict[str, int] = {}

    def tick(self, name: str) -> None:
        """One count of ``name`` by an in-process worker."""
        with self._lock:
            self._ticks[name] = self._ticks.get(name, 0) + 1

    def update(self, bundle: str, response) -> None:
        from apache_beam.metrics import monitoring_infos

        values: dict[str, int] = {}
        for info in response.monitoring_infos:
            if info.urn != monitoring_infos.USER_COUNTER_URN:
                continue
            labels = info.labels
            if labels.get(monitoring_infos.NAMESPACE_LABEL) != NAMESPACE:
                continue
            name = labels.get(monitoring_infos.NAME_LABEL)
            values[name] = values.get(name, 0) + int(monitoring_infos.extract_counter_value(info))
        with self._lock:
            previous = self._bundles.get(bundle, {})
            # Counters only grow: a late, older answer never lowers them.
            self._bundles[bundle] = {
                k: max(values.get(k, 0), previous.get(k, 0)) for k in {*values, *previous}
            }

    def totals(self) -> dict[str, int]:
        with self._lock:
            totals: dict[str, int] = {}
            for values in self._bundles.values():
                for name, value in values.items():
                    totals[name] = totals.get(name, 0) + value
            # Both sources count the same events (as lower bounds): the larger is nearer.
            return {
                k: max(totals.get(k, 0), self._ticks.get(k, 0)) for k in {*totals, *self._ticks}
            }


@contextlib.contextmanager
def live_counters(counters: LiveCounters):
    """Within the block, the local runner's progress answers feed ``counters``."""
    try:
        from apache_beam.runners.portability.fn_api_runner import fn_runner

        requester = fn_runner.ProgressRequester
    except (ImportError, AttributeError):  # another Beam: in-process counts only
        pipeline.LOCAL_PROGRESS.append(counters)
        try:
            yield False
        finally:
            pipeline.LOCAL_PROGRESS.remove(counters)
        return

    class FeedingProgressRequester(requester):
        def __init__(self, worker_handler, instruction_id, frequency, callback=None):
            def feed(response):
                counters.update(str(instruction_id), response)
                if callback is not None:
                    callback(response)

            super().__init__(worker_handler, instruction_id, frequency, callback=feed)

    fn_runner.ProgressRequester = FeedingProgressRequester
    pipeline.LOCAL_PROGRESS.append(counters)
    try:
        yield True
    finally:
        fn_runner.ProgressRequester = requester
        pipeline.LOCAL_PROGRESS.remove(counters)


class ProgressBar:
    """A tqdm bar on stderr fed by :class:`LiveCounters`, redrawn from a thread.

    ``enabled`` None: on when stderr is a terminal. ``total``: the files matched, if known.
    """

    def __init__(self, counters: LiveCounters, total: int | None, enabled: bool | None = None):
        self.counters = counters
        self.total = total
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._stop = threading.Event()
        self._thread = None
        self._bar = None
        self._final: dict[str, int] | None = None

    def __enter__(self):
        if not self.enabled:
            return self
        from tqdm import tqdm

        self._bar = tqdm(
            total=self.total, unit="img", desc="images", file=sys.stderr, dynamic_ncols=True
        )
        self._thread = threading.Thread(target=self._run, name="batch-progress", daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(FREQUENCY / 2):
            self.refresh()

    def finish(self, counts: Counts) -> None:
        """Shows the job's final (committed) counts, which the live ones may lag behind."""
        self._final = {IMAGES_IN: counts.images_in, PREDICTED: counts.predictions}
        self._final[DEAD] = counts.dead_letters

    def refresh(self):
        totals = self._final or self.counters.totals()
        done = totals.get(PREDICTED, 0) + totals.get(DEAD, 0)
        self._bar.n = done
        self._bar.set_postfix(
            read=totals.get(IMAGES_IN, 0),
            predicted=totals.get(PREDICTED, 0),
            dead=totals.get(DEAD, 0),
            refresh=False,
        )
        self._bar.refresh()

    def __exit__(self, *exc):
        if self._bar is not None:
            self._stop.set()
            self._thread.join()
            self.refresh()
            self._bar.close()


def counts_table(counts: Counts, seconds: float) -> str:
    """The job's counters as a small table, with images per second."""
    rows = [
        ("images in", counts.images_in),
        ("predictions", counts.predictions),
        ("dead letters", counts.dead_letters),
    ]
    width = max(len(name) for name, _ in rows)
    digits = max(len(str(value)) for _, value in rows)
    lines = [f"  {name:<{width}}  {value:>{digits}}" for name, value in rows]
    rate = counts.images_in / seconds if seconds > 0 else 0.0
    lines.append(f"  {'time':<{width}}  {seconds:.1f} s ({rate:.1f} images/s)")
    return "\n".join(lines)
