"""The evaluation job (``onesearch eval``): checkpoints -> ranked items -> metrics, tables and plots.

T5X's eval job, for generative retrieval. The queries, their ground truth and segments, their
tokens and the BM25 baseline are prepared once (:meth:`EvalJob.create`); then each checkpoint is
restored, decoded with trie-constrained beam search (and without the trie, for the valid-SID
rate), scored for clicks and orders, and written under ``output_dir/step_<N>/`` (files in
:mod:`onesearch_jax.evaluate.report`). Every evaluated step also appends its headline numbers to
``output_dir/history.jsonl``. Three ways to pick checkpoints: one step (default the latest), all
steps in the model directory, or a watcher that evaluates each new checkpoint as training writes
it and stops when the run's last step is done or nothing new came for ``watch_timeout_seconds``.

Process 0 writes the files; every process decodes its share of each batch.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging

from onesearch_jax.decode.host_batches import check_batch_split, encode_texts
from onesearch_jax.evaluate import report
from onesearch_jax.evaluate.bm25 import Bm25Retriever
from onesearch_jax.evaluate.eval_config import EvalConfig
from onesearch_jax.evaluate.ranking import ModelRanker, ModelRankings
from onesearch_jax.evaluate.segments import SegmentConfig
from onesearch_jax.evaluate.test_set import EvalQuery, EvalSources, load_eval_queries, resolve_sources
from onesearch_jax.sid.codebook import SidCodebook
from onesearch_jax.train.checkpoint_config import CheckpointConfig
from onesearch_jax.train.checkpoints import Checkpointer
from onesearch_jax.train.run import RunSetup, make_evaluator, restore_params

MODEL = "model"
BM25 = "bm25"
HISTORY = "history.jsonl"


def bm25_text(query: EvalQuery, input_field: str) -> str:
    """What BM25 searches the titles with: the query, and on the teacher input its keywords too.

    BM25 reads what the model reads: ``teacher_inputs`` adds the keyword chain of thought, so
    BM25 beside a teacher-input evaluation is lexical search with the keywords appended.
    """
    return " ".join((query.query, *query.keywords)) if input_field == "teacher_inputs" else query.query


@dataclasses.dataclass
class EvalJob:
    """Everything that does not depend on the checkpoint, built once; :meth:`evaluate` runs one step."""

    setup: RunSetup
    checkpoints: CheckpointConfig
    config: EvalConfig
    sources: EvalSources
    codebook: SidCodebook
    queries: list[EvalQuery]
    tokens: np.ndarray
    truncated: int
    bm25_items: list[list[int]] | None
    output_dir: Path
    _ranker: ModelRanker | None = None
    _teacher_forced: Callable[[Any], dict[str, float]] | None = None

    @classmethod
    def create(cls, setup: RunSetup, checkpoints: CheckpointConfig, config: EvalConfig,
               segment_config: SegmentConfig) -> EvalJob:  # fmt: skip
        """Reads and checks the queries, codebook and vocabulary; indexes BM25.

        Raises:
            FileNotFoundError: records, codebook or sessions missing.
            ValueError: a codebook that does not match the vocabulary or the records (named), an
                empty split, a batch size that does not split over the mesh and hosts.
        """
        check_batch_split(config.batch_size, setup.mesh, setup.rules, "EvalConfig")
        sources = resolve_sources(setup.config.examples_dir, config.split, sids_dir=config.sids_dir,
                                  data_dir=config.data_dir)  # fmt: skip
        codebook = SidCodebook.load(sources.sids_dir)
        try:
            setup.vocab.check_codebook(codebook)
        except ValueError as error:
            raise ValueError(f"{sources.sids_dir} vs the vocabulary {setup.config.vocab_dir}: {error}") from None
        queries = load_eval_queries(sources, codebook, input_field=config.input_field, segment_config=segment_config,
                                    max_queries=config.max_queries)  # fmt: skip
        tokens, truncated = encode_texts(setup.vocab, [q.text for q in queries], config.input_length)
        bm25_items = None
        if config.bm25:
            bm25_items = Bm25Retriever.from_catalogue(str(sources.data_dir)).rank(
                [bm25_text(q, config.input_field) for q in queries], config.top_k
            )
        output_dir = Path(config.output_dir or Path(setup.config.model_dir) / "eval")
        return cls(setup=setup, checkpoints=checkpoints, config=config, sources=sources, codebook=codebook,
                   queries=queries, tokens=tokens, truncated=truncated, bm25_items=bm25_items,
                   output_dir=output_dir)  # fmt: skip

    def truth_counts(self) -> dict[str, int]:
        """Queries with at least one relevant item, per truth (``click``, ``order``)."""
        return {t: sum(bool(r) for r in report.relevant_items(self.queries, t)) for t in report.TRUTHS}

    # ------------------------------------------------------------------ one step
    def evaluate(self, step: int | None = None) -> dict[str, Any]:
        """Evaluates checkpoint ``step`` (None: the latest), writes its files, returns its summary.

        Raises:
            FileNotFoundError: no such checkpoint.
            ValueError: a checkpoint of another model or vocabulary.
        """
        graphdef, params, step = restore_params(self.setup, self.checkpoints, step)
        if self._ranker is None:
            shardings = jax.tree.map(lambda x: x.sharding, params)
            self._ranker = ModelRanker(
                graphdef, shardings, self.setup.mesh, self.setup.rules, trie=self.codebook.trie(),
                position_first_ids=self.setup.vocab.position_first_ids, config=self.config,
            )  # fmt: skip
            if self.config.teacher_forced and self.setup.config.eval_tasks:
                self._teacher_forced = make_evaluator(self.setup, graphdef, shardings)
        rankings = self._ranker.rank(params, self.tokens)
        systems = {MODEL: rankings.items, **({BM25: self.bm25_items} if self.bm25_items is not None else {})}
        per_query = {name: report.score_system(self.queries, items, self.config.ks) for name, items in systems.items()}
        summary = self._summary(step, rankings, per_query)
        if self._teacher_forced is not None:
            summary["teacher_forced"] = self._teacher_forced(params)
        if jax.process_index() == 0:
            self._write(step, summary, rankings, systems)
        return summary

    def _summary(self, step: int, rankings: ModelRankings, per_query: dict[str, report.PerQuery]) -> dict[str, Any]:
        n = len(self.queries)
        summary: dict[str, Any] = {
            "step": step,
            "split": self.config.split,
            "input_field": self.config.input_field,
            "sessions": n,
            "overall_counts": self.truth_counts(),
            **report.summarise(self.queries, per_query),
            "valid_sid_rate": None,
            "truncated_inputs": self.truncated,
            "decode_seconds": rankings.seconds,
            "queries_per_second": n / rankings.seconds,
            "sources": {k: str(v) for k, v in dataclasses.asdict(self.sources).items()},
            "config": dataclasses.asdict(self.config),
        }
        if rankings.valid_all is not None:
            summary["valid_sid_rate"] = {"top1": float(rankings.valid_top1.mean()),
                                         "all": float(rankings.valid_all.mean())}  # fmt: skip
        return summary

    def _write(self, step: int, summary: dict[str, Any], rankings: ModelRankings,
               systems: dict[str, list[list[int]]]) -> None:  # fmt: skip
        out = self.output_dir / f"step_{step}"
        out.mkdir(parents=True, exist_ok=True)
        ks = self.config.ks
        report.write_json(out / "metrics.json", summary)
        (out / "metrics.md").write_text(report.markdown(summary, ks), encoding="utf-8")
        self._write_predictions(out / "predictions.jsonl", rankings)
        if self.config.plots:
            title = f"step {step}, {self.config.split} ({len(self.queries)} sessions)"
            report.plot_hr_curves(out / "hr_at_k.png", self.queries, systems, max(ks), title)
            report.plot_segments(out / "segments.png", summary, max(ks), title)
        k = max(ks)
        headline = {"step": step, "time": time.time()}
        for name, truths in summary["overall"].items():
            for truth, values in truths.items():
                headline.update({f"{name}/{truth}/{m}": values[m] for m in (f"hr@{k}", f"mrr@{k}")})
        if summary["valid_sid_rate"]:
            headline["model/valid_sid_rate"] = summary["valid_sid_rate"]["top1"]
        with open(self.output_dir / HISTORY, "a", encoding="utf-8") as f:
            f.write(json.dumps(report.json_safe(headline)) + "\n")

    def _write_predictions(self, path: Path, rankings: ModelRankings) -> None:
        trie, tmp = self._ranker.trie, path.with_suffix(".jsonl.partial")
        with open(tmp, "w", encoding="utf-8") as f:
            for i, q in enumerate(self.queries):
                leaves = [int(x) for x in rankings.leaves[i] if x >= 0]
                row = {
                    "session_id": q.session_id, "user_id": q.user_id, "query": q.query, "segments": dict(q.segments),
                    "clicked": list(q.clicked), "ordered": list(q.ordered),
                    "sids": [self.codebook.tokens(trie.leaf_sids[x]) for x in leaves],
                    "scores": [round(float(s), 5) for s in rankings.scores[i][: len(leaves)]],
                    "items": rankings.items[i],
                    "click_hit_rank": report.hit_rank(rankings.items[i], q.clicked),
                    "order_hit_rank": report.hit_rank(rankings.items[i], q.ordered),
                }  # fmt: skip
                if rankings.valid_top1 is not None:
                    row["unconstrained_top1_valid"] = bool(rankings.valid_top1[i])
                if self.bm25_items is not None:
                    row["bm25_items"] = self.bm25_items[i]
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(path)

    # ------------------------------------------------------------------ several steps
    def evaluated_steps(self) -> set[int]:
        """Steps whose ``metrics.json`` is already in the output directory."""
        return {int(p.parent.name.removeprefix("step_")) for p in self.output_dir.glob("step_*/metrics.json")
                if p.parent.name.removeprefix("step_").isdigit()}  # fmt: skip

    def checkpoint_steps(self) -> list[int]:
        """Complete checkpoints in the model directory now, ascending (empty if none yet)."""
        try:
            with Checkpointer(self.checkpoints, read_only=True) as checkpointer:
                return checkpointer.all_steps()
        except FileNotFoundError:
            return []

    def watch(
        self,
        *,
        final_step: int,
        on_result: Callable[[dict[str, Any]], None],
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> list[int]:
        """Evaluates each checkpoint not yet evaluated, as it appears, until ``final_step`` is done
        or ``watch_timeout_seconds`` pass without a new one. Returns the steps evaluated.

        A checkpoint removed by the trainer's retention policy before it could be read is logged
        and skipped (the trainer keeps only the last few).
        """
        done, evaluated = self.evaluated_steps(), []
        last_new = clock()
        while True:
            for step in [s for s in self.checkpoint_steps() if s not in done]:
                done.add(step)
                try:
                    on_result(self.evaluate(step))
                except FileNotFoundError as error:
                    logging.warning("checkpoint %d went away before it was evaluated: %s", step, error)
                    continue
                evaluated.append(step)
                last_new = clock()
            if final_step in done:
                return evaluated
            if clock() - last_new >= self.config.watch_timeout_seconds:
                logging.warning("no new checkpoint for %.0f s; the watcher stops", self.config.watch_timeout_seconds)
                return evaluated
            sleep(self.config.watch_poll_seconds)
