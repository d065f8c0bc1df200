"""The package builds without setuptools' warnings and carries its data files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(
    ".*", "__pycache__", "*.egg-info", "build", "dist", "demo_output", "tests", "benchmarks"
)


def test_the_wheel_builds_quietly_with_the_labels_and_the_ui_page(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=SKIP, symlinks=True)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-cache-dir", "-w", str(tmp_path / "wheel"), str(source)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    # setuptools' "Package 'keras_vit.data' is absent from the `packages` configuration" banner.
    output = built.stdout + built.stderr
    assert "Warning" not in output and "!!" not in output, output
    (wheel,) = (tmp_path / "wheel").glob("keras_vit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"keras_vit/data/imagenet-1k-id2label.json", "keras_vit/ui/page.html"} <= names
    assert {"keras_vit/cli/__init__.py", "serving/client/__init__.py"} <= names
