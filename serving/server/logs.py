"""Log lines in the format TF Serving (TSL logging) prints them.

``2024-05-01 12:00:00.123456: I serving/server/server.py:97] Running gRPC ...``:
operators grep these lines (``Running gRPC ModelServer at``, ``Exporting
HTTP/REST API at:``), so the texts follow TF Serving's.
"""

from __future__ import annotations

import logging
import os
import sys
import time

LOGGER_NAME = "serving.server"
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_LEVEL_LETTERS = {"DEBUG": "I", "INFO": "I", "WARNING": "W", "ERROR": "E", "CRITICAL": "F"}


class TslFormatter(logging.Formatter):
    """Formats records as ``<date> <time>.<micros>: <L> <file>:<line>] <message>``."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        micros = int((record.created - seconds) * 1_000_000)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))
        path = record.pathname
        if path.startswith(_PACKAGE_ROOT):
            path = os.path.relpath(path, _PACKAGE_ROOT)
        letter = _LEVEL_LETTERS.get(record.levelname, "I")
        text = f"{stamp}.{micros:06d}: {letter} {path}:{record.lineno}] {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def configure(stream=None, level: int = logging.INFO) -> None:
    """Sends the server's log lines to ``stream`` (stderr by default), once."""
    logger = get_logger()
    for handler in logger.handlers:
        if getattr(handler, "_tsl_handler", False):
            return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(TslFormatter())
    handler._tsl_handler = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
