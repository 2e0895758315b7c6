"""Plots of quality against speed, written as PNG files that say which command made them.

    figure, axes = new_plot()
    axes.scatter(...)
    save_plot(figure, axes, path, marker="bild-align eval sweep", x="speedup", y="BLEU",
              title="...")

The marker goes into the PNG's metadata, so that a later run replaces only its own plots.
No pyplot: no process-wide backend or figure state.
"""

from __future__ import annotations

import io
from pathlib import Path

from bild_align.runs.files import write_bytes_atomic


def new_plot():
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 5))
    return figure, figure.subplots()


def save_plot(figure, axes, path: Path, *, marker: str, x: str, y: str, title: str) -> None:
    axes.set_xlabel(x)
    axes.set_ylabel(y)
    axes.set_title(title)
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, dpi=110, format="png", metadata={"Software": marker})
    write_bytes_atomic(path, image.getvalue())


def holds_plot(path: Path, marker: str) -> bool:
    """Whether `path` is a PNG this tool wrote with `marker`."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return data.startswith(b"\x89PNG") and marker.encode() in data[:4096]
