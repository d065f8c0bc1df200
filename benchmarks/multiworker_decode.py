"""Decode work per worker of multi-worker training on an image folder: DATA vs file shards.

    python -m benchmarks.multiworker_decode [--images 480]

Two worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy, their own TF_CONFIG)
read one image folder of JPEGs through the training pipeline for ``--epochs`` epochs:

- **DATA** (before): the one pipeline ``keras-vit train`` built for every source,
  distributed the way Keras' ``fit`` distributes a dataset
  (``strategy.experimental_distribute_dataset``, ``AutoShardPolicy.DATA``);
- **file shards** (now, for image folders): ``keras_vit.training.sharding.distribute_files``,
  each worker's pipeline built on its own files.

Each worker counts the images its pipeline decodes (a counter on the decoder) and
times its epochs (wall and this process's CPU seconds). No model runs: this is the
input side only. The data-check pass of ``load_data`` (every image decoded once at
a reduced scale before training) is counted separately. Writes
``benchmarks/results/multiworker-decode.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.harness import (
    ROOT,
    add_output_options,
    free_ports,
    machine_info,
    markdown_table,
    results_path,
    write_results,
)
from benchmarks.multiworker import collect_results

IMAGE_SIZE = (64, 64)


def write_folder(root: str, images: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for k in range(images):
        folder = os.path.join(root, f"class{k % 4}")
        os.makedirs(folder, exist_ok=True)
        pixels = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f"{k:05d}.jpg"), quality=90)


def worker_main(args: argparse.Namespace) -> None:
    from keras_vit.training.distribute import resolve_strategy

    strategy = resolve_strategy("multi_worker")
    import tensorflow as tf

    from keras_vit.training import data as data_lib
    from keras_vit.training import pipeline, sharding
    from keras_vit.training.data import image_folder

    counts = {"train": 0, "check": 0}

    def counted(decoder, key):
        def decode(encoded, image_size):
            def bump(value):
                counts[key] += 1
                return value

            encoded = tf.numpy_function(bump, [encoded], tf.string, stateful=True)
            return decoder(tf.ensure_shape(encoded, []), image_size)

        return decode

    pipeline.decode_image = counted(pipeline.decode_image, "train")
    data_lib.decode_image = counted(data_lib.decode_image, "check")

    files = image_folder(args.data)  # verify=True: the data check every worker runs
    result = {"images": files.size, "check_decodes": counts["check"]}

    def timed_epochs(run_epoch):
        counts["train"] = 0
        walls, cpus = [], []
        for _ in range(args.epochs):
            wall, cpu = time.perf_counter(), time.process_time()
            steps = run_epoch()
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        return {
            "decodes": counts["train"],
            "steps": steps,
            "epoch_wall_s": walls,
            "epoch_cpu_s": cpus,
        }

    with strategy.scope():
        whole = strategy.experimental_distribute_dataset(
            pipeline.train_pipeline(files, IMAGE_SIZE, args.batch_size)
        )

    def data_epoch():
        return sum(1 for _ in whole)

    result["data"] = timed_epochs(data_epoch)

    def make_dataset(shard, batch_size, index, batches):
        result["shard_size"] = shard.size
        return pipeline.train_pipeline(
            shard,
            IMAGE_SIZE,
            batch_size,
            seed=sharding.shard_seed(0, index),
            batches=batches,
            auto_shard_policy=tf.data.experimental.AutoShardPolicy.OFF,
        )

    with strategy.scope():
        sharded, steps = sharding.distribute_files(strategy, files, args.batch_size, make_dataset)
    iterator = iter(sharded)

    def sharded_epoch():
        for _ in range(steps):
            next(iterator)
        return steps

    result["shards"] = timed_epochs(sharded_epoch)
    print("RESULT " + json.dumps(result), flush=True)


def run_cluster(args: argparse.Namespace) -> list[dict]:
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
        task = {"type": "worker", "index": index}
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": task})
        # One thread pool each, as the two-worker test runs them on this machine.
        env.setdefault("TF_NUM_INTRAOP_THREADS", "1")
        env.setdefault("TF_NUM_INTEROP_THREADS", "1")
        command = [sys.executable, "-m", "benchmarks.multiworker_decode", "--worker",
                   "--data", args.data, "--epochs", str(args.epochs),
                   "--batch-size", str(args.batch_size)]  # fmt: skip
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=480, help="JPEGs (320x240) in the folder")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch size")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    add_output_options(parser, "multiworker-decode")
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return

    info = machine_info(["tensorflow", "keras"])
    with tempfile.TemporaryDirectory() as root:
        write_folder(root, args.images)
        args.data = root
        results = run_cluster(args)

    rows = []
    for mode, name in (("data", "DATA (before)"), ("shards", "file shards (now)")):
        for index, result in enumerate(results):
            run = result[mode]
            rows.append([
                name, index, run["decodes"], f"{run['decodes'] / args.epochs:.0f}", run["steps"],
                f"{statistics.median(run['epoch_wall_s']):.2f}",
                f"{statistics.median(run['epoch_cpu_s']):.2f}",
            ])  # fmt: skip
    cpu = {
        mode: statistics.median([statistics.median(r[mode]["epoch_cpu_s"]) for r in results])
        for mode in ("data", "shards")
    }
    images = results[0]["images"]
    body = (
        f"{images} JPEGs of 320x240 in 4 class folders, decoded for a {IMAGE_SIZE[0]}x"
        f"{IMAGE_SIZE[1]} model; global batch {args.batch_size}; {args.epochs} epochs; "
        "2 worker processes on this machine, one TensorFlow thread pool each; input "
        "pipeline only, no model. `decodes` counts every image the worker's training "
        "pipeline decoded over all epochs (with the read-ahead of the prefetch and "
        "shuffle buffers); epoch times are medians over the epochs.\n\n"
        + markdown_table(
            [
                "pipeline",
                "worker",
                "decodes",
                "decodes/epoch",
                "steps/epoch",
                "epoch wall s",
                "epoch CPU s",
            ],  # fmt: skip
            rows,
        )
        + f"\n\nFile shards: {results[0]['shard_size']} and {results[1]['shard_size']} images "
        f"per worker. CPU seconds per epoch and worker, median of the two workers: "
        f"DATA {cpu['data']:.2f}, file shards {cpu['shards']:.2f} "
        f"(ratio {cpu['shards'] / cpu['data']:.2f}).\n\n"
        f"Not changed: before training, `load_data`'s data check decodes every image once "
        f"on every worker, at a reduced scale: {results[0]['check_decodes']} and "
        f"{results[1]['check_decodes']} decodes here (`--no-verify-images` skips it).\n"
    )
    print(body)
    title = "Multi-worker decode work per worker"
    print(write_results(results_path(args), title, info, body))


if __name__ == "__main__":
    main()
