"""Beam search over SIDs, constrained by the SID trie (or not), in one jitted program.

For each query the encoder runs once and the decoder's cross-attention keys and values are
computed once, then shared by every beam (``EncoderDecoder.cross_key_values``, a program of its
own); each step runs the decoder on one new position per beam over a self-attention cache of the
earlier ones (``EncoderDecoder.decode_step``), which follows the beams through row maps rather than
copies (``reorder_cache``). At SID step
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
and each depth has its own static width); the query axis is sharded over the mesh's batch axes,
and each device searches its own queries with no communication: the cache's row maps stay
inside each query (:class:`~onesearch_jax.models.encoder_decoder.DecodeCache`) and the beams are
picked by :func:`~onesearch_jax.models.partitioning.top_k_per_shard`.
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
from onesearch_jax.models.encoder_decoder import DecodeCache, reorder_cache

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
    cross_key_values: Any = None,
) -> BeamResult:
    """Beam search of ``sid_length`` tokens per query (see the module docstring).

    Args:
        model: an ``EncoderDecoder`` (``encode``, ``cross_key_values``, ``decode_step``).
        encoder_input_tokens: ``[B, S]`` int ids, 0 = padding.
        trie: the valid SIDs, or None for unconstrained search.
        beam_size: beams kept per query at every step.
        top_k: sequences returned per query (at most ``beam_size``).
        sid_length: tokens per sequence; defaults to the trie's SID length (required without a trie).
        eos_id: the end-of-sequence token scored after the last SID token when ``score_eos``.
        score_eos: add ``log p(EOS)`` after the SID to each final score.
        cross_key_values: ``model.cross_key_values(model.encode(encoder_input_tokens))`` when
            computed already (:func:`make_beam_search` runs the encoder as a program of its own);
            None computes it here.
    """
    check_beam_arguments(beam_size=beam_size, top_k=top_k)
    if trie is None and sid_length is None:
        raise ValueError("unconstrained beam search needs sid_length")
    length = trie.sid_length if trie is not None else sid_length
    if trie is not None and sid_length not in (None, trie.sid_length):
        raise ValueError(f"sid_length {sid_length} differs from the trie's SID length {trie.sid_length}")
    batch, width = encoder_input_tokens.shape[0], beam_size
    cross = cross_key_values
    if cross is None:
        cross = model.cross_key_values(model.encode(encoder_input_tokens, deterministic=True))

    def step(inputs: jax.Array, t: int, cache: DecodeCache | None) -> tuple[jax.Array, jax.Array, DecodeCache]:
        """(logits ``[B, rows, V]``, log of the softmax normaliser ``[B, rows, 1]``, cache)."""
        rows = inputs.shape[1]
        logits, cache = model.decode_step(cross, encoder_input_tokens, inputs.reshape(batch * rows), t, cache)
        logits = logits.astype(jnp.float32).reshape(batch, rows, -1)
        return logits, jax.nn.logsumexp(logits, axis=-1, keepdims=True), cache

    # Step 0 has one live beam per query (the start token): it runs on B rows, not B * beam_size.
    tokens = jnp.zeros((batch, 1, length + 1), jnp.int32)  # decoder inputs: start token 0, then the SID
    scores = jnp.zeros((batch, 1), jnp.float32)
    nodes = jnp.zeros((batch, 1), jnp.int32)
    cache = None
    for t in range(length):
        logits, normaliser, cache = step(tokens[:, :, t], t, cache)
        if trie is None:
            vocab = logits.shape[-1]
            candidate_tokens = jnp.broadcast_to(jnp.arange(vocab, dtype=jnp.int32), logits.shape)
            candidates = scores[..., None] + (logits - normaliser)
            child_nodes = jnp.zeros_like(candidate_tokens)
        else:
            candidate_tokens, child_nodes, valid = trie.children(nodes, t)
            picked = jnp.take_along_axis(logits, candidate_tokens, axis=-1) - normaliser
            candidates = scores[..., None] + jnp.where(valid, picked, NEG_INF)
        live, per_beam = candidates.shape[1:]
        keep = width if trie is None else min(width, trie.depth_sizes[t + 1])  # no more beams than prefixes
        flat_candidates = candidates.reshape(batch, live * per_beam)
        if live * per_beam < keep:  # fewer candidates than beams: pad with dead ones
            flat_candidates = jnp.pad(flat_candidates, ((0, 0), (0, keep - live * per_beam)), constant_values=NEG_INF)
        scores, flat = partitioning.top_k_per_shard(flat_candidates, keep)
        flat = jnp.minimum(flat, live * per_beam - 1)
        parent = flat // per_beam
        chosen = jnp.take_along_axis(candidate_tokens.reshape(batch, -1), flat, axis=1)
        nodes = jnp.take_along_axis(child_nodes.reshape(batch, -1), flat, axis=1)
        tokens = jnp.take_along_axis(tokens, parent[..., None], axis=1).at[:, :, t + 1].set(chosen)
        if score_eos or t + 1 < length:  # the cache is read again
            cache = reorder_cache(cache, parent)
    if score_eos:
        logits, normaliser, _ = step(tokens[:, :, length], length, cache)
        scores = scores + logits[..., eos_id] - normaliser[..., 0]
    if scores.shape[1] < top_k:  # a trie with fewer SIDs than top_k
        scores = jnp.pad(scores, ((0, 0), (0, top_k - scores.shape[1])), constant_values=NEG_INF)
        tokens = jnp.pad(tokens, ((0, 0), (0, top_k - tokens.shape[1]), (0, 0)))
        nodes = jnp.pad(nodes, ((0, 0), (0, top_k - nodes.shape[1])))
    scores, order = partitioning.top_k_per_shard(scores, top_k)
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
    """``search(params, encoder_input_tokens, trie) -> BeamResult``: the encoder program
    (:func:`~onesearch_jax.decode.on_mesh.make_encoder`) then the search, each jitted, queries
    sharded over the batch axes (the trie replicated; pass ``trie=None`` when not ``constrained``)."""
    check_beam_arguments(beam_size=beam_size, top_k=top_k)
    batch = partitioning.batch_sharding(mesh, rules)
    replicated = partitioning.replicated_sharding(mesh)

    def search(params: Any, encoder_input_tokens: jax.Array, cross: Any, trie: DeviceTrie | None) -> BeamResult:
        return beam_search(
            nnx.merge(graphdef, params),
            encoder_input_tokens,
            trie if constrained else None,
            beam_size=beam_size,
            top_k=top_k,
            sid_length=sid_length,
            eos_id=eos_id,
            score_eos=score_eos,
            cross_key_values=cross,
        )

    encode = make_encoder(graphdef, params_shardings, mesh, rules)
    jitted = jit_on_mesh(search, mesh, rules, in_shardings=(params_shardings, batch, batch, replicated),
                         out_shardings=batch)  # fmt: skip

    def run(params: Any, encoder_input_tokens: jax.Array, trie: DeviceTrie | None) -> BeamResult:
        if constrained and trie is None:
            raise ValueError("constrained beam search needs the trie")
        cross = encode(params, encoder_input_tokens)
        return jitted(params, encoder_input_tokens, cross, trie if constrained else None)

    return run
