"""Trie-constrained beam search and sampling on a small real model, checked against brute force:
every SID of a small trie scored by a teacher-forced forward pass of the same model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from onesearch_jax.decode.beam_search import beam_search, check_beam_arguments
from onesearch_jax.decode.device_trie import DeviceTrie
from onesearch_jax.decode.greedy import greedy_decode
from onesearch_jax.decode.sampling import SamplingConfig, sample_sids, truncate_logits
from onesearch_jax.models.configs import named_config
from onesearch_jax.models.encoder_decoder import abstract_model
from onesearch_jax.sid.trie import SidTrie
from tests.models.model_utils import fill

CODE_SIZES = (4, 5, 6)
OFFSETS = (10, 14, 19)  # token of code c at position t: OFFSETS[t] + c; ids 10..24
VOCAB = 32
EOS = 1


@pytest.fixture(scope="module")
def trie() -> SidTrie:
    rng = np.random.default_rng(0)
    codes = np.stack([rng.integers(0, k, 40) for k in CODE_SIZES], axis=1)
    return SidTrie.build(codes, np.arange(40), CODE_SIZES)


@pytest.fixture(scope="module")
def model():
    # larger logits than a freshly initialised model so that scores are well separated
    return fill(abstract_model(named_config("tiny", vocab_size=VOCAB, dtype="float32", dropout_rate=0.0)), seed=3)


@pytest.fixture(scope="module")
def queries() -> jax.Array:
    rng = np.random.default_rng(1)
    tokens = rng.integers(2, VOCAB, (3, 12)).astype(np.int32)
    tokens[0, 8:] = 0  # padding
    tokens[:, -1] = np.where(tokens[:, -1] == 0, 0, EOS)
    return jnp.asarray(tokens)


def sid_tokens(sids: np.ndarray) -> np.ndarray:
    return np.asarray(sids) + np.asarray(OFFSETS)


def brute_force_scores(model, queries, sids: np.ndarray, *, eos: bool = True) -> np.ndarray:
    """``[B, n]`` teacher-forced log-probability of every SID (then EOS) for every query."""
    targets = sid_tokens(sids)
    if eos:
        targets = np.concatenate([targets, np.full((len(targets), 1), EOS)], axis=1)
    decoder_inputs = np.pad(targets[:, :-1], ((0, 0), (1, 0)))
    out = []
    for q in np.asarray(queries):
        enc = jnp.asarray(np.repeat(q[None], len(targets), 0))
        logp = jax.nn.log_softmax(model(enc, jnp.asarray(decoder_inputs)), axis=-1)
        out.append(np.take_along_axis(np.asarray(logp), targets[..., None], axis=-1)[..., 0].sum(1))
    return np.stack(out)


def run_beam(model, queries, trie, **kwargs):
    device_trie = DeviceTrie.from_trie(trie, OFFSETS) if trie is not None else None
    fn = jax.jit(lambda q, t: beam_search(model, q, t, **kwargs))
    return jax.tree.map(np.asarray, fn(queries, device_trie))


def test_exhaustive_beam_returns_the_exact_top_k(model, queries, trie):
    exact = brute_force_scores(model, queries, trie.leaf_sids)
    result = run_beam(model, queries, trie, beam_size=64, top_k=10)  # 64 >= every SID: exact
    assert trie.num_sids < 64
    for b in range(len(exact)):
        order = np.argsort(-exact[b], kind="stable")[:10]
        np.testing.assert_array_equal(result.leaves[b], order)
        np.testing.assert_allclose(result.scores[b], exact[b, order], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(result.tokens[b], sid_tokens(trie.leaf_sids[order]))


def test_narrow_beam_returns_valid_sorted_sids_with_their_true_scores(model, queries, trie):
    exact = brute_force_scores(model, queries, trie.leaf_sids)
    result = run_beam(model, queries, trie, beam_size=4, top_k=4)
    for b in range(len(exact)):
        leaves = result.leaves[b]
        assert (leaves >= 0).all() and len(set(leaves)) == 4
        assert all(trie.contains(sid) for sid in result.tokens[b] - np.asarray(OFFSETS))
        np.testing.assert_allclose(result.scores[b], exact[b, leaves], rtol=1e-5, atol=1e-5)
        assert (np.diff(result.scores[b]) <= 0).all()
        # the best SID of a beam of 4 is at least as good as the greedy path under the trie
        assert result.scores[b, 0] <= exact[b].max() + 1e-5


def test_without_eos_scores_are_sid_tokens_only(model, queries, trie):
    exact = brute_force_scores(model, queries, trie.leaf_sids, eos=False)
    result = run_beam(model, queries, trie, beam_size=64, top_k=5, score_eos=False)
    for b in range(len(exact)):
        np.testing.assert_allclose(result.scores[b], np.sort(exact[b])[::-1][:5], rtol=1e-5, atol=1e-5)


def test_more_beams_than_sids_leave_empty_beams(model, queries):
    small = SidTrie.build(np.array([[0, 1, 2], [0, 1, 3], [3, 4, 5]]), np.arange(3), CODE_SIZES)
    result = run_beam(model, queries, small, beam_size=8, top_k=5)
    assert (result.leaves[:, :3] >= 0).all() and (result.leaves[:, 3:] == -1).all()
    assert np.isneginf(result.scores[:, 3:]).all() and np.isfinite(result.scores[:, :3]).all()
    # the search keeps at most as many beams as there are prefixes: 2 after step 0, 2 after step 1
    assert DeviceTrie.from_trie(small, OFFSETS).depth_sizes == (1, 2, 2, 3)
    exact = run_beam(model, queries, small, beam_size=3, top_k=3)
    np.testing.assert_allclose(result.scores[:, :3], exact.scores, rtol=1e-6, atol=1e-6)


def test_unconstrained_beam_of_one_is_greedy(model, queries):
    result = run_beam(model, queries, None, beam_size=1, top_k=1, sid_length=3, score_eos=False)
    tokens, logprobs = jax.jit(lambda q: greedy_decode(model, q, max_length=3))(queries)
    np.testing.assert_array_equal(result.tokens[:, 0], np.asarray(tokens))
    np.testing.assert_allclose(result.scores[:, 0], np.asarray(logprobs).sum(1), rtol=1e-5, atol=1e-5)
    assert (result.leaves == -1).all()


def test_unconstrained_beam_finds_sequences_at_least_as_likely(model, queries, trie):
    constrained = run_beam(model, queries, trie, beam_size=16, top_k=1, score_eos=False)
    free = run_beam(model, queries, None, beam_size=16, top_k=1, sid_length=3, score_eos=False)
    assert (free.scores[:, 0] >= constrained.scores[:, 0] - 1e-5).all()


@pytest.mark.parametrize(("beam_size", "top_k"), [(4, 5), (0, 1), (4, 0)])
def test_bad_beam_arguments(beam_size, top_k):
    with pytest.raises(ValueError, match="beam"):
        check_beam_arguments(beam_size=beam_size, top_k=top_k)


def test_device_trie_checks(trie):
    with pytest.raises(ValueError, match="token_offsets"):
        DeviceTrie.from_trie(trie, OFFSETS[:2])
    empty = SidTrie.build(np.zeros((0, 3), int), np.zeros(0, int), CODE_SIZES)
    with pytest.raises(ValueError, match="empty"):
        DeviceTrie.from_trie(empty, OFFSETS)


def test_device_trie_children_match_the_host_masks(trie):
    device = DeviceTrie.from_trie(trie, OFFSETS)
    for depth in range(trie.sid_length):
        nodes = np.arange(trie.depth_offsets[depth], trie.depth_offsets[depth + 1])
        tokens, _, valid = (np.asarray(x) for x in device.children(jnp.asarray(nodes, jnp.int32), depth))
        mask = np.zeros((len(nodes), CODE_SIZES[depth]), bool)
        rows = np.broadcast_to(np.arange(len(nodes))[:, None], tokens.shape)
        mask[rows[valid], tokens[valid] - OFFSETS[depth]] = True
        np.testing.assert_array_equal(mask, trie.allowed_mask(nodes))


# --- sampling ---------------------------------------------------------------------------------


def run_sampler(model, queries, trie, config, seed=0):
    fn = jax.jit(lambda q, t, k: sample_sids(model, q, t, k, config))
    return jax.tree.map(np.asarray, fn(queries, DeviceTrie.from_trie(trie, OFFSETS), jax.random.key(seed)))


def test_samples_are_valid_and_logprobs_are_teacher_forced(model, queries, trie):
    result = run_sampler(model, queries, trie, SamplingConfig(num_samples=16, temperature=1.3))
    exact = brute_force_scores(model, queries, trie.leaf_sids, eos=False)
    for b in range(queries.shape[0]):
        sids = result.tokens[b] - np.asarray(OFFSETS)
        np.testing.assert_array_equal(trie.leaf_sids[result.leaves[b]], sids)
        np.testing.assert_allclose(result.logprobs[b].sum(1), exact[b, result.leaves[b]], rtol=1e-5, atol=1e-5)
    assert (result.sample_logprobs <= 1e-6).all()


def test_first_code_frequencies_match_the_masked_softmax(model, queries, trie):
    """Chi-square goodness of fit of 6,000 draws of the first code to softmax over the root's children."""
    n = 6000
    result = run_sampler(model, queries[:1], trie, SamplingConfig(num_samples=n), seed=7)
    children = trie.children(0)[0]
    logits = np.asarray(model(queries[:1], jnp.zeros((1, 1), jnp.int32)))[0, 0]
    p = jax.nn.softmax(jnp.asarray(logits[children + OFFSETS[0]]))
    observed = np.bincount(result.tokens[0, :, 0] - OFFSETS[0], minlength=CODE_SIZES[0])[children]
    expected = n * np.asarray(p)
    assert expected.min() > 5, expected  # the chi-square approximation holds
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    # critical value of chi-square at p = 0.001 for df = len(children) - 1 (3 -> 16.27)
    assert len(children) == 4
    assert chi2 < 16.27, (observed, expected)
    # and the same draws, read as a distribution, are far from uniform when p is (the test can fail)
    uniform = np.full(len(children), n / len(children))
    if np.abs(expected - uniform).max() > 200:
        assert float(((observed - uniform) ** 2 / uniform).sum()) > 16.27


def test_top_k_one_follows_the_most_likely_child(model, queries, trie):
    result = run_sampler(model, queries, trie, SamplingConfig(num_samples=5, top_k=1))
    assert (result.tokens == result.tokens[:, :1]).all()  # every sample of a query is the same
    np.testing.assert_allclose(result.sample_logprobs, 0.0, atol=1e-6)


def test_truncate_logits_top_k_and_top_p():
    logits = jnp.log(jnp.array([[0.5, 0.2, 0.25, 0.05, 0.0]]))
    np.testing.assert_array_equal(np.isfinite(truncate_logits(logits, top_k=2, top_p=1.0)), [[1, 0, 1, 0, 0]])
    # top-p 0.7: 0.5 (before 0), 0.25 (before 0.5) kept, 0.2 (before 0.75) dropped
    np.testing.assert_array_equal(np.isfinite(truncate_logits(logits, top_k=0, top_p=0.7)), [[1, 0, 1, 0, 0]])
    np.testing.assert_array_equal(np.isfinite(truncate_logits(logits, top_k=0, top_p=0.1)), [[1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(np.isfinite(truncate_logits(logits, top_k=0, top_p=1.0)), [[1, 1, 1, 1, 0]])


@pytest.mark.parametrize(
    "kwargs", [{"num_samples": 0}, {"num_samples": 2, "temperature": 0.0}, {"num_samples": 2, "top_k": -1},
               {"num_samples": 2, "top_p": 0.0}, {"num_samples": 2, "top_p": 1.5}]
)  # fmt: skip
def test_bad_sampling_configs(kwargs):
    with pytest.raises(ValueError, match="SamplingConfig"):
        SamplingConfig(**kwargs)


def test_split_params_give_the_same_search(model, queries, trie):
    """The jobs pass parameters into the jitted search (``nnx.merge`` inside); same results."""
    graphdef, params = nnx.split(model)
    fn = jax.jit(lambda p, q, t: beam_search(nnx.merge(graphdef, p), q, t, beam_size=8, top_k=3))
    out = jax.tree.map(np.asarray, fn(params, queries, DeviceTrie.from_trie(trie, OFFSETS)))
    closed = run_beam(model, queries, trie, beam_size=8, top_k=3)
    np.testing.assert_array_equal(out.leaves, closed.leaves)
    np.testing.assert_allclose(out.scores, closed.scores, rtol=1e-6)
