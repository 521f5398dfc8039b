"""The SID trie as device arrays: the children of every beam's node in one gather per step.

:class:`~onesearch_jax.sid.trie.SidTrie` numbers nodes breadth first and keeps the children of a
node contiguous and sorted by code, so the children of node n at depth t are the nodes
``first_child[n] + j`` for ``j < num_children[n]``. A decoder at depth t gathers, for every beam
at once, ``j = 0 .. max_children[t] - 1`` (a static width per depth) and masks ``j >=
num_children[n]``: no Python callback and no host round trip per step. The token of code c at SID
position t is ``token_offsets[t] + c`` (the vocabulary's contiguous SID id ranges).

A :class:`DeviceTrie` is a pytree (arrays are leaves, the widths and offsets static), so it is
passed to jitted functions as an argument, not baked into the program as constants.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from onesearch_jax.sid.trie import SidTrie


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DeviceTrie:
    """The arrays of a :class:`SidTrie` that decoding needs, on device.

    Attributes:
        node_code: ``[num_nodes]`` int32 code on the edge into each node (-1 for the root).
        first_child: ``[num_nodes]`` int32 first child of each node.
        num_children: ``[num_nodes]`` int32 number of children of each node.
        max_children: static, the most children of a node at each depth ``0 .. L-1``.
        depth_sizes: static, the number of nodes at each depth ``0 .. L`` (prefixes of each
            length; depth L: the SIDs), so a beam search never keeps more beams than exist.
        token_offsets: static, the token id of code 0 at each SID position.
        leaf_offset: static, the node id of the first leaf (leaf i is SID i of the trie).
    """

    node_code: jax.Array
    first_child: jax.Array
    num_children: jax.Array
    max_children: tuple[int, ...] = dataclasses.field(metadata={"static": True})
    depth_sizes: tuple[int, ...] = dataclasses.field(metadata={"static": True})
    token_offsets: tuple[int, ...] = dataclasses.field(metadata={"static": True})
    leaf_offset: int = dataclasses.field(metadata={"static": True})

    @classmethod
    def from_trie(cls, trie: SidTrie, token_offsets: Sequence[int]) -> DeviceTrie:
        """The device form of ``trie``, with code c at position t spelled by token ``token_offsets[t] + c``.

        Raises:
            ValueError: ``token_offsets`` does not have one entry per SID position, or the trie
                is empty or too large for int32 node ids.
        """
        if len(token_offsets) != trie.sid_length:
            raise ValueError(f"token_offsets has {len(token_offsets)} entries for SIDs of length {trie.sid_length}")
        if trie.num_sids == 0:
            raise ValueError("the SID trie is empty: there is nothing to decode")
        if trie.num_nodes >= 2**31:
            raise ValueError(f"the SID trie has {trie.num_nodes} nodes, more than int32 node ids allow")
        return cls(
            node_code=jnp.asarray(trie.node_code, jnp.int32),
            first_child=jnp.asarray(np.minimum(trie.first_child, trie.num_nodes - 1), jnp.int32),
            num_children=jnp.asarray(trie.num_children, jnp.int32),
            max_children=tuple(int(m) for m in trie.max_children),
            depth_sizes=tuple(int(n) for n in np.diff(trie.depth_offsets)),
            token_offsets=tuple(int(o) for o in token_offsets),
            leaf_offset=int(trie.depth_offsets[trie.sid_length]),
        )

    @property
    def sid_length(self) -> int:
        return len(self.max_children)

    def children(self, nodes: jax.Array, depth: int) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Children of ``nodes`` (any shape ``S``, all at ``depth``), padded to ``max_children[depth]``.

        Returns:
            ``(tokens, child_nodes, valid)``, each ``S + [max_children[depth]]``: the token that
            spells each child's code, its node id, and whether the entry is a real child (padding
            entries repeat a valid node id and must be masked with ``valid``).
        """
        width = self.max_children[depth]
        j = jnp.arange(width, dtype=jnp.int32)
        child = self.first_child[nodes][..., None] + j
        valid = j < self.num_children[nodes][..., None]
        child = jnp.where(valid, child, self.first_child[nodes][..., None])
        tokens = self.node_code[child] + self.token_offsets[depth]
        return tokens, child, valid

    def leaf_index(self, nodes: jax.Array) -> jax.Array:
        """SID index (row of ``SidTrie.leaf_sids``) of leaf ``nodes``."""
        return nodes - self.leaf_offset
