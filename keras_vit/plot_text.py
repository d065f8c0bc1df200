"""Labels and file names in matplotlib figures, shown as the characters they hold.

matplotlib reads ``$...$`` in any text as mathematics (and all text as TeX
under ``text.usetex``): a class folder named ``$\\foo{$`` stops the drawing
with ``ParseFatalException``, and ``price $5 and $6`` renders in italics.
:func:`save_figure` turns both off on every Text object of a figure (titles,
tick labels, legends, annotations) before saving it, so that
``Text.get_text()`` is exactly what the image shows. :func:`display_label`
shortens very long names, keeping both ends.
"""

from __future__ import annotations

import unicodedata

# Characters of a label kept in a figure; longer ones keep their start and end.
DEFAULT_LIMIT = 40
ELLIPSIS = "\u2026"


def display_label(text: str, limit: int = DEFAULT_LIMIT) -> str:
    """``text`` on one line (control characters as spaces), shortened to ``limit`` characters.

    A shortened label keeps its first two thirds and its last third around "…",
    since names that differ often differ at the end (``photo_0001`` ...).
    """
    text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in str(text))
    if limit < 2 or len(text) <= limit:
        return text
    tail = (limit - 1) // 3
    head = limit - 1 - tail
    return text[:head] + ELLIPSIS + text[len(text) - tail :]


def literal_text(figure) -> None:
    """No mathtext and no TeX for any text of ``figure`` drawn so far (ticks included)."""
    from matplotlib.text import Text

    for axes in figure.get_axes():
        # Creates the tick label Text objects of fixed ticks (category labels) now, so that
        # they are found below; the draw reuses them.
        axes.get_xticklabels()
        axes.get_yticklabels()
    for text in figure.findobj(Text):
        text.set_usetex(False)
        text.set_parse_math(False)


def save_figure(figure, target, **kwargs) -> None:
    """``figure.savefig(target)`` with every text literal (see :func:`literal_text`)."""
    literal_text(figure)
    figure.savefig(target, **kwargs)
