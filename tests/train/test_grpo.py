"""grpo.py: rollout scoring by hand, the loss's value, and a GRPO step that learns what is rewarded.

A tiny T5 and a hand-built trie of six SIDs (codes 2 x 3 x 2, tokens from id 10): no data files, so
the step's programs (sampler, scoring, updates) are checked on their own. ``tests/train/test_run.py``
runs the stage end to end on the small world's records.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from onesearch_jax.decode.device_trie import DeviceTrie
from onesearch_jax.decode.sampling import SampleResult
from onesearch_jax.models import partitioning
from onesearch_jax.models.configs import named_config
from onesearch_jax.models.encoder_decoder import EncoderDecoder
from onesearch_jax.models.mesh_config import MeshConfig, standard_logical_axis_rules
from onesearch_jax.sid.trie import SidTrie
from onesearch_jax.train import tpma
from onesearch_jax.train.grpo import GrpoTables, make_grpo_loss, make_grpo_step, rollout_logprobs, score_rollouts
from onesearch_jax.train.grpo_config import GrpoConfig
from onesearch_jax.train.objective import make_train_objective
from onesearch_jax.train.optimizer_config import OptimizerConfig
from onesearch_jax.train.optimizers import make_optimizer
from onesearch_jax.train.run_config import StageConfig
from onesearch_jax.train.state import TrainState, shard_train_state
from onesearch_jax.train.step import cross_entropy_loss
from onesearch_jax.train.tpma_config import AdvantageConfig
from onesearch_jax.xla_flags import with_xla_defaults

ROOT = Path(__file__).resolve().parents[2]

RULES = standard_logical_axis_rules()
FIRST_IDS = (10, 12, 15)  # token of code c at position t: FIRST_IDS[t] + c
CODES = np.array([[0, 0, 0], [0, 0, 1], [0, 2, 0], [1, 1, 0], [1, 1, 1], [1, 2, 1]])
VOCAB = 128


def _tables(ctr=(0.1, 0.2, 0.3, 0.4, 0.5, 2.0)) -> GrpoTables:
    trie = SidTrie.build(CODES, np.arange(len(CODES)), (2, 3, 2))
    return GrpoTables(trie=DeviceTrie.from_trie(trie, FIRST_IDS), ctr=jnp.asarray(ctr, jnp.float32),
                      leaf_tokens=jnp.asarray(trie.leaf_sids + np.asarray(FIRST_IDS), jnp.int32))  # fmt: skip


def _tokens(leaves) -> np.ndarray:
    return (CODES[np.asarray(leaves)] + np.asarray(FIRST_IDS)).astype(np.int32)


def _feedback(clicked, ordered, relevance=(), tiers=(), width=3) -> dict[str, np.ndarray]:
    """One prompt's feedback as the GRPO feature converter gives it: leaves + 1, 0 = padding."""

    def row(values):
        return np.asarray([v + 1 for v in values] + [0] * (width - len(values)), np.int32)

    return {"clicked_leaves": row(clicked), "ordered_leaves": row(ordered), "relevance_leaves": row(relevance),
            "relevance_tiers": np.asarray(list(tiers) + [0] * (width - len(tiers)), np.int32)}  # fmt: skip


def _stack(rows: list[dict[str, np.ndarray]]) -> dict[str, jax.Array]:
    return {k: jnp.asarray(np.stack([r[k] for r in rows])) for k in rows[0]}


def test_score_rollouts_rewards_advantages_and_metrics_by_hand():
    """Two prompts, G = 4. Prompt 0: clicked SID 1, ordered SID 4, SID 5 labelled tier 2; prompt 1
    has no feedback at all. CTR by leaf 0.1 .. 0.5 and 2.0 (clipped to 1)."""
    leaves = np.array([[1, 4, 5, 1], [0, 0, 2, 3]])
    samples = SampleResult(tokens=jnp.asarray(_tokens(leaves)), leaves=jnp.asarray(leaves, jnp.int32),
                           logprobs=jnp.full((2, 4, 3), -1.0), sample_logprobs=jnp.full((2, 4, 3), -1.0))  # fmt: skip
    batch = _stack([_feedback([1], [4], [5], [2]), _feedback([], [])])
    config = GrpoConfig(num_samples=4, advantage=AdvantageConfig(position_weights=(2.0, 2.0, 1.0)))
    reference = jnp.full((2, 4, 3), -1.5)
    features, metrics = score_rollouts(samples, batch, _tables(), reference, config)
    # R_item: prompt 0: SID1 clicked 3 + 0.2; SID4 ordered 4 + 0.5; SID5 tier 2 + ctr 1.0; SID1 again.
    # prompt 1: ctr only 0.1, 0.1, 0.3, 0.4.
    item = np.array([[3.2, 4.5, 3.0, 3.2], [0.1, 0.1, 0.3, 0.4]])
    assert float(metrics["reward/item"]) == pytest.approx(item.mean(), abs=1e-6)
    assert float(metrics["reward/click_order"]) == pytest.approx((3 + 4 + 0 + 3) / 8)
    assert float(metrics["reward/relevance"]) == pytest.approx(2 / 8)
    assert float(metrics["reward/ctr"]) == pytest.approx((0.2 + 0.5 + 1.0 + 0.2 + 0.1 + 0.1 + 0.3 + 0.4) / 8)
    assert float(metrics["reward/zero_std_groups"]) == 0.0
    assert float(metrics["rollout/valid_sid_rate"]) == 1.0
    assert float(metrics["rollout/distinct"]) == pytest.approx((3 / 4 + 3 / 4) / 2)
    assert float(metrics["rollout/kl_to_reference"]) == pytest.approx(np.exp(-0.5) + 0.5 - 1.0, rel=1e-6)
    # the advantages are tpma.advantages of the rollouts against T = clicked + ordered, as tokens
    truths = jnp.asarray(np.stack([_tokens([1, 0, 0, 4, 0, 0]), _tokens([0] * 6)]))  # [clicked | ordered]
    mask = jnp.asarray([[True, False, False, True, False, False], [False] * 6])
    want, gates = tpma.advantages(samples.tokens, truths, mask, jnp.asarray(item, jnp.float32), config.advantage)
    np.testing.assert_allclose(features["advantages"], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(features["gates"], gates)
    # prompt 0, rollout 2 (SID 5 = codes 1,2,1) shares only code 1 with SID 4 (1,1,1): gates 1, 1/1, 1/2
    np.testing.assert_allclose(features["gates"][0, 2], [1.0, 1.0, 0.5])
    for position in (1, 2, 3):
        assert float(metrics[f"tpma/gate/pos{position}"]) == pytest.approx(float(jnp.mean(gates[..., position - 1])))
        assert float(metrics[f"tpma/advantage_std/pos{position}"]) == pytest.approx(
            float(jnp.std(want[..., position - 1])), rel=1e-5
        )
    np.testing.assert_array_equal(features["rollout_tokens"], samples.tokens)
    np.testing.assert_array_equal(features["old_logprobs"], samples.logprobs)
    np.testing.assert_array_equal(features["reference_logprobs"], reference)


def _model_and_batch(seed: int = 0):
    config = named_config("tiny", vocab_size=VOCAB, dtype="float32", dropout_rate=0.0)
    model = EncoderDecoder(config, rngs=nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    encoder = rng.integers(20, VOCAB, size=(4, 12)).astype(np.int32)
    encoder[:, 9:] = 0
    clicked = [3, 3, 0, 5]
    target = np.concatenate([_tokens(clicked), np.ones((4, 1), np.int32)], axis=1)  # SID + EOS
    batch = {
        "encoder_input_tokens": encoder,
        "decoder_target_tokens": target,
        "decoder_input_tokens": np.concatenate([np.zeros((4, 1), np.int32), target[:, :-1]], axis=1),
        "decoder_loss_weights": np.ones((4, 4), np.int32),
    }
    batch.update({k: v for k, v in _stack([_feedback([c], []) for c in clicked]).items()})
    return model, {k: jnp.asarray(v) for k, v in batch.items()}, clicked


def test_loss_is_the_policy_loss_plus_kl_plus_the_weighted_sft_cross_entropy():
    model, batch, _ = _model_and_batch()
    tokens = jnp.asarray(np.stack([_tokens([0, 3, 5]), _tokens([1, 1, 2]), _tokens([4, 0, 3]), _tokens([2, 2, 2])]))
    encoded = model.encode(batch["encoder_input_tokens"])
    current = rollout_logprobs(model, encoded, batch["encoder_input_tokens"], tokens)
    rng = np.random.default_rng(1)
    rollout = {"rollout_tokens": tokens, "old_logprobs": current - 0.1, "reference_logprobs": current + 0.2,
               "advantages": jnp.asarray(rng.standard_normal((4, 3, 3)), jnp.float32),
               "gates": jnp.asarray(rng.uniform(size=(4, 3, 3)), jnp.float32)}  # fmt: skip
    config = GrpoConfig(num_samples=3, kl_beta=0.05, sft_weight=0.1,
                        advantage=AdvantageConfig(position_weights=(2.0, 2.0, 1.0)))  # fmt: skip
    out = make_grpo_loss(config)(model, {**batch, **rollout}, rng=None, deterministic=False)
    ratio = np.exp(0.1)
    policy = -np.mean(np.asarray(rollout["gates"]) * ratio * np.asarray(rollout["advantages"]))
    kl = np.exp(0.2) - 0.2 - 1.0
    sft = cross_entropy_loss(model, batch, rng=None, deterministic=True)
    sft_mean = float(sft.loss_sum / sft.weight_sum)  # every prompt has 4 target tokens: the per-prompt mean
    assert float(out.weight_sum) == 4 * 3 * 3
    assert float(out.loss_sum / out.weight_sum) == pytest.approx(policy + 0.05 * kl + 0.1 * sft_mean, rel=1e-5)
    assert float(out.metrics["ratio"] / out.weight_sum) == pytest.approx(ratio, rel=1e-5)
    assert float(out.metrics["sft_ce"] / out.weight_sum) == pytest.approx(sft_mean, rel=1e-5)
    clipped = make_grpo_loss(dataclasses.replace(config, advantage=AdvantageConfig(mode="grpo", clip_epsilon=0.05)))
    out = clipped(model, {**batch, **rollout}, rng=None, deterministic=False)
    assert float(out.metrics["clip_fraction"] / out.weight_sum) == 1.0  # every ratio is e^0.1 > 1.05


def _step(model, config: GrpoConfig, learning_rate: float, mesh):
    optimizer = make_optimizer(OptimizerConfig(learning_rate=learning_rate, warmup_steps=0, decay="constant",
                                               weight_decay=0.0, clip_grad_norm=1.0))  # fmt: skip
    graphdef, state = TrainState.create(model, optimizer, rng=0)
    state, shardings = shard_train_state(state, mesh, RULES)
    reference = jax.tree.map(jnp.copy, state.params)
    tables = jax.device_put(_tables(), partitioning.replicated_sharding(mesh))
    step = make_grpo_step(graphdef, optimizer, mesh, RULES, state_shardings=shardings, config=config, tables=tables,
                          reference=reference)  # fmt: skip
    return graphdef, state, step


def _clicked_logprob(graphdef, params, batch, clicked) -> float:
    """Mean over prompts of log P(clicked SID) under the trie-constrained policy: the product over
    positions of the model's probability of the SID's code renormalised over the codes that the
    trie allows after its prefix (what the sampler draws from at temperature 1)."""
    model = nnx.merge(graphdef, params)
    every = jnp.broadcast_to(jnp.asarray(_tokens(range(len(CODES)))), (len(clicked), len(CODES), 3))
    encoded = model.encode(batch["encoder_input_tokens"])
    token_lp = np.asarray(rollout_logprobs(model, encoded, batch["encoder_input_tokens"], every))  # [B, SIDs, 3]
    total = 0.0
    for b, sid in enumerate(clicked):
        for t in range(3):
            siblings = {
                tuple(CODES[s, : t + 1]): s for s in range(len(CODES)) if (CODES[s, :t] == CODES[sid, :t]).all()
            }
            norm = np.logaddexp.reduce([token_lp[b, s, t] for s in siblings.values()])
            total += token_lp[b, sid, t] - norm
    return total / len(clicked)


@pytest.mark.parametrize(("mode", "learning_rate", "steps", "gain"), [("tpma", 3e-4, 8, 1.5), ("grpo", 3e-5, 5, 0.3)])
def test_steps_raise_the_probability_of_the_rewarded_sid(mode, learning_rate, steps, gain):
    """Only the click reward, no SFT loss: the policy learns from its own rollouts that the clicked
    SID pays, and the reference stays where it was. Measured here (same model, batch and seed):
    TPMA at 3e-4 takes log P(clicked) from -2.27 to -0.03 in 8 steps, every rollout then clicked;
    plain GRPO's all-or-nothing reward at 3e-4 collapses three of the four groups onto unclicked
    SIDs within two steps (no rollout of theirs ever scores, so nothing pulls them back), so it
    runs at 3e-5 (-2.27 to -1.80 in 5 steps)."""
    model, batch, clicked = _model_and_batch()
    mesh = partitioning.make_mesh(MeshConfig(), jax.devices()[:1])
    config = GrpoConfig(num_samples=8, sft_weight=0.0, reward_weights={"click_order": 1.0},
                        advantage=AdvantageConfig(mode=mode, position_weights=(2.0, 2.0, 1.0)))  # fmt: skip
    graphdef, state, step = _step(model, config, learning_rate, mesh)
    before = _clicked_logprob(graphdef, state.params, batch, clicked)
    rewards = []
    for _ in range(steps):
        state, metrics = step(state, batch)
        rewards.append(float(metrics["reward/click_order"]))
    after = _clicked_logprob(graphdef, state.params, batch, clicked)
    assert int(state.step) == steps
    assert after > before + gain, (before, after)
    assert rewards[-1] > rewards[0], rewards
    assert float(metrics["rollout/valid_sid_rate"]) == 1.0 and float(metrics["rollout/kl_to_reference"]) > 0
    assert _clicked_logprob(graphdef, step.reference, batch, clicked) == pytest.approx(before, abs=1e-5)


def test_inner_updates_count_one_step_and_start_at_ratio_one():
    model, batch, _ = _model_and_batch()
    mesh = partitioning.make_mesh(MeshConfig(), jax.devices()[:1])
    config = GrpoConfig(num_samples=4, inner_updates=3, advantage=AdvantageConfig(position_weights=(2.0, 2.0, 1.0)))
    _, state, step = _step(model, config, 1e-2, mesh)
    state, metrics = step(state, batch)
    assert int(state.step) == 1
    assert float(metrics["ratio"]) != pytest.approx(1.0, abs=1e-6)  # updates 2 and 3 moved the policy
    single = GrpoConfig(num_samples=4, advantage=AdvantageConfig(position_weights=(2.0, 2.0, 1.0)))
    _, state, step = _step(_model_and_batch()[0], single, 1e-2, mesh)
    _, metrics = step(state, batch)
    assert float(metrics["ratio"]) == pytest.approx(1.0, abs=1e-5)  # the sampler's log-probs are the policy's
    assert float(metrics["nonfinite"]) == 0.0


def test_a_sharded_step_equals_the_single_device_step():
    """Prompts over 4 devices (``data``): same rollouts (the key is per call, the draws per row), same
    update. jax fixes its device count at start-up, so ``sharded_grpo.py`` runs in a subprocess."""
    env = {**os.environ, "XLA_FLAGS": with_xla_defaults("--xla_force_host_platform_device_count=4"),
           "JAX_PLATFORMS": "cpu"}  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "tests.train.sharded_grpo"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == 4
    for name, value in result["single"].items():
        assert result["mesh"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    # Adam's first update is about lr * sign(g): where g is ~0, summation order can move an element
    # by a fraction of lr (1e-2); measured at most 2.8e-4, 3 elements of 16,384 in the embedding.
    assert result["param_diff_max"] <= 1e-3, result
    assert result["param_diff_count"] <= 1e-3 * result["param_count"], result


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_samples": 1}, "num_samples must be an int >= 2"),
        ({"inner_updates": 0}, "inner_updates must be an int >= 1"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
        ({"kl_beta": -0.1}, "kl_beta must be >= 0"),
        ({"reward_weights": {}}, "reward_weights must map"),
        ({"reward_weights": {"ctr": float("nan")}}, r"reward_weights\['ctr'\] must be a finite number"),
        ({"advantage": "tpma"}, "advantage must be an AdvantageConfig"),
    ],
)
def test_grpo_config_is_validated(change, message):
    with pytest.raises(ValueError, match=message):
        GrpoConfig(**change)


def test_objective_needs_grpo_config_exactly_for_grpo_stages():
    lengths = {"inputs": 8, "targets": 8}
    grpo_stage = StageConfig(name="g", mixture_or_task="t", num_steps=1, task_feature_lengths=lengths,
                             feature_converter="grpo")  # fmt: skip
    sft_stage = StageConfig(name="s", mixture_or_task="t", num_steps=1, task_feature_lengths=lengths)
    assert make_train_objective(None, [grpo_stage], GrpoConfig()).grpo == GrpoConfig()
    with pytest.raises(ValueError, match=r"train_loss.grpo .* must be bound exactly"):
        make_train_objective(None, [grpo_stage])
    with pytest.raises(ValueError, match=r"train_loss.grpo .* must be bound exactly"):
        make_train_objective(None, [sft_stage], GrpoConfig())
