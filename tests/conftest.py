"""Shared test set-up: quiet TensorFlow logs, a tiny ViT, its export and a server for it.

Slow reference writers cache their files across runs (``tests/support/cache.py``);
``tests/support`` also holds the free-port and server-process helpers.
"""

import os
import signal
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One thread per TensorFlow op, here and in the processes the tests start: the suite runs
# on two xdist workers of a 2-core machine, and tiny models gain nothing from splitting an
# op, while two pools of spinning threads per core cost CPU time. Tests of the thread
# flags pass them explicitly; a user's own setting wins.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
# A suite started in the background by a non-interactive shell (`make test &`) inherits
# SIGINT ignored, and so would every program the tests start: those that stop one with
# Ctrl-C (keras-vit ui, the server) would wait in vain. A handled SIGINT here is reset
# to the default in the children.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest  # noqa: E402

from tests.support.tiny import TINY_CONFIG, TINY_LABELS, tiny_vit  # noqa: E402, F401 (tests import them from here)

# Per-test CPU seconds on request (KERAS_VIT_TEST_CPU_REPORT=file.jsonl); xdist_group
# kept on pytest 9.2 (pytest-xdist#1386, tests/support/xdist_groups.py).
pytest_plugins = ["tests.support.cpu_report", "tests.support.xdist_groups"]


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` run first (in their collected order), then the others.

    With pytest-xdist the long tests then start while the short ones can still fill
    the other workers, instead of one long test ending the run alone.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def tiny_config():
    return dict(TINY_CONFIG)


@pytest.fixture(scope="session")
def tiny_model():
    """One tiny labelled ViTClassifier (random weights) for the whole session."""
    return tiny_vit()


@pytest.fixture(scope="session")
def tiny_export(tiny_model, tmp_path_factory) -> Path:
    """Version 1 of ``tiny_model`` under ``.../vit/1``: top 5, probabilities and ``explain``.

    Shared by the tests that need *an* export to query; tests of what an export
    option changes write their own.
    """
    from serving.export import export_saved_model

    base = tmp_path_factory.mktemp("tiny_export") / "vit"
    return export_saved_model(
        tiny_model, base, version=1, top_k=5, with_probabilities=True, with_explain=True
    )


@pytest.fixture(scope="session")
def vit_server(tiny_export):
    """The local TF-Serving-compatible server, in this process, serving ``tiny_export`` as
    ``vit`` on free loopback ports (``.grpc_port``, ``.rest_port``)."""
    from tests.support.servers import serving

    with serving(tiny_export.parent) as server:
        yield server
