"""Sampling G SIDs per query under the SID trie: the rollout engine of TPMA-GRPO.

For each query the encoder and the cross-attention keys and values run once; its G samples are
decoded together, one position per step over a self-attention cache
(``EncoderDecoder.decode_step``). At SID step t each sample draws the next code among its node's
trie children
from

    q_t(c) ∝ exp(z_c / T)   for the children c kept by top-k and top-p, 0 elsewhere,

where ``z`` are the model's logits and T the temperature; top-k keeps the k most likely children,
top-p the smallest set of most likely children whose probability under ``exp(z/T)`` renormalised
over the children reaches p (the most likely child is always kept). Every sample is a valid SID.

Each sample comes with two per-token log-probabilities:

* ``logprobs``: ``log p(c | query, prefix)`` under the model's full-vocabulary softmax at
  temperature 1, exactly what a training step recomputes for the same tokens, so GRPO's ratio
  ``pi_theta / pi_old`` compares like with like;
* ``sample_logprobs``: ``log q_t(c)``, the probability of the draw itself.

Randomness: one key per call; the draw of step t uses ``fold_in(key, t)``, so samples are
reproducible from the key and independent across steps, rows and queries.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from onesearch_jax.decode.device_trie import DeviceTrie
from onesearch_jax.decode.on_mesh import jit_on_mesh, make_encoder
from onesearch_jax.models import partitioning

NEG_INF = -jnp.inf


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """How to draw each code.

    Attributes:
        num_samples: G, samples per query.
        temperature: T > 0 dividing the logits.
        top_k: keep the k most likely children (0: all).
        top_p: keep the most likely children up to cumulative probability p, in (0, 1] (1: all).
    """

    num_samples: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        if not isinstance(self.num_samples, int) or self.num_samples < 1:
            raise ValueError(f"SamplingConfig.num_samples must be an int >= 1, got {self.num_samples!r}")
        if not isinstance(self.temperature, int | float) or not self.temperature > 0:
            raise ValueError(f"SamplingConfig.temperature must be > 0, got {self.temperature!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"SamplingConfig.top_k must be an int >= 0 (0: no top-k), got {self.top_k!r}")
        if not isinstance(self.top_p, int | float) or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingConfig.top_p must be in (0, 1], got {self.top_p!r}")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SampleResult:
    """G samples per query.

    Attributes:
        tokens: ``[B, G, L]`` int32 SID token ids.
        leaves: ``[B, G]`` int32 SID index in the trie (row of ``SidTrie.leaf_sids``).
        logprobs: ``[B, G, L]`` float32 full-vocabulary log-probabilities at temperature 1.
        sample_logprobs: ``[B, G, L]`` float32 log-probabilities of the draws (``log q_t``).
    """

    tokens: jax.Array
    leaves: jax.Array
    logprobs: jax.Array
    sample_logprobs: jax.Array


def truncate_logits(logits: jax.Array, *, top_k: int, top_p: float) -> jax.Array:
    """``logits [..., C]`` with entries outside top-k / top-p set to ``-inf`` (see module docstring).

    Entries already ``-inf`` (not children) stay out. Ties at the k-th value are all kept.
    """
    width = logits.shape[-1]
    if top_k and top_k < width:
        kth = partitioning.top_k_per_shard(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits >= kth, logits, NEG_INF)
    if top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly more likely entries
        keep = jnp.take_along_axis(before < top_p, jnp.argsort(order, axis=-1), axis=-1)
        logits = jnp.where(keep, logits, NEG_INF)
    return logits


def sample_sids(
    model: Any,
    encoder_input_tokens: jax.Array,
    trie: DeviceTrie,
    key: jax.Array,
    config: SamplingConfig,
    *,
    cross_key_values: Any = None,
) -> SampleResult:
    """``config.num_samples`` SIDs per query drawn under the trie (see the module docstring).

    ``cross_key_values``: ``model.cross_key_values(model.encode(encoder_input_tokens))`` when
    computed already (:func:`make_sampler` runs the encoder as a program of its own); None
    computes it here.
    """
    batch, samples, length = encoder_input_tokens.shape[0], config.num_samples, trie.sid_length
    rows = batch * samples
    cross = cross_key_values
    if cross is None:
        cross = model.cross_key_values(model.encode(encoder_input_tokens, deterministic=True))
    tokens = jnp.zeros((rows, length + 1), jnp.int32)
    nodes = jnp.zeros((rows,), jnp.int32)
    logprobs, sample_logprobs = [], []
    cache = None
    for t in range(length):
        logits, cache = model.decode_step(cross, encoder_input_tokens, tokens[:, t], t, cache)
        logits = logits.astype(jnp.float32)
        child_tokens, child_nodes, valid = trie.children(nodes, t)
        child_logits = jnp.where(valid, jnp.take_along_axis(logits, child_tokens, axis=-1), NEG_INF)
        tempered = truncate_logits(child_logits / config.temperature, top_k=config.top_k, top_p=config.top_p)
        choice = jax.random.categorical(jax.random.fold_in(key, t), tempered, axis=-1)
        pick = choice[:, None]
        chosen = jnp.take_along_axis(child_tokens, pick, axis=-1)
        logprobs.append(jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), chosen, axis=-1)[:, 0])
        sample_logprobs.append(jnp.take_along_axis(jax.nn.log_softmax(tempered, axis=-1), pick, axis=-1)[:, 0])
        tokens = tokens.at[:, t + 1].set(chosen[:, 0])
        nodes = jnp.take_along_axis(child_nodes, pick, axis=-1)[:, 0]
    shape = (batch, samples)
    return SampleResult(
        tokens=tokens[:, 1:].reshape(*shape, length),
        leaves=trie.leaf_index(nodes).reshape(shape),
        logprobs=jnp.stack(logprobs, axis=-1).reshape(*shape, length),
        sample_logprobs=jnp.stack(sample_logprobs, axis=-1).reshape(*shape, length),
    )


def make_sampler(graphdef: nnx.GraphDef, params_shardings: Any, mesh: Mesh, rules: Any, *, config: SamplingConfig):
    """``sample(params, encoder_input_tokens, trie, key) -> SampleResult``: the encoder program
    (:func:`~onesearch_jax.decode.on_mesh.make_encoder`) then the sampling loop, each jitted,
    queries sharded over the batch axes (trie and key replicated)."""
    batch = partitioning.batch_sharding(mesh, rules)
    replicated = partitioning.replicated_sharding(mesh)

    def sample(params: Any, encoder_input_tokens: jax.Array, cross: Any, trie: DeviceTrie, key: jax.Array):
        model = nnx.merge(graphdef, params)
        return sample_sids(model, encoder_input_tokens, trie, key, config, cross_key_values=cross)

    encode = make_encoder(graphdef, params_shardings, mesh, rules)
    in_shardings = (params_shardings, batch, batch, replicated, replicated)
    jitted = jit_on_mesh(sample, mesh, rules, in_shardings=in_shardings, out_shardings=batch)

    def run(params: Any, encoder_input_tokens: jax.Array, trie: DeviceTrie, key: jax.Array) -> SampleResult:
        return jitted(params, encoder_input_tokens, encode(params, encoder_input_tokens), trie, key)

    return run
