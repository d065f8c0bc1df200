"""Choosing a ``tf.distribute`` strategy and a mixed-precision policy for a run.

Strategies by name:

- ``"default"`` (or None): no distribution, one device.
- ``"mirrored"``: ``MirroredStrategy`` over every GPU (synchronous data
  parallelism); with ``devices=`` over those devices, e.g. two logical CPUs.
- ``"multi_worker"``: ``MultiWorkerMirroredStrategy`` configured by the
  ``TF_CONFIG`` environment variable (cluster and this task's index); every
  worker runs the same command. It must be created before TensorFlow runs
  anything else, so the command line creates it first.
- ``"auto"``: ``mirrored`` when more than one GPU is visible, else ``default``.

TPUs: pass a ``tf.distribute.TPUStrategy`` object to ``trainer.train``
(``tf.distribute.cluster_resolver.TPUClusterResolver``, then
``tf.config.experimental_connect_to_cluster`` and
``tf.tpu.experimental.initialize_tpu_system``); it is documented, not tested here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import tensorflow as tf

from keras_vit.training.multi_worker import patch_keras_for_multi_worker

STRATEGIES = ("default", "auto", "mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def resolve_strategy(
    strategy: str | tf.distribute.Strategy | None = None,
    devices: Sequence[str] | None = None,
) -> tf.distribute.Strategy:
    """A strategy object from a name (see the module docstring) or the object itself."""
    if isinstance(strategy, tf.distribute.Strategy):
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            patch_keras_for_multi_worker()
        return strategy
    name = (strategy or "default").lower().replace("-", "_")
    if name == "auto":
        name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "strategy 'multi_worker' reads the cluster from the TF_CONFIG environment "
                'variable, e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}}'
            )
        try:
            cluster_config = json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as error:
            raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from error
        _announce_cluster(cluster_config)
        patch_keras_for_multi_worker()  # keras-team/keras#20585: see multi_worker.py
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:
            raise RuntimeError(
                "MultiWorkerMirroredStrategy must be created before TensorFlow runs any "
                f"operation in this process: {error}"
            ) from error
    raise ValueError(f"Unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")


def _announce_cluster(tf_config) -> None:
    """One line before the (silent) wait for the other workers of a cluster."""
    if not isinstance(tf_config, dict):
        return
    cluster = tf_config.get("cluster") or {}
    task = tf_config.get("task") or {}
    workers = sum(len(v) for k, v in cluster.items() if k in ("chief", "worker") and v)
    print(
        f"multi-worker: task {task.get('type', '?')} {task.get('index', '?')} of {workers} "
        "workers; training starts once every worker has started and connected (until then "
        "nothing more is printed)",
        flush=True,
    )


def worker_role(strategy: tf.distribute.Strategy) -> tuple[bool, int]:
    """``(is_chief, task_index)`` of this process; single-process strategies are the chief.

    Under MultiWorkerMirroredStrategy every worker runs the same training, but
    only the chief (``chief`` task, or ``worker`` 0 in a cluster without one)
    should write the model directory.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    task_id = getattr(resolver, "task_id", None) or 0
    if task_type in (None, "chief"):
        return True, int(task_id)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    return task_type == "worker" and task_id == 0 and "chief" not in cluster, int(task_id)


def resolve_precision(precision: str | None) -> str:
    """Checks a precision name and that this machine can compute in it.

    ``mixed_float16`` needs a GPU of compute capability 7.0 or newer to be
    fast (it runs, slowly, on a CPU); ``mixed_bfloat16`` runs on recent CPUs,
    GPUs of compute capability 8.0 or newer, and TPUs. Both keep the
    variables in float32.
    """
    name = (precision or "float32").lower().replace("-", "_")
    aliases = {"fp16": "mixed_float16", "bf16": "mixed_bfloat16", "float16": "mixed_float16"}
    aliases.update({"bfloat16": "mixed_bfloat16", "fp32": "float32", "none": "float32"})
    name = aliases.get(name, name)
    if name not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return name
