"""The model's ranked SIDs and items for every evaluation query, and its valid-SID rate.

Constrained search (:func:`~onesearch_jax.decode.beam_search.beam_search` under the SID trie)
returns ``max(ks)`` SIDs per query, best first; they become items by the tie rule of
:func:`~onesearch_jax.evaluate.metrics.expand_sids_to_items`. Unconstrained search with the same
beam measures the valid-SID rate: the share of returned sequences that are the SID of an item.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from onesearch_jax.decode.beam_search import make_beam_search
from onesearch_jax.decode.device_trie import DeviceTrie
from onesearch_jax.decode.host_batches import global_batches, to_host
from onesearch_jax.evaluate.eval_config import EvalConfig
from onesearch_jax.evaluate.metrics import expand_sids_to_items
from onesearch_jax.sid.trie import SidTrie


@dataclasses.dataclass(frozen=True)
class ModelRankings:
    """What the model returned for ``n`` queries.

    Attributes:
        leaves: ``[n, K]`` trie leaf (SID) indices, best first; -1 where fewer than K SIDs exist.
        scores: ``[n, K]`` their sequence log-probabilities (-inf for -1 leaves).
        items: per query, the ranked item ids the SIDs stand for (at most ``K`` items).
        valid_top1: ``[n]`` whether unconstrained search's best sequence is a valid SID (None
            when not measured).
        valid_all: ``[n, K]`` the same for each of its K sequences (None when not measured).
        seconds: wall time of the decoding (compilation included).
    """

    leaves: np.ndarray
    scores: np.ndarray
    items: list[list[int]]
    valid_top1: np.ndarray | None
    valid_all: np.ndarray | None
    seconds: float


class ModelRanker:
    """Jitted constrained (and unconstrained) beam search over a checkpoint's parameters."""

    def __init__(self, graphdef: Any, params_shardings: Any, mesh, rules, *, trie: SidTrie,
                 position_first_ids: tuple[int, ...], config: EvalConfig):  # fmt: skip
        self.mesh, self.rules, self.config, self.trie = mesh, rules, config, trie
        self.first_ids = np.asarray(position_first_ids, np.int64)
        self.device_trie = DeviceTrie.from_trie(trie, position_first_ids)
        common = dict(beam_size=config.beam_size, top_k=config.top_k, score_eos=config.score_eos)
        self._constrained = make_beam_search(graphdef, params_shardings, mesh, rules, constrained=True, **common)
        self._free = None
        if config.valid_sid_rate:
            self._free = make_beam_search(graphdef, params_shardings, mesh, rules, constrained=False,
                                          sid_length=trie.sid_length, **common)  # fmt: skip

    def rank(self, params: Any, tokens: np.ndarray) -> ModelRankings:
        """Decodes ``tokens`` (``[n, S]`` encoder inputs) in batches of ``config.batch_size``."""
        start_time = time.perf_counter()
        n, k = len(tokens), self.config.top_k
        leaves, scores = np.full((n, k), -1, np.int64), np.full((n, k), -np.inf, np.float32)
        free_tokens = np.zeros((n, k, self.trie.sid_length), np.int64) if self._free else None
        for start, rows, batch in global_batches(tokens, self.config.batch_size, self.mesh, self.rules):
            result = self._constrained(params, batch, self.device_trie)
            leaves[start : start + rows] = to_host(result.leaves)[:rows]
            scores[start : start + rows] = to_host(result.scores)[:rows]
            if self._free is not None:
                free_tokens[start : start + rows] = to_host(self._free(params, batch, None).tokens)[:rows]
        items = expand_sids_to_items([[int(x) for x in row if x >= 0] for row in leaves], self.trie.leaf_item_ids, k)
        valid = None if free_tokens is None else self._valid(free_tokens)
        return ModelRankings(
            leaves=leaves, scores=scores, items=items, valid_top1=None if valid is None else valid[:, 0],
            valid_all=valid, seconds=time.perf_counter() - start_time,
        )  # fmt: skip

    def _valid(self, tokens: np.ndarray) -> np.ndarray:
        """``[n, K]`` whether each decoded token sequence spells the SID of an item."""
        codes = tokens - self.first_ids
        sizes = np.asarray(self.trie.code_sizes)
        in_range = ((codes >= 0) & (codes < sizes)).all(-1)
        out = np.zeros(codes.shape[:2], bool)
        for index in zip(*np.nonzero(in_range), strict=True):
            out[index] = self.trie.contains(codes[index].tolist())
        return out
