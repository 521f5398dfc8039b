"""The valid SIDs as a flat prefix tree that jitted decoding can index.

Layout (all numpy arrays, built in one pass over the sorted SIDs; memory linear in their number):

* nodes are numbered breadth first: the root is node 0 and the nodes of depth t (prefixes of
  length t) are the contiguous range ``depth_offsets[t]:depth_offsets[t + 1]``, in lexicographic
  order of their prefixes;
* ``node_code[n]`` is the code on the edge into node n (-1 for the root);
* the children of node n are the contiguous node range
  ``first_child[n]:first_child[n] + num_children[n]``, sorted by code, so a decoder at node n
  masks logits with ``node_code[first_child[n] + arange(max_children[depth])]`` (entries at or
  beyond ``num_children[n]`` are padding) and moves to the child whose code it chose;
* leaves (depth L) are the distinct SIDs in lexicographic order; leaf i is node
  ``depth_offsets[L] + i`` and stands for the items ``leaf_items[leaf_offsets[i]:leaf_offsets[i + 1]]``
  (ascending item id; one SID may stand for several items, and evaluation needs all of them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True, kw_only=True)
class SidTrie:
    """A prefix tree over SIDs of length L in CSR form (see the module docstring)."""

    code_sizes: tuple[int, ...]
    node_code: np.ndarray
    first_child: np.ndarray
    num_children: np.ndarray
    depth_offsets: np.ndarray
    max_children: np.ndarray
    leaf_sids: np.ndarray
    leaf_offsets: np.ndarray
    leaf_items: np.ndarray

    @classmethod
    def build(cls, codes: np.ndarray, item_ids: np.ndarray, code_sizes: Sequence[int]) -> SidTrie:
        """Builds the trie of ``codes`` (``[n, L]``), remembering which items each SID stands for.

        Raises:
            ValueError: a code outside ``0..code_sizes[t]-1`` (names the row and position), or
                mismatched lengths.
        """
        codes = np.asarray(codes)
        item_ids = np.asarray(item_ids, dtype=np.int64)
        code_sizes = tuple(int(k) for k in code_sizes)
        if codes.ndim != 2 or codes.shape[1] != len(code_sizes) or len(codes) != len(item_ids):
            raise ValueError(f"codes {codes.shape} do not match {len(item_ids)} items of SID length {len(code_sizes)}")
        bad = (codes < 0) | (codes >= np.asarray(code_sizes))
        if bad.any():
            row, pos = map(int, np.argwhere(bad)[0])
            raise ValueError(f"SID row {row} (item {item_ids[row]}) has code {codes[row, pos]} at position {pos}, "
                             f"outside 0..{code_sizes[pos] - 1}")  # fmt: skip
        length = len(code_sizes)
        order = np.lexsort((item_ids, *tuple(codes[:, t] for t in reversed(range(length)))))
        sorted_codes = codes[order].astype(np.int32)
        n = len(sorted_codes)
        # first position where each row differs from the previous one (length if equal)
        if n:
            differs = sorted_codes[1:] != sorted_codes[:-1]
            first_diff = np.where(differs.any(1), differs.argmax(1), length)
            first_diff = np.r_[0, first_diff]
        else:
            first_diff = np.zeros(0, np.int64)
        leaf_rows = np.flatnonzero(first_diff < length)
        leaf_sids = sorted_codes[leaf_rows]
        leaf_offsets = np.r_[leaf_rows, n].astype(np.int64)
        s = len(leaf_sids)
        # nodes of depth t start at leaf rows whose first difference is before position t
        new_at = [np.ones(min(s, 1), bool)] + [first_diff[leaf_rows] < t for t in range(1, length + 1)]
        counts = [1] + [int(m.sum()) for m in new_at[1:]]
        depth_offsets = np.r_[0, np.cumsum(counts)].astype(np.int64)
        num_nodes = int(depth_offsets[-1])
        node_code = np.full(num_nodes, -1, np.int32)
        first_child = np.full(num_nodes, depth_offsets[-1], np.int64)
        num_children = np.zeros(num_nodes, np.int32)
        max_children = np.zeros(length, np.int32)
        parent_of_leaf = np.zeros(s, np.int64)  # node id at depth t-1 of each distinct SID
        for t in range(1, length + 1):
            node_of_leaf = depth_offsets[t] + np.cumsum(new_at[t]) - 1
            starts = new_at[t]
            node_code[depth_offsets[t] : depth_offsets[t + 1]] = leaf_sids[starts, t - 1]
            parents = parent_of_leaf[starts]  # parent of each new depth-t node, non-decreasing
            lo, hi = depth_offsets[t - 1], depth_offsets[t]
            per_parent = np.bincount(parents - lo, minlength=int(hi - lo)).astype(np.int32)
            num_children[lo:hi] = per_parent
            first_child[lo:hi] = depth_offsets[t] + np.r_[0, np.cumsum(per_parent)[:-1]]
            max_children[t - 1] = per_parent.max(initial=0)
            parent_of_leaf = node_of_leaf
        return cls(
            code_sizes=code_sizes, node_code=node_code, first_child=first_child, num_children=num_children,
            depth_offsets=depth_offsets, max_children=max_children, leaf_sids=leaf_sids,
            leaf_offsets=leaf_offsets, leaf_items=item_ids[order],
        )  # fmt: skip

    @property
    def sid_length(self) -> int:
        return len(self.code_sizes)

    @property
    def num_sids(self) -> int:
        return len(self.leaf_sids)

    @property
    def num_nodes(self) -> int:
        return len(self.node_code)

    @property
    def nbytes(self) -> int:
        arrays = (self.node_code, self.first_child, self.num_children, self.depth_offsets, self.max_children,
                  self.leaf_sids, self.leaf_offsets, self.leaf_items)  # fmt: skip
        return sum(a.nbytes for a in arrays)

    def children(self, node: int) -> tuple[np.ndarray, np.ndarray]:
        """``(codes, nodes)`` of the children of ``node``, by ascending code."""
        start = self.first_child[node]
        nodes = np.arange(start, start + self.num_children[node])
        return self.node_code[nodes], nodes

    def walk(self, prefix: Sequence[int]) -> int:
        """The node reached by ``prefix`` from the root, or -1 when it is not a valid prefix."""
        if len(prefix) > self.sid_length:
            return -1
        node = 0
        for code in prefix:
            codes, nodes = self.children(node)
            j = int(np.searchsorted(codes, code))
            if j == len(codes) or codes[j] != code:
                return -1
            node = int(nodes[j])
        return node

    def contains(self, sid: Sequence[int]) -> bool:
        """Whether ``sid`` is a complete valid SID."""
        return len(sid) == self.sid_length and self.walk(sid) >= 0

    def items(self, sid: Sequence[int]) -> np.ndarray:
        """Item ids the SID stands for (empty for an invalid SID), ascending."""
        node = self.walk(sid) if len(sid) == self.sid_length else -1
        if node < 0:
            return np.zeros(0, np.int64)
        leaf = node - self.depth_offsets[self.sid_length]
        return self.leaf_items[self.leaf_offsets[leaf] : self.leaf_offsets[leaf + 1]]

    def leaf_item_ids(self, leaf: int) -> np.ndarray:
        """Item ids of leaf ``leaf`` (a row of ``leaf_sids``), ascending.

        Raises:
            IndexError: ``leaf`` is not a leaf index (e.g. -1, an empty beam).
        """
        if not 0 <= leaf < self.num_sids:
            raise IndexError(f"leaf {leaf} is outside 0..{self.num_sids - 1}")
        return self.leaf_items[self.leaf_offsets[leaf] : self.leaf_offsets[leaf + 1]]

    def allowed_mask(self, nodes: np.ndarray) -> np.ndarray:
        """``[len(nodes), K]`` bool masks of the next codes allowed at ``nodes`` (all of one depth).

        The reference for the jitted decoder's masking: the same gather over ``first_child`` and
        ``node_code`` with the static width ``max_children[depth]``.
        """
        nodes = np.asarray(nodes, dtype=np.int64)
        depth = int(np.searchsorted(self.depth_offsets, nodes[0], side="right") - 1)
        width = int(self.max_children[depth])
        index = self.first_child[nodes, None] + np.arange(width)[None, :]
        valid = np.arange(width)[None, :] < self.num_children[nodes, None]
        codes = self.node_code[np.minimum(index, self.num_nodes - 1)]
        mask = np.zeros((len(nodes), self.code_sizes[depth]), bool)
        rows = np.broadcast_to(np.arange(len(nodes))[:, None], codes.shape)
        mask[rows[valid], codes[valid]] = True
        return mask
