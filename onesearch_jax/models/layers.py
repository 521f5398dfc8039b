"""T5 v1.1 building blocks in Flax NNX: RMSNorm, embedding, gated-GELU MLP, relative position
biases and multi-head attention (Raffel et al. 2020; T5X ``examples/t5/layers.py``).

Conventions shared by every module here:

* Parameters are float32 :class:`flax.nnx.Param` s carrying logical axis names in their
  ``out_sharding`` metadata (:data:`LOGICAL_AXES` lists them), so
  ``nnx.get_partition_spec(nnx.state(model))`` under ``nnx.logical_axis_rules(...)`` maps them to
  mesh axes. Outside a mesh the parameters are created unsharded; inside one (``jax.set_mesh``)
  they follow flax's eager-sharding default, which needs the logical rules in context.
* Activations are computed in ``dtype`` (bfloat16 for training): parameters are cast where used.
  Norm statistics, attention logits and softmax are float32.
* No biases anywhere (T5 v1.1). Attention logits are not scaled by ``1/sqrt(d_kv)``: the scaling is
  folded into the query initialiser, as in Mesh TensorFlow and T5X.
* Dropout (:class:`~onesearch_jax.models.dropout.Dropout`, a counter-hash mask) draws its keys from
  an :class:`flax.nnx.Rngs` passed at call time (stream ``dropout``), so the model's state holds
  parameters only.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from onesearch_jax.models.dropout import Dropout

Initializer = Callable[..., jax.Array]

# Logical axis names used by the parameters (the partitioner maps them to mesh axes).
EMBED, MLP, HEADS, KV, VOCAB, RELPOS_BUCKETS = "embed", "mlp", "heads", "kv", "vocab", "relpos_buckets"
LOGICAL_AXES = (EMBED, MLP, HEADS, KV, VOCAB, RELPOS_BUCKETS)
PARAM_DTYPE = jnp.float32


def make_param(rngs: nnx.Rngs, init: Initializer, shape: Sequence[int], names: Sequence[str | None]) -> nnx.Param:
    """A float32 parameter with logical axis ``names``, drawn from ``init`` with ``rngs.params()``.

    Eager sharding (flax's default) is used only when a mesh is set, so a model can be built on
    one device without one.
    """
    if len(names) != len(shape):
        raise ValueError(f"logical axis names {tuple(names)} do not match the shape {tuple(shape)}")
    eager = nnx.using_eager_sharding() and not jax.sharding.get_abstract_mesh().empty
    value = init(rngs.params(), tuple(shape), PARAM_DTYPE)
    return nnx.Param(value, out_sharding=tuple(names), eager_sharding=eager)


def fan_in_init(scale: float = 1.0, in_axis: int | Sequence[int] = -2, out_axis: int | Sequence[int] = -1):
    """T5X's default kernel initialiser: truncated normal with variance ``scale / fan_in``."""
    return jax.nn.initializers.variance_scaling(scale, "fan_in", "truncated_normal", in_axis=in_axis, out_axis=out_axis)


class RMSNorm(nnx.Module):
    """T5 layer norm: ``y = x / sqrt(mean(x²) + eps) * scale``, no mean subtraction, no bias.

    Zhang & Sennrich 2019; T5X ``layers.LayerNorm``. The statistics are computed in float32.
    """

    def __init__(self, features: int, *, epsilon: float = 1e-6, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.epsilon = epsilon
        self.dtype = dtype
        self.scale = make_param(rngs, jax.nn.initializers.ones, (features,), (EMBED,))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
        return y.astype(self.dtype) * self.scale[...].astype(self.dtype)


class Embed(nnx.Module):
    """Token embedding ``[vocab, embed]`` (T5X ``layers.Embed``), usable as a tied output layer."""

    def __init__(self, num_embeddings: int, features: int, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.dtype = dtype
        self.embedding = make_param(
            rngs, jax.nn.initializers.normal(stddev=1.0), (num_embeddings, features), (VOCAB, EMBED)
        )

    def __call__(self, ids: jax.Array) -> jax.Array:
        """Rows of the table for integer ``ids`` ``[...]`` -> ``[..., features]`` in ``dtype``."""
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(f"Embed takes integer token ids, got dtype {ids.dtype}")
        return jnp.take(self.embedding[...].astype(self.dtype), ids, axis=0)

    def attend(self, x: jax.Array) -> jax.Array:
        """``x @ embedding.T``: float32 logits ``[..., vocab]`` (the tied output layer)."""
        return jnp.einsum(
            "...d,vd->...v",
            x.astype(self.dtype),
            self.embedding[...].astype(self.dtype),
            preferred_element_type=jnp.float32,
        )


class GatedGeluMlp(nnx.Module):
    """T5 v1.1 feed-forward: ``wo(dropout(gelu(x @ wi_0) * (x @ wi_1)))`` (Shazeer 2020, GEGLU).

    GELU is the tanh approximation (HF ``gelu_new``, which HF's ``gated-gelu`` selects).
    """

    def __init__(self, d_model: int, d_ff: int, *, dropout_rate: float, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.dtype = dtype
        self.wi_0 = make_param(rngs, fan_in_init(), (d_model, d_ff), (EMBED, MLP))
        self.wi_1 = make_param(rngs, fan_in_init(), (d_model, d_ff), (EMBED, MLP))
        self.wo = make_param(rngs, fan_in_init(), (d_ff, d_model), (MLP, EMBED))
        self.dropout = Dropout(dropout_rate)

    def __call__(self, x: jax.Array, *, deterministic: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
        x = x.astype(self.dtype)
        gate = jax.nn.gelu(x @ self.wi_0[...].astype(self.dtype), approximate=True)
        hidden = gate * (x @ self.wi_1[...].astype(self.dtype))
        hidden = self.dropout(hidden, deterministic=deterministic, rngs=rngs)
        return hidden @ self.wo[...].astype(self.dtype)


def relative_position_bucket(
    relative_position: np.ndarray, *, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128
) -> np.ndarray:
    """T5's bucket of each ``memory_position - query_position`` (Mesh TF ``_relative_position_bucket``).

    With ``bidirectional``, half of the buckets are for positive offsets (keys after the query);
    otherwise positive offsets share bucket 0 (they are masked in causal attention). Of the buckets
    for one direction, the first half are exact offsets ``0 .. max_exact-1`` and the rest
    log-spaced up to ``max_distance``; farther offsets take the last bucket.

    Computed in numpy float32 with HF's order of operations, so the buckets of a checkpoint trained
    with HF or Mesh TF are reproduced exactly (T5X adds an epsilon inside the log instead).

    Args:
        relative_position: integer array of ``memory_position - query_position``.
        bidirectional: encoder (True) or causal decoder (False) buckets.
        num_buckets: buckets in total.
        max_distance: offsets at or beyond it share the last bucket.

    Returns:
        int32 array of buckets in ``[0, num_buckets)``, the shape of ``relative_position``.
    """
    relative_position = np.asarray(relative_position, dtype=np.int64)
    buckets = np.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).astype(np.int64) * num_buckets
        n = np.abs(relative_position)
    else:
        n = -np.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    # np.maximum keeps log() finite where the exact branch is taken anyway.
    ratio = np.maximum(n, max_exact).astype(np.float32) / np.float32(max_exact)
    scaled = np.log(ratio) / np.float32(math.log(max_distance / max_exact)) * np.float32(num_buckets - max_exact)
    if_large = np.minimum(max_exact + scaled.astype(np.int64), num_buckets - 1)
    return (buckets + np.where(is_small, n, if_large)).astype(np.int32)


class RelativePositionBias(nnx.Module):
    """Learned per-head scalar bias of each relative-position bucket, shared by every layer of a
    stack (T5: only the first layer owns it; T5X ``layers.RelativePositionBiases``).
    """

    def __init__(
        self,
        *,
        num_buckets: int,
        max_distance: int,
        num_heads: int,
        bidirectional: bool,
        rngs: nnx.Rngs,
    ):
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        init = jax.nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=1, out_axis=0)
        self.rel_embedding = make_param(rngs, init, (num_heads, num_buckets), (HEADS, RELPOS_BUCKETS))

    def buckets(self, query_length: int, key_length: int, *, query_offset: int = 0) -> np.ndarray:
        """Static ``[query_length, key_length]`` buckets; queries start at ``query_offset``."""
        context = np.arange(query_length, dtype=np.int64)[:, None] + query_offset
        memory = np.arange(key_length, dtype=np.int64)[None, :]
        return relative_position_bucket(
            memory - context,
            bidirectional=self.bidirectional,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )

    def __call__(self, query_length: int, key_length: int, *, query_offset: int = 0) -> jax.Array:
        """float32 bias ``[1, heads, query_length, key_length]`` (queries start at ``query_offset``)."""
        buckets = self.buckets(query_length, key_length, query_offset=query_offset)
        values = jnp.take(self.rel_embedding[...], jnp.asarray(buckets), axis=1)  # [heads, q, k]
        return values[None].astype(jnp.float32)


def _check_position_bias(logits: jax.Array, bias: jax.Array) -> None:
    if bias.ndim != 4 or bias.shape[0] != 1 or bias.shape[1:] != logits.shape[1:]:
        raise ValueError(f"position bias must be [1, H, Q, K] for logits {logits.shape}, got {bias.shape}")


@jax.custom_vjp
def add_position_bias(logits: jax.Array, bias: jax.Array) -> jax.Array:
    """``logits [B, H, Q, K] + bias [1, H, Q, K]``, with the bias gradient summed over the batch by
    a matrix product.

    The value is plain broadcasting addition. Its automatic gradient reduces ``[B, H, Q, K]`` over
    the leading axis, which XLA's CPU backend runs far below memory speed (measured: 270-310 ms of
    a 2.4 s tiny-model train step, ``bench/train_step.py``); the same sum as ``ones[B] @ g``
    takes a few milliseconds, on any backend.
    """
    _check_position_bias(logits, bias)
    return logits + bias


def _add_position_bias_fwd(logits: jax.Array, bias: jax.Array) -> tuple[jax.Array, None]:
    _check_position_bias(logits, bias)
    return logits + bias, None


def _add_position_bias_bwd(_: None, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    return g, jnp.einsum("b,bhqk->hqk", jnp.ones((g.shape[0],), g.dtype), g)[None]


add_position_bias.defvjp(_add_position_bias_fwd, _add_position_bias_bwd)


# Added to the logits of masked keys (T5X ``layers.combine_masks`` -> bias of -1e10): large enough
# that exp() underflows to 0 next to any real logit, small enough to stay finite when added.
MASKED_LOGIT_BIAS = -1e10


def padding_mask(tokens: jax.Array) -> jax.Array:
    """``[B, 1, 1, L]`` True where ``tokens`` is not padding (id 0), to mask keys."""
    return (tokens > 0)[:, None, None, :]


def causal_mask(length: int) -> jax.Array:
    """``[1, 1, L, L]`` True where the key is not after the query."""
    return jnp.tril(jnp.ones((length, length), dtype=jnp.bool_))[None, None]


class MultiHeadAttention(nnx.Module):
    """T5 multi-head attention without logit scaling or biases (T5X ``MultiHeadDotProductAttention``).

    Kernels are ``query/key/value: [embed, heads, kv]`` and ``out: [heads, kv, embed]``. The query
    initialiser is divided by ``sqrt(d_kv)`` in place of scaling the logits. The projections are
    separate methods so that a decoding cache can reuse :meth:`attend`.
    """

    def __init__(
        self,
        *,
        d_model: int,
        num_heads: int,
        d_kv: int,
        dropout_rate: float,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        self.dtype = dtype
        qkv_init = fan_in_init(in_axis=0, out_axis=(1, 2))
        depth_scaling = d_kv**-0.5

        def query_init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype) -> jax.Array:
            return qkv_init(key, shape, dtype) * depth_scaling

        shape_in, names_in = (d_model, num_heads, d_kv), (EMBED, HEADS, KV)
        self.query = make_param(rngs, query_init, shape_in, names_in)
        self.key = make_param(rngs, qkv_init, shape_in, names_in)
        self.value = make_param(rngs, qkv_init, shape_in, names_in)
        self.out = make_param(
            rngs, fan_in_init(in_axis=(0, 1), out_axis=2), (num_heads, d_kv, d_model), (HEADS, KV, EMBED)
        )
        self.dropout = Dropout(dropout_rate)

    def _project(self, x: jax.Array, kernel: nnx.Param) -> jax.Array:
        return jnp.einsum("bld,dhk->bhlk", x.astype(self.dtype), kernel[...].astype(self.dtype))

    def project_query(self, x: jax.Array) -> jax.Array:
        """``[B, Q, embed] -> [B, heads, Q, kv]``."""
        return self._project(x, self.query)

    def project_key_value(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``[B, K, embed] -> ([B, heads, K, kv], [B, heads, K, kv])``."""
        return self._project(x, self.key), self._project(x, self.value)

    def attend(
        self,
        query: jax.Array,
        key: jax.Array,
        value: jax.Array,
        *,
        position_bias: jax.Array | None,
        mask: jax.Array | None,
        deterministic: bool,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        """Softmax attention of projected heads, then the output projection -> ``[B, Q, embed]``.

        Heads are laid out ``[B, heads, length, kv]``, so that both attention products are plain
        batched matrix products over ``(B, heads)`` with no transposes (on CPU, 3x faster for
        ``weights @ value`` than ``[B, length, heads, kv]``, measured on ``[64, 4, 256, 32]`` heads).

        Args:
            query: ``[B, heads, Q, kv]``.
            key: ``[B, heads, K, kv]``.
            value: ``[B, heads, K, kv]``.
            position_bias: float32 bias ``[1, heads, Q, K]`` (:class:`RelativePositionBias`), or None.
            mask: bool broadcastable to ``[B, heads, Q, K]``, True where attending is allowed, or
                None. Masked logits get :data:`MASKED_LOGIT_BIAS` added (T5X's
                ``combine_biases``): the backward pass then has no select over ``[B, H, Q, K]``,
                and a fully masked row attends uniformly (finite logits, no NaN).
            deterministic: no dropout on the attention weights when True.
            rngs: dropout keys (stream ``dropout``) when not ``deterministic``.
        """
        logits = jnp.einsum("bhqd,bhkd->bhqk", query, key, preferred_element_type=jnp.float32)
        if position_bias is not None:
            logits = add_position_bias(logits, position_bias)
        if mask is not None:
            logits = logits + jnp.where(mask, 0.0, MASKED_LOGIT_BIAS).astype(jnp.float32)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        weights = self.dropout(weights, deterministic=deterministic, rngs=rngs)
        heads = jnp.einsum("bhqk,bhkd->bhqd", weights, value.astype(self.dtype))
        return jnp.einsum("bhqd,hdm->bqm", heads, self.out[...].astype(self.dtype))

    def project_rows(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Query, key and value ``[N, heads, kv]`` of one position per row, ``x [N, embed]``.

        Plain 2-D products ``[N, embed] @ [embed, heads * kv]``: the decoding step's layout, with
        no transposes around the products.
        """
        x = x.astype(self.dtype)

        def project(kernel: nnx.Param) -> jax.Array:
            w = kernel[...].astype(self.dtype)
            return (x @ w.reshape(w.shape[0], -1)).reshape(x.shape[0], *w.shape[1:])

        return project(self.query), project(self.key), project(self.value)

    def attend_rows(
        self, query: jax.Array, keys: Sequence[jax.Array], values: Sequence[jax.Array], *, bias: jax.Array
    ) -> jax.Array:
        """One query per row over a few earlier positions: ``[N, embed]``.

        The same softmax attention as :meth:`attend` for a single query position, written as
        elementwise products and sums over the positions instead of batched matrix products
        (``[1, kv] @ [kv, t]`` per row and head is far below what a matrix kernel is for), so that
        XLA fuses them with the gathers that bring each beam's cached keys into its row order.

        Args:
            query: ``[N, heads, kv]``.
            keys: per position s, ``[N, heads, kv]``.
            values: per position s, ``[N, heads, kv]``.
            bias: float32 ``[heads, len(keys)]`` added to the logits (position bias and masks).
        """
        q = query.astype(jnp.float32)
        # Per position [N, heads]; the softmax over the few positions is elementwise across them.
        logits = [jnp.sum(q * k.astype(jnp.float32), axis=-1) + bias[:, s] for s, k in enumerate(keys)]
        peak = functools.reduce(jnp.maximum, logits)
        exps = [jnp.exp(logit - peak) for logit in logits]
        total = sum(exps)
        heads = sum(e[..., None] * v.astype(jnp.float32) for e, v in zip(exps, values, strict=True))
        heads = heads / total[..., None]
        out = self.out[...].astype(self.dtype)
        return heads.astype(self.dtype).reshape(heads.shape[0], -1) @ out.reshape(-1, out.shape[-1])

    def __call__(
        self,
        inputs_q: jax.Array,
        inputs_kv: jax.Array,
        *,
        position_bias: jax.Array | None,
        mask: jax.Array | None,
        deterministic: bool,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        """Attention of ``inputs_q [B, Q, embed]`` over ``inputs_kv [B, K, embed]`` -> ``[B, Q, embed]``."""
        key, value = self.project_key_value(inputs_kv)
        return self.attend(
            self.project_query(inputs_q),
            key,
            value,
            position_bias=position_bias,
            mask=mask,
            deterministic=deterministic,
            rngs=rngs,
        )
