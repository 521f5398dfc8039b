"""Deterministic disambiguation of items that the quantiser gave the same full SID.

Rule (mode ``"reassign"``, the default), applied to each group of items sharing a SID, groups
taken in lexicographic SID order:

1. the members are ordered by the distance of their last OPQ sub-vector to the code they were
   given (closest first), ties by ascending item id; the first member keeps the SID;
2. every other member moves to the nearest free code of the *last* OPQ position, keeping the
   first L-1 codes: candidate codes by ascending distance of its last sub-vector to that
   sub-space's centroids (ties by code), the first whose SID no item holds yet is taken;
3. a member with no free code left (all 2^bits SIDs under the prefix taken) keeps the shared SID.

Only the finest code changes, and it changes to the next-best reconstruction, so the SID stays
as close to the item's embedding as a unique SID can be. Shared SIDs that remain (and every
shared SID in mode ``"keep"``, or without OPQ) stand for all their items in the trie.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

COLLISION_MODES = ("reassign", "keep")


def resolve_collisions(
    codes: np.ndarray, item_ids: np.ndarray, last_distances: Callable[[np.ndarray], np.ndarray] | None
) -> tuple[np.ndarray, int]:
    """Returns ``(new_codes, moved)`` with colliding items moved as the module docstring says.

    Args:
        codes: ``[n, L]`` SIDs from the quantiser.
        item_ids: ``[n]`` item ids (tie-breaks).
        last_distances: given row indices, their ``[len(rows), K]`` squared distances of the last
            sub-vector to the K codes of the last position (called once, for colliding rows only,
            so memory stays O(collisions x K)); None keeps every collision.
    """
    codes = np.array(codes, dtype=np.int32, copy=True)
    n, length = codes.shape
    if n == 0 or last_distances is None:
        return codes, 0
    order = np.lexsort(tuple(codes[:, t] for t in reversed(range(length))))
    sorted_codes = codes[order]
    same = np.r_[False, (sorted_codes[1:] == sorted_codes[:-1]).all(1)]
    starts = np.flatnonzero(~same)
    sizes = np.diff(np.r_[starts, n])
    shared = sizes > 1
    if not shared.any():
        return codes, 0
    colliding = np.concatenate([order[s : s + k] for s, k in zip(starts[shared], sizes[shared], strict=True)])
    distances = last_distances(colliding)
    row_of = {int(i): r for r, i in enumerate(colliding.tolist())}
    taken = set(map(tuple, sorted_codes[starts].tolist()))
    moved = 0
    for start, size in zip(starts[shared], sizes[shared], strict=True):
        members = order[start : start + size]
        rows = np.asarray([row_of[int(i)] for i in members])
        own = distances[rows, codes[members, -1]]
        ranking = np.lexsort((item_ids[members], own))
        members, rows = members[ranking], rows[ranking]
        prefix = tuple(codes[members[0], :-1].tolist())
        for i, r in zip(members[1:].tolist(), rows[1:].tolist(), strict=True):
            for code in np.argsort(distances[r], kind="stable").tolist():
                sid = (*prefix, code)
                if sid not in taken:
                    taken.add(sid)
                    codes[i, -1] = code
                    moved += 1
                    break
    return codes, moved
