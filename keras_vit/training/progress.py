"""How much ``model.fit`` prints: a progress bar on a terminal, one line per epoch elsewhere.

Keras 3's ``Progbar`` (``keras/src/utils/progbar.py``, 3.x up to at least 3.15)
colours its bar with ANSI escape codes whatever stdout is, and treats every
POSIX process as a dynamic display (``"posix" in sys.modules``), so
``verbose=1`` fills a log file with escape codes, carriage returns and
backspaces. ``verbose=2`` prints one plain line per epoch. We therefore show
the bar only where a terminal will render it.
"""

from __future__ import annotations

import sys


def fit_verbosity(verbose: str | int, stream=None) -> int:
    """``model.fit``'s ``verbose`` for ``stream`` (default stdout).

    ``"auto"`` and ``1`` give the progress bar (1) on a terminal and one line
    per epoch (2) otherwise; 0 and 2 are kept.
    """
    if verbose not in ("auto", 0, 1, 2):
        raise ValueError(f"verbose must be 'auto', 0, 1 or 2, got {verbose!r}")
    if verbose in (0, 2):
        return verbose
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return 1 if isatty is not None and isatty() else 2
