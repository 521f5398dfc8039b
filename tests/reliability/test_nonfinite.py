"""Non-finite loss or gradients: the update is never applied; ``stop`` names the step, its batch and
the tensor, ``skip`` counts and trains on, up to ``max_nonfinite_steps``.

NaNs are injected on chosen batches of the fast stand-in model: a batch whose loss weights are
infinite (the loss and every gradient are NaN), or a ``poison`` feature that makes only the gradient
of the parameter ``wo`` NaN while the loss stays finite.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onesearch_jax.models.partitioning import DEFAULT_RULES, MeshConfig, make_mesh, shard_batch
from onesearch_jax.train.checkpoints import CheckpointConfig, Checkpointer, abstract_train_state
from onesearch_jax.train.metrics_writer import MetricsWriter, read_metrics
from onesearch_jax.train.optimizers import OptimizerConfig, make_optimizer
from onesearch_jax.train.run_config import StageConfig, TrainConfig
from onesearch_jax.train.state import abstract_init, init_train_state
from onesearch_jax.train.step import LossOutput, cross_entropy_loss, make_train_step, param_paths
from onesearch_jax.train.trainer import LoopConfig, NonFiniteError, Stage, train_loop
from tests.train.mini_model import MiniEncoderDecoder
from tests.train.sharded_equality import VOCAB, make_batch
from tests.train.test_trainer import StopAt

OPTIMIZER = make_optimizer(OptimizerConfig(learning_rate=3e-2, clip_grad_norm=1.0))
MESH = make_mesh(MeshConfig(data=1), jax.devices()[:1])


def poisoned_loss(model, batch, *, rng, deterministic) -> LossOutput:
    """Cross-entropy, plus ``0 * sqrt(0 * |wo|)`` on poisoned batches: nothing added to the loss, but
    the slope of ``sqrt`` at 0 is infinite, so the gradient of ``wo`` is NaN."""
    out = cross_entropy_loss(model, batch, rng=rng, deterministic=deterministic)
    factor = jnp.where(jnp.max(batch["poison"]) > 0, 0.0, 1.0)
    extra = 0.0 * jnp.sum(jnp.sqrt(jnp.abs(model.wo[...]) * factor))
    return LossOutput(out.loss_sum + extra, out.weight_sum, out.metrics)


GRAPHDEF, ABSTRACT, SHARDINGS, INIT = abstract_init(
    lambda rngs: MiniEncoderDecoder(vocab=VOCAB), OPTIMIZER, MESH, DEFAULT_RULES
)
STEP = make_train_step(GRAPHDEF, OPTIMIZER, MESH, DEFAULT_RULES, state_shardings=SHARDINGS, loss_fn=poisoned_loss)


def batch_at(position: int, kind: str | None = None) -> dict[str, np.ndarray]:
    """The batch at ``position`` of the stream; ``kind`` "grad" poisons ``wo``'s gradient, "weights"
    makes the loss weights infinite."""
    batch = make_batch(np.random.default_rng(position))
    batch["poison"] = np.full(len(batch["decoder_loss_weights"]), kind == "grad", np.float32)
    if kind == "weights":
        batch["decoder_loss_weights"] = np.where(batch["decoder_loss_weights"] > 0, np.inf, 0).astype(np.float32)
    return batch


class Stream:
    """One stage's batches; ``bad`` maps stream positions to the kind of NaN their batch carries."""

    def __init__(self, position: int, bad: Mapping[int, str]):
        self.position, self.bad = position, bad

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        self.position += 1
        return batch_at(self.position - 1, self.bad.get(self.position - 1))

    def state(self) -> dict[str, Any]:
        return {"position": self.position}


def run(tmp_path, *, bad, steps=6, state=None, data_state=None, watcher=None, log_every=2, **policy):
    """``train_loop`` over one stage of ``steps`` batches, checkpointing every 2 steps into tmp_path/ckpt."""
    stage = Stage(name="s0", num_steps=steps, open=lambda position, saved: Stream(position, bad))
    config = CheckpointConfig(directory=tmp_path / "ckpt", save_every_steps=2, keep_last=10, async_save=False)
    writer = MetricsWriter(tmp_path, tensorboard=False)
    with Checkpointer(config) as checkpointer:
        try:
            return train_loop(
                INIT() if state is None else state, stages=[stage], train_step=STEP,
                shard=lambda batch: shard_batch(batch, MESH),
                config=LoopConfig(global_batch_size=8, log_every_steps=log_every, progress_bar=False, **policy),
                checkpointer=checkpointer, writer=writer, watcher=watcher, data_state=data_state,
            )  # fmt: skip
        finally:
            writer.close()


def restore(tmp_path, step):
    with Checkpointer(CheckpointConfig(directory=tmp_path / "ckpt"), read_only=True) as checkpointer:
        return checkpointer.restore(step, abstract_state=abstract_train_state(ABSTRACT, SHARDINGS))


def host(tree) -> list[np.ndarray]:
    return [np.array(leaf) for leaf in jax.tree.leaves(tree)]


def assert_bitwise(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()


def steps_on_disk(tmp_path) -> list[int]:
    with Checkpointer(CheckpointConfig(directory=tmp_path / "ckpt"), read_only=True) as checkpointer:
        return checkpointer.all_steps()


@pytest.mark.parametrize(
    ("kind", "loss_finite", "first_bad"), [("grad", True, "wo"), ("weights", False, "embedding"), (None, True, None)]
)
def test_a_nonfinite_step_keeps_parameters_and_optimizer_state_and_reports_the_leaf(kind, loss_finite, first_bad):
    state = INIT()
    before = host((state.params, state.opt_state))
    state, metrics = STEP(state, shard_batch(batch_at(0, kind), MESH))
    after = host((state.params, state.opt_state))
    assert int(state.step) == 1  # the step advances either way: it consumed its batch
    assert float(metrics["nonfinite_loss"]) == (0.0 if loss_finite else 1.0)
    assert np.isfinite(float(metrics["loss"])) == loss_finite
    if first_bad is None:
        assert float(metrics["nonfinite"]) == 0.0 and int(metrics["first_nonfinite_grad"]) == -1
        assert not any(np.array_equal(x, y) for x, y in zip(before[:7], after[:7], strict=True))  # every param moved
    else:
        assert float(metrics["nonfinite"]) == 1.0
        assert param_paths(state.params)[int(metrics["first_nonfinite_grad"])] == first_bad
        assert_bitwise(after, before)


def test_param_paths_name_the_real_model_like_the_checkpoint_tree():
    from onesearch_jax.models import named_config
    from onesearch_jax.models.encoder_decoder import abstract_model
    from onesearch_jax.train.state import split_params

    paths = param_paths(split_params(abstract_model(named_config("tiny", vocab_size=128)))[1])
    assert "decoder/layers/0/self_attention/query" in paths and "token_embedder/embedding" in paths
    assert "decoder/layers/0/encoder_decoder_attention/value" in paths  # a parameter named "value" keeps its name
    assert len(paths) == len(set(paths)) and not any(path.endswith("/") for path in paths)


def test_skip_counts_warns_persists_the_count_and_max_nonfinite_steps_stops(tmp_path, caplog):
    first = run(tmp_path, bad={2: "grad"}, watcher=StopAt(3), nonfinite_policy="skip", max_nonfinite_steps=1)
    assert first.preempted and first.step == 3
    two, _ = restore(tmp_path, 2)
    three, data = restore(tmp_path, 3)
    assert int(two.step) == 2 and int(three.step) == 3  # the data position moved on past the bad batch...
    assert_bitwise(host((three.params, three.opt_state)), host((two.params, two.opt_state)))  # ...the update did not
    assert data == {"stage": "s0", "stream": {"position": 3}, "skipped_nonfinite_steps": 1}
    warnings = [r.getMessage() for r in caplog.records if "non-finite training step" in r.getMessage()]
    assert len(warnings) == 1
    assert "step 3: the gradient of wo is the first non-finite one; its batch is number 2" in warnings[0]
    assert "skipped (1 non-finite steps skipped in this run)" in warnings[0]
    train = read_metrics(tmp_path / "metrics.jsonl", "train")
    assert [(r["step"], r["skipped_nonfinite_steps"]) for r in train] == [(2, 0), (3, 1)]
    assert train[1]["loss"] is not None  # the interval means leave the skipped step out

    with pytest.raises(NonFiniteError) as error:  # resumed: the count of 1 came back with the checkpoint
        run(tmp_path, bad={2: "grad", 4: "weights"}, state=three, data_state=data, nonfinite_policy="skip",
            max_nonfinite_steps=1)  # fmt: skip
    message = str(error.value)
    assert message.startswith("non-finite training step 5: the loss is nan and the gradient of embedding")
    assert "1 non-finite steps were skipped already, the most max_nonfinite_steps=1 allows" in message
    assert steps_on_disk(tmp_path) == [2, 3, 4]


def test_skip_without_a_limit_trains_to_the_end(tmp_path):
    result = run(tmp_path, bad={1: "grad", 2: "weights", 4: "grad"}, nonfinite_policy="skip")
    assert result.step == 6 and result.train_metrics["skipped_nonfinite_steps"] == 3
    assert all(np.isfinite(leaf).all() for leaf in host(result.state.params))


@pytest.mark.parametrize(
    ("kind", "tensors"),
    [("grad", "the gradient of wo is the first non-finite one"),
     ("weights", "the loss is nan and the gradient of embedding is the first non-finite one")],
)  # fmt: skip
def test_stop_names_the_first_bad_step_its_batch_and_tensor_and_saves_nothing_later(tmp_path, kind, tensors):
    # Checked at step 4 (a log and checkpoint step), two steps after the bad one; step 4 is not saved.
    with pytest.raises(NonFiniteError) as error:
        run(tmp_path, bad={2: kind, 3: "weights"}, log_every=4)
    assert str(error.value) == (
        f"non-finite training step 3: {tensors}; its batch is number 2 (from 0) of the stream of stage 's0' (the "
        "batches carry no example ids); the update was not applied; no checkpoint of a later step was written "
        "(nonfinite_policy='stop')"
    )
    assert steps_on_disk(tmp_path) == [2]
    assert not (tmp_path / "metrics.jsonl").exists()  # nothing logged past the bad step either


def test_a_finite_run_is_bitwise_the_same_with_and_without_the_guard():
    """The guard selects the computed update when the step is finite. XLA contracts multiply-adds
    into FMAs as its fusions allow, so the select could move a last bit; on the real tiny T5 (bf16
    activations, dropout, AdamW) it does not."""
    from onesearch_jax.models import named_config
    from onesearch_jax.models.encoder_decoder import EncoderDecoder

    config = named_config("tiny", vocab_size=VOCAB, dropout_rate=0.1, num_encoder_layers=1, num_decoder_layers=1)
    optimizer = make_optimizer(OptimizerConfig(learning_rate=3e-3, weight_decay=0.01, clip_grad_norm=1.0))
    graphdef, state, shardings = init_train_state(
        lambda rngs: EncoderDecoder(config, rngs=rngs), optimizer, MESH, DEFAULT_RULES
    )
    initial = host((state.params, state.opt_state))
    results = []
    for guard in (True, False):
        step = make_train_step(graphdef, optimizer, MESH, DEFAULT_RULES, state_shardings=shardings,
                               donate_state=False, skip_nonfinite=guard)  # fmt: skip
        current, losses = state, []
        for position in range(3):
            current, metrics = step(current, shard_batch(batch_at(position), MESH))
            losses.append(float(metrics["loss"]))
        results.append((host((current.params, current.opt_state)), losses))
    (guarded, guarded_losses), (unguarded, unguarded_losses) = results
    assert guarded_losses == unguarded_losses and all(np.isfinite(guarded_losses))
    assert_bitwise(guarded, unguarded)
    assert not any(np.array_equal(x, y) for x, y in zip(guarded, initial, strict=True) if x.ndim)  # all trained


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"nonfinite_policy": "ignore"}, "nonfinite_policy must be one of ('stop', 'skip'), got 'ignore'"),
        ({"max_nonfinite_steps": -1}, "max_nonfinite_steps must be an int >= 0, got -1"),
        ({"max_nonfinite_steps": True}, "max_nonfinite_steps must be an int >= 0, got True"),
    ],
)
def test_policy_is_validated_in_both_configs(fields, message):
    with pytest.raises(ValueError, match=re.escape(f"LoopConfig.{message}")):
        LoopConfig(global_batch_size=8, **fields)
    stage = StageConfig(name="s", mixture_or_task="t", num_steps=1, task_feature_lengths={"inputs": 4, "targets": 4})
    with pytest.raises(ValueError, match=re.escape(f"TrainConfig.{message}")):
        TrainConfig(model_dir="m", examples_dir="e", vocab_dir="v", stages=[stage], **fields)


@pytest.mark.slow  # about a minute: one `onesearch train` process compiling the tiny T5
def test_onesearch_train_stops_with_one_line_and_exit_2(world_records, tmp_path):
    from tests.test_main_train import base_args, onesearch

    # A learning rate of 1e38 makes the parameters of step 1 overflow at step 2.
    args = base_args(world_records, tmp_path / "run", "--gin.stage1/StageConfig.num_steps=4",
                     "--gin.TrainConfig.eval_tasks=[]", "--gin.OptimizerConfig.learning_rate=1e38",
                     "--gin.OptimizerConfig.warmup_steps=0", "--gin.CheckpointConfig.save_every_steps=1")  # fmt: skip
    run = onesearch("train", *args)
    assert run.returncode == 2, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == run.stderr.rstrip().splitlines()[-1]
    assert re.fullmatch(
        r"error: non-finite training step 2: (the loss is \S+|the gradient of \S+ is the first non-finite one).*; "
        r"its batch is number 1 \(from 0\) of the stream of stage 'stage1_alignment' .*\(nonfinite_policy='stop'\)",
        errors[0],
    ), errors[0]
    with Checkpointer(CheckpointConfig(directory=tmp_path / "run" / "checkpoints"), read_only=True) as checkpointer:
        assert checkpointer.all_steps() == [1]  # saved every step, but not the step that went bad
