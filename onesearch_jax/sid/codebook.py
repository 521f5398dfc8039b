"""`SidCodebook`: item id <-> SID, query -> SID, SID token strings, on-disk format, quality report.

Token strings (DESIGN.md, "Semantic IDs"): residual level t uses the letter ``a``, ``b``, ``c``,
... and its code; the OPQ sub-codes share the next letter, sub-code m offset by m * 2^bits, so the
paper's SID reads ``<a_i><b_j><c_k><d_m><d_n>`` with m in 0..255 and n in 256..511.

On-disk format, version 1 (a directory; no pickle anywhere):

* ``codebook.json``: ``format`` ("onesearch-sid-codebook"), ``version``, ``code_sizes``,
  ``num_levels`` (residual levels; the rest are OPQ), ``opq_bits``, ``collision_mode``, the build
  settings and the quality report;
* ``codebook.npz``: ``item_ids`` [N] int64 ascending, ``item_codes`` [N, L] int32 (after
  collision handling), ``raw_item_codes`` [N, L] (as the quantiser gave them), ``queries`` [Q]
  unicode, ``query_codes`` [Q, L] int32;
* ``item_sids.tsv``: ``item_id<TAB>tokens`` per item, for people and other tools;
* written beside it by the builder: ``quantizer.npz`` and the embedder (``embedder/``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from onesearch_jax.sid.trie import SidTrie

CODEBOOK_FORMAT = "onesearch-sid-codebook"
CODEBOOK_VERSION = 1
_TOKEN = re.compile(r"<([a-z])_(\d+)>")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SidQualityReport:
    """Codebook quality as OneSearch reports it (its Table 2 definitions).

    Attributes:
        num_items: items in the codebook.
        unique_sids: distinct full SIDs of the items.
        cur: per SID position, codes used by items / codes available.
        cur_l1xl2: distinct (level 1, level 2) pairs / (K1 * K2).
        cur_total: distinct residual-level prefixes (levels 1..L_rq) / (K1 * ... * K_Lrq).
        icr: items whose full SID no other item has / items (after collision handling).
        icr_raw: the same for the quantiser's codes before collision handling.
        icr_rq: the same for the residual levels alone, i.e. without OPQ.
        moved: items collision handling gave another SID.
        collisions: {items per SID: number of SIDs}, for SIDs shared by two or more items.
    """

    num_items: int
    unique_sids: int
    cur: tuple[float, ...]
    cur_l1xl2: float
    cur_total: float
    icr: float
    icr_raw: float
    icr_rq: float
    moved: int
    collisions: dict[int, int]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["collisions"] = {str(k): v for k, v in sorted(self.collisions.items())}
        return d

    def format(self) -> str:
        lines = [
            f"items {self.num_items:,}, distinct SIDs {self.unique_sids:,}",
            "CUR per position: " + ", ".join(f"L{t + 1} {c:.1%}" for t, c in enumerate(self.cur)),
            f"CUR(L1xL2) {self.cur_l1xl2:.2%}   CUR total (residual levels) {self.cur_total:.4%}",
            f"ICR {self.icr:.2%} (quantiser {self.icr_raw:.2%}, residual levels only {self.icr_rq:.2%}); "
            f"{self.moved:,} items moved to a free code",
            "shared SIDs by items per SID: "
            + (", ".join(f"{k}: {v:,}" for k, v in sorted(self.collisions.items())) or "none"),
        ]
        return "\n".join(lines)


def _icr(codes: np.ndarray) -> float:
    if not len(codes):
        return 0.0
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return float((counts[inverse.ravel()] == 1).mean())


@dataclasses.dataclass(frozen=True, kw_only=True)
class SidCodebook:
    """Items' and queries' SIDs with the codebook shape they came from.

    Attributes:
        code_sizes: codes available at each SID position.
        num_levels: residual k-means levels (the remaining positions are OPQ sub-codes).
        opq_bits: bits per OPQ sub-code (token offset 2^bits per sub-code).
        item_ids: ``[N]`` int64, ascending.
        item_codes: ``[N, L]`` int32 SIDs after collision handling.
        raw_item_codes: ``[N, L]`` int32 SIDs as the quantiser gave them.
        queries: ``[Q]`` query texts.
        query_codes: ``[Q, L]`` int32 query SIDs (same codebook; queries may share SIDs).
        collision_mode: how shared SIDs were handled (see ``collisions.py``).
        metadata: build settings recorded with the codebook.
    """

    code_sizes: tuple[int, ...]
    num_levels: int
    opq_bits: int
    item_ids: np.ndarray
    item_codes: np.ndarray
    raw_item_codes: np.ndarray
    queries: np.ndarray
    query_codes: np.ndarray
    collision_mode: str
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        n, length = len(self.item_ids), len(self.code_sizes)
        if self.item_codes.shape != (n, length) or self.raw_item_codes.shape != (n, length):
            raise ValueError(f"item codes {self.item_codes.shape} do not match {n} items and SID length {length}")
        if self.query_codes.shape != (len(self.queries), length):
            raise ValueError(f"query codes {self.query_codes.shape} do not match {len(self.queries)} queries")
        if n > 1 and not (np.diff(self.item_ids) > 0).all():
            raise ValueError("item_ids must be strictly ascending (one SID per item)")
        object.__setattr__(self, "_query_index", {q: i for i, q in enumerate(self.queries.tolist())})

    # ------------------------------------------------------------------ lookups
    @property
    def sid_length(self) -> int:
        return len(self.code_sizes)

    def item_sid(self, item_id: int) -> tuple[int, ...]:
        """The SID of ``item_id``; KeyError when the item is not in the codebook."""
        i = int(np.searchsorted(self.item_ids, item_id))
        if i == len(self.item_ids) or self.item_ids[i] != item_id:
            raise KeyError(f"item {item_id} has no SID in this codebook")
        return tuple(self.item_codes[i].tolist())

    def query_sid(self, query: str) -> tuple[int, ...] | None:
        """The SID of a query seen at build time, or None (encode new queries with the builder)."""
        i = self._query_index.get(query)  # type: ignore[attr-defined]
        return None if i is None else tuple(self.query_codes[i].tolist())

    def trie(self) -> SidTrie:
        """The trie of the items' SIDs, with SID -> items."""
        return SidTrie.build(self.item_codes, self.item_ids, self.code_sizes)

    # ------------------------------------------------------------------ tokens
    def letters(self) -> tuple[str, ...]:
        """Token letter of each SID position."""
        opq = chr(ord("a") + self.num_levels)
        return tuple(chr(ord("a") + t) for t in range(self.num_levels)) + (opq,) * (self.sid_length - self.num_levels)

    def token_offsets(self) -> tuple[int, ...]:
        """Number added to each position's code in its token (m * 2^bits for OPQ sub-code m)."""
        return (0,) * self.num_levels + tuple(m << self.opq_bits for m in range(self.sid_length - self.num_levels))

    def tokens(self, sid: tuple[int, ...] | np.ndarray) -> str:
        """``<a_i><b_j><c_k><d_m><d_n>`` for a SID."""
        return "".join(
            f"<{letter}_{int(code) + offset}>"
            for letter, code, offset in zip(self.letters(), sid, self.token_offsets(), strict=True)
        )

    def parse_tokens(self, text: str) -> tuple[int, ...]:
        """The SID written by :meth:`tokens`; ValueError naming the first wrong token."""
        found = _TOKEN.findall(text)
        if "".join(f"<{a}_{b}>" for a, b in found) != text.strip() or len(found) != self.sid_length:
            raise ValueError(f"{text!r} is not {self.sid_length} SID tokens like {self.tokens((0,) * self.sid_length)}")
        sid = []
        for t, ((letter, number), want, offset, size) in enumerate(
            zip(found, self.letters(), self.token_offsets(), self.code_sizes, strict=True)
        ):
            code = int(number) - offset
            if letter != want or not 0 <= code < size:
                raise ValueError(f"{text!r}: token {t + 1} <{letter}_{number}> is not a valid position-{t + 1} token")
            sid.append(code)
        return tuple(sid)

    def vocabulary(self) -> list[str]:
        """Every SID token, position by position, codes ascending (for the model vocabulary).

        OPQ positions share a letter, so their tokens are listed once: ``<d_0>`` .. ``<d_{M*2^bits-1}>``.
        """
        seen: dict[str, None] = {}
        for letter, offset, size in zip(self.letters(), self.token_offsets(), self.code_sizes, strict=True):
            for code in range(size):
                seen.setdefault(f"<{letter}_{code + offset}>")
        return list(seen)

    # ------------------------------------------------------------------ quality
    def report(self) -> SidQualityReport:
        codes, k = self.item_codes, self.code_sizes
        cur = tuple(len(np.unique(codes[:, t])) / k[t] for t in range(self.sid_length))
        pairs = len(np.unique(codes[:, :2], axis=0)) / (k[0] * k[1]) if self.num_levels >= 2 else cur[0]
        rq = self.raw_item_codes[:, : self.num_levels]
        cur_total = len(np.unique(rq, axis=0)) / float(np.prod(k[: self.num_levels]))
        _, counts = np.unique(codes, axis=0, return_counts=True)
        collisions = Counter(int(c) for c in counts[counts > 1])
        return SidQualityReport(
            num_items=len(codes), unique_sids=len(counts), cur=cur, cur_l1xl2=pairs, cur_total=cur_total,
            icr=_icr(codes), icr_raw=_icr(self.raw_item_codes), icr_rq=_icr(rq),
            moved=int((self.raw_item_codes != codes).any(1).sum()), collisions=dict(collisions),
        )  # fmt: skip

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> None:
        """Writes ``codebook.json``, ``codebook.npz`` and ``item_sids.tsv`` (format in the module doc)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        np.savez(
            out / "codebook.npz", item_ids=self.item_ids.astype(np.int64), item_codes=self.item_codes,
            raw_item_codes=self.raw_item_codes, queries=self.queries.astype(str), query_codes=self.query_codes,
        )  # fmt: skip
        meta = {
            "format": CODEBOOK_FORMAT, "version": CODEBOOK_VERSION, "code_sizes": list(self.code_sizes),
            "num_levels": self.num_levels, "opq_bits": self.opq_bits, "collision_mode": self.collision_mode,
            "num_items": len(self.item_ids), "num_queries": len(self.queries),
            "example": self.tokens(self.item_codes[0]) if len(self.item_ids) else None,
            "report": self.report().to_dict(), "metadata": self.metadata,
        }  # fmt: skip
        with open(out / "codebook.json", "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, ensure_ascii=False)
            f.write("\n")
        with open(out / "item_sids.tsv", "w", encoding="utf-8") as f:
            f.write("item_id\tsid\n")
            for item_id, codes in zip(self.item_ids.tolist(), self.item_codes, strict=True):
                f.write(f"{item_id}\t{self.tokens(codes)}\n")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> SidCodebook:
        """Reads a codebook directory; ValueError on another format or version."""
        path = Path(directory) / "codebook.json"
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format") != CODEBOOK_FORMAT or meta.get("version") != CODEBOOK_VERSION:
            raise ValueError(
                f"{path}: expected format {CODEBOOK_FORMAT} version {CODEBOOK_VERSION}, "
                f"found {meta.get('format')} version {meta.get('version')}"
            )
        with np.load(Path(directory) / "codebook.npz", allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("item_ids", "item_codes", "raw_item_codes", "queries", "query_codes")}
        return cls(
            code_sizes=tuple(meta["code_sizes"]), num_levels=meta["num_levels"], opq_bits=meta["opq_bits"],
            collision_mode=meta["collision_mode"], metadata=meta.get("metadata", {}), **arrays,
        )  # fmt: skip
