"""The TPMA-GRPO step: rollouts under the SID trie, behaviour rewards, advantages, mu updates.

OneSearch-V2's RL stage (arXiv 2603.24422, Eq. 9-19; ../shared/DESIGN.md). One step of the
train loop takes one batch of B prompts (``onesearch_personalized_grpo`` records through
``GrpoFeatureConverter``: the student input, the record's target SID, and the session's clicked,
ordered and relevance-labelled SIDs as trie leaves) and

1. **rolls out** G SIDs per prompt with the trie-constrained sampler
   (:func:`~onesearch_jax.decode.sampling.make_sampler`, queries sharded over the batch axes, no
   communication between devices), recording the sampling policy's per-token log-probabilities
   (``pi_old``, at temperature 1);
2. **scores** them (one jitted program): the reward terms of each rollout (``rewards.item_rewards``:
   R_C&O, R_CTR, R_Rel and any registered term, Eq. 9-10), the ground truths T = clicked ∪ ordered
   as token sequences, the advantages and gates (``tpma.advantages``: TPMA, Eq. 13-17, or plain
   GRPO), and the frozen reference's log-probabilities of the rollouts;
3. **updates** the policy ``GrpoConfig.inner_updates`` (mu) times on that rollout batch (one jitted
   program, the train state donated), each update minimising

       L = L_TPMA (Eq. 18-19; or GRPO's clipped surrogate) + beta * k3-KL(pi_theta || pi_ref)
           + sft_weight * CE(first ground-truth SID)

   with the ratio ``pi_theta / pi_old`` recomputed at each update; the state's step advances once.

The loss (:func:`make_grpo_loss`) is a ``LossFn`` over the rollout batch, so the update is
:func:`~onesearch_jax.train.step.make_update`'s: microbatches, gradient clipping and the
non-finite guard are the SFT step's. No dropout anywhere in the stage: the rollouts, the ratio's
numerator and the reference are all the deterministic policy (TRL's GRPO disables dropout too), so
the first update's ratio is 1 up to float rounding.

The reference policy is the parameters the stage starts from (``TrainConfig.init_checkpoint``),
held beside the train state with the parameters' shardings and never saved (a resumed run reads
it again from the same checkpoint). Its log-probabilities also give the ``kl_to_reference``
metric when ``kl_beta`` is 0.

Metrics of each step (means over the batch's prompts and rollouts):

- ``reward/item`` and ``reward/<term>`` per term; ``reward/zero_std_groups``: the fraction of
  groups whose item rewards are all equal (no item-level signal);
- ``rollout/valid_sid_rate`` (1 under the trie: it checks the sampler), ``rollout/distinct``
  (distinct SIDs per group / G), ``rollout/kl_to_reference`` (k3, at the sampling policy);
- ``tpma/gate/pos<l>`` (mean prefix gate) and ``tpma/advantage_std/pos<l>`` (spread of
  ``A^final`` over all rollouts) per SID position l = 1..L;
- from the updates (means over the mu updates): ``loss``, ``policy_loss``, ``kl``, ``sft_ce``,
  ``ratio``, ``clip_fraction`` (GRPO), ``grad_norm``, ``learning_rate``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from onesearch_jax.data.examples import CTR_FILE, examples_sids_dir, load_sid_ctr
from onesearch_jax.data.feature_converters import GRPO_FEEDBACK
from onesearch_jax.decode.device_trie import DeviceTrie
from onesearch_jax.decode.on_mesh import jit_on_mesh
from onesearch_jax.decode.sampling import SampleResult, SamplingConfig, make_sampler
from onesearch_jax.models import partitioning
from onesearch_jax.sid.codebook import SidCodebook
from onesearch_jax.train import rewards, tpma
from onesearch_jax.train.grpo_config import GrpoConfig
from onesearch_jax.train.optimizers import Optimizer
from onesearch_jax.train.state import TrainState
from onesearch_jax.train.step import (
    FIRST_NONFINITE_GRAD,
    NONFINITE,
    NONFINITE_LOSS,
    Batch,
    CompiledStep,
    LossOutput,
    Metrics,
    make_update,
    per_token_cross_entropy,
)
from onesearch_jax.vocab import OneSearchVocabulary

ROLLOUT_FEATURES = ("rollout_tokens", "old_logprobs", "advantages", "gates", "reference_logprobs")
SFT_FEATURES = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights")
_ROLLOUT_STREAM = 0x6772706F  # folded into the step's key: the rollouts' randomness, apart from dropout's


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GrpoTables:
    """What the rollouts and rewards read besides the batch, replicated on every device.

    Attributes:
        trie: the valid SIDs (the sampler's constraint; leaf i is SID i of the codebook's trie).
        ctr: ``[num_sids]`` float32 calibrated CTR of each SID, by leaf (``sid_ctr.tsv``).
        leaf_tokens: ``[num_sids, L]`` int32 the token ids that spell each SID (ground truths
            arrive as leaves; rollouts and ground truths are compared as tokens).
    """

    trie: DeviceTrie
    ctr: jax.Array
    leaf_tokens: jax.Array


def load_tables(examples_dir: str | os.PathLike, vocab: OneSearchVocabulary, mesh: Mesh) -> GrpoTables:
    """The tables of the records in ``examples_dir``: its codebook's trie (the one the GRPO task
    maps feedback SIDs with) and its ``sid_ctr.tsv``, replicated over ``mesh``.

    Raises:
        FileNotFoundError: no manifest, codebook or CTR table.
        ValueError: a codebook that does not match the vocabulary, or a SID of the codebook that
            the CTR table lacks (named, with the file).
    """
    sids_dir = examples_sids_dir(examples_dir)
    book = SidCodebook.load(sids_dir)
    try:
        vocab.check_codebook(book)
    except ValueError as error:
        raise ValueError(f"{sids_dir} vs the vocabulary: {error}") from None
    trie = book.trie()
    path = os.path.join(os.fspath(examples_dir), CTR_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: run onesearch data build-examples (it writes the SIDs' CTR)")
    table = load_sid_ctr(path)
    spelled = [book.tokens(sid) for sid in trie.leaf_sids]
    missing = [sid for sid in spelled if sid not in table]
    if missing:
        raise ValueError(f"{path} has no CTR for {len(missing)} SIDs of the codebook {sids_dir}, e.g. {missing[0]}")
    first_ids = np.asarray(vocab.position_first_ids, np.int32)
    replicated = partitioning.replicated_sharding(mesh)
    return jax.device_put(
        GrpoTables(
            trie=DeviceTrie.from_trie(trie, vocab.position_first_ids),
            ctr=jnp.asarray([table[sid] for sid in spelled], jnp.float32),
            leaf_tokens=jnp.asarray(trie.leaf_sids.astype(np.int32) + first_ids),
        ),
        replicated,
    )


def rollout_logprobs(model: Any, encoded: jax.Array, encoder_input_tokens: jax.Array, tokens: jax.Array) -> jax.Array:
    """``log pi(o_i^l | prompt, o_i^{<l})`` ``[B, G, L]`` float32 of rollouts ``tokens [B, G, L]``
    (teacher forced, no dropout), from the prompts' encoder output ``encoded [B, S, D]``.

    The G rollouts of a prompt share its cross-attention keys and values (projected once per
    prompt, not per rollout: ``EncoderDecoder.decode`` with ``B * G`` decoder rows)."""
    b, g, length = tokens.shape
    flat = tokens.reshape(b * g, length)
    decoder_inputs = jnp.concatenate([jnp.zeros((b * g, 1), flat.dtype), flat[:, :-1]], axis=1)
    logits = model.decode(encoded, encoder_input_tokens, decoder_inputs, deterministic=True)
    _, cross_entropy = per_token_cross_entropy(logits, flat)
    return (-cross_entropy).reshape(b, g, length)


def make_grpo_loss(config: GrpoConfig) -> Callable[..., LossOutput]:
    """The stage's ``LossFn`` on a rollout batch (:data:`ROLLOUT_FEATURES` and :data:`SFT_FEATURES`).

    ``loss_sum / weight_sum`` with ``weight_sum = B G L`` is ``mean_{b,i,l}`` of the per-token
    policy loss (``tpma.policy_token_loss``) plus ``kl_beta`` times the per-token k3 KL, plus
    ``sft_weight`` times the mean over prompts of the per-token cross-entropy of the record's
    target SID (its EOS included): sums, so microbatches add up exactly. ``rng`` and
    ``deterministic`` are ignored: the stage runs without dropout (module docstring).
    """
    advantage = config.advantage

    def loss_fn(model: Any, batch: Batch, *, rng: jax.Array | None, deterministic: bool, **_: Any) -> LossOutput:
        del rng, deterministic
        encoder_tokens = batch["encoder_input_tokens"]
        tokens = batch["rollout_tokens"]
        b, g, length = tokens.shape
        encoded = model.encode(encoder_tokens, deterministic=True)
        logprobs = rollout_logprobs(model, encoded, encoder_tokens, tokens)
        policy = tpma.policy_token_loss(logprobs, batch["old_logprobs"], batch["advantages"], batch["gates"], advantage)
        kl = tpma.k3_kl(logprobs, batch["reference_logprobs"])
        ratio = tpma.importance_ratio(logprobs, batch["old_logprobs"])
        logits = model.decode(encoded, encoder_tokens, batch["decoder_input_tokens"],
                              decoder_target_tokens=batch["decoder_target_tokens"], deterministic=True)  # fmt: skip
        _, cross_entropy = per_token_cross_entropy(logits, batch["decoder_target_tokens"])
        weights = batch["decoder_loss_weights"].astype(jnp.float32)
        per_prompt = jnp.sum(cross_entropy * weights, -1) / jnp.maximum(jnp.sum(weights, -1), 1.0)
        sft_sum = jnp.sum(per_prompt) * (g * length)  # / (B G L) = the mean over prompts
        loss_sum = jnp.sum(policy) + config.kl_beta * jnp.sum(kl) + config.sft_weight * sft_sum
        metrics = {"policy_loss": jnp.sum(policy), "kl": jnp.sum(kl), "sft_ce": sft_sum, "ratio": jnp.sum(ratio)}
        if advantage.mode == "grpo":
            outside = jnp.abs(ratio - 1.0) > advantage.clip_epsilon
            metrics["clip_fraction"] = jnp.sum(outside.astype(jnp.float32))
        return LossOutput(loss_sum=loss_sum, weight_sum=jnp.asarray(b * g * length, jnp.float32), metrics=metrics)

    return loss_fn


def _distinct_fraction(leaves: jax.Array) -> jax.Array:
    """Mean over groups of (distinct leaves in the group) / G, for ``leaves [B, G]``."""
    ordered = jnp.sort(leaves, axis=1)
    distinct = 1 + jnp.sum(ordered[:, 1:] != ordered[:, :-1], axis=1)
    return jnp.mean(distinct / leaves.shape[1])


def score_rollouts(
    samples: SampleResult,
    batch: Batch,
    tables: GrpoTables,
    reference_logprobs: jax.Array,
    config: GrpoConfig,
) -> tuple[dict[str, jax.Array], Metrics]:
    """The rollout batch's features (:data:`ROLLOUT_FEATURES`) and the rollout metrics.

    ``batch`` holds the feedback leaves shifted by one (``GrpoFeatureConverter``; 0 = padding).
    """
    feedback = {name: batch[name] - 1 for name in GRPO_FEEDBACK if name != "relevance_tiers"}
    inputs = rewards.RewardInputs(
        clicked=feedback["clicked_leaves"], ordered=feedback["ordered_leaves"],
        relevance_leaves=feedback["relevance_leaves"], relevance_tiers=batch["relevance_tiers"].astype(jnp.float32),
        ctr=tables.ctr,
    )  # fmt: skip
    total, terms = rewards.item_rewards(samples.leaves, inputs, config.reward_weights)
    truth_leaves = jnp.concatenate([feedback["clicked_leaves"], feedback["ordered_leaves"]], axis=1)
    truth_mask = truth_leaves >= 0
    truths = jnp.take(tables.leaf_tokens, jnp.maximum(truth_leaves, 0), axis=0)
    advantages, gates = tpma.advantages(samples.tokens, truths, truth_mask, total, config.advantage)
    metrics: Metrics = {"reward/item": jnp.mean(total)}
    metrics.update({f"reward/{name}": jnp.mean(value) for name, value in terms.items()})
    metrics["reward/zero_std_groups"] = jnp.mean(jnp.all(total == total[:, :1], axis=1).astype(jnp.float32))
    metrics["rollout/valid_sid_rate"] = jnp.mean((samples.leaves >= 0).astype(jnp.float32))
    metrics["rollout/distinct"] = _distinct_fraction(samples.leaves)
    metrics["rollout/kl_to_reference"] = jnp.mean(tpma.k3_kl(samples.logprobs, reference_logprobs))
    for position in range(samples.tokens.shape[-1]):
        metrics[f"tpma/gate/pos{position + 1}"] = jnp.mean(gates[..., position])
        metrics[f"tpma/advantage_std/pos{position + 1}"] = jnp.std(advantages[..., position])
    features = {"rollout_tokens": samples.tokens, "old_logprobs": samples.logprobs, "advantages": advantages,
                "gates": gates, "reference_logprobs": reference_logprobs}  # fmt: skip
    return features, metrics


def _combine(updates: list[Metrics]) -> Metrics:
    """One set of metrics for mu updates: means, the non-finite flags of any update, and the
    first non-finite gradient of the first update that had one."""
    out = {name: jnp.mean(jnp.stack([m[name] for m in updates])) for name in updates[0] if name not in
           (NONFINITE, NONFINITE_LOSS, FIRST_NONFINITE_GRAD)}  # fmt: skip
    out[NONFINITE] = jnp.max(jnp.stack([m[NONFINITE] for m in updates]))
    out[NONFINITE_LOSS] = jnp.max(jnp.stack([m[NONFINITE_LOSS] for m in updates]))
    first = jnp.asarray(-1, jnp.int32)
    for m in reversed(updates):
        first = jnp.where(m[FIRST_NONFINITE_GRAD] >= 0, m[FIRST_NONFINITE_GRAD], first)
    out[FIRST_NONFINITE_GRAD] = first
    return out


@dataclasses.dataclass(frozen=True)
class GrpoStep:
    """``step(state, batch) -> (state, metrics)`` of the stage (callable like a ``CompiledStep``;
    it donates ``state``). Its programs: the sampler's two, ``score``, ``update``.

    Attributes:
        rollout: ``(params, encoder_input_tokens, trie, key) -> SampleResult``.
        score: ``(reference, batch, samples, tables) -> (rollout features, metrics)``, jitted.
        update: ``(state, update batch) -> (state, metrics)``: mu updates and step + 1, one jitted
            program that donates the state.
        rollout_key: ``(rng, step) -> key`` of the step's rollouts, jitted.
        tables: the trie and reward tables.
        reference: the frozen reference parameters.
        mesh / rules: where it runs.
    """

    rollout: Callable[..., SampleResult]
    score: Callable[..., tuple[dict[str, jax.Array], Metrics]]
    update: CompiledStep
    rollout_key: Callable[..., jax.Array]
    tables: GrpoTables
    reference: Any
    mesh: Mesh
    rules: partitioning.LogicalRules

    def __call__(self, state: TrainState, batch: Mapping[str, jax.Array]) -> tuple[TrainState, Metrics]:
        key = self.rollout_key(state.rng, state.step)
        samples = self.rollout(state.params, batch["encoder_input_tokens"], self.tables.trie, key)
        features, rollout_metrics = self.score(self.reference, dict(batch), samples, self.tables)
        update_batch = {**{name: batch[name] for name in SFT_FEATURES}, **features}
        state, metrics = self.update(state, update_batch)
        return state, {**metrics, **rollout_metrics}


def make_grpo_step(
    graphdef: nnx.GraphDef,
    optimizer: Optimizer,
    mesh: Mesh,
    rules: partitioning.LogicalRules,
    *,
    state_shardings: TrainState,
    config: GrpoConfig,
    tables: GrpoTables,
    reference: Any,
) -> GrpoStep:
    """Builds the stage's step (see the module docstring) for parameters sharded as
    ``state_shardings.params``; ``reference`` is sharded the same way."""
    rules = tuple(rules)
    params_shardings = state_shardings.params
    batch_sharding = partitioning.batch_sharding(mesh, rules)
    replicated = partitioning.replicated_sharding(mesh)
    sampling = SamplingConfig(num_samples=config.num_samples, temperature=config.temperature, top_k=config.top_k,
                              top_p=config.top_p)  # fmt: skip
    rollout = make_sampler(graphdef, params_shardings, mesh, rules, config=sampling)

    def score(reference_params: Any, batch: Batch, samples: SampleResult, tables: GrpoTables):
        model = nnx.merge(graphdef, reference_params)
        encoder_tokens = batch["encoder_input_tokens"]
        encoded = model.encode(encoder_tokens, deterministic=True)
        reference_logprobs = rollout_logprobs(model, encoded, encoder_tokens, samples.tokens)
        return score_rollouts(samples, batch, tables, reference_logprobs, config)

    in_shardings = (params_shardings, batch_sharding, batch_sharding, replicated)
    scored = jit_on_mesh(score, mesh, rules, in_shardings=in_shardings, out_shardings=(batch_sharding, replicated),
                         compiler_options={})  # fmt: skip
    one_update = make_update(graphdef, optimizer, mesh, rules, state_shardings=state_shardings,
                             loss_fn=make_grpo_loss(config))  # fmt: skip
    mu = config.inner_updates

    def updates(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        rng = jax.random.fold_in(state.rng, state.step)
        history = []
        for index in range(mu):
            state, metrics = one_update(state, batch, jax.random.fold_in(rng, index), state.step * mu + index)
            history.append(metrics)
        return state.replace(step=state.step + 1), _combine(history)

    update = CompiledStep(
        jitted=jax.jit(updates, in_shardings=(state_shardings, batch_sharding),
                       out_shardings=(state_shardings, replicated), donate_argnums=(0,)),
        mesh=mesh, rules=rules, num_microbatches=optimizer.num_microbatches,
    )  # fmt: skip

    def rollout_key(rng: jax.Array, step: jax.Array) -> jax.Array:
        return jax.random.fold_in(jax.random.fold_in(rng, step), _ROLLOUT_STREAM)

    key = jit_on_mesh(rollout_key, mesh, rules, in_shardings=(replicated, replicated), out_shardings=replicated,
                      compiler_options={})  # fmt: skip
    return GrpoStep(rollout=rollout, score=scored, update=update, rollout_key=key, tables=tables, reference=reference,
                    mesh=mesh, rules=rules)  # fmt: skip
