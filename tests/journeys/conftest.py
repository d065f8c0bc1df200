"""The journeys' shared parts: checkpoints written by transformers, real photos, the CLI.

Every journey runs ``keras-vit`` as a user types it and feeds each step's output
to the next: in fresh processes (a new interpreter per command, the server its own
process), or, for the further variants of a journey already run fresh (another
checkpoint format on the same path), with ``Journey(in_process=True)``: the same
command lines through ``tests/support/cli_runner.py`` and the server in the test
process, saving a TensorFlow start-up per step. ``Journey`` times every step; the
times are printed (``pytest -s``) and end up in the test report.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support.cache import cached_output
from tests.support.cli_runner import InProcessCli
from tests.support.ports import free_port
from tests.support.processes import ServerNotReady, ServerProcess

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# Crops of scikit-image's photos, one class per photo: what a small labelled folder looks like.
CLASS_PHOTOS = {"cat": "chelsea", "coffee": "coffee", "rocket": "rocket"}


def environment() -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    # The HF datasets journey must work offline: nothing here may reach the network.
    env.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    return env


def keras_vit_command(*args: str) -> list[str]:
    """``keras-vit ARGS``: the console script when installed, else ``python -m keras_vit``."""
    script = Path(sys.executable).with_name("keras-vit")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "keras_vit", *args]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Journey:
    """Runs the steps of one journey and records how long each took (wall) and its CPU time."""

    def __init__(self, name: str, cli: InProcessCli | None = None):
        self.name = name
        self.cli = cli  # None: every command in a fresh interpreter
        self.times: list[tuple[str, float, float | None]] = []
        self.started = time.monotonic()
        self.cpu_started = children_cpu()

    @property
    def in_process(self) -> bool:
        return self.cli is not None

    def run(
        self, step: str, *args: str, timeout: float = 180, env: dict | None = None
    ) -> subprocess.CompletedProcess:
        started, cpu = time.monotonic(), children_cpu()
        env = {**environment(), **(env or {})}
        if self.cli is not None:  # the command line as typed, its keras-vit in this process
            result = self.cli.run(
                ["bash", "-c", shlex.join(["keras-vit", *args])], cwd=ROOT, env=env, timeout=timeout
            )
        else:
            result = subprocess.run(
                keras_vit_command(*args),
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        self.times.append((step, time.monotonic() - started, children_cpu() - cpu))
        assert result.returncode == 0, (
            f"keras-vit {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
        return result

    def note(self, step: str, seconds: float, cpu: float | None = None) -> None:
        self.times.append((step, seconds, cpu))

    def report(self) -> str:
        total = time.monotonic() - self.started
        # Subprocesses that finished (the server included, once stopped), user + system.
        cpu = children_cpu() - self.cpu_started
        steps = ", ".join(
            f"{step} {seconds:.1f} s" + (f" / {cpu:.1f} s CPU" if cpu is not None else "")
            for step, seconds, cpu in self.times
        )
        line = f"journey {self.name}: {total:.1f} s wall, {cpu:.1f} s CPU ({steps})"
        print(line)
        return line


@pytest.fixture
def journey(request) -> Iterator[Journey]:
    """A fresh-process journey; ``@pytest.mark.journey_in_process`` on a test (or a
    ``pytest.param(..., marks=...)``) runs its commands in the test process instead."""
    if request.node.get_closest_marker("journey_in_process") is None:
        trip = Journey(request.node.name)
        yield trip
    else:
        with InProcessCli() as cli:
            trip = Journey(request.node.name, cli)
            yield trip
    trip.report()


def predictions(stdout: str) -> dict[str, dict]:
    """``predict --json`` output by image file name."""
    records = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return {Path(r["image"]).name: r for r in records}


@contextlib.contextmanager
def serving(journey: Journey, model_name: str, base_path: Path) -> Iterator[tuple[int, int]]:
    """``keras-vit serve --model_name=... --model_base_path=... --port=P --rest_api_port=Q``.

    Yields ``(grpc_port, rest_port)`` once the REST port is announced (the
    server announces it after the model is loaded and warmed up); SIGTERM at the end.
    """
    if journey.in_process:
        from tests.support.servers import serving as serving_here

        started = time.monotonic()
        with serving_here(base_path, model_name) as server:
            journey.note("serve, in the test process (until ready)", time.monotonic() - started)
            yield server.grpc_port, server.rest_port
        return
    grpc_port, rest_port = free_port(), free_port()
    server = ServerProcess(
        keras_vit_command(
            "serve",
            f"--model_name={model_name}",
            f"--model_base_path={base_path}",
            f"--port={grpc_port}",
            f"--rest_api_port={rest_port}",
        ),
        ready=f"Exporting HTTP/REST API at:localhost:{rest_port}",
        cwd=ROOT,
        env=environment(),
    )
    try:
        server.start()
    except ServerNotReady as error:
        pytest.fail(f"keras-vit serve did not come up: {error}")
    journey.note("serve (until ready)", server.started_in)
    try:
        yield grpc_port, rest_port
    finally:
        server.stop()


def _crops(photo: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random square crops of 35-60% of the photo's short side, downscaled to 48-64 px."""
    from PIL import Image

    height, width = photo.shape[:2]
    crops = []
    for _ in range(count):
        side = int(min(height, width) * rng.uniform(0.35, 0.6))
        top, left = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
        crop = Image.fromarray(photo[top : top + side, left : left + side])
        size = int(rng.integers(48, 65))
        crops.append(np.asarray(crop.resize((size, size), Image.Resampling.BICUBIC)))
    return crops


def write_photo_folder(root: Path, per_class: int = 8, seed: int = 0) -> Path:
    """``root/<class>/<i>.jpg|png``: crops of one scikit-image photo per class."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label, photo_name in CLASS_PHOTOS.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        photo = getattr(skimage.data, photo_name)()
        for i, crop in enumerate(_crops(photo, per_class, rng)):
            if i % 2:
                Image.fromarray(crop).save(folder / f"{i:02d}.png")
            else:
                Image.fromarray(crop).save(folder / f"{i:02d}.jpg", quality=90)
    return root


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory) -> Path:
    return write_photo_folder(tmp_path_factory.mktemp("journeys") / "photos")


@pytest.fixture(scope="session")
def query_photos(tmp_path_factory) -> list[Path]:
    """Whole scikit-image photos as a user would pass them: JPEG and PNG, one grayscale."""
    import skimage.data
    from PIL import Image

    folder = tmp_path_factory.mktemp("queries")
    paths = []
    for index, name in enumerate(("astronaut", "chelsea", "coffee", "rocket", "camera")):
        image = Image.fromarray(getattr(skimage.data, name)())
        path = folder / f"{name}.{'png' if index % 2 else 'jpg'}"
        image.save(path, **({} if index % 2 else {"quality": 90}))
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, query_photos) -> Path:
    """The checkpoints of ``write_checkpoints.py``, written by transformers in a subprocess."""
    missing = [m for m in ("transformers", "torch", "tf_keras") if not importlib.util.find_spec(m)]
    if missing:
        pytest.skip(f"the journeys' checkpoints need {', '.join(missing)} (requirements-dev.txt)")
    started = time.monotonic()
    out = cached_output(
        "journeys",
        HERE / "write_checkpoints.py",
        [str(query_photos[0].parent)],
        tmp_path_factory.mktemp("checkpoints"),
        key_files=[ROOT / "tests" / "convert" / "hf_reference.py"],
        env=environment(),
        timeout=600,
    )
    if not (out / "done").exists():
        raise RuntimeError(f"write_checkpoints.py wrote no {out / 'done'}")
    print(f"journeys: checkpoints (transformers, cached) in {time.monotonic() - started:.1f} s")
    return out
