"""``EvalConfig``: plain Python (no jax), so gin registers it for every command."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

SPLITS = ("valid", "test")
INPUT_FIELDS = ("inputs", "teacher_inputs")


def _int_at_least(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"EvalConfig.{name} must be an int >= {minimum}, got {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """What ``onesearch eval`` decodes, how, and where it writes (``gin/runs/eval.gin``).

    Attributes:
        split: the personalised records evaluated, ``test`` or ``valid`` (one query per search
            session: the records of a session share its input).
        input_field: ``inputs`` (the raw query: what serving sees) or ``teacher_inputs`` (with
            the keyword chain of thought, to measure the teacher path of LR-ESD).
        sids_dir: the SID codebook (``onesearch build-sids``); default: the one the records were
            built with (``sources.sids`` in the examples manifest).
        data_dir: the KuaiSearch directory the records came from (its ``recall.jsonl`` gives each
            session's clicked and purchased items, and the train sessions the segments); default:
            the folder of ``sources.recall`` in the manifest. A generated world's ``truth/``
            beside it adds the query type.
        beam_size: beams kept per query at every SID step.
        ks: the cut-offs K of HR/MRR/NDCG/Recall@K, in items; the beam returns ``max(ks)`` SIDs,
            so ``max(ks)`` cannot exceed ``beam_size``.
        batch_size: queries per decoding batch (global; it must split over the batch mesh axes
            and the hosts).
        input_length: input tokens, EOS included (longer inputs lose their end, as in training,
            and are counted in the report).
        max_queries: evaluate only the first this many sessions (None = all).
        score_eos: add log p(EOS) after the SID to each beam's score (the trained model ends
            every target with EOS).
        valid_sid_rate: also decode without the trie (same beam) and report how many of the
            returned sequences are SIDs of real items (the paper's valid-SID rate).
        bm25: rank items by BM25 over their titles (``bm25s``) for the same queries and report
            it beside the model; with ``input_field="teacher_inputs"`` BM25 searches with the query
            and its keywords, as the model reads both.
        teacher_forced: also report the teacher-forced validation loss and token accuracy of
            ``TrainConfig.eval_tasks``.
        plots: write the PNG plots (HR@K curves, per-segment bars).
        output_dir: where the reports go (default ``MODEL_DIR/eval``; one ``step_<N>/`` each).
        watch_poll_seconds: the watcher looks for new checkpoints this often.
        watch_timeout_seconds: the watcher stops after this long without a new checkpoint (it
            also stops once the run's last step is evaluated).
    """

    split: str = "test"
    input_field: str = "inputs"
    sids_dir: str | None = None
    data_dir: str | None = None
    beam_size: int = 20
    ks: Sequence[int] = (1, 5, 10)
    batch_size: int = 32
    input_length: int = 256
    max_queries: int | None = None
    score_eos: bool = True
    valid_sid_rate: bool = True
    bm25: bool = True
    teacher_forced: bool = True
    plots: bool = True
    output_dir: str | None = None
    watch_poll_seconds: float = 30.0
    watch_timeout_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"EvalConfig.split must be one of {SPLITS}, got {self.split!r}")
        if self.input_field not in INPUT_FIELDS:
            raise ValueError(f"EvalConfig.input_field must be one of {INPUT_FIELDS}, got {self.input_field!r}")
        for name in ("beam_size", "batch_size"):
            _int_at_least(name, getattr(self, name), 1)
        _int_at_least("input_length", self.input_length, 2)
        if self.max_queries is not None:
            _int_at_least("max_queries", self.max_queries, 1)
        ks = tuple(self.ks)
        if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks) or len(set(ks)) < len(ks):
            raise ValueError(f"EvalConfig.ks must be distinct ints >= 1, got {self.ks!r}")
        object.__setattr__(self, "ks", tuple(sorted(ks)))
        if max(ks) > self.beam_size:
            raise ValueError(
                f"EvalConfig.ks: K = {max(ks)} is larger than the beam ({self.beam_size}): the beam returns at most "
                f"beam_size SIDs; raise EvalConfig.beam_size or lower K"
            )
        for name in ("watch_poll_seconds", "watch_timeout_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"EvalConfig.{name} must be a number > 0, got {value!r}")

    @property
    def top_k(self) -> int:
        """SIDs returned per query: the largest cut-off."""
        return max(self.ks)
