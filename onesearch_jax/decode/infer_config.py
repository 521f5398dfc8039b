"""``InferConfig``: plain Python (no jax), so gin registers it for every command."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, kw_only=True)
class InferConfig:
    """What ``onesearch infer`` decodes and where it writes.

    Attributes:
        task: the seqio Task whose ``split`` is decoded (its targets are kept for comparison).
        split: ``train``, ``validation`` or ``test``.
        inputs_file: instead of a task, a UTF-8 text file with one model input (a rendered prompt)
            per line; blank lines are an error (named by line number), not skipped.
        output: the JSON-lines file to write (default ``MODEL_DIR/infer/<task or file>_<split>_step_<N>.jsonl``).
        max_examples: decode at most this many examples (None = all).
        batch_size: rows per decoding batch (global; it must split over the data axes and hosts).
        input_length: input tokens (longer inputs lose their end, as in training).
        target_length: decoded tokens, EOS included.
    """

    task: str = "onesearch_personalized_raw"
    split: str = "test"
    inputs_file: str | None = None
    output: str | None = None
    max_examples: int | None = None
    batch_size: int = 64
    input_length: int = 256
    target_length: int = 8

    def __post_init__(self) -> None:
        if self.split not in ("train", "validation", "test"):
            raise ValueError(f"InferConfig.split must be train, validation or test, got {self.split!r}")
        for name in ("batch_size", "input_length", "target_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"InferConfig.{name} must be an int >= 1, got {value!r}")
        if self.max_examples is not None and (not isinstance(self.max_examples, int) or self.max_examples < 1):
            raise ValueError(f"InferConfig.max_examples must be an int >= 1 or None, got {self.max_examples!r}")
