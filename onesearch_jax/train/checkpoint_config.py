"""``CheckpointConfig``: plain Python (no jax or orbax), so gin registers it for every command.

``onesearch_jax.train.checkpoints`` builds the orbax ``CheckpointManager`` from it.
"""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
    """Where and how often to checkpoint, and what to keep.

    Attributes:
        directory: the checkpoint root (one sub-directory per step). Local paths are made absolute.
        save_every_steps: ``save`` writes only at multiples of this (unless ``force``).
        keep_last: the number of most recent checkpoints kept (K >= 1).
        keep_best: the number of best checkpoints by ``best_metric`` also kept (0 = off).
        best_metric: the metrics key ranking checkpoints, e.g. ``"eval/loss"``.
        best_mode: ``"min"`` (lower is better) or ``"max"``.
        async_save: write in a background thread; ``save`` returns once arrays are copied to host.
    """

    directory: str | os.PathLike[str]
    save_every_steps: int = 1000
    keep_last: int = 3
    keep_best: int = 0
    best_metric: str = "eval/loss"
    best_mode: str = "min"
    async_save: bool = True

    def __post_init__(self) -> None:
        if not str(self.directory):
            raise ValueError("CheckpointConfig.directory must be non-empty")
        for name in ("save_every_steps", "keep_last"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CheckpointConfig.{name} must be an int >= 1, got {value!r}")
        if isinstance(self.keep_best, bool) or not isinstance(self.keep_best, int) or self.keep_best < 0:
            raise ValueError(f"CheckpointConfig.keep_best must be an int >= 0, got {self.keep_best!r}")
        if self.keep_best and not self.best_metric:
            raise ValueError("CheckpointConfig.best_metric must name a metric when keep_best > 0")
        if self.best_mode not in ("min", "max"):
            raise ValueError(f"CheckpointConfig.best_mode must be 'min' or 'max', got {self.best_mode!r}")

    @property
    def path(self) -> str:
        """The directory as a string, made absolute when local (orbax requires absolute paths)."""
        text = os.fspath(self.directory)
        return text if "://" in text else os.path.abspath(text)
