"""Greedy decoding of the encoder-decoder, jitted and sharded over the batch: the simplest decoder.

The encoder and the cross-attention keys and values run once; each of the ``max_length`` steps
runs the decoder on one new position over a self-attention cache of the earlier ones
(``EncoderDecoder.decode_step``) and takes the argmax. After EOS (or padding) a row emits padding
(id 0). Trie-constrained beam search and sampling are in ``beam_search.py`` and ``sampling.py``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from onesearch_jax.decode.on_mesh import jit_on_mesh, make_encoder
from onesearch_jax.models import partitioning
from onesearch_jax.models.configs import PAD_ID


def greedy_decode(
    model: Any, encoder_input_tokens: jax.Array, *, max_length: int, eos_id: int = 1, cross_key_values: Any = None
):
    """(tokens ``[B, max_length]``, per-token log-probabilities ``[B, max_length]``) by greedy search.

    Args:
        model: an ``EncoderDecoder`` (``encode``, ``cross_key_values``, ``decode_step``).
        encoder_input_tokens: ``[B, S]`` int ids, 0 = padding.
        max_length: decoder steps (the target feature length, EOS included).
        eos_id: the end-of-sequence id; positions after it are padding with log-probability 0.
        cross_key_values: ``model.cross_key_values(model.encode(encoder_input_tokens))`` when
            computed already (:func:`make_greedy_decoder` runs the encoder as a program of its
            own); None computes it here.
    """
    batch = encoder_input_tokens.shape[0]
    cross = cross_key_values
    if cross is None:
        cross = model.cross_key_values(model.encode(encoder_input_tokens, deterministic=True))
    inputs = jnp.zeros((batch,), jnp.int32)  # the start token
    done = jnp.zeros((batch,), bool)
    cache, tokens, logprobs = None, [], []
    for t in range(max_length):
        logits, cache = model.decode_step(cross, encoder_input_tokens, inputs, t, cache)
        log_softmax = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        choice = jnp.argmax(log_softmax, axis=-1).astype(jnp.int32)
        chosen = jnp.take_along_axis(log_softmax, choice[:, None], axis=-1)[:, 0]
        tokens.append(jnp.where(done, PAD_ID, choice))
        logprobs.append(jnp.where(done, 0.0, chosen))
        done = done | (tokens[-1] == eos_id)
        inputs = tokens[-1]
    return jnp.stack(tokens, axis=1), jnp.stack(logprobs, axis=1)


def make_greedy_decoder(graphdef: nnx.GraphDef, params_shardings: Any, mesh: Mesh, rules: Any, *, max_length: int):
    """``decode(params, encoder_input_tokens) -> (tokens, logprobs)``: the encoder program
    (:func:`~onesearch_jax.decode.on_mesh.make_encoder`) then the greedy loop, each jitted with
    batch-sharded I/O."""
    batch = partitioning.batch_sharding(mesh, rules)

    def decode(params: Any, encoder_input_tokens: jax.Array, cross: Any):
        model = nnx.merge(graphdef, params)
        return greedy_decode(model, encoder_input_tokens, max_length=max_length, cross_key_values=cross)

    encode = make_encoder(graphdef, params_shardings, mesh, rules)
    in_shardings = (params_shardings, batch, batch)
    jitted = jit_on_mesh(decode, mesh, rules, in_shardings=in_shardings, out_shardings=(batch, batch))

    def run(params: Any, encoder_input_tokens: jax.Array):
        return jitted(params, encoder_input_tokens, encode(params, encoder_input_tokens))

    return run
