"""The training curve as a small stand-alone SVG (no plotting library needed) and as text."""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape

_PANEL_W, _PANEL_H, _MARGIN = 360, 220, 40
_SERIES = (
    # (panel title, [(column, colour, dashed)])
    ("accuracy", [("accuracy", "#1f77b4", True), ("val_accuracy", "#1f77b4", False)]),
    ("loss", [("loss", "#d62728", True), ("val_loss", "#d62728", False)]),
)


def write_training_curve(history: Sequence[dict], path: str) -> None:
    """Writes accuracy and loss per epoch (dashed: training, solid: validation) to ``path``."""
    width = len(_SERIES) * (_PANEL_W + _MARGIN) + _MARGIN
    height = _PANEL_H + 2 * _MARGIN
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    epochs = [int(row["epoch"]) for row in history]
    for index, (title, series) in enumerate(_SERIES):
        left = _MARGIN + index * (_PANEL_W + _MARGIN)
        parts += _panel(history, epochs, title, series, left, _MARGIN)
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def _panel(history, epochs, title, series, left, top) -> list[str]:
    values = [row[c] for row in history for c, _, _ in series if c in row]
    out = [
        f'<rect x="{left}" y="{top}" width="{_PANEL_W}" height="{_PANEL_H}" '
        'fill="none" stroke="#888"/>',
        f'<text x="{left}" y="{top - 8}">{escape(title)} (dashed: train, solid: validation)</text>',
    ]
    if not values or not epochs:
        return out
    low, high = min(values), max(values)
    if high == low:
        low, high = low - 0.5, high + 0.5
    first, last = min(epochs), max(epochs)
    span = max(last - first, 1)

    def x(epoch):
        return left + (epoch - first) / span * _PANEL_W

    def y(value):
        return top + (1 - (value - low) / (high - low)) * _PANEL_H

    out.append(f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{high:.3g}</text>')
    out.append(f'<text x="{left - 4}" y="{top + _PANEL_H}" text-anchor="end">{low:.3g}</text>')
    out.append(
        f'<text x="{left + _PANEL_W / 2}" y="{top + _PANEL_H + 16}" text-anchor="middle">'
        f"epoch {first}..{last}</text>"
    )
    for column, colour, dashed in series:
        points = [(row["epoch"], row[column]) for row in history if column in row]
        if not points:
            continue
        coords = " ".join(f"{x(e):.1f},{y(v):.1f}" for e, v in points)
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        out.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.5"{dash}/>'
        )
    return out
