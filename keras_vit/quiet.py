"""Keeps TensorFlow's C++ start-up lines off the user's terminal.

Importing TensorFlow (2.21) writes lines such as ``I0000 ... oneDNN custom
operations are on``, ``Could not find cuda drivers`` and ``WARNING: All log
messages before absl::InitializeLog() is called are written to STDERR`` to file
descriptor 2 before its log level is read, and the first device query logs
``E0000 ... failed call to cuInit`` on machines without a GPU: users read them
as failures.

:func:`install` (called when ``keras_vit`` or ``serving`` is imported) puts a
finder on ``sys.meta_path`` that runs the first ``import tensorflow`` -- and
TensorFlow's device discovery -- with file descriptor 2 sent to a temporary
file, then writes back every line that is not such a log line, so Python
warnings and errors of the import still show. Nothing else changes: TensorFlow's
log level stays the user's, and later log lines print as usual.

It does nothing when TensorFlow is already imported or when the user set
``TF_CPP_MIN_LOG_LEVEL`` (their own choice of what to see brings the lines
back); ``keras-vit --verbose`` removes it.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile

# glog/absl line prefixes ("I0000 00:00:...", "W1201 ...", "E0000 ..."), absl's pre-init notice
# and the second line of the CPU-feature notice.
TF_LOG_LINE = re.compile(
    r"^(?:[IWEF]\d{4} |WARNING: All log messages before absl::InitializeLog"
    r"|To enable the following instructions: .*rebuild TensorFlow)"
)


@contextlib.contextmanager
def filtered_stderr(pattern: re.Pattern = TF_LOG_LINE):
    """Sends file descriptor 2 to a temporary file; replays the lines not matching ``pattern``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [
                line
                for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not pattern.match(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run with its start-up lines filtered."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with filtered_stderr():
            self._loader.exec_module(module)
            # The first device query initialises the platforms (cuInit) while filtered;
            # physical devices only, so GPU options can still be set afterwards.
            module.config.list_physical_devices()

    def __getattr__(self, name):  # resource readers and the like: the real loader's
        return getattr(self._loader, name)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        uninstall()  # once
        if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


_FINDER = _QuietTensorFlowImport()


def install() -> None:
    """Filters the first ``import tensorflow`` (see the module's docstring); idempotent."""
    if "tensorflow" in sys.modules or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    """TensorFlow's start-up lines print again (``keras-vit --verbose``)."""
    with contextlib.suppress(ValueError):
        sys.meta_path.remove(_FINDER)
