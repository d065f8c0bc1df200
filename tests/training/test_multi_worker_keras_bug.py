"""Keras 3 ``fit`` under MultiWorkerMirroredStrategy: the upstream failures and our workaround.

Two worker processes on 127.0.0.1 run a tiny ``fit`` three times: unpatched,
with only the symbolic-build fix, then with both fixes of
:mod:`keras_vit.training.multi_worker`. On the Keras versions the workaround
covers, the first two must fail with the upstream errors
(keras-team/keras#20585, tensorflow/tensorflow#72388); when an upgrade makes
them pass, this test fails and says to drop the workaround.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.support.ports import free_ports
from tests.training.multi_worker_support import finish, read_log, start, tf_config

# 13 CPU-s in all (tests/support/cpu_report.py): `make test` runs it, `make test-fast` not
pytestmark = pytest.mark.slow

SCRIPT = r"""
import json
import tensorflow as tf

strategy = tf.distribute.MultiWorkerMirroredStrategy()
import keras
import numpy as np
from keras.src.backend.tensorflow import trainer as tf_trainer
from keras_vit.training import multi_worker

x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
y = np.eye(2, dtype="float32")[np.arange(16) % 2]
data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
original_reduce = tf_trainer.reduce_per_replica


def attempt():
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
        model.compile("sgd", "categorical_crossentropy", metrics=["accuracy"])
    try:
        history = model.fit(data, epochs=1, verbose=0)
    except Exception as error:
        return {"ok": False, "error": f"{type(error).__name__}: {error}"[:400]}
    weights = [w.tolist() for w in model.get_weights()]
    return {"ok": True, "loss": history.history["loss"], "weights": weights}


results = {"affected": multi_worker.keras_affected(), "keras": keras.__version__}
results["unpatched"] = attempt()
multi_worker.patch_keras_for_multi_worker(force=True)
patched_reduce = tf_trainer.reduce_per_replica
tf_trainer.reduce_per_replica = original_reduce  # the symbolic-build fix alone
results["build_fix_only"] = attempt()
tf_trainer.reduce_per_replica = patched_reduce
results["patched"] = attempt()
print("RESULT " + json.dumps(results), flush=True)
"""


def _result(log: str) -> dict:
    line = next((x for x in log.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, log[-3000:]
    return json.loads(line[len("RESULT ") :])


def test_keras_multi_worker_fit_fails_unpatched_and_works_patched(tmp_path):
    ports = free_ports(2)
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [
        start([sys.executable, "-c", SCRIPT], tf_config(ports, i), logs[i]) for i in range(2)
    ]
    codes = finish(workers, timeout=240)
    texts = [read_log(log) for log in logs]
    assert codes == [0, 0], texts[0][-3000:] + texts[1][-3000:]
    results = [_result(text) for text in texts]
    first = results[0]

    if first["affected"]:
        drop = (
            f"Keras {first['keras']} fixed this upstream: drop the workaround in "
            "keras_vit/training/multi_worker.py (or end AFFECTED_KERAS before this version)"
        )
        assert not first["unpatched"]["ok"], drop
        assert "PerReplica" in first["unpatched"]["error"], first["unpatched"]["error"]
        assert not first["build_fix_only"]["ok"], drop
        assert "Invalid reduction dimension" in first["build_fix_only"]["error"], first[
            "build_fix_only"
        ]["error"]
    else:
        assert first["unpatched"]["ok"], (
            f"Keras {first['keras']} still fails under MultiWorkerMirroredStrategy: "
            f"extend AFFECTED_KERAS ({first['unpatched']['error']})"
        )

    # Patched, both workers train in step: the same loss and bit-identical weights.
    assert all(r["patched"]["ok"] for r in results), results
    assert results[0]["patched"]["loss"] == results[1]["patched"]["loss"]
    assert results[0]["patched"]["weights"] == results[1]["patched"]["weights"]
