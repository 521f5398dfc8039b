"""Beam search over SIDs, constrained by the SID trie (or not), in one jitted program.

For each query the encoder runs once and the decoder's cross-attention keys and values are
computed once, then shared by every beam (``EncoderDecoder.cross_key_values``). At SID step
``t = 0 .. L-1`` every beam ``w`` with score ``s_w`` (the sum of its tokens' log-probabilities)
proposes its trie children ``c``; candidates are scored

    s_{w,c} = s_w + log p(c | query, prefix_w)

with ``log p`` the model's log-softmax over the *whole* vocabulary (the trie masks candidates; it
does not renormalise the distribution, so scores are the model's sequence log-probabilities and
comparable across prefixes with different numbers of children), and the best ``beam_size`` of
the ``beam_size x max_children[t]`` candidates are kept. With ``score_eos`` a last step adds
``log p(EOS | query, SID)``, the probability that the model ends the sequence there, as the
trained model does. Unconstrained search (``trie=None``) ranks every vocabulary token at every
step, to measure how often free decoding spells a valid SID (the paper's valid-SID rate).

When fewer than ``beam_size`` SIDs exist under the query's prefixes, the remaining beams have
score ``-inf`` and leaf ``-1``. Steps are a Python loop unrolled in the program (L is a handful
and each depth has its own static width); the query axis is sharded over the mesh's batch axes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from onesearch_jax.decode.device_trie import DeviceTrie
from onesearch_jax.decode.on_mesh import jit_on_mesh
from onesearch_jax.models import partitioning

NEG_INF = -jnp.inf


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BeamResult:
    """The ``top_k`` best sequences of each query, best first.

    Attributes:
        tokens: ``[B, K, L]`` int32 token ids (the SID's tokens, EOS not included).
        scores: ``[B, K]`` float32 sequence log-probabilities (``-inf`` for empty beams).
        leaves: ``[B, K]`` int32 SID index in the trie (row of ``SidTrie.leaf_sids``), -1 for an
            empty beam or, in unconstrained search, always -1 (check validity on the host).
    """

    tokens: jax.Array
    scores: jax.Array
    leaves: jax.Array


def check_beam_arguments(*, beam_size: int, top_k: int) -> None:
    """Raises ValueError unless ``1 <= top_k <= beam_size``."""
    if not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam_size must be an int >= 1, got {beam_size!r}")
    if not isinstance(top_k, int) or not 1 <= top_k <= beam_size:
        raise ValueError(f"top_k must be an int in 1..beam_size={beam_size} (K cannot exceed the beam), got {top_k!r}")


def beam_search(
    model: Any,
    encoder_input_tokens: jax.Array,
    trie: DeviceTrie | None,
    *,
    beam_size: int,
    top_k: int,
    sid_length: int | None = None,
    eos_id: int = 1,
    score_eos: bool = True,
) -> BeamResult:
    """Beam search of ``sid_length`` tokens per query (see the module docstring).

    Args:
        model: an ``EncoderDecoder`` (``encode``, ``cross_key_values``, ``decode_logits_at``).
        encoder_input_tokens: ``[B, S]`` int ids, 0 = padding.
        trie: the valid SIDs, or None for unconstrained search.
        beam_size: beams kept per query at every step.
        top_k: sequences returned per query (at most ``beam_size``).
        sid_length: tokens per sequence; defaults to the trie's SID length (required without a trie).
        eos_id: the end-of-sequence token scored after the last SID token when ``score_eos``.
        score_eos: add ``log p(EOS)`` after the SID to each final score.
    """
    check_beam_arguments(beam_size=beam_size, top_k=top_k)
    if trie is None and sid_length is None:
        raise ValueError("unconstrained beam search needs sid_length")
    length = trie.sid_length if trie is not None else sid_length
    if trie is not None and sid_length not in (None, trie.sid_length):
        raise ValueError(f"sid_length {sid_length} differs from the trie's SID length {trie.sid_length}")
    batch, width = encoder_input_tokens.shape[0], beam_size
    cross = model.cross_key_values(model.encode(encoder_input_tokens, deterministic=True))

    def step_log_probs(tokens: jax.Array, t: int) -> jax.Array:
        logits = model.decode_logits_at(
            cross, encoder_input_tokens, tokens[:, :, : t + 1].reshape(batch * width, t + 1), t
        )
        return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(batch, width, -1)

    tokens = jnp.zeros((batch, width, length + 1), jnp.int32)  # decoder inputs: start token 0, then the SID
    scores = jnp.full((batch, width), NEG_INF, jnp.float32).at[:, 0].set(0.0)
    nodes = jnp.zeros((batch, width), jnp.int32)
    for t in range(length):
        log_probs = step_log_probs(tokens, t)
        if trie is None:
            vocab = log_probs.shape[-1]
            candidate_tokens = jnp.broadcast_to(jnp.arange(vocab, dtype=jnp.int32), log_probs.shape)
            candidates = scores[..., None] + log_probs
            child_nodes = jnp.zeros_like(candidate_tokens)
        else:
            candidate_tokens, child_nodes, valid = trie.children(nodes, t)
            picked = jnp.take_along_axis(log_probs, candidate_tokens, axis=-1)
            candidates = scores[..., None] + jnp.where(valid, picked, NEG_INF)
        per_beam = candidates.shape[-1]
        scores, flat = jax.lax.top_k(candidates.reshape(batch, width * per_beam), width)
        parent = flat // per_beam
        chosen = jnp.take_along_axis(candidate_tokens.reshape(batch, -1), flat, axis=1)
        nodes = jnp.take_along_axis(child_nodes.reshape(batch, -1), flat, axis=1)
        tokens = jnp.take_along_axis(tokens, parent[..., None], axis=1).at[:, :, t + 1].set(chosen)
    if score_eos:
        scores = scores + step_log_probs(tokens, length)[..., eos_id]
    scores, order = jax.lax.top_k(scores, top_k)
    tokens = jnp.take_along_axis(tokens[:, :, 1:], order[..., None], axis=1)
    if trie is None:
        leaves = jnp.full((batch, top_k), -1, jnp.int32)
    else:
        nodes = jnp.take_along_axis(nodes, order, axis=1)
        leaves = jnp.where(jnp.isfinite(scores), trie.leaf_index(nodes), -1)
    return BeamResult(tokens=tokens, scores=scores, leaves=leaves)


def make_beam_search(
    graphdef: nnx.GraphDef,
    params_shardings: Any,
    mesh: Mesh,
    rules: Any,
    *,
    beam_size: int,
    top_k: int,
    sid_length: int | None = None,
    constrained: bool = True,
    eos_id: int = 1,
    score_eos: bool = True,
):
    """``search(params, encoder_input_tokens, trie) -> BeamResult``, jitted, queries sharded over
    the batch axes (the trie replicated; pass ``trie=None`` when not ``constrained``)."""
    check_beam_arguments(beam_size=beam_size, top_k=top_k)
    batch = partitioning.batch_sharding(mesh, rules)
    replicated = partitioning.replicated_sharding(mesh)

    def search(params: Any, encoder_input_tokens: jax.Array, trie: DeviceTrie | None) -> BeamResult:
        return beam_search(
            nnx.merge(graphdef, params),
            encoder_input_tokens,
            trie if constrained else None,
            beam_size=beam_size,
            top_k=top_k,
            sid_length=sid_length,
            eos_id=eos_id,
            score_eos=score_eos,
        )

    jitted = jit_on_mesh(search, mesh, rules, in_shardings=(params_shardings, batch, replicated), out_shardings=batch)

    def run(params: Any, encoder_input_tokens: jax.Array, trie: DeviceTrie | None) -> BeamResult:
        if constrained and trie is None:
            raise ValueError("constrained beam search needs the trie")
        return jitted(params, encoder_input_tokens, trie if constrained else None)

    return run
