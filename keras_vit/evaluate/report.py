"""``report.html``: every number and figure in one self-contained page (images inlined)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
.summary td { font-weight: bold; }
"""


def _image(path: Path | None, alt: str) -> str:
    if path is None:
        return f"<p>(no {html.escape(alt)})</p>"
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _row(cells, tag="td") -> str:
    return "<tr>" + "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in cells) + "</tr>"


def write_report(metrics: dict, figures: dict[str, Path | None], path: Path) -> Path:
    """Writes the page; ``figures`` maps names (``confusion_counts``, ...) to PNG paths."""
    k = metrics["top_k"]
    summary = [
        ("images", metrics["num_images"]),
        ("accuracy", f"{metrics['accuracy']:.4f}"),
        (f"top-{k} accuracy", f"{metrics[f'top_{k}_accuracy']:.4f}"),
        ("macro F1", f"{metrics['macro_avg']['f1']:.4f}"),
        ("weighted F1", f"{metrics['weighted_avg']['f1']:.4f}"),
        ("ECE", f"{metrics['ece']:.4f}"),
        ("throughput", f"{metrics['images_per_second']:.1f} images/s"),
        ("wall time", f"{metrics['seconds']:.2f} s"),
    ]
    per_class = [_row(("class", "precision", "recall", "F1", "support"), "th")]
    for label, values in metrics["per_class"].items():
        per_class.append(
            _row(
                (
                    label,
                    f"{values['precision']:.4f}",
                    f"{values['recall']:.4f}",
                    f"{values['f1']:.4f}",
                    values["support"],
                )
            )
        )
    for name in ("macro_avg", "weighted_avg"):
        values = metrics[name]
        per_class.append(
            _row(
                (
                    name.replace("_avg", " average"),
                    f"{values['precision']:.4f}",
                    f"{values['recall']:.4f}",
                    f"{values['f1']:.4f}",
                    metrics["num_images"],
                )
            )
        )
    latency = ""
    if metrics.get("latency"):
        rows = "".join(_row((key, f"{value:.2f}")) for key, value in metrics["latency"].items())
        latency = (
            "<h2>Latency per request</h2><table>"
            + rows
            + "</table>"
            + _image(figures.get("latency"), "latency histogram")
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>keras-vit evaluation: {html.escape(metrics["model"])}</title>
<style>{_STYLE}</style></head><body>
<h1>Evaluation report</h1>
<p>Model: {html.escape(metrics["model"])} ({html.escape(metrics["mode"])})<br>
Data: {html.escape(metrics["data"])}</p>
<table class="summary">{"".join(_row(item) for item in summary)}</table>
<h2>Per class</h2><table>{"".join(per_class)}</table>
<h2>Confusion matrix</h2>
{_image(figures.get("confusion_normalized"), "normalised confusion matrix")}
{_image(figures.get("confusion_counts"), "confusion matrix counts")}
<h2>Calibration</h2>
{_image(figures.get("reliability"), "reliability diagram")}
<h2>Worst misclassifications</h2>
{_image(figures.get("gallery"), "misclassification gallery")}
{latency}
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path
