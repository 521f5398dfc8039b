"""Greedy decoding of the encoder-decoder, jitted and sharded over the batch: the simplest decoder.

The encoder runs once; each of the ``max_length`` steps re-runs the decoder over the tokens so far
and takes the argmax of the next position. Re-running the decoder costs O(L^2) decoder positions;
for SID targets (L = 6 with EOS) that is cheaper than managing a cache. After EOS (or padding) a row
emits padding (id 0). Trie-constrained beam search and sampling are in ``beam_search.py`` and
``sampling.py``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from onesearch_jax.decode.on_mesh import jit_on_mesh
from onesearch_jax.models import partitioning
from onesearch_jax.models.configs import PAD_ID


def greedy_decode(model: Any, encoder_input_tokens: jax.Array, *, max_length: int, eos_id: int = 1):
    """(tokens ``[B, max_length]``, per-token log-probabilities ``[B, max_length]``) by greedy search.

    Args:
        model: an ``EncoderDecoder`` (or anything with its ``encode``/``decode``).
        encoder_input_tokens: ``[B, S]`` int ids, 0 = padding.
        max_length: decoder steps (the target feature length, EOS included).
        eos_id: the end-of-sequence id; positions after it are padding with log-probability 0.
    """
    batch = encoder_input_tokens.shape[0]
    encoded = model.encode(encoder_input_tokens, deterministic=True)

    def body(i: jax.Array, carry: tuple[jax.Array, jax.Array, jax.Array]):
        tokens, logprobs, done = carry
        inputs = jnp.pad(tokens, ((0, 0), (1, 0)))[:, :-1]  # shift right, start token 0
        logits = model.decode(encoded, encoder_input_tokens, inputs, deterministic=True)
        step_logits = jax.lax.dynamic_index_in_dim(logits, i, axis=1, keepdims=False)
        log_softmax = jax.nn.log_softmax(step_logits.astype(jnp.float32), axis=-1)
        choice = jnp.argmax(log_softmax, axis=-1).astype(tokens.dtype)
        chosen = jnp.take_along_axis(log_softmax, choice[:, None], axis=-1)[:, 0]
        choice = jnp.where(done, PAD_ID, choice)
        chosen = jnp.where(done, 0.0, chosen)
        tokens = jax.lax.dynamic_update_index_in_dim(tokens, choice, i, axis=1)
        logprobs = jax.lax.dynamic_update_index_in_dim(logprobs, chosen, i, axis=1)
        return tokens, logprobs, done | (choice == eos_id)

    init = (
        jnp.zeros((batch, max_length), jnp.int32),
        jnp.zeros((batch, max_length), jnp.float32),
        jnp.zeros((batch,), bool),
    )
    tokens, logprobs, _ = jax.lax.fori_loop(0, max_length, body, init)
    return tokens, logprobs


def make_greedy_decoder(graphdef: nnx.GraphDef, params_shardings: Any, mesh: Mesh, rules: Any, *, max_length: int):
    """``decode(params, encoder_input_tokens) -> (tokens, logprobs)``, jitted with batch-sharded I/O."""
    batch = partitioning.batch_sharding(mesh, rules)

    def decode(params: Any, encoder_input_tokens: jax.Array):
        return greedy_decode(nnx.merge(graphdef, params), encoder_input_tokens, max_length=max_length)

    return jit_on_mesh(decode, mesh, rules, in_shardings=(params_shardings, batch), out_shardings=(batch, batch))
