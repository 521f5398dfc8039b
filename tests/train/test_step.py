"""The jitted train/eval steps: loss values, gradient accumulation, metrics, errors before compiling.

Most tests use the fast-compiling stand-in ``MiniEncoderDecoder``; compiled steps are shared per
module (each compile costs seconds on CPU). The real tiny T5 runs in the slow test at the end and in
``test_sharded_equality.py``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from onesearch_jax.models.partitioning import DEFAULT_RULES, MeshConfig, make_mesh, shard_batch
from onesearch_jax.train.optimizers import OptimizerConfig, make_optimizer
from onesearch_jax.train.state import TrainState, init_train_state, shard_train_state
from onesearch_jax.train.step import (
    CompiledStep,
    LossOutput,
    cross_entropy_loss,
    make_eval_step,
    make_train_step,
    token_cross_entropy,
)
from tests.train.mini_model import MiniEncoderDecoder
from tests.train.sharded_equality import make_batch

VOCAB = 64


def _batch(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    return make_batch(np.random.default_rng(seed), rows=rows, enc_len=8, dec_len=6, vocab=VOCAB)


@dataclasses.dataclass
class Setup:
    graphdef: object
    fresh_state: Callable[[], TrainState]  # a new copy each call: the step donates its input state
    step: CompiledStep
    shardings: TrainState
    mesh: object


def _setup(loss_fn=cross_entropy_loss, **optimizer_kwargs) -> Setup:
    # SGD (with weight decay and clipping): its update is linear in the gradients, so equalities test
    # the gradients themselves, and it compiles in a fraction of AdamW's time. AdamW runs in
    # test_sharded_equality.py and test_optimizers.py.
    config = OptimizerConfig(name="sgd", learning_rate=0.5, weight_decay=0.01, clip_grad_norm=0.5, **optimizer_kwargs)
    optimizer = make_optimizer(config)
    mesh = make_mesh(MeshConfig())
    graphdef, state = TrainState.create(MiniEncoderDecoder(vocab=VOCAB), optimizer)
    state, shardings = shard_train_state(state, mesh, DEFAULT_RULES)
    step = make_train_step(graphdef, optimizer, mesh, DEFAULT_RULES, state_shardings=shardings, loss_fn=loss_fn)
    return Setup(graphdef, lambda: jax.tree.map(jnp.copy, state), step, shardings, mesh)


@pytest.fixture(scope="module")
def k1() -> Setup:
    return _setup()


@pytest.fixture(scope="module")
def k4() -> Setup:
    return _setup(num_microbatches=4)


def _numpy_cross_entropy(logits: np.ndarray, batch: dict[str, np.ndarray]) -> tuple[float, float]:
    logits = logits.astype(np.float64)
    log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    targets = batch["decoder_target_tokens"]
    weights = batch["decoder_loss_weights"]
    nll = log_z - np.take_along_axis(logits, targets[..., None], -1)[..., 0]
    correct = logits.argmax(-1) == targets
    return float((nll * weights).sum() / weights.sum()), float((correct * weights).sum() / weights.sum())


def test_token_cross_entropy_by_hand():
    logits = jnp.log(jnp.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]]))
    ce = jax.jit(token_cross_entropy, static_argnames="z_loss")
    out = ce(logits, jnp.array([[0, 2]]), jnp.array([[1.0, 0.0]]))
    assert float(out.loss_sum) == pytest.approx(-np.log(0.5), rel=1e-6)
    assert float(out.weight_sum) == 1.0 and float(out.metrics["accuracy"]) == 1.0
    with_z = ce(logits * 2, jnp.array([[0, 2]]), jnp.array([[1.0, 1.0]]), z_loss=1e-2)
    log_z = np.log(np.exp(2 * np.log([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]])).sum(-1))
    assert float(with_z.loss_sum) == pytest.approx(float(with_z.metrics["cross_entropy"]) + 1e-2 * np.sum(log_z**2))


def test_train_step_loss_and_metrics_equal_a_hand_computation(k1):
    state = k1.fresh_state()
    batch = _batch(8)
    forward = jax.jit(lambda params, enc, dec: nnx.merge(k1.graphdef, params)(enc, dec))
    logits = np.asarray(forward(state.params, batch["encoder_input_tokens"], batch["decoder_input_tokens"]))
    want_loss, want_accuracy = _numpy_cross_entropy(logits, batch)
    new_state, metrics = k1.step(state, shard_batch(batch, k1.mesh))
    assert float(metrics["loss"]) == pytest.approx(want_loss, rel=1e-5)
    assert float(metrics["cross_entropy"]) == pytest.approx(want_loss, rel=1e-5)
    assert float(metrics["accuracy"]) == pytest.approx(want_accuracy, abs=1e-6)
    assert float(metrics["num_tokens"]) == batch["decoder_loss_weights"].sum()
    assert float(metrics["learning_rate"]) == pytest.approx(0.5)
    assert float(metrics["grad_norm"]) > 0
    assert int(new_state.step) == 1
    assert {leaf.dtype for leaf in jax.tree.leaves(new_state.params)} == {jnp.dtype(jnp.float32)}


def test_gradient_accumulation_equals_one_big_batch(k1, k4):
    batch = _batch(16)
    start = jax.tree.map(np.asarray, k1.fresh_state().params)
    state_1, metrics_1 = k1.step(k1.fresh_state(), shard_batch(batch, k1.mesh))
    state_4, metrics_4 = k4.step(k4.fresh_state(), shard_batch(batch, k4.mesh))
    assert metrics_1.keys() == metrics_4.keys()
    for name in metrics_1:
        assert float(metrics_4[name]) == pytest.approx(float(metrics_1[name]), rel=1e-6, abs=1e-7), name
    leaves = zip(jax.tree.leaves(state_1.params), jax.tree.leaves(state_4.params), jax.tree.leaves(start), strict=True)
    for one, four, before in leaves:
        np.testing.assert_allclose(np.asarray(four), np.asarray(one), atol=1e-6, rtol=0)
        assert not np.allclose(one, before)  # the step moved every parameter
    moments = zip(jax.tree.leaves(state_1.opt_state), jax.tree.leaves(state_4.opt_state), strict=True)
    for one, four in moments:
        np.testing.assert_allclose(np.asarray(four), np.asarray(one), atol=1e-6, rtol=0)


def test_bad_batch_is_refused_before_tracing(k4):
    with pytest.raises(ValueError, match=re.escape("batch size 6 is not divisible by the batch mesh axes")):
        k4.step(k4.fresh_state(), shard_batch(_batch(6), k4.mesh))
    with pytest.raises(ValueError, match=re.escape("x num_microbatches=4 = 4")):
        k4.step(k4.fresh_state(), shard_batch(_batch(2), k4.mesh))
    fresh = _setup(num_microbatches=3)
    with pytest.raises(ValueError, match="different numbers of rows"):
        fresh.step(fresh.fresh_state(), {"a": np.zeros((3, 2)), "b": np.zeros((6, 2))})
    with pytest.raises(ValueError, match="batch size 4 is not divisible"):
        fresh.step(fresh.fresh_state(), shard_batch(_batch(4), fresh.mesh))
    assert fresh.step.jitted._cache_size() == 0  # nothing was traced or compiled
    with pytest.raises(ValueError, match="batch size 4 is not divisible"):
        fresh.step.lower(fresh.fresh_state(), shard_batch(_batch(4), fresh.mesh))


def test_lowered_step_has_a_cost_analysis(k1):
    compiled = k1.step.lower(k1.fresh_state(), shard_batch(_batch(8), k1.mesh)).compile()
    assert compiled.cost_analysis()["flops"] > 0


def test_pluggable_loss_with_its_own_metrics(k1):
    def doubled_with_z_loss(model, batch, *, rng, deterministic):
        assert not deterministic and rng is not None
        out = cross_entropy_loss(model, batch, rng=rng, deterministic=True, z_loss=1e-3)
        bonus = jax.random.uniform(rng)
        return LossOutput(2.0 * out.loss_sum, out.weight_sum, {**out.metrics, "bonus": bonus * out.weight_sum})

    custom = _setup(loss_fn=doubled_with_z_loss, num_microbatches=2)
    batch = _batch(8)
    _, metrics = custom.step(custom.fresh_state(), shard_batch(batch, custom.mesh))
    _, base = k1.step(k1.fresh_state(), shard_batch(batch, k1.mesh))
    assert float(metrics["cross_entropy"]) == pytest.approx(float(base["loss"]), rel=1e-6)
    assert float(metrics["loss"]) > 2 * float(base["loss"])  # 2 * (cross-entropy + z-loss)
    assert 0.0 < float(metrics["bonus"]) < 1.0


def test_eval_step_matches_train_loss_and_sums_aggregate(k1):
    evaluate = make_eval_step(k1.graphdef, k1.mesh, DEFAULT_RULES, params_shardings=k1.shardings.params)
    batch = _batch(8)
    state = k1.fresh_state()
    metrics = evaluate(state.params, shard_batch(batch, k1.mesh))
    _, train_metrics = k1.step(state, shard_batch(batch, k1.mesh))
    assert float(metrics["loss"]) == pytest.approx(float(train_metrics["loss"]), rel=1e-6)  # no dropout here
    assert float(metrics["loss_sum"]) == pytest.approx(float(metrics["loss"] * metrics["weight_sum"]), rel=1e-6)
    assert float(metrics["accuracy_sum"]) == pytest.approx(float(metrics["accuracy"] * metrics["weight_sum"]))
    params = k1.fresh_state().params
    halves = [evaluate(params, shard_batch({k: v[i::2] for k, v in batch.items()}, k1.mesh)) for i in (0, 1)]
    total = sum(float(h["loss_sum"]) for h in halves) / sum(float(h["weight_sum"]) for h in halves)
    assert total == pytest.approx(float(metrics["loss"]), rel=1e-6)  # summed sums give the full batch's mean


@pytest.mark.slow
def test_real_tiny_t5_trains_on_one_device():
    """bf16 activations, dropout and 2 microbatches: float32 params and moments, loss falls on a repeated batch."""
    from onesearch_jax.models import named_config
    from onesearch_jax.models.encoder_decoder import EncoderDecoder

    config = named_config("tiny", vocab_size=VOCAB, dropout_rate=0.1)  # dtype bfloat16
    optimizer = make_optimizer(OptimizerConfig(learning_rate=3e-3, num_microbatches=2))
    mesh = make_mesh(MeshConfig())
    graphdef, state, shardings = init_train_state(
        lambda rngs: EncoderDecoder(config, rngs=rngs), optimizer, mesh, DEFAULT_RULES
    )
    step = make_train_step(graphdef, optimizer, mesh, DEFAULT_RULES, state_shardings=shardings)
    batch = shard_batch(_batch(8), mesh)
    losses = []
    for _ in range(6):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
        assert np.isfinite(float(metrics["grad_norm"]))
    assert losses[-1] < losses[0] - 0.1, losses
    assert {leaf.dtype for leaf in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
    assert {leaf.dtype for leaf in jax.tree.leaves(state.opt_state[1][0].mu)} == {jnp.dtype(jnp.float32)}
