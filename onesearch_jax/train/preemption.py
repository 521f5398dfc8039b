"""Preemption notices: SIGTERM (and SIGINT, optionally) turn into a flag the train loop polls.

TPU and GPU schedulers send SIGTERM some seconds before they kill a job. The handler only records
the signal; the loop finishes the step in flight, skips an evaluation due at that step, writes a
checkpoint with the data position, waits for it to land and exits 0, so the scheduler's restart
resumes exactly there.

Deadline: with ``deadline_seconds > 0`` a watchdog thread measures the time since the signal. If
the stop checkpoint has not landed by then, it logs one line (the deadline, the step being written,
the newest complete checkpoint, which a restart resumes from) and ends the process with
:data:`DEADLINE_EXIT_STATUS`. Nothing half-written is ever restored: orbax writes a step under
``<step>.orbax-checkpoint-tmp`` and renames it only once complete, and a restart verifies the
step's ``checksums.json``. Set the deadline a few seconds below the scheduler's grace period, so the
process reports and exits before the scheduler's SIGKILL.

With several processes every host must stop at the same step (the checkpoint is written by all of
them together), so :meth:`PreemptionWatcher.should_stop` agrees across processes: a host that got
the signal tells the others through a tiny all-gather, done every ``sync_every_steps`` steps. Each
process has its own deadline, counted from its signal or, on a host without one, from the step at
which it learned of another's.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from absl import logging

DEADLINE_EXIT_STATUS = 75  # EX_TEMPFAIL (sysexits.h): a temporary failure, the job should be retried
_POLL_SECONDS = 0.1  # how often the watchdog looks at the clock


class PreemptionWatcher:
    """Context manager installing the signal handlers; restores the previous ones on exit.

    Args:
        signals: the signals that request a stop (default SIGTERM).
        sync_every_steps: multi-process runs agree on stopping at steps that are multiples of this.
        deadline_seconds: seconds after the signal by which the stop checkpoint must have landed,
            or the process exits with :data:`DEADLINE_EXIT_STATUS` (0: no deadline).
    """

    def __init__(
        self, signals: tuple[int, ...] = (signal.SIGTERM,), *, sync_every_steps: int = 1, deadline_seconds: float = 0
    ):
        if sync_every_steps < 1:
            raise ValueError(f"sync_every_steps must be >= 1, got {sync_every_steps}")
        if not math.isfinite(deadline_seconds) or deadline_seconds < 0:
            raise ValueError(f"deadline_seconds must be a number >= 0 (0: none), got {deadline_seconds}")
        self.signals = signals
        self.sync_every_steps = sync_every_steps
        self.deadline_seconds = deadline_seconds
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._stop_requested_at: float | None = None  # time.monotonic() of the signal (or of the sync)
        self._writing: int | None = None
        self._resume_step: Callable[[], int | None] | None = None
        self._lock = threading.Lock()  # never taken by the signal handler
        self._landed = threading.Event()
        self._watchdog: threading.Thread | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        self.received = signum  # plain assignments only: the handler may interrupt any code
        if self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()

    def __enter__(self) -> PreemptionWatcher:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        if self.deadline_seconds:
            self._watchdog = threading.Thread(target=self._watch, name="preemption-deadline", daemon=True)
            self._watchdog.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        self.landed()
        if self._watchdog is not None:
            self._watchdog.join()
            self._watchdog = None

    @property
    def requested(self) -> bool:
        """Whether this process received a stop signal."""
        return self.received is not None

    def should_stop(self, step: int) -> bool:
        """Whether the loop must stop after ``step``; the same answer on every process.

        Single-process: this process's flag. Multi-process: at multiples of ``sync_every_steps``,
        True when any process received a signal (one all-gather of a boolean); False in between.
        A process that learns of the stop from another starts its own deadline then.
        """
        import jax

        if jax.process_count() == 1:
            return self.requested
        if step % self.sync_every_steps:
            return False
        import numpy as np
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.asarray(self.requested, dtype=np.int32))
        stop = bool(np.any(flags))
        if stop and self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()
        return stop

    def track(self, resume_step: Callable[[], int | None]) -> None:
        """Gives the deadline's message the newest complete checkpoint step (None: there is none).

        ``resume_step`` runs on the watchdog thread while a save may be in flight.
        """
        self._resume_step = resume_step

    def writing(self, step: int) -> None:
        """The loop is writing the stop checkpoint of ``step`` (the deadline's message names it)."""
        self._writing = step

    def landed(self) -> None:
        """The stop checkpoint is complete (or the run ends another way): cancels the deadline."""
        with self._lock:
            self._landed.set()

    def _watch(self) -> None:
        while not self._landed.wait(_POLL_SECONDS):
            start = self._stop_requested_at
            if start is not None and time.monotonic() - start >= self.deadline_seconds:
                self._expire()
                return

    def _expire(self) -> None:
        with self._lock:
            if self._landed.is_set():
                return
            try:
                logging.error("%s", self._deadline_message())
                logging.flush()
                sys.stderr.flush()
            finally:
                os._exit(DEADLINE_EXIT_STATUS)

    def _deadline_message(self) -> str:
        cause = signal.Signals(self.received).name if self.received is not None else "another process's stop signal"
        if self._writing is None:
            what = "the loop had not started its stop checkpoint"
        else:
            what = f"the checkpoint of step {self._writing} had not landed"
        return (f"preemption deadline: {self.deadline_seconds:g} s after {cause} {what}; {self._resume()}; "
                f"exiting with status {DEADLINE_EXIT_STATUS}")  # fmt: skip

    def _resume(self) -> str:
        if self._resume_step is None:
            return "this run writes no checkpoints"
        try:
            step = self._resume_step()
        except Exception as error:  # the process exits next whatever happens here
            return f"the newest complete checkpoint could not be listed ({error})"
        if step is None:
            return "a restart starts from scratch (no complete checkpoint)"
        return f"a restart resumes from step {step}, the newest complete checkpoint"
