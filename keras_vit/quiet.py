"""The one place that keeps TensorFlow's (and gRPC's) start-up lines off the user's terminal.

Importing TensorFlow (2.21) writes lines such as ``I0000 ... oneDNN custom
operations are on``, ``Could not find cuda drivers`` (twice) and ``WARNING: All
log messages before absl::InitializeLog() is called are written to STDERR`` to
file descriptor 2 before its log level is read, so ``TF_CPP_MIN_LOG_LEVEL``
alone cannot hide them; the first device query then logs ``E0000 ... failed
call to cuInit`` on machines without a GPU. Users read them as failures.

One policy, used by the library, the ``keras-vit`` commands, ``make demo``,
the server and the batch workers alike:

* :func:`install` runs when ``keras_vit`` (or ``serving``) is imported, so before
  any TensorFlow import of this project. It puts a finder on ``sys.meta_path``
  that runs the first ``import tensorflow`` -- and the first device query --
  with file descriptor 2 sent to a temporary file, then writes back every line
  that is not such a log line (Python warnings and errors of the import still
  show). It also makes gRPC's C core log errors only (``GRPC_VERBOSITY=ERROR``),
  so a connection the server closed after idling (``chttp2_transport.cc ... Got
  goaway``) prints nothing. Nothing else changes for a library user.
* :func:`for_program` is what this project's own programs (the CLI, the demo,
  the server) call first: the above, plus TensorFlow's runtime level
  ``TF_CPP_MIN_LOG_LEVEL=2`` (C++ errors still show; info and warnings such as
  ``Local rendezvous is aborting`` for every refused request do not).
* The user's say wins, and child processes inherit it through the environment:
  ``KERAS_VIT_TF_LOGS=1`` (what ``keras-vit --tf-logs`` sets) or
  ``TF_CPP_MIN_LOG_LEVEL=0`` shows every line; any other ``TF_CPP_MIN_LOG_LEVEL``
  or ``GRPC_VERBOSITY`` the user set is kept as it is.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile

# Set to "1" to see TensorFlow's and gRPC's start-up lines (keras-vit --tf-logs sets it).
TF_LOGS = "KERAS_VIT_TF_LOGS"
# TensorFlow's runtime log level in this project's programs: errors only.
PROGRAM_LEVEL = "2"

# glog/absl line prefixes ("I0000 00:00:...", "W1201 ...", "E0000 ..."), absl's pre-init notice
# and the second line of the CPU-feature notice.
TF_LOG_LINE = re.compile(
    r"^(?:[IWEF]\d{4} |WARNING: All log messages before absl::InitializeLog"
    r"|To enable the following instructions: .*rebuild TensorFlow)"
)


def logs_wanted() -> bool:
    """Whether the user asked for TensorFlow's log lines (``KERAS_VIT_TF_LOGS=1``, level 0)."""
    return os.environ.get(TF_LOGS) == "1" or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0"


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
        if logs_wanted():
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


_FINDER = _QuietTensorFlowImport()
_SET_GRPC_VERBOSITY = False  # whether install() set it (the user's own stays)


def install() -> None:
    """Filters the first ``import tensorflow`` and quiets gRPC (see above); idempotent."""
    global _SET_GRPC_VERBOSITY
    if logs_wanted():
        return
    # gRPC reads it when its C core starts (the first channel or server), not at import.
    if "GRPC_VERBOSITY" not in os.environ:
        os.environ["GRPC_VERBOSITY"] = "ERROR"
        _SET_GRPC_VERBOSITY = True
    if "tensorflow" not in sys.modules and _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def for_program(tf_logs: bool = False) -> None:
    """A program's start (CLI, demo, server): :func:`install` plus TensorFlow's runtime level.

    ``tf_logs`` (``keras-vit --tf-logs``) shows every line instead, in this process and
    in the processes it starts (they inherit ``KERAS_VIT_TF_LOGS=1``).
    """
    if tf_logs:
        os.environ[TF_LOGS] = "1"
        uninstall()
        if _SET_GRPC_VERBOSITY:
            os.environ.pop("GRPC_VERBOSITY", None)
        return
    install()
    if not logs_wanted():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", PROGRAM_LEVEL)


def uninstall() -> None:
    """TensorFlow's start-up lines print again."""
    with contextlib.suppress(ValueError):
        sys.meta_path.remove(_FINDER)
