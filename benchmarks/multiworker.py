"""Multi-worker fine-tuning on one machine: samples/s of 1 vs 2 workers, all-reduce time.

    python -m benchmarks.multiworker [--steps 40] [--batch-size 32]

Starts worker processes on 127.0.0.1 with their own TF_CONFIG (as
``keras-vit train --strategy multi_worker`` runs them, with the Keras
workaround of :mod:`keras_vit.training.multi_worker`), each fitting the same
small ViT on synthetic in-memory images (sharded with AutoShardPolicy.DATA)
at the same *global* batch size:

- 1 worker: a one-task cluster, MultiWorkerMirroredStrategy (no peer);
- 2 workers: two processes, each with half of every global batch.

Every worker times each training step (a Keras callback, after warm-up
steps) and then the all-reduce alone: one collective SUM of tensors shaped
like all trainable variables (what every step reduces, the gradients),
through ``ReplicaContext.all_reduce`` in a ``tf.function``. Samples/s is the
global batch over the median step time. The two processes share this
machine's cores, so no speed-up is expected: the result says what the
collective costs. Writes ``benchmarks/results/multiworker.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks.harness import (
    ROOT,
    Stats,
    add_output_options,
    free_ports,
    machine_info,
    markdown_table,
    results_path,
    write_results,
)

MODEL = dict(image_size=64, patch_size=8, num_layers=4, num_heads=4, hidden_dim=128, mlp_dim=256)
WARMUP_STEPS = 5


def worker_main(args: argparse.Namespace) -> None:
    from keras_vit.training.distribute import resolve_strategy

    strategy = resolve_strategy("multi_worker")
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_vit import ViTClassifier

    rng = np.random.default_rng(0)
    count = args.batch_size * 8
    images = rng.uniform(0, 255, (count, 64, 64, 3)).astype("float32")
    labels = np.eye(10, dtype="float32")[rng.integers(0, 10, count)]
    data = tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(args.batch_size)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    data = data.with_options(options)

    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = ViTClassifier(**MODEL, num_classes=10)
        model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="categorical_crossentropy")

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times: list[float] = []
            self.cpu: list[float] = []

        def on_train_batch_begin(self, batch, logs=None):
            self.started = time.perf_counter()
            self.cpu_started = time.process_time()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self.started)
            self.cpu.append(time.process_time() - self.cpu_started)

    timer = StepTimer()
    model.fit(data, epochs=1, steps_per_epoch=args.steps + WARMUP_STEPS, callbacks=[timer],
              verbose=0)  # fmt: skip

    shapes = [v.shape for v in model.trainable_variables]

    @tf.function
    def all_reduce():
        def replica_fn():
            tensors = [tf.ones(shape) for shape in shapes]
            return tf.distribute.get_replica_context().all_reduce("SUM", tensors)

        return strategy.run(replica_fn)

    all_reduce()  # trace and warm up
    reduce_times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        result = all_reduce()
        tf.nest.map_structure(lambda t: t.numpy(), strategy.experimental_local_results(result))
        reduce_times.append(time.perf_counter() - started)
    print("RESULT " + json.dumps({
        "step_s": timer.times[WARMUP_STEPS:],
        "all_reduce_s": reduce_times,
        "step_cpu_s": timer.cpu[WARMUP_STEPS:],
        "replicas": strategy.num_replicas_in_sync,
        "parameters": int(sum(np.prod(s) for s in shapes)),
    }), flush=True)  # fmt: skip


def run_cluster(workers: int, args: argparse.Namespace) -> list[dict]:
    ports = free_ports(workers)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes = []
    for index in range(workers):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
        env["TF_CONFIG"] = json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}
        )
        command = [sys.executable, "-m", "benchmarks.multiworker", "--worker",
                   "--steps", str(args.steps), "--batch-size", str(args.batch_size)]  # fmt: skip
        processes.append(
            subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        )
    return collect_results(processes, args.timeout)


def collect_results(processes: list[subprocess.Popen], timeout: float) -> list[dict]:
    """Each worker's ``RESULT {json}`` line; exits with the worker's stderr if one failed."""
    results = []
    for process in processes:
        out, err = process.communicate(timeout=timeout)
        line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
        if process.returncode != 0 or line is None:
            raise SystemExit(f"a worker failed:\n{err[-3000:]}")
        results.append(json.loads(line[len("RESULT ") :]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per worker")
    parser.add_argument("--batch-size", type=int, default=32, help="global batch size")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    add_output_options(parser, "multiworker")
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return

    info = machine_info(["tensorflow", "keras"])
    rows, stats, cpu_stats = [], {}, {}
    for workers in (1, 2):
        print(f"{workers} worker(s)...", file=sys.stderr)
        results = run_cluster(workers, args)
        # A step ends when every worker has it: the slowest worker's step times.
        steps = [max(times) for times in zip(*(r["step_s"] for r in results), strict=True)]
        reduces = [max(times) for times in zip(*(r["all_reduce_s"] for r in results), strict=True)]
        # CPU seconds of a step, all workers together: the work, whatever the machine's load.
        step_cpu = [sum(c) for c in zip(*(r["step_cpu_s"] for r in results), strict=True)]
        per_cpu_s = Stats.from_rates([args.batch_size / c for c in step_cpu])
        cpu_stats[workers] = per_cpu_s
        rate = Stats.from_rates([args.batch_size / s for s in steps])
        reduce_ms = Stats.from_rates([1000 * s for s in reduces])
        step_ms = Stats.from_rates([1000 * s for s in steps])
        stats[workers] = rate
        rows.append([
            workers, results[0]["replicas"], args.batch_size, step_ms.format(1), rate.format(1),
            per_cpu_s.format(1), reduce_ms.format(2),
            f"{100 * reduce_ms.median / step_ms.median:.1f}%",
        ])  # fmt: skip
        parameters = results[0]["parameters"]
    speedup = stats[2].median / stats[1].median
    cpu_ratio = cpu_stats[2].median / cpu_stats[1].median
    body = (
        f"Model: ViTClassifier {json.dumps(MODEL)}, 10 classes, {parameters:,} trainable "
        f"parameters (the all-reduced gradient: {parameters * 4 / 2**20:.1f} MiB float32); "
        f"AdamW; synthetic in-memory images sharded with AutoShardPolicy.DATA; "
        f"{args.steps} timed steps after {WARMUP_STEPS} warm-up steps; each step's time is the "
        "slowest worker's.\n\n"
        "## Samples/s and all-reduce time (median [q1–q3])\n\n"
        + markdown_table(
            [
                "workers",
                "replicas",
                "global batch",
                "step ms",
                "samples/s",
                "samples per CPU-s",
                "all-reduce ms/step",
                "all-reduce share of a step",
            ],
            rows,
        )  # fmt: skip
        + f"\n\n2 workers / 1 worker: **{speedup:.2f}×** samples/s (wall clock), "
        f"**{cpu_ratio:.2f}×** samples per CPU-second.\n\n"
        "Both workers run on the same cores, so two workers do the same arithmetic on the "
        "same CPUs plus a gRPC all-reduce of every gradient each step: no speed-up is "
        "expected here. The CPU-second ratio is the cost of the second process and the "
        "collective. The wall-clock ratio also depends on the machine's load: with other "
        "jobs running (see the load average), two processes get a larger share of the "
        "cores than one, which can make two workers look faster than one. "
        "On separate machines each worker computes half of each global batch, so the "
        "step time approaches half plus the all-reduce time measured here (more over a "
        "real network). The all-reduce row for 1 worker is the cost of the collective "
        "call with no peer.\n"
    )
    title = "Multi-worker fine-tuning on one machine"
    path = write_results(results_path(args), title, info, body)
    print(open(path).read())


if __name__ == "__main__":
    main()
