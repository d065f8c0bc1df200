"""Workaround: ``--dist loadgroup`` groups nothing with pytest >= 9.2 and pytest-xdist 3.8.

xdist marks a test's group by appending ``@GROUP`` to the legacy ``item._nodeid``
on the worker; pytest 9.2 builds ``item.nodeid`` from a structured ``item._id``
instead, so the suffix is lost and every ``xdist_group`` test is scheduled on its
own (https://github.com/pytest-dev/pytest-xdist/issues/1386, fix proposed in
https://github.com/pytest-dev/pytest-xdist/pull/1388). After xdist's hook, this one
moves the suffixed id into ``item._id``, so the tests of a group (the demo's two
readers of one default run) meet on one worker again.

Narrow: it acts only on xdist workers of a ``--dist loadgroup`` run, only where
pytest has structured node ids, and only on items whose two ids differ.
``tests/support/test_xdist_groups.py`` fails once xdist does this itself.
"""

from __future__ import annotations

import pytest
from packaging.version import Version

try:  # pytest >= 9.2
    from _pytest.nodeid import NodeId
except ImportError:  # older pytest: xdist's own suffix works
    NodeId = None

NEEDED = NodeId is not None and Version(pytest.__version__) >= Version("9.2")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    if not NEEDED or not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        grouped = item.__dict__.get("_nodeid")
        if isinstance(grouped, str) and "@" in grouped and grouped != item.nodeid:
            item._id = NodeId.parse(grouped)
