"""What a run reports: a progress bar, TensorBoard scalars and images, and ``metrics.jsonl``.

``metrics.jsonl`` holds one JSON object per logged step. It is what plots and
tests read (loss curves, exact-resume checks), since TensorBoard event files
are awkward to parse.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dinosae.io.atomic import write_text


class RunLogger:
    """Logs of the main process; other ranks get a logger that does nothing.

    Example:
        >>> import tempfile
        >>> run = tempfile.mkdtemp()
        >>> with RunLogger(run, total_steps=2, enabled=True, tensorboard=False, progress=False) as log:
        ...     log.step(1, {"loss": 0.5}, images_seen=4)
        >>> open(f"{run}/metrics.jsonl").read().count("loss")
        1
    """

    def __init__(self, run_dir: str | Path, total_steps: int, start_step: int = 0,
                 enabled: bool = True, tensorboard: bool = True, progress: bool = True) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self._writer = None
        self._bar = None
        self._last_time = time.perf_counter()
        self._last_step = start_step
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _drop_records_after(self.run_dir / "metrics.jsonl", start_step)
        self._metrics = open(self.run_dir / "metrics.jsonl", "a")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        if progress:
            self._bar = tqdm(total=total_steps, initial=start_step, dynamic_ncols=True, unit="step")

    def step(self, step: int, scalars: dict[str, float], images_seen: int) -> None:
        """Record the scalars of ``step``; ``images_seen`` (global) since the last call gives throughput.

        NaN values (a quantity with no sample this time) are left out.
        """
        if not self.enabled:
            return
        now = time.perf_counter()
        elapsed = max(now - self._last_time, 1e-9)
        record = {name: value for name, value in scalars.items() if not math.isnan(value)}
        record.update(step=step, images_per_s=images_seen / elapsed)
        self._last_time = now
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        if self._writer is not None:
            for name, value in record.items():
                if name != "step":
                    self._writer.add_scalar(name, value, step)
        if self._bar is not None:
            self._bar.update(step - self._last_step)
            shown = {k: f"{v:.4g}" for k, v in record.items() if k != "step"}
            self._bar.set_postfix(shown, refresh=False)
        self._last_step = step

    def images(self, tag: str, grid: torch.Tensor, step: int) -> None:
        """A (3, H, W) image grid in [0, 1] to TensorBoard."""
        if self.enabled and self._writer is not None:
            self._writer.add_image(tag, grid.clamp(0, 1), step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._metrics.close()
        if self._writer is not None:
            self._writer.close()
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop_records_after(path: Path, step: int) -> None:
    """Keep only the records up to ``step``: a resumed run logs the later steps again, and a killed
    run's last line may be cut short."""
    if not path.is_file():
        return
    kept, changed = [], False
    for line in path.read_text().splitlines():
        try:
            keep = int(json.loads(line)["step"]) <= step
        except (ValueError, KeyError, TypeError):
            keep = False
        changed |= not keep
        if keep:
            kept.append(line + "\n")
    if changed:
        write_text(path, "".join(kept))


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """The records of ``RUN/metrics.jsonl``; a resumed run's later records replace earlier ones."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    by_step: dict[int, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            by_step[int(record["step"])] = record
    return [by_step[s] for s in sorted(by_step)]
