"""The loadgroup workaround (``tests/support/xdist_groups.py``) and the upstream bug it
works around: a test that fails once pytest-xdist keeps ``xdist_group`` suffixes itself."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import xdist_groups

ROOT = Path(__file__).resolve().parents[2]
GROUPED = textwrap.dedent(
    """
    import os
    import pytest

    pytestmark = pytest.mark.xdist_group("together")

    @pytest.mark.parametrize("index", range(6))
    def test_grouped(index, request):
        with open(os.environ["GROUP_LOG"], "a") as log:
            log.write(f"{request.node.nodeid} {os.environ['PYTEST_XDIST_WORKER']}\\n")
    """
)


def _run(tmp_path: Path, *plugins: str) -> list[tuple[str, str]]:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    options = [arg for plugin in plugins for arg in ("-p", plugin)]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-q",
         "-p", "no:cacheprovider", *options, "test_grouped.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT), GROUP_LOG=str(tmp_path / "ran.txt")),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    ran = [tuple(line.split()) for line in (tmp_path / "ran.txt").read_text().splitlines()]
    assert len(ran) == 6, done.stdout
    return ran


@pytest.mark.skipif(not xdist_groups.NEEDED, reason="pytest < 9.2: xdist's suffix works")
def test_upstream_loadgroup_still_loses_the_group_suffix(tmp_path):
    """pytest-xdist#1386. When this fails, xdist keeps the suffix itself: delete
    tests/support/xdist_groups.py, its registration in tests/conftest.py and this file."""
    ran = _run(tmp_path / "plain")
    assert not any(nodeid.endswith("@together") for nodeid, _ in ran)


def test_with_the_workaround_a_group_runs_on_one_worker(tmp_path):
    ran = _run(tmp_path, "tests.support.xdist_groups")
    assert all(nodeid.endswith("@together") for nodeid, _ in ran), ran
    assert len({worker for _, worker in ran}) == 1, ran
