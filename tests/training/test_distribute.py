"""tf.distribute: MirroredStrategy over two logical CPU devices (in a fresh process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.conftest import SMALL_VIT, write_colour_folder

ROOT = Path(__file__).resolve().parents[2]

# Logical devices must be configured before TensorFlow initialises, hence a new process.
SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from keras_vit import ViTClassifier
from keras_vit.training import train
from keras_vit.training.optim import build_loss, build_optimizer

config, data, output = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
images = np.random.default_rng(0).uniform(0, 255, (8, 16, 16, 3)).astype("float32")
labels = np.eye(3, dtype="float32")[[0, 1, 2, 0, 1, 2, 0, 1]]


def one_step(scope):
    with scope:
        keras.utils.set_random_seed(0)
        model = ViTClassifier(**config, num_classes=3)
        # Clipping at norm 1 and weight decay must both act as on one device.
        optimizer = build_optimizer("sgd", 0.1, weight_decay=1e-2, global_clipnorm=1.0)
        model.compile(optimizer=optimizer, loss=build_loss(0.1))
    batch = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    model.fit(batch, epochs=1, verbose=0)
    return model, [keras.ops.convert_to_numpy(w) for w in model.weights]


mirrored_model, mirrored = one_step(strategy.scope())
_, single = one_step(tf.distribute.get_strategy().scope())
difference = max(float(np.abs(a - b).max()) for a, b in zip(mirrored, single))
variable_kind = type(mirrored_model.get_layer("head").kernel.value).__name__

result = train(None, data, output, model_config=config, strategy=strategy, epochs=2,
               batch_size=8, validation_split=0.25, tensorboard=False, verbose=0)
print("RESULT " + json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "variable_kind": variable_kind,
    "max_weight_difference": difference,
    "epochs": len(result.history),
    "loss": [row["loss"] for row in result.history],
}))
"""


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    data = write_colour_folder(tmp_path / "data", per_class=8)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(SMALL_VIT), str(data), str(tmp_path / "out")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = completed.stdout + completed.stderr
    assert completed.returncode == 0, log
    line = next(x for x in completed.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    assert result["replicas"] == 2
    assert result["variable_kind"] == "MirroredVariable"
    # Two replicas of 4 images each step exactly like one device with all 8.
    assert result["max_weight_difference"] < 1e-5
    assert result["epochs"] == 2 and all(loss > 0 for loss in result["loss"])
    assert (tmp_path / "out" / "model.keras").is_file()
