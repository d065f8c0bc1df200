"""keras_vit.training.multi_worker without a cluster: the version guard and the callbacks."""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_vit.training import multi_worker
from keras_vit.training.backup import ResumableBackup


def test_version_guard_covers_keras_3_up_to_the_checked_version():
    assert multi_worker.keras_affected("3.15.1")
    assert multi_worker.keras_affected("3.0.0")
    assert not multi_worker.keras_affected("3.16.0")
    assert not multi_worker.keras_affected("2.15.0")


def test_callbacks_are_untouched_outside_a_multi_worker_cluster(tmp_path):
    backup = ResumableBackup(str(tmp_path / "backup"))
    callbacks = [keras.callbacks.TerminateOnNaN(), backup]
    kept = multi_worker.cluster_callbacks(callbacks, tf.distribute.get_strategy(), False)
    assert kept == callbacks and kept[1] is backup and backup.is_chief


def test_only_the_chief_writes_or_deletes_the_backup(tmp_path):
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "training_metadata.json").write_text('{"epoch": 2, "batch": 0}')
    worker = ResumableBackup(str(backup), is_chief=False, delete_checkpoint=True)
    worker._save_model()  # would save the model's weights on the chief
    worker.on_train_end()
    assert sorted(p.name for p in backup.iterdir()) == ["training_metadata.json"]
    chief = ResumableBackup(str(backup), is_chief=True, delete_checkpoint=True)
    chief.on_train_end()
    assert not backup.exists()


def test_a_worker_says_it_waits_for_the_cluster(capsys):
    from keras_vit.training.distribute import _announce_cluster

    _announce_cluster(
        {
            "cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]},
            "task": {"type": "worker", "index": 1},
        }
    )
    line = capsys.readouterr().out.strip()
    assert line.startswith("multi-worker: task worker 1 of 3 workers;")
    assert "once every worker has started" in line
