"""Behaviour of the encoder-decoder: masks, dropout, embeddings input, axis names, sizes, gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from onesearch_jax.models.configs import T5Config, named_config
from onesearch_jax.models.encoder_decoder import EncoderDecoder, abstract_model, param_count, reorder_cache
from onesearch_jax.models.layers import LOGICAL_AXES, GatedGeluMlp, MultiHeadAttention, RMSNorm
from tests.models.model_utils import random_model

CONFIG = T5Config(
    vocab_size=64,
    d_model=32,
    d_kv=8,
    d_ff=64,
    num_heads=4,
    num_encoder_layers=2,
    num_decoder_layers=2,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
    dropout_rate=0.1,
    dtype="float32",
)
ENC = jnp.array([[5, 6, 7, 8, 9, 10], [11, 12, 13, 0, 0, 0]], dtype=jnp.int32)
DEC = jnp.array([[0, 20, 21, 22, 23], [0, 24, 25, 26, 27]], dtype=jnp.int32)


def dropout_key(seed: int) -> jax.Array:
    """rbg keys: dropout masks compile much faster on CPU than with the default threefry."""
    return jax.random.key(seed, impl="rbg")


# One compile per input shape instead of op-by-op dispatch: keeps this file fast on CPU.
forward = nnx.jit(EncoderDecoder.__call__, static_argnames=("deterministic",))


encode = nnx.jit(EncoderDecoder.encode)


@pytest.fixture(scope="module")
def model() -> EncoderDecoder:
    return random_model(CONFIG)


def test_init_draws_t5_scales():
    attention = nnx.jit(
        lambda: MultiHeadAttention(
            d_model=64, num_heads=4, d_kv=16, dropout_rate=0.0, dtype=jnp.float32, rngs=nnx.Rngs(0)
        )
    )()
    # fan-in truncated normal (T5X); the query also carries the folded 1/sqrt(d_kv)
    assert np.std(np.asarray(attention.key.get_value())) == pytest.approx(64**-0.5, rel=0.1)
    assert np.std(np.asarray(attention.query.get_value())) == pytest.approx((64 * 16) ** -0.5, rel=0.1)
    assert np.std(np.asarray(attention.out.get_value())) == pytest.approx(64**-0.5, rel=0.1)
    norm = RMSNorm(64, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(np.asarray(norm.scale.get_value()), np.ones(64))


def test_logits_shape_and_dtype(model):
    logits = forward(model, ENC, DEC)
    assert logits.shape == (2, 5, 64) and logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all()


def test_causal_future_decoder_tokens_do_not_change_earlier_logits(model):
    before = np.asarray(forward(model, ENC, DEC))
    after = np.asarray(forward(model, ENC, DEC.at[:, 3].set(40)))
    np.testing.assert_array_equal(after[:, :3], before[:, :3])
    assert np.abs(after[:, 3:] - before[:, 3:]).max() > 1e-3


@nnx.jit
def _incremental_logits(model, enc, dec, order):
    """decode_step over every position of ``dec [N, T]`` (N = 3 rows per query), with the cache's
    rows permuted by ``order [B, 3]`` within each query after position 1 (as a beam search reorders)."""
    cross = model.cross_key_values(model.encode(enc))
    cache, out = None, []
    for t in range(dec.shape[1]):
        logits, cache = model.decode_step(cross, enc, dec[:, t], t, cache)
        out.append(logits)
        if t == 1:
            cache = reorder_cache(cache, order)
            dec = dec[(order + 3 * jnp.arange(order.shape[0])[:, None]).reshape(-1)]
    return jnp.stack(out, axis=1), dec


def test_incremental_decode_step_equals_decoding_the_whole_prefix(model):
    rows = jnp.concatenate([DEC, DEC.at[:, 2:].set(30), DEC.at[:, 1:].set(31)])  # [6, 5]: 3 rows per query
    rows = rows.reshape(3, 2, 5).transpose(1, 0, 2).reshape(6, 5)  # row b * 3 + r belongs to query b
    order = jnp.array([[2, 0, 1], [1, 2, 0]])  # rows 2, 0, 1 of query 0; rows 4, 5, 3 overall for query 1
    incremental, reordered = _incremental_logits(model, ENC, rows, order)
    # Rows after position 1 continue the prefixes they were reordered to; positions 0-1 are before it.
    full_before = forward(model, jnp.repeat(ENC, 3, axis=0), rows)
    full_after = forward(model, jnp.repeat(ENC, 3, axis=0), reordered)
    np.testing.assert_allclose(np.asarray(incremental[:, :2]), np.asarray(full_before[:, :2]), atol=2e-5)
    np.testing.assert_allclose(np.asarray(incremental[:, 2:]), np.asarray(full_after[:, 2:]), atol=2e-5)
    assert not np.allclose(np.asarray(full_before[:, 2:]), np.asarray(full_after[:, 2:]), atol=1e-3)


def test_decode_of_several_rows_per_query_equals_decoding_a_repeated_encoder_output(model):
    """decode with N = 3 rows per query (GRPO's rollouts) shares the query's cross-attention keys and
    values; the logits equal those of the encoder output repeated per row."""
    rows = jnp.concatenate([DEC, DEC.at[:, 2:].set(30), DEC.at[:, 1:].set(31)])
    rows = rows.reshape(3, 2, 5).transpose(1, 0, 2).reshape(6, 5)  # row b * 3 + r belongs to query b
    encoded = encode(model, ENC)
    shared = nnx.jit(EncoderDecoder.decode)(model, encoded, ENC, rows)
    repeated = nnx.jit(EncoderDecoder.decode)(model, jnp.repeat(encoded, 3, axis=0), jnp.repeat(ENC, 3, axis=0), rows)
    assert shared.shape == (6, 5, 64)
    np.testing.assert_allclose(np.asarray(shared), np.asarray(repeated), atol=1e-5)
    # and the rows are not all the same continuation: query 1's rows differ from query 0's
    assert float(jnp.abs(shared[0] - shared[3]).max()) > 1e-3


def test_decode_step_checks_its_cache(model):
    cross = model.cross_key_values(model.encode(ENC))
    tokens = jnp.zeros((4,), jnp.int32)
    _, cache = model.decode_step(cross, ENC, tokens, 0, None)
    assert cache.length == 1 and cache.rows == 4
    assert all(k.shape == (4, CONFIG.num_heads, CONFIG.d_kv) for layer in cache.keys for k in layer)
    with pytest.raises(ValueError, match="position 2 needs the cache of 2 positions, got 1"):
        model.decode_step(cross, ENC, tokens, 2, cache)
    with pytest.raises(ValueError, match=r"shape \(3,\), the cache 4 rows"):
        model.decode_step(cross, ENC, tokens[:3], 1, cache)
    np.testing.assert_array_equal(np.asarray(cache.ancestors[0]), [[0, 1], [0, 1]])  # 2 queries x 2 rows
    # reordering composes the row maps within each query and copies no key or value
    reordered = reorder_cache(cache, jnp.array([[1, 1, 0], [0, 1, 1]]))
    assert reordered.rows == 6 and reordered.keys is cache.keys
    np.testing.assert_array_equal(np.asarray(reordered.ancestors[0]), [[1, 1, 0], [0, 1, 1]])
    again = reorder_cache(reordered, jnp.array([[2, 0], [0, 2]]))
    np.testing.assert_array_equal(np.asarray(again.ancestors[0]), [[0, 1], [0, 1]])


def test_padding_more_pad_columns_do_not_change_logits(model):
    before = np.asarray(forward(model, ENC, DEC))
    padded = jnp.pad(ENC, ((0, 0), (0, 5)))
    np.testing.assert_allclose(np.asarray(forward(model, padded, DEC)), before, atol=1e-5)


def test_padding_content_behind_padding_is_ignored(model):
    embeddings = model.embed_inputs(ENC)
    noise = jax.random.normal(jax.random.key(1), embeddings.shape) * 10.0
    perturbed = jnp.where((ENC == 0)[..., None], embeddings + noise, embeddings)
    before = np.asarray(forward(model, ENC, DEC))
    after = np.asarray(forward(model, ENC, DEC, encoder_input_embeddings=perturbed))
    np.testing.assert_allclose(after, before, atol=1e-5)
    # the same noise on real tokens does change the logits
    changed = np.asarray(forward(model, ENC, DEC, encoder_input_embeddings=embeddings + noise))
    assert np.abs(changed - before).max() > 1e-3


def test_decoder_target_padding_mask(model):
    targets = jnp.array([[20, 21, 22, 23, 1], [24, 25, 1, 0, 0]], dtype=jnp.int32)
    inputs = jnp.pad(targets[:, :-1], ((0, 0), (1, 0)))  # shifted right, start token 0
    masked = np.asarray(forward(model, ENC, inputs, decoder_target_tokens=targets))
    causal_only = np.asarray(forward(model, ENC, inputs))
    real = np.asarray(targets > 0)
    np.testing.assert_allclose(masked[real], causal_only[real], atol=1e-6)
    # what sits at padded decoder positions does not reach real ones
    other = np.asarray(forward(model, ENC, inputs.at[1, 4].set(50), decoder_target_tokens=targets))
    np.testing.assert_allclose(other[real], masked[real], atol=1e-6)


def test_encoder_input_embeddings_equal_token_path(model):
    np.testing.assert_array_equal(
        np.asarray(encode(model, ENC, input_embeddings=model.embed_inputs(ENC))), np.asarray(encode(model, ENC))
    )
    with pytest.raises(ValueError, match="input_embeddings has shape"):
        model.encode(ENC, input_embeddings=jnp.zeros((2, 6, 8)))


def test_deterministic_is_repeatable_and_dropout_changes_outputs(model):
    eval_logits = np.asarray(forward(model, ENC, DEC))
    np.testing.assert_array_equal(np.asarray(forward(model, ENC, DEC, deterministic=True)), eval_logits)
    a = np.asarray(forward(model, ENC, DEC, deterministic=False, rngs=dropout_key(1)))
    a_again = np.asarray(forward(model, ENC, DEC, deterministic=False, rngs=dropout_key(1)))
    b = np.asarray(forward(model, ENC, DEC, deterministic=False, rngs=dropout_key(2)))
    np.testing.assert_array_equal(a, a_again)
    assert np.abs(a - b).max() > 1e-3 and np.abs(a - eval_logits).max() > 1e-3
    with pytest.raises(ValueError, match="needs rngs="):
        model(ENC, DEC, deterministic=False)


def test_every_param_has_logical_axis_names(model):
    params = nnx.state(model, nnx.Param)
    flat = list(nnx.to_flat_state(params))
    assert len(flat) == 5 + 2 * 9 + 2 * 14 + 1  # embedding, relpos x2, final norms x2, layers, lm_head
    for path, var in flat:
        names = var.get_metadata().get("out_sharding")
        assert names is not None and len(names) == var.get_value().ndim, path
        assert set(names) <= set(LOGICAL_AXES), (path, names)
        assert var.get_value().dtype == jnp.float32
    specs = nnx.get_partition_spec(nnx.state(model))
    for path, spec in nnx.to_flat_state(specs):
        assert len(spec.get_value()) > 0 and all(a in LOGICAL_AXES for a in spec.get_value()), path
    assert tuple(specs["token_embedder"]["embedding"].get_value()) == ("vocab", "embed")
    assert tuple(specs["lm_head"].get_value()) == ("embed", "vocab")
    assert tuple(specs["encoder"]["relpos_bias"]["rel_embedding"].get_value()) == ("heads", "relpos_buckets")
    rules = [("embed", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"), ("kv", None), ("vocab", "tensor")]
    with nnx.logical_axis_rules(rules):
        mapped = nnx.get_partition_spec(nnx.state(model))
    assert tuple(mapped["decoder"]["layers"][1]["mlp"]["wo"].get_value()) == ("tensor", "fsdp")


def test_eager_sharding_under_a_mesh():
    mesh = jax.make_mesh((1, 1, 1), ("data", "fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Explicit,) * 3)
    rules = [("embed", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"), ("kv", None), ("vocab", "tensor"),
             ("relpos_buckets", None)]  # fmt: skip
    with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
        mlp = nnx.jit(
            lambda: GatedGeluMlp(CONFIG.d_model, CONFIG.d_ff, dropout_rate=0.0, dtype=jnp.float32, rngs=nnx.Rngs(0))
        )()
    assert mlp.wi_0.get_value().sharding.spec == jax.P("fsdp", "tensor")
    assert mlp.wo.get_value().sharding.spec == jax.P("tensor", "fsdp")
    unsharded = nnx.eval_shape(
        lambda: GatedGeluMlp(CONFIG.d_model, CONFIG.d_ff, dropout_rate=0.0, dtype=jnp.float32, rngs=nnx.Rngs(0))
    )
    assert unsharded.wi_0.get_metadata()["eager_sharding"] is False  # no mesh: built on one device


def test_tied_output_has_no_lm_head():
    tied = abstract_model(CONFIG.replace(tie_word_embeddings=True))
    assert tied.lm_head is None
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(nnx.state(tied)))


@pytest.mark.parametrize(
    ("name", "published"),
    # google/t5-v1_1-{small,base,large} (32,128-token vocabulary, untied output)
    [
        ("small", 76_961_152),
        ("base", 247_577_856),
        pytest.param("large", 783_150_080, marks=pytest.mark.slow),  # ~15 s to trace 48 layers
    ],
)
def test_param_counts_match_t5_v1_1(name, published):
    config = named_config(name, vocab_size=32128)
    assert param_count(config) == published
    tied = param_count(config.replace(tie_word_embeddings=True))
    assert tied == published - 32128 * config.d_model


def test_bf16_activations_fp32_params_and_logits(model):
    graphdef, _ = nnx.split(abstract_model(CONFIG.replace(dtype="bfloat16")))
    bf16 = nnx.merge(graphdef, nnx.state(model))
    assert bf16.embed_inputs(ENC).dtype == jnp.bfloat16
    logits = forward(bf16, ENC, DEC)
    assert logits.dtype == jnp.float32
    ref = np.asarray(forward(model, ENC, DEC))
    assert np.abs(np.asarray(logits) - ref).max() < 0.05 * np.abs(ref).max()


def test_jitted_train_step_gradients_reach_every_param(model):
    graphdef, params = nnx.split(model, nnx.Param)

    @jax.jit
    def loss_and_grads(params):
        def loss_fn(params):
            logits = nnx.merge(graphdef, params)(ENC, DEC)
            targets = jnp.roll(DEC, -1, axis=1)
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], axis=-1))

        return jax.value_and_grad(loss_fn)(params)

    loss, grads = loss_and_grads(params)
    assert np.isfinite(float(loss))
    for path, g in nnx.to_flat_state(grads):
        assert np.abs(np.asarray(g.get_value())).max() > 0, path
