"""Line plots for reports and ablations, written as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence


def line_plot(path: str | os.PathLike, series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *,
              title: str, xlabel: str, ylabel: str, logy: bool = False) -> Path:
    """One PNG with a line per ``name -> (xs, ys)``; returns its path.

    Example:
        >>> import tempfile
        >>> out = line_plot(f"{tempfile.mkdtemp()}/loss.png", {"rfm": ([1, 2, 3], [3.0, 2.0, 1.5])},
        ...                 title="loss", xlabel="step", ylabel="loss")
        >>> out.stat().st_size > 0
        True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(5.5, 3.5), dpi=120)
    for name, (xs, ys) in series.items():
        axis.plot(list(xs), list(ys), label=name, linewidth=1.5)
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    if logy:
        axis.set_yscale("log")
    axis.grid(alpha=0.3)
    if len(series) > 1:
        axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
