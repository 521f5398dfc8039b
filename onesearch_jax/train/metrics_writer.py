"""Scalar metrics to a JSON-lines log and to TensorBoard, written by process 0 only.

Each call of :meth:`MetricsWriter.write` appends one line to ``model_dir/metrics.jsonl``:

    {"step": 120, "split": "train", "time": 1763800000.1, "loss": 2.31, "examples_per_second": 410.0, ...}

and, with TensorBoard on, one scalar per metric to ``model_dir/tensorboard/<split>`` (``tensorboardX``
event files, readable by ``tensorboard --logdir MODEL_DIR/tensorboard``). A resumed run appends to the
same files, after setting aside what the stopped run logged past the step it resumes from: those
records move to ``metrics.superseded.jsonl`` (kept, not deleted; a line cut short by a kill goes
there too), and TensorBoard is told to purge those events (``purge_step``). So ``metrics.jsonl``
holds each step once, as an uninterrupted run would, and a restart after a crash does not leave two
curves over the steps it repeats.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from absl import logging

SUPERSEDED = "metrics.superseded.jsonl"


class MetricsWriter:
    """Writes scalar metrics to ``metrics.jsonl`` and TensorBoard under ``model_dir``.

    Args:
        model_dir: the run directory.
        enabled: write anything at all (False on processes other than 0).
        tensorboard: also write TensorBoard event files.
        start_step: the step the run (re)starts from; earlier runs' records of later steps are set
            aside (``metrics.superseded.jsonl``) and TensorBoard purges their events.
    """

    def __init__(self, model_dir: str | os.PathLike[str], *, enabled: bool = True, tensorboard: bool = True,
                 start_step: int = 0):  # fmt: skip
        self.enabled = enabled
        self.path = Path(model_dir) / "metrics.jsonl"
        self._tensorboard = tensorboard and enabled
        self._start_step = start_step
        self._writers: dict[str, Any] = {}
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._set_aside_after(start_step)

    def _set_aside_after(self, step: int) -> None:
        """Moves the records of steps after ``step``, and unreadable lines, to ``metrics.superseded.jsonl``."""
        if not self.path.is_file():
            return
        kept, moved = [], []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                later = int(json.loads(line)["step"]) > step
            except (ValueError, KeyError, TypeError):  # JSONDecodeError is a ValueError
                later = True
            (moved if later else kept).append(line + "\n")
        if not moved:
            return
        with open(self.path.with_name(SUPERSEDED), "a", encoding="utf-8") as f:
            f.writelines(moved)
        partial = self.path.with_name(self.path.name + ".tmp")
        partial.write_text("".join(kept), encoding="utf-8")
        os.replace(partial, self.path)
        logging.warning("%s: %d lines past step %d or unreadable (logged by a run that stopped before its next "
                        "checkpoint) moved to %s", self.path, len(moved), step, SUPERSEDED)  # fmt: skip

    def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
        """Appends ``metrics`` of ``split`` (``train``, ``eval``...) at ``step``; non-finite values become null."""
        if not self.enabled:
            return
        values = {str(k): float(v) for k, v in metrics.items()}
        record = {"step": int(step), "split": split, "time": round(time.time(), 3)}
        record.update({k: (v if math.isfinite(v) else None) for k, v in values.items()})
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=False) + "\n")
        if self._tensorboard:
            writer = self._writer(split)
            for name, value in values.items():
                writer.add_scalar(name, value, global_step=int(step))

    def _writer(self, split: str) -> Any:
        if split not in self._writers:
            from tensorboardX import SummaryWriter  # only runs that write TensorBoard load it

            logdir = self.path.parent / "tensorboard" / split
            purge = self._start_step + 1 if self._start_step else None
            self._writers[split] = SummaryWriter(logdir=str(logdir), purge_step=purge, flush_secs=30)
        return self._writers[split]

    def flush(self) -> None:
        """Flushes the TensorBoard writers (the JSON lines are written at once)."""
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        """Flushes and closes the TensorBoard writers."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def read_metrics(path: str | os.PathLike[str], split: str | None = None) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (those of ``split`` only, if given), in file order."""
    out = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not a JSON metrics record: {error}") from error
            if split is None or record.get("split") == split:
                out.append(record)
    return out
