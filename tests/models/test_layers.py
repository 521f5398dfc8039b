"""Values of the building blocks: RMSNorm, relative position buckets, masks, attention, MLP."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from onesearch_jax.models.layers import (
    Embed,
    GatedGeluMlp,
    MultiHeadAttention,
    RelativePositionBias,
    RMSNorm,
    causal_mask,
    make_param,
    padding_mask,
    relative_position_bucket,
)
from tests.models.model_utils import abstract, fill, jit_call


def direct_bucket(relative_position: int, *, bidirectional: bool, num_buckets: int, max_distance: int) -> int:
    """T5's bucket formula (Raffel et al. 2020, Mesh TF), written out for one offset."""
    bucket = 0
    if bidirectional:
        num_buckets //= 2
        if relative_position > 0:
            bucket += num_buckets
        n = abs(relative_position)
    else:
        n = max(-relative_position, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return bucket + n
    large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    return bucket + min(large, num_buckets - 1)


def attention(d_model: int, num_heads: int, d_kv: int, dtype=jnp.float32) -> MultiHeadAttention:
    return abstract(
        lambda: MultiHeadAttention(
            d_model=d_model, num_heads=num_heads, d_kv=d_kv, dropout_rate=0.0, dtype=dtype, rngs=nnx.Rngs(0)
        )
    )


@nnx.jit
def attend(attn: MultiHeadAttention, q, kv, bias, mask):
    return attn(q, kv, position_bias=bias, mask=mask, deterministic=True)


def test_rms_norm_hand_computed():
    norm = abstract(lambda: RMSNorm(4, epsilon=1e-6, rngs=nnx.Rngs(0)))
    norm.scale.set_value(jnp.array([1.0, 2.0, 0.5, -1.0]))
    x = jnp.array([[1.0, 2.0, 3.0, 4.0]])
    # mean(x²) = (1 + 4 + 9 + 16) / 4 = 7.5: no mean subtraction, no bias
    expected = np.array([1.0, 2.0, 3.0, 4.0]) / math.sqrt(7.5 + 1e-6) * np.array([1.0, 2.0, 0.5, -1.0])
    np.testing.assert_allclose(np.asarray(jit_call(norm, x))[0], expected, rtol=1e-6)


def test_rms_norm_bf16_output_fp32_statistics():
    norm = fill(abstract(lambda: RMSNorm(3, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))), draw=lambda p, s, r: np.ones(s))
    # 300² + 400² overflows nothing in float32 statistics; the output is bfloat16
    y = jit_call(norm, jnp.array([[300.0, 400.0, 0.0]], dtype=jnp.bfloat16))
    assert y.dtype == jnp.bfloat16
    rms = math.sqrt(250000 / 3)
    np.testing.assert_allclose(np.asarray(y, np.float32)[0], [300 / rms, 400 / rms, 0], rtol=1e-2)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize(("num_buckets", "max_distance"), [(32, 128), (8, 20), (16, 32)])
def test_relative_position_bucket_matches_formula(bidirectional, num_buckets, max_distance):
    offsets = np.arange(-300, 301)
    got = relative_position_bucket(
        offsets, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
    )
    want = [
        direct_bucket(int(o), bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance)
        for o in offsets
    ]
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int32 and got.min() >= 0 and got.max() == num_buckets - 1


def test_relative_position_bucket_known_values():
    # Default T5 (32 buckets, 128): encoder offsets ±, exact up to 7 per side, then log-spaced.
    enc = relative_position_bucket(np.array([0, -1, 1, -7, 7, -8, 8, -127, 128, 1000]), bidirectional=True)
    np.testing.assert_array_equal(enc, [0, 1, 17, 7, 23, 8, 24, 15, 31, 31])
    # Decoder: keys in the future share bucket 0; past offsets get all 32 buckets (exact up to 15).
    dec = relative_position_bucket(np.array([0, 5, 1000, -1, -15, -16, -127, -128, -1000]), bidirectional=False)
    np.testing.assert_array_equal(dec, [0, 0, 0, 1, 15, 16, 31, 31, 31])


def test_relative_position_bias_grid():
    rel = abstract(
        lambda: RelativePositionBias(num_buckets=8, max_distance=20, num_heads=2, bidirectional=False, rngs=nnx.Rngs(0))
    )
    rel.rel_embedding.set_value(jnp.arange(16, dtype=jnp.float32).reshape(2, 8))
    bias = np.asarray(rel(3, 4))
    assert bias.shape == (1, 2, 3, 4) and bias.dtype == np.float32
    buckets = rel.buckets(3, 4)  # memory - query: causal, so keys after the query are bucket 0
    np.testing.assert_array_equal(buckets, [[0, 0, 0, 0], [1, 0, 0, 0], [2, 1, 0, 0]])
    np.testing.assert_array_equal(bias[0, 1], 8 + buckets)
    np.testing.assert_array_equal(rel.buckets(1, 4, query_offset=2), buckets[2:])  # for a decoding cache


def test_masks():
    np.testing.assert_array_equal(padding_mask(jnp.array([[3, 0, 4, 0]]))[0, 0, 0], [True, False, True, False])
    np.testing.assert_array_equal(causal_mask(3)[0, 0], np.tril(np.ones((3, 3), bool)))


def test_attention_ignores_masked_keys_and_has_no_scaling():
    attn = attention(4, 1, 4)
    for p in (attn.query, attn.key, attn.value):
        p.set_value(jnp.eye(4).reshape(4, 1, 4))
    attn.out.set_value(jnp.eye(4).reshape(1, 4, 4))
    q = jnp.array([[[1.0, 0, 0, 0]]])
    kv = jnp.array([[[2.0, 0, 0, 0], [0, 1.0, 0, 0], [5.0, 5.0, 5.0, 5.0]]])
    mask = jnp.array([True, True, False])[None, None, None]
    bias = jnp.array([0.0, 1.0, 0.0])[None, None, None]
    out = np.asarray(attend(attn, q, kv, bias, mask))
    # logits q·k + bias = [2, 0 + 1], unscaled (T5 folds 1/sqrt(d_kv) into the query init); key 3 masked
    w = np.exp([2.0, 1.0]) / np.exp([2.0, 1.0]).sum()
    np.testing.assert_allclose(out[0, 0], w[0] * np.array([2.0, 0, 0, 0]) + w[1] * np.array([0, 1.0, 0, 0]), rtol=1e-6)


def test_fully_masked_row_is_finite():
    attn = fill(attention(4, 2, 2))
    x = jnp.ones((1, 2, 4))
    out = attend(attn, x, x, jnp.full((1, 2, 2, 2), -1e30), jnp.zeros((1, 1, 2, 2), bool))
    assert np.isfinite(np.asarray(out)).all()


def test_gated_gelu_mlp_values():
    mlp = fill(abstract(lambda: GatedGeluMlp(2, 3, dropout_rate=0.0, dtype=jnp.float32, rngs=nnx.Rngs(0))))
    x = np.array([[0.5, -1.0]], np.float32)
    wi0, wi1, wo = (np.asarray(p.get_value()) for p in (mlp.wi_0, mlp.wi_1, mlp.wo))
    a = x @ wi0
    gelu_tanh = 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a**3)))
    got = jit_call(mlp, jnp.asarray(x), deterministic=True)
    np.testing.assert_allclose(np.asarray(got), (gelu_tanh * (x @ wi1)) @ wo, rtol=1e-5)


def test_embed_lookup_and_attend():
    emb = fill(abstract(lambda: Embed(5, 3, rngs=nnx.Rngs(0))))
    table = np.asarray(emb.embedding.get_value())
    np.testing.assert_array_equal(np.asarray(emb(jnp.array([[4, 0]]))), table[[[4, 0]]])
    np.testing.assert_allclose(np.asarray(emb.attend(jnp.ones((1, 3)))), np.ones((1, 3)) @ table.T, rtol=1e-6)
    with pytest.raises(ValueError, match="integer token ids"):
        emb(jnp.ones((1, 2)))


def test_param_logical_names():
    attn = attention(8, 2, 4)
    specs = nnx.get_partition_spec(nnx.state(attn, nnx.Param))
    assert tuple(specs["query"].get_value()) == ("embed", "heads", "kv")
    assert tuple(specs["out"].get_value()) == ("heads", "kv", "embed")
    with nnx.logical_axis_rules([("embed", "fsdp"), ("heads", "tensor"), ("kv", None)]):
        mapped = nnx.get_partition_spec(nnx.state(attn, nnx.Param))
    assert tuple(mapped["query"].get_value()) == ("fsdp", "tensor", None)
    with pytest.raises(ValueError, match="do not match the shape"):
        make_param(nnx.Rngs(0), jax.nn.initializers.ones, (2, 3), ("embed",))


def test_params_are_float32_in_bf16_modules():
    mlp = fill(abstract(lambda: GatedGeluMlp(4, 8, dropout_rate=0.0, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(mlp, nnx.Param)))
    assert jit_call(mlp, jnp.ones((1, 4)), deterministic=True).dtype == jnp.bfloat16
