"""Preemption: SIGTERM or SIGUSR1 makes a run finish its step, write a checkpoint and exit with
``PREEMPTED_EXIT_CODE``, so that a requeued job continues where it stopped (``--resume auto``).

SLURM signals every process of a job step, ranks at slightly different
moments. All ranks must stop after the same step, yet reading a flag from the
device every step would stall it. The ranks instead share their flags through
a gloo group on the CPU: the all-reduce of step ``s`` starts when ``s`` ends
and is read when ``s + 1`` ends, so every rank stops after ``s + 1`` (one
step after the first signal) and the device never waits. A single process
stops after the step it is in. A second signal stops the process at once,
unless the run is already writing its last checkpoint: then the write
finishes and the exit code is still ``PREEMPTED_EXIT_CODE``, so that a requeue
script that sees it continues the run. Data-loader workers ignore these
signals: only the main process decides.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from dinosae.runtime import DistEnv

# BSD's EX_TEMPFAIL: "a temporary failure; the user is invited to retry". A requeue script tests for it.
PREEMPTED_EXIT_CODE = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class RunPreempted(Exception):
    """A run stopped on a signal after writing its checkpoint; rerun it with ``--resume auto``."""

    def __init__(self, step: int, checkpoint: Path | None, signal_name: str) -> None:
        super().__init__(f"{signal_name} received: stopped after step {step} with a checkpoint "
                         f"({checkpoint}); rerun the same command with --resume auto to continue")
        self.step, self.checkpoint = step, checkpoint


def ignore_stop_signals(*_: Any) -> None:
    """A DataLoader ``worker_init_fn``: workers leave stop signals to the main process."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)


class PreemptionWatch:
    """Catches the stop signals for the duration of a ``with`` block; :meth:`should_stop` after each step.

    Example:
        >>> from dinosae.runtime import init_distributed
        >>> with PreemptionWatch(init_distributed("cpu")) as watch:
        ...     first = watch.should_stop()
        ...     os.kill(os.getpid(), signal.SIGUSR1)
        ...     (first, watch.should_stop(), watch.signal_name)
        (False, True, 'SIGUSR1')
    """

    def __init__(self, env: DistEnv) -> None:
        self.env = env
        self.signal_name: str | None = None
        self.finishing = False  # the stop is decided and the last checkpoint is being written
        self._previous: dict[int, Any] = {}
        self._pending: tuple[Any, torch.Tensor] | None = None
        self._group = None

    def __enter__(self) -> PreemptionWatch:
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._caught)
        if self.env.distributed:
            self._group = dist.new_group(backend="gloo")
        return self

    def _caught(self, number: int, frame: Any) -> None:
        if self.signal_name is not None:  # the second signal: stop now, unless the last checkpoint is being written
            if self.finishing:
                return
            self._restore()
            os.kill(os.getpid(), number)
            return
        self.signal_name = signal.Signals(number).name

    def should_stop(self) -> bool:
        """Whether every rank stops after this step (collective in a distributed run: call it on every rank)."""
        mine = self.signal_name is not None
        if self._group is None:
            self.finishing = mine
            return mine
        decided = False
        if self._pending is not None:
            work, flags = self._pending
            work.wait()
            decided = bool(flags.item())
        flags = torch.tensor([int(mine)])
        self._pending = (dist.all_reduce(flags, group=self._group, async_op=True), flags)
        if decided and self.signal_name is None:
            self.signal_name = "a stop signal (on another rank)"
        self.finishing = decided
        return decided

    def _restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def __exit__(self, *exc: object) -> None:
        self._restore()
        if self._pending is not None:
            self._pending[0].wait()  # every rank consumed the same collectives
            self._pending = None
