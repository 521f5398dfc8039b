"""trainer.py: the loop over stages, its logging, evaluation, checkpoints, resume and preemption.

Runs on the fast stand-in model with in-memory batch streams, so every property is checked in
seconds: a resumed run ends bitwise equal to an uninterrupted one, having consumed the same batches.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import pytest

from onesearch_jax.models.partitioning import DEFAULT_RULES, MeshConfig, make_mesh, shard_batch
from onesearch_jax.train.checkpoints import CheckpointConfig, Checkpointer, abstract_train_state
from onesearch_jax.train.metrics_writer import MetricsWriter, read_metrics
from onesearch_jax.train.optimizers import OptimizerConfig, make_optimizer
from onesearch_jax.train.preemption import PreemptionWatcher
from onesearch_jax.train.state import abstract_init
from onesearch_jax.train.step import make_train_step
from onesearch_jax.train.trainer import LoopConfig, Stage, train_loop
from tests.train.mini_model import MiniEncoderDecoder
from tests.train.sharded_equality import VOCAB, make_batch

OPTIMIZER = make_optimizer(OptimizerConfig(learning_rate=3e-2))
MESH = make_mesh(MeshConfig(data=1), jax.devices()[:1])


class ListStream:
    """One fixed batch per stage (so the loss can fall); ``position`` counts batches handed out, ``log`` them."""

    def __init__(self, name: str, position: int, log: list[tuple[str, int]]):
        self.name, self.position, self.log = name, position, log

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        seed = sum(map(ord, self.name))
        self.log.append((self.name, self.position))
        self.position += 1
        return make_batch(np.random.default_rng(seed))

    def state(self) -> dict[str, Any]:
        return {"name": self.name, "position": self.position}


def stages(log: list[tuple[str, int]], steps: tuple[int, ...] = (3, 4)) -> list[Stage]:
    def opener(name: str):
        def open_stream(position: int, saved: Mapping[str, Any] | None) -> ListStream:
            if saved is not None:
                assert saved == {"name": name, "position": position}, (saved, position)
            return ListStream(name, position, log)

        return open_stream

    return [Stage(name=f"s{i}", num_steps=n, open=opener(f"s{i}")) for i, n in enumerate(steps)]


def setup():
    graphdef, abstract, shardings, init = abstract_init(
        lambda rngs: MiniEncoderDecoder(vocab=VOCAB), OPTIMIZER, MESH, DEFAULT_RULES
    )
    step = make_train_step(graphdef, OPTIMIZER, MESH, DEFAULT_RULES, state_shardings=shardings)
    return abstract, shardings, init, step


ABSTRACT, SHARDINGS, INIT, STEP = setup()


class StopAt(PreemptionWatcher):
    """A watcher that reports a preemption after step ``at`` (as if SIGTERM had arrived then)."""

    def __init__(self, at: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.at = at

    def should_stop(self, step: int) -> bool:
        return step >= self.at


def run(tmp_path, log, *, state=None, data_state=None, watcher=None, evaluate=None, steps=(3, 4), **ckpt):
    checkpointer = Checkpointer(
        CheckpointConfig(directory=tmp_path / "ckpt", save_every_steps=ckpt.pop("every", 2), async_save=False, **ckpt)
    )
    writer = MetricsWriter(tmp_path, tensorboard=True, start_step=0 if state is None else int(state.step))
    try:
        return train_loop(
            INIT() if state is None else state,
            stages=stages(log, steps),
            train_step=STEP,
            shard=lambda b: shard_batch(b, MESH),
            config=LoopConfig(global_batch_size=8, log_every_steps=2, eval_every_steps=3, progress_bar=False),
            checkpointer=checkpointer,
            writer=writer,
            evaluate=evaluate,
            watcher=watcher,
            data_state=data_state,
        )
    finally:
        writer.close()
        checkpointer.close()


def restore(tmp_path, step=None):
    with Checkpointer(CheckpointConfig(directory=tmp_path / "ckpt"), read_only=True) as checkpointer:
        return checkpointer.restore(step, abstract_state=abstract_train_state(ABSTRACT, SHARDINGS))


def assert_bitwise(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_runs_every_stage_in_order_logs_and_checkpoints(tmp_path):
    log: list[tuple[str, int]] = []
    evaluations = []

    def evaluate(state):
        evaluations.append(int(state.step))
        return {"eval/loss": 1.0 / (1 + int(state.step))}

    result = run(tmp_path, log, evaluate=evaluate)
    assert log == [("s0", 0), ("s0", 1), ("s0", 2), ("s1", 0), ("s1", 1), ("s1", 2), ("s1", 3)]
    assert result.step == 7 and not result.preempted and int(result.state.step) == 7
    assert evaluations == [3, 6, 7]
    train = read_metrics(tmp_path / "metrics.jsonl", "train")
    assert [r["step"] for r in train] == [2, 4, 6, 7]
    assert [r["stage_index"] for r in train] == [0, 1, 1, 1]
    assert all(r["examples_per_second"] > 0 and r["skipped_nonfinite_steps"] == 0 for r in train)
    assert not {"nonfinite", "nonfinite_loss", "first_nonfinite_grad"} & set(train[0])  # per-step flags, not means
    losses = [r["loss"] for r in train]
    assert losses[-1] < losses[0]
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl", "eval")] == [3, 6, 7]
    assert list((tmp_path / "tensorboard" / "train").iterdir())  # TensorBoard event files
    with Checkpointer(CheckpointConfig(directory=tmp_path / "ckpt"), read_only=True) as checkpointer:
        assert checkpointer.all_steps() == [4, 6, 7]  # every 2 steps and the last; keep_last = 3 (default)
    _, data = restore(tmp_path, 6)
    assert data == {"stage": "s1", "stream": {"name": "s1", "position": 3}, "skipped_nonfinite_steps": 0}


def test_resume_after_preemption_equals_the_uninterrupted_run(tmp_path):
    straight_log: list[tuple[str, int]] = []
    straight = run(tmp_path / "straight", straight_log)

    first_log: list[tuple[str, int]] = []
    first = run(tmp_path / "resumed", first_log, watcher=StopAt(3))  # stops at the stage boundary
    assert first.preempted and first.step == 3
    state, data_state = restore(tmp_path / "resumed")
    assert int(state.step) == 3
    assert data_state == {"stage": "s1", "stream": None, "skipped_nonfinite_steps": 0}  # the next stage opens anew
    second_log: list[tuple[str, int]] = []
    second = run(tmp_path / "resumed", second_log, state=state, data_state=data_state, watcher=StopAt(5))
    assert second.preempted and second.step == 5
    state, data_state = restore(tmp_path / "resumed")
    third_log: list[tuple[str, int]] = []
    third = run(tmp_path / "resumed", third_log, state=state, data_state=data_state)
    assert third.step == 7 and third.start_step == 5
    assert first_log + second_log + third_log == straight_log
    assert_bitwise(third.state, straight.state)
    steps = [r["step"] for r in read_metrics(tmp_path / "resumed" / "metrics.jsonl", "train")]
    assert steps == [2, 3, 4, 5, 6, 7]  # each process logs its last step too


def test_finished_run_does_nothing(tmp_path):
    log: list[tuple[str, int]] = []
    result = run(tmp_path, log)
    state, data_state = restore(tmp_path)
    again: list[tuple[str, int]] = []
    result = run(tmp_path, again, state=state, data_state=data_state)
    assert again == [] and result.step == result.start_step == 7


def test_data_state_of_another_stage_is_refused(tmp_path):
    log: list[tuple[str, int]] = []
    run(tmp_path, log, watcher=StopAt(5))
    state, data_state = restore(tmp_path)
    with pytest.raises(ValueError, match=r"reading stage 's1'.*falls in stage 's0'"):
        run(tmp_path, log, state=state, data_state=data_state, steps=(6, 1))


def test_keep_best_evaluates_at_every_checkpoint(tmp_path):
    log: list[tuple[str, int]] = []
    seen = []

    def evaluate(state):
        seen.append(int(state.step))
        return {"eval/loss": abs(int(state.step) - 4)}  # best at step 4

    run(tmp_path, log, evaluate=evaluate, keep_last=1, keep_best=1)
    assert seen == [2, 3, 4, 6, 7]  # checkpoints every 2 steps and the last, eval every 3 steps
    with Checkpointer(CheckpointConfig(directory=tmp_path / "ckpt", keep_best=1), read_only=True) as checkpointer:
        assert checkpointer.all_steps() == [4, 7]
        assert checkpointer.best_step() == 4


def test_metrics_writer_nulls_non_finite_values_and_reader_names_bad_lines(tmp_path):
    writer = MetricsWriter(tmp_path, tensorboard=False)
    writer.write(1, "train", {"loss": float("nan"), "accuracy": 0.5})
    writer.close()
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert record["loss"] is None and record["accuracy"] == 0.5 and record["split"] == "train"
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write("{oops\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON metrics record"):
        read_metrics(tmp_path / "metrics.jsonl")


def test_a_resumed_writer_sets_aside_what_the_stopped_run_logged_past_its_checkpoint(tmp_path):
    writer = MetricsWriter(tmp_path, tensorboard=False)
    for step in (1, 2, 3, 4, 5):
        writer.write(step, "train", {"loss": float(step)})
    writer.write(4, "eval", {"loss": 0.5})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "split": "tr')  # a kill in the middle of a line
    resumed = MetricsWriter(tmp_path, tensorboard=False, start_step=4)  # the latest checkpoint is step 4
    resumed.write(5, "train", {"loss": 50.0})
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["split"], r["loss"]) for r in records] == [
        (1, "train", 1.0), (2, "train", 2.0), (3, "train", 3.0), (4, "train", 4.0), (4, "eval", 0.5),
        (5, "train", 50.0),
    ]  # fmt: skip
    superseded = (tmp_path / "metrics.superseded.jsonl").read_text().splitlines()
    assert json.loads(superseded[0]) == {**json.loads(superseded[0]), "step": 5, "loss": 5.0}
    assert superseded[1] == '{"step": 6, "split": "tr'
    MetricsWriter(tmp_path, tensorboard=False, start_step=5)  # nothing past step 5: the files stay as they are
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 6 and len(superseded) == 2


def test_disabled_writer_writes_nothing(tmp_path):
    writer = MetricsWriter(tmp_path / "other", enabled=False)
    writer.write(1, "train", {"loss": 1.0})
    assert not (tmp_path / "other").exists()
