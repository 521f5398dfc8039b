"""The T5 v1.1 encoder-decoder in Flax NNX (Raffel et al. 2020; T5X ``examples/t5/network.py``).

Pre-norm residual blocks: ``x + dropout(sublayer(RMSNorm(x)))``. The encoder's relative position
bias is bidirectional, the decoder's causal; each stack computes it once and shares it with all
of its layers (T5: the first layer owns it). Masks come from the padding id 0 as in T5X:

* encoder self-attention and decoder cross-attention ignore keys where
  ``encoder_input_tokens == 0``;
* decoder self-attention is causal, and also ignores keys where ``decoder_target_tokens == 0``
  when those are given. The decoder inputs cannot mark padding themselves: their first token,
  the start token, is id 0 (seqio's ``EncDecFeatureConverter`` shifts the targets right by one).

Positions that are padding still get outputs (computed over the real keys); losses mask them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from onesearch_jax.models.configs import T5Config
from onesearch_jax.models.dropout import Dropout
from onesearch_jax.models.layers import (
    EMBED,
    VOCAB,
    Embed,
    GatedGeluMlp,
    MultiHeadAttention,
    RelativePositionBias,
    RMSNorm,
    causal_mask,
    fan_in_init,
    make_param,
    padding_mask,
)

DropoutRngs = nnx.Rngs | jax.Array | None


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DecodeCache:
    """The decoder's self-attention keys and values of the positions decoded so far, reordered lazily.

    Rows belong to queries: ``N = B * R``, row ``b * R + r`` being row ``r`` of query ``b``.
    Position s's keys and values stay in the row order they were computed in; ``ancestors[s]``
    ``[B, R]`` gives, for each current row, its row *within the same query* at position s. A beam
    search that reorders its beams composes these maps (:func:`reorder_cache`, a gather of ``N``
    integers per position) instead of copying every cached key and value, and each step gathers
    the keys it attends to inside the attention's own fused loops
    (:meth:`MultiHeadAttention.attend_rows`). Every map and gather stays inside its query, so a
    search with the queries sharded over devices reads only its own shard (a map into the
    flattened rows would make XLA gather the whole cache onto every device at every step).

    Attributes:
        keys: per decoder layer, per position, ``[B * R_s, heads, kv]``.
        values: likewise.
        ancestors: per position, int32 ``[B, R]``.
    """

    keys: tuple[tuple[jax.Array, ...], ...]
    values: tuple[tuple[jax.Array, ...], ...]
    ancestors: tuple[jax.Array, ...]

    @property
    def length(self) -> int:
        """The number of positions cached."""
        return len(self.ancestors)

    @property
    def rows(self) -> int:
        """The number of current rows ``N = B * R``."""
        return int(self.ancestors[0].size)


def reorder_cache(cache: DecodeCache, parents: jax.Array) -> DecodeCache:
    """The cache with its rows taken from ``parents [B, R']``: each new row's row within its query
    (beam search keeping each beam's parent; ``R'`` may differ from ``R``, e.g. one row per query
    expanded to its beams). Indices outside ``0 .. R - 1`` are clamped."""
    return dataclasses.replace(
        cache,
        ancestors=tuple(jnp.take_along_axis(a, parents, axis=1, mode="clip") for a in cache.ancestors),
    )


def gather_rows(cached: jax.Array, ancestors: jax.Array) -> jax.Array:
    """Rows ``[B * R, ...]`` of ``cached [B * R_s, ...]`` (R_s rows per query) picked by
    ``ancestors [B, R]``, each within its own query."""
    batch, rows = ancestors.shape
    per_query = cached.reshape(batch, -1, *cached.shape[1:])
    index = ancestors.reshape(batch, rows, *([1] * (cached.ndim - 1)))
    return jnp.take_along_axis(per_query, index, axis=1, mode="clip").reshape(batch * rows, *cached.shape[1:])


def activation_dtype(config: T5Config) -> jnp.dtype:
    """The jnp dtype named by ``config.dtype``."""
    return jnp.dtype(config.dtype)


def _as_rngs(rngs: DropoutRngs, *, deterministic: bool, dropout_rate: float) -> nnx.Rngs | None:
    """Call-time dropout keys: an ``nnx.Rngs`` (stream ``dropout``), a key, or None."""
    if deterministic or dropout_rate == 0.0:
        return None
    if rngs is None:
        raise ValueError(
            "deterministic=False with dropout needs rngs=: a jax.random key or an nnx.Rngs with a 'dropout' stream"
        )
    if isinstance(rngs, nnx.Rngs):
        return rngs
    return nnx.Rngs(dropout=rngs)


def _attention(config: T5Config, rngs: nnx.Rngs) -> MultiHeadAttention:
    return MultiHeadAttention(
        d_model=config.d_model,
        num_heads=config.num_heads,
        d_kv=config.d_kv,
        dropout_rate=config.dropout_rate,
        dtype=activation_dtype(config),
        rngs=rngs,
    )


def _mlp(config: T5Config, rngs: nnx.Rngs) -> GatedGeluMlp:
    return GatedGeluMlp(
        config.d_model, config.d_ff, dropout_rate=config.dropout_rate, dtype=activation_dtype(config), rngs=rngs
    )


def _norm(config: T5Config, rngs: nnx.Rngs) -> RMSNorm:
    return RMSNorm(config.d_model, epsilon=config.layer_norm_epsilon, dtype=activation_dtype(config), rngs=rngs)


def _relpos(config: T5Config, *, bidirectional: bool, rngs: nnx.Rngs) -> RelativePositionBias:
    return RelativePositionBias(
        num_buckets=config.relative_attention_num_buckets,
        max_distance=config.relative_attention_max_distance,
        num_heads=config.num_heads,
        bidirectional=bidirectional,
        rngs=rngs,
    )


class EncoderLayer(nnx.Module):
    """Self-attention block then MLP block, each pre-normed with a residual connection."""

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs):
        self.pre_attention_layer_norm = _norm(config, rngs)
        self.attention = _attention(config, rngs)
        self.pre_mlp_layer_norm = _norm(config, rngs)
        self.mlp = _mlp(config, rngs)
        self.dropout = Dropout(config.dropout_rate)

    def __call__(
        self,
        x: jax.Array,
        *,
        position_bias: jax.Array,
        mask: jax.Array,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> jax.Array:
        h = self.pre_attention_layer_norm(x)
        h = self.attention(h, h, position_bias=position_bias, mask=mask, deterministic=deterministic, rngs=rngs)
        x = x + self.dropout(h, deterministic=deterministic, rngs=rngs)
        h = self.mlp(self.pre_mlp_layer_norm(x), deterministic=deterministic, rngs=rngs)
        return x + self.dropout(h, deterministic=deterministic, rngs=rngs)


class DecoderLayer(nnx.Module):
    """Causal self-attention, cross-attention over the encoder output, then MLP (all pre-normed)."""

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs):
        self.pre_self_attention_layer_norm = _norm(config, rngs)
        self.self_attention = _attention(config, rngs)
        self.pre_cross_attention_layer_norm = _norm(config, rngs)
        self.encoder_decoder_attention = _attention(config, rngs)
        self.pre_mlp_layer_norm = _norm(config, rngs)
        self.mlp = _mlp(config, rngs)
        self.dropout = Dropout(config.dropout_rate)

    def __call__(
        self,
        x: jax.Array,
        cross_key_value: tuple[jax.Array, jax.Array],
        *,
        position_bias: jax.Array,
        self_mask: jax.Array,
        cross_mask: jax.Array,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> jax.Array:
        """``x [N, T, embed]``; the cross-attention key and value ``[B, heads, S, kv]`` of B queries.

        N is a multiple of B: rows ``b * R .. b * R + R - 1`` (R beams or samples) attend to query b's
        encoder output, as one ``[B, R * T]`` block of cross-attention queries (no copy per row).
        """
        h = self.pre_self_attention_layer_norm(x)
        h = self.self_attention(
            h, h, position_bias=position_bias, mask=self_mask, deterministic=deterministic, rngs=rngs
        )
        x = x + self.dropout(h, deterministic=deterministic, rngs=rngs)
        return self._cross_attention_and_mlp(x, cross_key_value, cross_mask, deterministic=deterministic, rngs=rngs)

    def step(
        self,
        x: jax.Array,
        cross_key_value: tuple[jax.Array, jax.Array],
        cached: tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]],
        ancestors: Sequence[jax.Array],
        *,
        self_bias: jax.Array,
        cross_mask: jax.Array,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """One decoding position ``x [N, 1, embed]`` over the earlier positions' keys and values
        (``cached``: per position ``[N_s, heads, kv]``; ``ancestors[s] [B, R]``: each current row's
        row within its query at position s, see :class:`DecodeCache`).

        Returns the output and this position's key and value ``[N, heads, kv]``. Equal to
        :meth:`__call__` at the same position of the whole prefix (no dropout).
        """
        attention = self.self_attention
        query, key, value = attention.project_rows(self.pre_self_attention_layer_norm(x)[:, 0])
        keys = [gather_rows(k, a) for k, a in zip(cached[0], ancestors, strict=True)] + [key]
        values = [gather_rows(v, a) for v, a in zip(cached[1], ancestors, strict=True)] + [value]
        h = attention.attend_rows(query, keys, values, bias=self_bias)
        x = self._cross_attention_and_mlp(x + h[:, None], cross_key_value, cross_mask, deterministic=True, rngs=None)
        return x, key, value

    def _cross_attention_and_mlp(
        self,
        x: jax.Array,
        cross_key_value: tuple[jax.Array, jax.Array],
        cross_mask: jax.Array,
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> jax.Array:
        h = self.pre_cross_attention_layer_norm(x)
        key, value = cross_key_value
        attention = self.encoder_decoder_attention
        h = attention.attend(
            attention.project_query(h.reshape(key.shape[0], -1, h.shape[-1])),
            key,
            value,
            position_bias=None,
            mask=cross_mask,
            deterministic=deterministic,
            rngs=rngs,
        ).reshape(x.shape)
        x = x + self.dropout(h, deterministic=deterministic, rngs=rngs)
        h = self.mlp(self.pre_mlp_layer_norm(x), deterministic=deterministic, rngs=rngs)
        return x + self.dropout(h, deterministic=deterministic, rngs=rngs)


class Encoder(nnx.Module):
    """Embeddings ``[B, S, embed]`` -> encoded ``[B, S, embed]`` (bidirectional)."""

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs):
        self.relpos_bias = _relpos(config, bidirectional=True, rngs=rngs)
        self.layers = nnx.List([EncoderLayer(config, rngs=rngs) for _ in range(config.num_encoder_layers)])
        self.encoder_norm = _norm(config, rngs)
        self.dropout = Dropout(config.dropout_rate)

    def __call__(
        self, embeddings: jax.Array, mask: jax.Array, *, deterministic: bool, rngs: nnx.Rngs | None
    ) -> jax.Array:
        length = embeddings.shape[1]
        position_bias = self.relpos_bias(length, length)
        x = self.dropout(embeddings, deterministic=deterministic, rngs=rngs)
        for layer in self.layers:
            x = layer(x, position_bias=position_bias, mask=mask, deterministic=deterministic, rngs=rngs)
        return self.dropout(self.encoder_norm(x), deterministic=deterministic, rngs=rngs)


class Decoder(nnx.Module):
    """Decoder embeddings ``[B, T, embed]`` and encoded ``[B, S, embed]`` -> hidden ``[B, T, embed]``."""

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs):
        self.relpos_bias = _relpos(config, bidirectional=False, rngs=rngs)
        self.layers = nnx.List([DecoderLayer(config, rngs=rngs) for _ in range(config.num_decoder_layers)])
        self.decoder_norm = _norm(config, rngs)
        self.dropout = Dropout(config.dropout_rate)

    def cross_key_values(self, encoded: jax.Array) -> tuple[tuple[jax.Array, jax.Array], ...]:
        """Per layer, the cross-attention ``(key, value)`` ``[B, heads, S, kv]`` of ``encoded``."""
        return tuple(layer.encoder_decoder_attention.project_key_value(encoded) for layer in self.layers)

    def __call__(
        self,
        embeddings: jax.Array,
        cross_key_values: Sequence[tuple[jax.Array, jax.Array]],
        *,
        self_mask: jax.Array,
        cross_mask: jax.Array,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> jax.Array:
        """Hidden states ``[N, T, embed]`` of decoder embeddings ``[N, T, embed]`` (see
        :meth:`DecoderLayer.__call__` for N rows over B queries)."""
        length = embeddings.shape[1]
        position_bias = self.relpos_bias(length, length)
        x = self.dropout(embeddings, deterministic=deterministic, rngs=rngs)
        for layer, cross_key_value in zip(self.layers, cross_key_values, strict=True):
            x = layer(
                x,
                cross_key_value,
                position_bias=position_bias,
                self_mask=self_mask,
                cross_mask=cross_mask,
                deterministic=deterministic,
                rngs=rngs,
            )
        return self.dropout(self.decoder_norm(x), deterministic=deterministic, rngs=rngs)

    def step(
        self,
        embeddings: jax.Array,
        cross_key_values: Sequence[tuple[jax.Array, jax.Array]],
        cache: DecodeCache | None,
        *,
        cross_mask: jax.Array,
    ) -> tuple[jax.Array, DecodeCache]:
        """Hidden state ``[N, 1, embed]`` of the next decoder position (embeddings ``[N, 1, embed]``)
        given the cache of the earlier ones (None before the first); returns the cache with it added."""
        rows, position = embeddings.shape[0], 0 if cache is None else cache.length
        ancestors = () if cache is None else cache.ancestors
        batch = cross_key_values[0][0].shape[0]
        self_bias = self.relpos_bias(1, position + 1, query_offset=position)[0, :, 0]  # [heads, position + 1]
        x, keys, values = embeddings, [], []
        for i, (layer, cross_key_value) in enumerate(zip(self.layers, cross_key_values, strict=True)):
            cached = ((), ()) if cache is None else (cache.keys[i], cache.values[i])
            x, key, value = layer.step(
                x, cross_key_value, cached, ancestors, self_bias=self_bias, cross_mask=cross_mask
            )
            keys.append((*cached[0], key))
            values.append((*cached[1], value))
        own_rows = jnp.broadcast_to(jnp.arange(rows // batch, dtype=jnp.int32), (batch, rows // batch))
        new_cache = DecodeCache(keys=tuple(keys), values=tuple(values), ancestors=(*ancestors, own_rows))
        return self.decoder_norm(x), new_cache


class EncoderDecoder(nnx.Module):
    """T5 v1.1 encoder-decoder: token ids in, float32 next-token logits out.

    Example::

        model = EncoderDecoder(named_config("tiny", vocab_size=512, dtype="float32"), rngs=nnx.Rngs(0))
        logits = model(encoder_input_tokens, decoder_input_tokens)                  # [B, T, vocab]
        logits = model(enc, dec, deterministic=False, rngs=nnx.Rngs(dropout=key))  # with dropout

    Attributes:
        config: the :class:`T5Config`.
        token_embedder: embedding shared by the encoder, the decoder and, when tied, the output.
        encoder: the :class:`Encoder` stack.
        decoder: the :class:`Decoder` stack.
        lm_head: untied output kernel ``[embed, vocab]``, or None when ``tie_word_embeddings``.
    """

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs):
        self.config = config
        self.token_embedder = Embed(config.vocab_size, config.d_model, dtype=activation_dtype(config), rngs=rngs)
        self.encoder = Encoder(config, rngs=rngs)
        self.decoder = Decoder(config, rngs=rngs)
        if config.tie_word_embeddings:
            self.lm_head = None
        else:
            self.lm_head = make_param(rngs, fan_in_init(), (config.d_model, config.vocab_size), (EMBED, VOCAB))

    def embed_inputs(self, tokens: jax.Array) -> jax.Array:
        """Token embeddings ``[B, L, embed]`` in the activation dtype (the input of FGM's perturbation)."""
        return self.token_embedder(tokens)

    def encode(
        self,
        encoder_input_tokens: jax.Array,
        *,
        input_embeddings: jax.Array | None = None,
        deterministic: bool = True,
        rngs: DropoutRngs = None,
    ) -> jax.Array:
        """Encoder output ``[B, S, embed]`` for ``encoder_input_tokens`` ``[B, S]`` (0 = padding).

        Args:
            encoder_input_tokens: int token ids; they give the padding mask.
            input_embeddings: ``[B, S, embed]`` used instead of :meth:`embed_inputs` of the tokens
                (e.g. embeddings perturbed by FGM); the mask still comes from the tokens.
            deterministic: no dropout when True.
            rngs: dropout keys when not ``deterministic``: a key or an ``nnx.Rngs`` (``dropout``).
        """
        rngs = _as_rngs(rngs, deterministic=deterministic, dropout_rate=self.config.dropout_rate)
        if input_embeddings is None:
            input_embeddings = self.embed_inputs(encoder_input_tokens)
        elif input_embeddings.shape != (*encoder_input_tokens.shape, self.config.d_model):
            raise ValueError(
                f"input_embeddings has shape {input_embeddings.shape}, expected "
                f"{(*encoder_input_tokens.shape, self.config.d_model)} for tokens {encoder_input_tokens.shape}"
            )
        embeddings = input_embeddings.astype(activation_dtype(self.config))
        return self.encoder(embeddings, padding_mask(encoder_input_tokens), deterministic=deterministic, rngs=rngs)

    def decode(
        self,
        encoded: jax.Array,
        encoder_input_tokens: jax.Array,
        decoder_input_tokens: jax.Array,
        *,
        decoder_target_tokens: jax.Array | None = None,
        deterministic: bool = True,
        rngs: DropoutRngs = None,
    ) -> jax.Array:
        """float32 logits ``[N, T, vocab]`` of the token after each decoder input.

        N is B or a multiple of it: rows ``b * R .. b * R + R - 1`` are R continuations of query b
        (GRPO's rollouts), which share the query's cross-attention keys and values.

        Args:
            encoded: :meth:`encode` output ``[B, S, embed]``.
            encoder_input_tokens: ``[B, S]``, for the cross-attention padding mask.
            decoder_input_tokens: ``[N, T]``, the targets shifted right with start token 0.
            decoder_target_tokens: ``[N, T]`` or None; where 0, the position is padding and no
                later position attends to it (T5X ``make_decoder_mask``). Causal masking alone
                already gives the same logits at real positions for right-padded targets.
            deterministic: no dropout when True.
            rngs: dropout keys when not ``deterministic``. A key starts a new stream: when calling
                :meth:`encode` and :meth:`decode` apart, pass one ``nnx.Rngs`` to both (or two keys)
                so that their dropout masks are not drawn from the same keys.
        """
        rngs = _as_rngs(rngs, deterministic=deterministic, dropout_rate=self.config.dropout_rate)
        self_mask = causal_mask(decoder_input_tokens.shape[1])
        if decoder_target_tokens is not None:
            self_mask = jnp.logical_and(self_mask, padding_mask(decoder_target_tokens))
        hidden = self.decoder(
            self.token_embedder(decoder_input_tokens),
            self.cross_key_values(encoded),
            self_mask=self_mask,
            cross_mask=padding_mask(encoder_input_tokens),
            deterministic=deterministic,
            rngs=rngs,
        )
        return self.logits(hidden)

    def cross_key_values(self, encoded: jax.Array) -> tuple[tuple[jax.Array, jax.Array], ...]:
        """Per decoder layer, the cross-attention ``(key, value)`` ``[B, heads, S, kv]`` of the
        :meth:`encode` output: computed once per query when decoding, shared by all its beams."""
        return self.decoder.cross_key_values(encoded.astype(activation_dtype(self.config)))

    def decode_step(
        self,
        cross_key_values: Sequence[tuple[jax.Array, jax.Array]],
        encoder_input_tokens: jax.Array,
        decoder_input_tokens: jax.Array,
        position: int,
        cache: DecodeCache | None,
    ) -> tuple[jax.Array, DecodeCache]:
        """float32 logits ``[N, vocab]`` of the token after decoder input ``position``, and the cache.

        The incremental decoding step of beam search and sampling (no dropout; T5X's
        ``decode=True``): ``decoder_input_tokens`` ``[N]`` is the input at ``position`` (the start
        token 0 at position 0), ``cache`` the self-attention keys and values of positions
        ``0 .. position - 1`` as returned by the previous step (None at position 0). Rows are
        ``N = B * R``, R per query, row ``b * R + r`` belonging to query b of
        ``encoder_input_tokens [B, S]`` and ``cross_key_values`` (:meth:`cross_key_values`). A
        beam search that reorders its rows reorders the cache the same way (:func:`reorder_cache`).
        Equal to the logits of :meth:`decode` at ``position`` over the whole prefix
        (``tests/models/test_encoder_decoder.py``).

        Raises:
            ValueError: the cache holds another number of positions or rows.
        """
        cached = 0 if cache is None else cache.length
        if cached != position:
            raise ValueError(f"decoding position {position} needs the cache of {position} positions, got {cached}")
        if cache is not None and decoder_input_tokens.shape != (cache.rows,):
            raise ValueError(
                f"decoder_input_tokens has shape {decoder_input_tokens.shape}, the cache {cache.rows} rows"
            )
        hidden, cache = self.decoder.step(
            self.token_embedder(decoder_input_tokens[:, None]),
            cross_key_values,
            cache,
            cross_mask=padding_mask(encoder_input_tokens),
        )
        return self.logits(hidden[:, 0]), cache

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Output layer: float32 logits ``[..., vocab]`` of decoder hidden states ``[..., embed]``.

        Tied: ``(h * d_model**-0.5) @ embedding.T`` (Mesh TF / T5X / HF when tied); untied: ``h @ lm_head``.
        """
        if self.lm_head is None:
            return self.token_embedder.attend(hidden * (self.config.d_model**-0.5))
        dtype = activation_dtype(self.config)
        return jnp.einsum(
            "...d,dv->...v",
            hidden.astype(dtype),
            self.lm_head[...].astype(dtype),
            preferred_element_type=jnp.float32,
        )

    def __call__(
        self,
        encoder_input_tokens: jax.Array,
        decoder_input_tokens: jax.Array,
        *,
        decoder_target_tokens: jax.Array | None = None,
        encoder_input_embeddings: jax.Array | None = None,
        deterministic: bool = True,
        rngs: DropoutRngs = None,
    ) -> jax.Array:
        """float32 logits ``[B, T, vocab]``: :meth:`encode` then :meth:`decode`.

        Args:
            encoder_input_tokens: ``[B, S]`` int ids, 0 = padding.
            decoder_input_tokens: ``[B, T]`` int ids (targets shifted right, start token 0).
            decoder_target_tokens: optional ``[B, T]`` targets, to mask decoder padding (see :meth:`decode`).
            encoder_input_embeddings: optional ``[B, S, embed]`` replacing the encoder's token
                embeddings (see :meth:`encode`).
            deterministic: no dropout when True.
            rngs: dropout keys when not ``deterministic``: a key or an ``nnx.Rngs``; one
                ``nnx.Rngs`` is shared by both stacks so every dropout site draws a new key.
        """
        rngs = _as_rngs(rngs, deterministic=deterministic, dropout_rate=self.config.dropout_rate)
        encoded = self.encode(
            encoder_input_tokens, input_embeddings=encoder_input_embeddings, deterministic=deterministic, rngs=rngs
        )
        return self.decode(
            encoded,
            encoder_input_tokens,
            decoder_input_tokens,
            decoder_target_tokens=decoder_target_tokens,
            deterministic=deterministic,
            rngs=rngs,
        )


def abstract_model(config: T5Config) -> EncoderDecoder:
    """The model with ``jax.ShapeDtypeStruct`` parameters (``nnx.eval_shape``): nothing allocated."""
    return nnx.eval_shape(lambda: EncoderDecoder(config, rngs=nnx.Rngs(0)))


def param_count(config: T5Config) -> int:
    """Number of parameters of the model ``config`` describes, counted without allocating them."""
    state = nnx.state(abstract_model(config), nnx.Param)
    return sum(int(x.size) for x in jax.tree.leaves(state))
