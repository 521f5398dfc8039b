"""Preemption notices: SIGTERM (and SIGINT, optionally) turn into a flag the train loop polls.

TPU and GPU schedulers send SIGTERM some seconds before they kill a job. The handler only records
the signal; the loop finishes the step in flight, writes a checkpoint with the data position,
waits for it to land and exits 0, so the scheduler's restart resumes exactly there.

With several processes every host must stop at the same step (the checkpoint is written by all of
them together), so :meth:`PreemptionWatcher.should_stop` agrees across processes: a host that got
the signal tells the others through a tiny all-gather, done every ``sync_every_steps`` steps.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any


class PreemptionWatcher:
    """Context manager installing the signal handlers; restores the previous ones on exit.

    Args:
        signals: the signals that request a stop (default SIGTERM).
        sync_every_steps: multi-process runs agree on stopping at steps that are multiples of this.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,), *, sync_every_steps: int = 1):
        if sync_every_steps < 1:
            raise ValueError(f"sync_every_steps must be >= 1, got {sync_every_steps}")
        self.signals = signals
        self.sync_every_steps = sync_every_steps
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        self.received = signum

    def __enter__(self) -> PreemptionWatcher:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def requested(self) -> bool:
        """Whether this process received a stop signal."""
        return self.received is not None

    def should_stop(self, step: int) -> bool:
        """Whether the loop must stop after ``step``; the same answer on every process.

        Single-process: this process's flag. Multi-process: at multiples of ``sync_every_steps``,
        True when any process received a signal (one all-gather of a boolean); False in between.
        """
        import jax

        if jax.process_count() == 1:
            return self.requested
        if step % self.sync_every_steps:
            return False
        import numpy as np
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.asarray(self.requested, dtype=np.int32))
        return bool(np.any(flags))
