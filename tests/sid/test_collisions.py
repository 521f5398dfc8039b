import numpy as np

from onesearch_jax.sid.collisions import resolve_collisions


def _distances(rows):
    table = np.asarray(rows, np.float32)
    return lambda index: table[index]


def test_the_closest_member_keeps_the_sid_and_others_take_their_nearest_free_code():
    codes = np.array([[1, 0], [1, 0], [1, 0], [2, 3]], np.int32)
    ids = np.array([10, 11, 12, 13])
    # last position has 4 codes; own code is 0
    d = np.array([
        [0.5, 0.1, 0.2, 0.9],  # item 10: own 0.5
        [0.2, 0.3, 0.1, 0.9],  # item 11: own 0.2 -> keeps (1, 0)
        [0.5, 0.6, 0.4, 0.0],  # item 12: own 0.5, tie with item 10, larger id
        [0.0, 0.0, 0.0, 0.0],
    ])  # fmt: skip
    new, moved = resolve_collisions(codes, ids, _distances(d))
    # order: item 11 (0.2), item 10 (0.5, id 10), item 12 (0.5, id 12)
    # item 10 -> nearest code by distance: 1 (0.1); item 12 -> 3 (0.0)
    assert new.tolist() == [[1, 1], [1, 0], [1, 3], [2, 3]]
    assert moved == 2


def test_resolution_does_not_depend_on_input_order():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 2, size=(60, 3)).astype(np.int32)
    ids = np.arange(100, 160)
    d = rng.random((60, 2)).astype(np.float32)
    new, _ = resolve_collisions(codes, ids, _distances(d))
    perm = rng.permutation(60)
    new_perm, _ = resolve_collisions(codes[perm], ids[perm], _distances(d[perm]))
    assert (new_perm == new[perm]).all()


def test_a_full_prefix_keeps_the_collision_and_none_distances_keep_all():
    codes = np.array([[0, 0], [0, 0], [0, 1]], np.int32)  # the last position has only 2 codes, both used
    ids = np.array([1, 2, 3])
    new, moved = resolve_collisions(codes, ids, _distances([[0, 1], [0, 1], [1, 0]]))
    assert new.tolist() == codes.tolist() and moved == 0
    same, moved = resolve_collisions(codes, ids, None)
    assert same.tolist() == codes.tolist() and moved == 0


def test_moved_items_never_take_an_sid_another_item_holds():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 3, size=(200, 3)).astype(np.int32)
    new, moved = resolve_collisions(codes, np.arange(200), _distances(rng.random((200, 3))))
    assert (new[:, :2] == codes[:, :2]).all()  # only the last code moves
    unique_before = len(np.unique(codes, axis=0))
    assert len(np.unique(new, axis=0)) == unique_before + moved
