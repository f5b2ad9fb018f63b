"""Line plots for reports and ablations, written as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence


def line_plot(path: str | os.PathLike, series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *,
              title: str, xlabel: str, ylabel: str, logy: bool = False, logx: bool = False,
              levels: Mapping[str, float] | None = None) -> Path:
    """One PNG with a line per ``name -> (xs, ys)`` and a dashed horizontal line per ``levels`` entry
    ``name -> y`` (a floor, a reference); returns its path.

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
    import matplotlib.ticker

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    levels = levels or {}
    # Past a few entries the legend would cover the curves: it goes to the right of the axes.
    beside = len(series) + len(levels) > 4
    figure, axis = plt.subplots(figsize=(8.5 if beside else 5.5, 3.5), dpi=120)
    for name, (xs, ys) in series.items():
        # Markers show where a short series was measured; on a long curve they would hide it.
        axis.plot(list(xs), list(ys), label=name, linewidth=1.5, marker="o" if len(xs) <= 40 else None,
                  markersize=3)
    for (name, y), shade in zip(levels.items(), ("black", "dimgray", "darkgray", "silver")):
        axis.axhline(y, label=name, color=shade, linestyle="--", linewidth=1.0)
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    if logy:
        axis.set_yscale("log")
    if logx:
        axis.set_xscale("log", base=2)
        axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axis.grid(alpha=0.3)
    if beside:
        axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", frameon=False)
    elif len(series) + len(levels) > 1:
        axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
