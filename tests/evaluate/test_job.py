"""The evaluation job on a real (briefly trained) tiny model over the small world's records.

Checks the wiring end to end: queries and ground truth from the sessions, the beam's SIDs and
their items, metrics recomputed from the written predictions, BM25 beside, the watcher, and the
errors a user meets (another codebook, an empty split, a batch that does not split).
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from onesearch_jax.data.kuaisearch import KuaiSearchDataset
from onesearch_jax.data.schema import RecordError
from onesearch_jax.evaluate.bm25 import Bm25Retriever
from onesearch_jax.evaluate.eval_config import EvalConfig
from onesearch_jax.evaluate.job import EvalJob
from onesearch_jax.evaluate.metrics import per_query_metrics
from onesearch_jax.evaluate.segments import SegmentConfig
from onesearch_jax.models.configs import named_config
from onesearch_jax.models.mesh_config import MeshConfig, standard_logical_axis_rules
from onesearch_jax.sid.codebook import SidCodebook
from onesearch_jax.train.checkpoints import CheckpointConfig
from onesearch_jax.train.optimizer_config import OptimizerConfig
from onesearch_jax.train.run import prepare_run, train_run
from onesearch_jax.train.run_config import StageConfig, TrainConfig

LENGTHS = {"inputs": 96, "targets": 8}
QUERIES = 24


def _setup(records, model_dir, examples_dir=None):
    config = TrainConfig(
        model_dir=str(model_dir), examples_dir=str(examples_dir or records / "out"), vocab_dir=str(records / "vocab"),
        stages=[StageConfig(name="stage3", mixture_or_task="onesearch_stage3", num_steps=3,
                            task_feature_lengths=LENGTHS)],
        batch_size=8, eval_feature_lengths=LENGTHS, eval_every_steps=0, eval_max_batches=1, log_every_steps=1,
        progress_bar=False, tensorboard=False,
    )  # fmt: skip
    model = lambda v: named_config("tiny", vocab_size=v, dtype="float32")  # noqa: E731
    return prepare_run(config, model_config_fn=model, mesh_config=MeshConfig(), rules=standard_logical_axis_rules())


def _checkpoints(model_dir):
    return CheckpointConfig(directory=model_dir / "checkpoints", save_every_steps=2, keep_last=5, async_save=False)


def _config(tmp_path, **kwargs):
    defaults = dict(beam_size=6, ks=(1, 3, 5), batch_size=8, input_length=96, max_queries=QUERIES,
                    output_dir=str(tmp_path / "eval"))  # fmt: skip
    return EvalConfig(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def run(world_records, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("eval_run")
    setup = _setup(world_records, model_dir)
    train_run(setup, optimizer_config=OptimizerConfig(learning_rate=3e-3), checkpoint_config=_checkpoints(model_dir))
    return setup, model_dir


@pytest.fixture(scope="module")
def evaluated(run, world_records, tmp_path_factory):
    setup, model_dir = run
    out = tmp_path_factory.mktemp("evaluated")
    job = EvalJob.create(setup, _checkpoints(model_dir), _config(out), SegmentConfig())
    return job, job.evaluate()


def test_queries_are_the_test_sessions_with_their_clicks_and_orders(evaluated, world_records):
    job, _ = evaluated
    sessions = {s.session_id: s for s in KuaiSearchDataset(job.sources.data_dir).read("recall")}
    assert len(job.queries) == QUERIES and len({q.session_id for q in job.queries}) == QUERIES
    for q in job.queries:
        session = sessions[q.session_id]
        assert session.split == "test" and q.query == session.query
        assert q.clicked == session.clicked_item_ids and q.ordered == session.purchased_item_ids
        assert q.target_sid in {job.codebook.tokens(job.codebook.item_sid(i)) for i in q.clicked}
        assert q.segments["query_type"] != "unknown"  # the world's truth/ is beside its kuaisearch/
    assert job.sources.truth_sessions is not None


def test_beam_returns_valid_sids_and_their_items(evaluated):
    job, summary = evaluated
    rows = [json.loads(line) for line in (job.output_dir / "step_3" / "predictions.jsonl").read_text().splitlines()]
    assert [r["session_id"] for r in rows] == [q.session_id for q in job.queries]
    valid = {job.codebook.tokens(c) for c in job.codebook.item_codes}
    for row in rows:
        assert len(row["sids"]) == 5 and set(row["sids"]) <= valid and len(set(row["sids"])) == 5
        assert row["scores"] == sorted(row["scores"], reverse=True) and row["scores"][0] <= 0
        items = [i for sid in row["sids"] for i in sorted(
            int(x) for x, c in zip(job.codebook.item_ids, job.codebook.item_codes, strict=True)
            if job.codebook.tokens(c) == sid)]  # fmt: skip
        assert row["items"] == list(dict.fromkeys(items))[:5]
    assert summary["step"] == 3 and summary["sessions"] == QUERIES
    assert 0 <= summary["valid_sid_rate"]["top1"] <= 1 and summary["truncated_inputs"] >= 0


def test_written_metrics_equal_metrics_recomputed_from_the_predictions(evaluated):
    job, _ = evaluated
    out = job.output_dir / "step_3"
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    written = json.loads((out / "metrics.json").read_text())
    for system, key in (("model", "items"), ("bm25", "bm25_items")):
        for truth, field in (("click", "clicked"), ("order", "ordered")):
            values = per_query_metrics([r[key] for r in rows], [r[field] for r in rows], (1, 3, 5))
            for name, per_query in values.items():
                expected = float(np.nanmean(per_query)) if not np.isnan(per_query).all() else None
                assert written["overall"][system][truth][name] == pytest.approx(expected), (system, truth, name)
    bm25 = Bm25Retriever.from_catalogue(str(job.sources.data_dir)).rank([q.query for q in job.queries], 5)
    assert [r["bm25_items"] for r in rows] == bm25
    head = written["segments"]["query_frequency"]
    assert sum(row["sessions"] for row in head.values()) == QUERIES
    assert "| model | click |" in (out / "metrics.md").read_text()
    assert (out / "hr_at_k.png").stat().st_size > 5000 and (out / "segments.png").stat().st_size > 5000
    assert written["teacher_forced"]["eval/onesearch_personalized_raw/loss"] > 0
    history = [json.loads(line) for line in (job.output_dir / "history.jsonl").read_text().splitlines()]
    assert history[-1]["step"] == 3 and history[-1]["model/click/hr@5"] == written["overall"]["model"]["click"]["hr@5"]


def test_on_the_teacher_input_bm25_searches_with_the_keywords_too(run, evaluated, tmp_path):
    setup, model_dir = run
    student, _ = evaluated
    job = EvalJob.create(setup, _checkpoints(model_dir), _config(tmp_path, input_field="teacher_inputs", plots=False),
                         SegmentConfig())  # fmt: skip
    records = {}
    for line in student.sources.records.read_text().splitlines():
        record = json.loads(line)
        records.setdefault(record["session_id"], record)
    with_keywords = [q for q in job.queries if q.keywords]
    assert with_keywords, "the small world's test sessions should have keywords"
    for q in job.queries:
        assert q.keywords == tuple(records[q.session_id]["keywords"])
        assert q.text == records[q.session_id]["teacher_inputs"]
    texts = [" ".join((q.query, *q.keywords)) for q in job.queries]
    assert job.bm25_items == Bm25Retriever.from_catalogue(str(job.sources.data_dir)).rank(texts, 5)
    assert job.bm25_items != student.bm25_items  # the student's BM25 reads the query alone


def test_watcher_evaluates_new_checkpoints_then_stops(run, tmp_path):
    setup, model_dir = run
    quick = _config(tmp_path, max_queries=8, bm25=False, plots=False, valid_sid_rate=False, teacher_forced=False,
                    watch_timeout_seconds=60)  # fmt: skip
    job = EvalJob.create(setup, _checkpoints(model_dir), quick, SegmentConfig())
    (job.output_dir / "step_2").mkdir(parents=True)
    (job.output_dir / "step_2" / "metrics.json").write_text("{}")  # already evaluated: skipped
    seen = []
    assert job.watch(final_step=3, on_result=lambda s: seen.append(s["step"]), sleep=pytest.fail) == [3]
    assert seen == [3]
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    assert job.watch(final_step=99, on_result=seen.append, sleep=sleep, clock=lambda: now[0]) == []
    assert now[0] == 60  # polled every 30 s until 60 s passed without a new checkpoint


def test_records_of_another_codebook_are_named(run, world_records, tmp_path):
    setup, model_dir = run
    other = tmp_path / "sids"
    shutil.copytree(world_records / "sids", other)
    book = SidCodebook.load(other)
    dataclasses.replace(book, item_codes=np.roll(book.item_codes, 1, axis=0)).save(other)
    with pytest.raises(RecordError, match=r"test.jsonl:1: field 'targets': item \d+ has SID .* the records were built "
                                          r"with another codebook"):  # fmt: skip
        EvalJob.create(setup, _checkpoints(model_dir), _config(tmp_path, sids_dir=str(other)), SegmentConfig())


def test_empty_split_and_unsplittable_batch_fail_clearly(run, world_records, tmp_path):
    setup, model_dir = run
    examples = tmp_path / "examples"
    shutil.copytree(world_records / "out", examples)
    (examples / "personalized" / "test.jsonl").write_text("")
    empty = _setup(world_records, model_dir, examples_dir=examples)
    with pytest.raises(ValueError, match=r"test.jsonl: the split has no records \(0 lines\): nothing to evaluate"):
        EvalJob.create(empty, _checkpoints(model_dir), _config(tmp_path), SegmentConfig())
    (examples / "personalized" / "test.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="no personalised test records"):
        EvalJob.create(empty, _checkpoints(model_dir), _config(tmp_path), SegmentConfig())
    with pytest.raises(FileNotFoundError, match="no SID codebook"):
        EvalJob.create(setup, _checkpoints(model_dir), _config(tmp_path, sids_dir=str(tmp_path)), SegmentConfig())
