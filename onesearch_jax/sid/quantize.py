"""Residual k-means with a per-parent last level, then OPQ on the final residual (faiss).

The SID of a vector x is built coarse to fine (DESIGN.md, "Semantic IDs"):

1. levels 1..L-1: ``c_l = argmin_j ||r_{l-1} - C_l[j]||``, ``r_l = r_{l-1} - C_l[c_l]`` with
   ``r_0 = x`` (optionally each residual is L2-normalised, ``normalize_residuals``);
2. level L, "balanced": a separate codebook per parent (the level L-1 code, or the (L-2, L-1)
   pair), so the finest residual level spreads the items of each parent over all of its codes;
   the code is local to the parent (0..K_L-1), since the parent is already in the SID prefix;
3. OPQ: a learned rotation R, then product quantisation of ``R r_L`` into M sub-vectors with
   2^bits codes each (the paper: M = 2, 256 codes).

Training the upper levels is the expensive part and the most stable one, so ``fit`` can keep the
first ``keep_levels`` levels of a previous quantiser and retrain only the lower ones (incremental
mode, for catalogue refreshes). Queries and items are encoded with the same quantiser.
"""

from __future__ import annotations

import dataclasses
import json
import os

import faiss
import numpy as np

QUANTIZER_FORMAT = "onesearch-rq-opq"
QUANTIZER_VERSION = 1
PARENT_MODES = ("none", "l2", "l1l2")


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuantizerConfig:
    """Codebook shape and training settings.

    Attributes:
        level_sizes: codebook size of each residual k-means level (paper: 4096, 1024, 512).
        last_level_parent: how the last level is trained: ``"l2"`` one codebook per code of the
            previous level (the public code's balanced type 2), ``"l1l2"`` one per (L1, L2) pair
            (type 1; memory K1*K2*K3*d), ``"none"`` one shared codebook (plain residual k-means).
        normalize_residuals: L2-normalise the residual after each shared level.
        opq_subcodes: OPQ sub-codes M appended to the SID (0 switches OPQ off).
        opq_bits: bits per OPQ sub-code (8: 256 codes, as the paper).
        niter: k-means iterations per codebook.
        opq_niter: OPQ iterations (rotation and PQ codebooks alternate; faiss' default is 50).
        opq_max_train_points: OPQ trains on a sample of at most this many residuals.
        max_points_per_centroid: faiss subsamples training sets above this many points per centroid.
        seed: seed of every k-means and of OPQ.
    """

    level_sizes: tuple[int, ...] = (32, 16, 8)
    last_level_parent: str = "l2"
    normalize_residuals: bool = False
    opq_subcodes: int = 2
    opq_bits: int = 8
    niter: int = 20
    opq_niter: int = 25
    opq_max_train_points: int = 65_536
    max_points_per_centroid: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "level_sizes", tuple(int(k) for k in self.level_sizes))
        if not self.level_sizes or min(self.level_sizes) < 1:
            raise ValueError(f"QuantizerConfig.level_sizes must be positive sizes, got {self.level_sizes}")
        if self.last_level_parent not in PARENT_MODES:
            raise ValueError(f"QuantizerConfig.last_level_parent must be one of {PARENT_MODES}")
        need = {"none": 1, "l2": 2, "l1l2": 3}[self.last_level_parent]
        if len(self.level_sizes) < need:
            raise ValueError(f"last_level_parent={self.last_level_parent!r} needs at least {need} levels")
        if self.opq_subcodes < 0 or not 1 <= self.opq_bits <= 16:
            raise ValueError("QuantizerConfig.opq_subcodes must be >= 0 and opq_bits in 1..16")
        if min(self.niter, self.opq_niter, self.opq_max_train_points, self.max_points_per_centroid) < 1:
            raise ValueError("QuantizerConfig iteration counts and sample sizes must be positive")

    @property
    def sid_length(self) -> int:
        return len(self.level_sizes) + self.opq_subcodes

    @property
    def opq_size(self) -> int:
        return 1 << self.opq_bits

    def code_sizes(self) -> tuple[int, ...]:
        """Number of codes at each SID position."""
        return self.level_sizes + (self.opq_size,) * self.opq_subcodes


class QuantizerError(ValueError):
    """Training data that cannot give the configured codebook."""


@dataclasses.dataclass(kw_only=True)
class ResidualQuantizer:
    """A trained quantiser: shared levels, per-parent last level, OPQ rotation and PQ codebooks.

    Attributes:
        config: the settings it was trained with.
        shared: centroids of levels 1..L-1, each ``[K_l, d]``.
        last: ``[P, K_L, d]`` centroids of the last level per parent (P = 1 without parents).
        last_counts: ``[P]`` centroids in use per parent (a parent with fewer training vectors than
            K_L keeps one centroid per vector; one with none has a single zero centroid).
        rotation: ``[d, d]`` OPQ rotation R (rotated = r @ R.T), or None without OPQ.
        pq: ``[M, 2^bits, d/M]`` PQ centroids per sub-space, or None.
    """

    config: QuantizerConfig
    shared: list[np.ndarray]
    last: np.ndarray
    last_counts: np.ndarray
    rotation: np.ndarray | None
    pq: np.ndarray | None

    @property
    def dim(self) -> int:
        return self.last.shape[2]

    # ------------------------------------------------------------------ training
    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        config: QuantizerConfig,
        *,
        previous: ResidualQuantizer | None = None,
        keep_levels: int = 0,
    ) -> ResidualQuantizer:
        """Trains on ``x`` (``[n, d]`` float32).

        Args:
            x: training vectors (items and queries share the codebook).
            config: codebook shape; must match ``previous`` on the kept levels.
            previous: a trained quantiser whose first ``keep_levels`` levels are reused.
            keep_levels: shared levels to keep from ``previous`` (0 retrains everything).

        Raises:
            QuantizerError: fewer vectors than codes at a shared level or for the OPQ codebooks,
                non-finite values, a dimension OPQ cannot split, or an incompatible ``previous``.
        """
        x = _check_matrix(x, "training vectors")
        n, d = x.shape
        levels = config.level_sizes
        if config.opq_subcodes and d % config.opq_subcodes:
            raise QuantizerError(f"embedding dimension {d} is not divisible by opq_subcodes={config.opq_subcodes}")
        if keep_levels:
            _check_previous(previous, config, d, keep_levels)
        for level, k in enumerate(levels[:-1]):
            if level >= keep_levels and n < k:
                raise QuantizerError(
                    f"codebook level {level + 1} has {k} codes but there are only {n} training vectors"
                )
        if (len(levels) == 1 or config.last_level_parent == "none") and n < levels[-1]:
            raise QuantizerError(
                f"codebook level {len(levels)} has {levels[-1]} codes but there are only {n} training vectors"
            )
        if config.opq_subcodes and n < config.opq_size:
            raise QuantizerError(
                f"OPQ needs at least {config.opq_size} training vectors for 2^{config.opq_bits} codes, got {n}; "
                "lower QuantizerConfig.opq_bits"
            )
        residual = x.copy()
        codes = np.zeros((n, len(levels)), np.int32)
        shared: list[np.ndarray] = []
        for level, k in enumerate(levels[:-1]):
            centroids = previous.shared[level] if level < keep_levels else _kmeans(residual, k, config, level)
            codes[:, level] = _assign(residual, centroids)
            residual = _subtract(residual, centroids[codes[:, level]], config.normalize_residuals)
            shared.append(centroids)
        parents = _parents(codes, levels, config.last_level_parent)
        last, last_counts = _fit_last_level(residual, parents, _num_parents(levels, config.last_level_parent), config)
        codes[:, -1] = _assign_last(residual, parents, last, last_counts)
        residual = residual - last[parents, codes[:, -1]]
        rotation = pq = None
        if config.opq_subcodes:
            rotation, pq = _fit_opq(residual, config)
        return cls(config=config, shared=shared, last=last, last_counts=last_counts, rotation=rotation, pq=pq)

    # ------------------------------------------------------------------ encoding
    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SIDs of ``x``.

        Returns:
            ``(codes, rotated)``: ``[n, sid_length]`` int32 codes (OPQ codes not offset) and the
            ``[n, d]`` rotated final residual that OPQ quantised (for collision handling), or the
            unrotated one without OPQ.
        """
        x = _check_matrix(x, "vectors to encode", dim=self.dim)
        cfg = self.config
        codes = np.zeros((len(x), cfg.sid_length), np.int32)
        residual = x.copy()
        for level, centroids in enumerate(self.shared):
            codes[:, level] = _assign(residual, centroids)
            residual = _subtract(residual, centroids[codes[:, level]], cfg.normalize_residuals)
        last_level = len(cfg.level_sizes) - 1
        parents = _parents(codes, cfg.level_sizes, cfg.last_level_parent)
        codes[:, last_level] = _assign_last(residual, parents, self.last, self.last_counts)
        residual = residual - self.last[parents, codes[:, last_level]]
        if self.rotation is None:
            return codes, residual
        rotated = (residual @ self.rotation.T).astype(np.float32)
        for m in range(cfg.opq_subcodes):
            codes[:, last_level + 1 + m] = _assign(self.subvector(rotated, m), self.pq[m])
        return codes, rotated

    def subvector(self, rotated: np.ndarray, m: int) -> np.ndarray:
        """The m-th OPQ sub-vector of rotated residuals."""
        width = self.dim // self.config.opq_subcodes
        return np.ascontiguousarray(rotated[:, m * width : (m + 1) * width])

    def subcode_distances(self, rotated: np.ndarray, m: int) -> np.ndarray:
        """``[n, 2^bits]`` squared distances of sub-vector m to each PQ centroid of sub-space m."""
        sub = self.subvector(rotated, m)
        centroids = self.pq[m]
        return ((sub**2).sum(1, keepdims=True) - 2 * sub @ centroids.T + (centroids**2).sum(1)[None, :]).astype(
            np.float32
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Writes one ``.npz`` (arrays plus the config as JSON text); no pickle."""
        arrays = {f"shared_{level}": c for level, c in enumerate(self.shared)}
        arrays.update(last=self.last, last_counts=self.last_counts)
        if self.rotation is not None:
            arrays.update(rotation=self.rotation, pq=self.pq)
        meta = {"format": QUANTIZER_FORMAT, "version": QUANTIZER_VERSION, "config": dataclasses.asdict(self.config)}
        np.savez(path, meta=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ResidualQuantizer:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            if meta.get("format") != QUANTIZER_FORMAT or meta.get("version") != QUANTIZER_VERSION:
                raise QuantizerError(
                    f"{path}: expected {QUANTIZER_FORMAT} version {QUANTIZER_VERSION}, "
                    f"found {meta.get('format')} version {meta.get('version')}"
                )
            config = QuantizerConfig(**meta["config"])
            shared = [f[f"shared_{level}"] for level in range(len(config.level_sizes) - 1)]
            has_opq = "rotation" in f.files
            return cls(
                config=config, shared=shared, last=f["last"], last_counts=f["last_counts"],
                rotation=f["rotation"] if has_opq else None, pq=f["pq"] if has_opq else None,
            )  # fmt: skip


def _check_matrix(x: np.ndarray, what: str, dim: int | None = None) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise QuantizerError(f"{what}: expected a [n, d] matrix, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise QuantizerError(f"{what}: dimension {x.shape[1]}, the quantiser was trained on {dim}")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        raise QuantizerError(f"{what}: row {int(bad[0])} has a NaN or infinite value ({bad.size} such rows)")
    return np.ascontiguousarray(x, dtype=np.float32)


def _check_previous(previous: ResidualQuantizer | None, config: QuantizerConfig, d: int, keep: int) -> None:
    if previous is None:
        raise QuantizerError("keep_levels > 0 needs a previous quantiser")
    if not 0 < keep < len(config.level_sizes):
        raise QuantizerError(f"keep_levels must be in 0..{len(config.level_sizes) - 1}, got {keep}")
    if previous.dim != d:
        raise QuantizerError(f"previous quantiser has dimension {previous.dim}, the new vectors {d}")
    if previous.config.level_sizes[:keep] != config.level_sizes[:keep]:
        raise QuantizerError(
            f"kept levels differ: previous sizes {previous.config.level_sizes[:keep]}, new {config.level_sizes[:keep]}"
        )
    if previous.config.normalize_residuals != config.normalize_residuals:
        raise QuantizerError("normalize_residuals must match the previous quantiser to keep its levels")


def _kmeans(x: np.ndarray, k: int, config: QuantizerConfig, seed_offset: int) -> np.ndarray:
    km = faiss.Kmeans(
        x.shape[1], k, niter=config.niter, seed=config.seed + 1000 * seed_offset,
        min_points_per_centroid=1, max_points_per_centroid=config.max_points_per_centroid,
    )  # fmt: skip
    km.train(x)
    return km.centroids.copy()


def _assign(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    _, index = faiss.knn(np.ascontiguousarray(x), np.ascontiguousarray(centroids), 1)
    return index[:, 0].astype(np.int32)


def _subtract(x: np.ndarray, y: np.ndarray, normalize: bool) -> np.ndarray:
    r = x - y
    if normalize:
        norms = np.linalg.norm(r, axis=1, keepdims=True)
        r = r / np.maximum(norms, 1e-8)
    return r.astype(np.float32)


def _num_parents(levels: tuple[int, ...], mode: str) -> int:
    return {"none": 1, "l2": levels[-2] if len(levels) > 1 else 1, "l1l2": levels[-3] * levels[-2]}[mode]


def _parents(codes: np.ndarray, levels: tuple[int, ...], mode: str) -> np.ndarray:
    last = len(levels) - 1
    if mode == "none":
        return np.zeros(len(codes), np.int64)
    if mode == "l2":
        return codes[:, last - 1].astype(np.int64)
    return codes[:, last - 2].astype(np.int64) * levels[-2] + codes[:, last - 1]


def _fit_last_level(
    residual: np.ndarray, parents: np.ndarray, num_parents: int, config: QuantizerConfig
) -> tuple[np.ndarray, np.ndarray]:
    k, d = config.level_sizes[-1], residual.shape[1]
    last = np.zeros((num_parents, k, d), np.float32)
    counts = np.ones(num_parents, np.int32)  # an empty parent: one zero centroid
    order = np.argsort(parents, kind="stable")
    bounds = np.searchsorted(parents[order], np.arange(num_parents + 1))
    for p in range(num_parents):
        members = order[bounds[p] : bounds[p + 1]]
        if members.size == 0:
            continue
        sub = residual[members]
        if members.size <= k:  # one centroid per vector: every vector gets its own code
            last[p, : members.size] = sub
            counts[p] = members.size
        else:
            last[p] = _kmeans(sub, k, config, seed_offset=len(config.level_sizes) + p)
            counts[p] = k
    return last, counts


def _assign_last(residual: np.ndarray, parents: np.ndarray, last: np.ndarray, counts: np.ndarray) -> np.ndarray:
    codes = np.zeros(len(residual), np.int32)
    order = np.argsort(parents, kind="stable")
    sorted_parents = parents[order]
    starts = np.flatnonzero(np.r_[True, sorted_parents[1:] != sorted_parents[:-1]]) if len(order) else []
    ends = np.r_[starts[1:], len(order)] if len(order) else []
    for s, e in zip(starts, ends, strict=True):
        p = sorted_parents[s]
        members = order[s:e]
        codes[members] = _assign(residual[members], last[p, : counts[p]])
    return codes


def _fit_opq(residual: np.ndarray, config: QuantizerConfig) -> tuple[np.ndarray, np.ndarray]:
    d, m = residual.shape[1], config.opq_subcodes
    inner = faiss.ProductQuantizer(d, m, config.opq_bits)
    inner.cp.min_points_per_centroid = 1
    inner.cp.seed = config.seed
    opq = faiss.OPQMatrix(d, m)
    opq.niter = config.opq_niter
    opq.max_train_points = config.opq_max_train_points
    opq.pq = inner  # keep a Python reference: faiss does not own it
    opq.train(residual)
    rotation = faiss.vector_to_array(opq.A).reshape(d, d).astype(np.float32)
    rotated = np.ascontiguousarray(residual @ rotation.T, dtype=np.float32)
    pq = faiss.ProductQuantizer(d, m, config.opq_bits)
    pq.cp.min_points_per_centroid = 1
    pq.cp.max_points_per_centroid = config.max_points_per_centroid
    pq.cp.niter = config.niter
    pq.cp.seed = config.seed + 1
    pq.train(rotated)
    centroids = faiss.vector_to_array(pq.centroids).reshape(m, config.opq_size, d // m)
    return rotation, centroids.astype(np.float32)
