import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onesearch_jax.sid.trie import SidTrie

SIZES = (3, 2, 4)


def _trie(rows, ids=None):
    codes = np.asarray(rows, np.int32).reshape(-1, len(SIZES))
    return SidTrie.build(codes, np.arange(len(codes)) + 100 if ids is None else ids, SIZES)


def test_hand_built_example_layout():
    trie = _trie([[1, 0, 3], [0, 1, 2], [1, 0, 0], [0, 1, 2]])
    # depth 1: {0, 1}; depth 2: {(0,1), (1,0)}; leaves: (0,1,2), (1,0,0), (1,0,3)
    assert trie.depth_offsets.tolist() == [0, 1, 3, 5, 8]
    assert trie.node_code.tolist() == [-1, 0, 1, 1, 0, 2, 0, 3]
    assert trie.first_child[:5].tolist() == [1, 3, 4, 5, 6]
    assert trie.num_children.tolist() == [2, 1, 1, 1, 2, 0, 0, 0]
    assert trie.max_children.tolist() == [2, 1, 2]
    assert trie.leaf_sids.tolist() == [[0, 1, 2], [1, 0, 0], [1, 0, 3]]
    # SID (0,1,2) stands for two items (rows 1 and 3)
    assert trie.items((0, 1, 2)).tolist() == [101, 103]
    assert trie.items((1, 0, 3)).tolist() == [100]
    assert trie.items((1, 0, 1)).tolist() == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(*(st.integers(0, k - 1) for k in SIZES)), min_size=1, max_size=20))
def test_trie_contains_exactly_the_sids_and_their_prefixes(rows):
    trie = _trie(rows)
    sids = set(rows)
    prefixes = {s[:t] for s in sids for t in range(len(SIZES) + 1)}
    for length in range(len(SIZES) + 1):
        for candidate in itertools.product(*(range(k) for k in SIZES[:length])):
            assert (trie.walk(candidate) >= 0) == (candidate in prefixes), candidate
    for sid in itertools.product(*(range(k) for k in SIZES)):
        assert trie.contains(sid) == (sid in sids)
    assert trie.num_sids == len(sids)
    assert trie.num_nodes == len(prefixes)  # one node per distinct prefix: linear in the SIDs
    assert sorted(trie.leaf_items.tolist()) == list(range(100, 100 + len(rows)))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(*(st.integers(0, k - 1) for k in SIZES)), min_size=1, max_size=20))
def test_allowed_mask_is_the_set_of_valid_next_codes(rows):
    trie = _trie(rows)
    for depth in range(len(SIZES)):
        nodes = np.arange(trie.depth_offsets[depth], trie.depth_offsets[depth + 1])
        mask = trie.allowed_mask(nodes)
        for node, row in zip(nodes, mask, strict=True):
            codes, _ = trie.children(int(node))
            assert np.flatnonzero(row).tolist() == sorted(codes.tolist())


def test_invalid_inputs_are_rejected_with_the_row():
    with pytest.raises(ValueError, match=r"row 1 .*position 2"):
        _trie([[0, 0, 0], [0, 1, 4]])
    with pytest.raises(ValueError, match="do not match"):
        SidTrie.build(np.zeros((2, 3), np.int32), np.arange(3), SIZES)
    trie = _trie([[0, 0, 0]])
    assert not trie.contains((0, 0))  # a prefix is not a SID
    assert trie.walk((0, 0, 0, 0)) == -1
