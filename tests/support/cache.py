"""Reference files written by a slow script (transformers + torch), cached across test runs.

``cached_output(name, script, args, key_files=...)`` runs ``python SCRIPT OUT *ARGS`` once
per distinct input and returns a private copy of what it wrote. The cache lives in
``$KERAS_VIT_TEST_CACHE`` (default ``~/.cache/keras-vit-tests``), one folder per
``NAME-KEY``, where KEY hashes the script, the files it imports (``key_files``), the
arguments' contents and the versions of the packages that write the files. So editing a
writer, or upgrading transformers, writes new files; nothing else does.

Safe under pytest-xdist and concurrent sessions: the first process to take the folder's
file lock (``filelock``) writes into a temporary folder and renames it into place; the
others wait on the lock and then find it. A folder is complete once it holds ``.complete``.
Set ``KERAS_VIT_TEST_CACHE=off`` to always write afresh (into a temporary folder).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The packages whose versions decide what the writers write.
WRITER_PACKAGES = ("transformers", "torch", "tf-keras", "safetensors", "numpy", "scikit-image")
COMPLETE = ".complete"


def cache_root() -> Path | None:
    setting = os.environ.get("KERAS_VIT_TEST_CACHE", "")
    if setting.lower() == "off":
        return None
    return Path(setting) if setting else Path.home() / ".cache" / "keras-vit-tests"


def _versions() -> str:
    versions = []
    for package in WRITER_PACKAGES:
        try:
            versions.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} absent")
    return ";".join(versions)


def cache_key(script: Path, args: list[str], key_files: list[Path] = ()) -> str:
    """A hash of the script, the files it imports, the arguments (files and folders by content)."""
    digest = hashlib.sha256()
    for path in (script, *key_files):
        digest.update(Path(path).name.encode() + b"\0" + Path(path).read_bytes() + b"\0")
    for arg in args:
        path = Path(arg)
        if path.is_dir():  # a folder of inputs: its files' names and contents
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                digest.update(file.relative_to(path).as_posix().encode() + file.read_bytes())
        else:
            digest.update(path.read_bytes() if path.is_file() else arg.encode())
        digest.update(b"\0")
    digest.update(_versions().encode() + sys.version.encode())
    return digest.hexdigest()[:16]


def _write(script: Path, out: Path, args: list[str], env: dict, timeout: float) -> None:
    out.mkdir(parents=True, exist_ok=True)  # the writers expect their folder to exist
    started = time.monotonic()
    # The writers import the test helpers as the package ``tests``, from this checkout.
    path = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    result = subprocess.run(
        [sys.executable, str(script), str(out), *args],
        env=dict(env, PYTHONPATH=path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{script.name} failed ({result.returncode}) after {time.monotonic() - started:.0f} s:"
            f"\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )


def cached_output(
    name: str,
    script: Path,
    args: list[str],
    destination: Path,
    *,
    key_files: list[Path] = (),
    env: dict | None = None,
    timeout: float = 600,
) -> Path:
    """``destination`` (created) holding what ``python SCRIPT OUT *ARGS`` writes into OUT.

    ``destination`` is a private copy: tests may change it without touching the cache.
    """
    env = dict(os.environ if env is None else env)
    root = cache_root()
    if root is None:
        _write(script, destination, args, env, timeout)
        return destination
    from filelock import FileLock  # a test dependency (requirements-dev.txt)

    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{name}-{cache_key(script, args, key_files)}"
    if not (final / COMPLETE).exists():
        with FileLock(str(final) + ".lock", timeout=timeout + 60):
            if not (final / COMPLETE).exists():
                if final.exists():  # an interrupted copy from an older run
                    shutil.rmtree(final)
                scratch = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
                try:
                    _write(script, scratch / "out", args, env, timeout)
                    (scratch / "out" / COMPLETE).write_text(_versions() + "\n")
                    os.rename(scratch / "out", final)
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(final, destination, dirs_exist_ok=True, ignore=shutil.ignore_patterns(COMPLETE))
    return destination
