"""Keyword fusion: pull each embedding towards the embeddings of the attribute terms it contains.

OneSearch's keyword-enhanced hierarchical quantisation (DESIGN.md, "Semantic IDs"):

    e' = L2norm(1/2 e + 1/2 mean_{k in K(x)} e_k)

where K(x) are the lexicon terms matched in the title or query x (longest non-overlapping
matches, each distinct term once) and e_k the embedding of term k by the same embedder. Rows
with no match keep their own direction: e' = L2norm(e). Fusion makes items that share core
attributes (entity, brand, material, ...) share codes, which raises code utilisation of the
upper levels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse

from onesearch_jax.sid.embed import EmbeddingError, PrecomputedEmbeddings, TextEmbedder, l2_normalize
from onesearch_jax.understanding.lexicon import AttributeLexicon


def keyword_term_ids(matches: Sequence[Sequence[str]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Flattens per-row matched terms into a term list and CSR arrays.

    Args:
        matches: per row, the matched terms (duplicates within a row are dropped, order kept).

    Returns:
        ``(terms, offsets, term_index)``: the distinct terms in first-seen order; row r's terms are
        ``terms[term_index[offsets[r]:offsets[r + 1]]]``.
    """
    terms: dict[str, int] = {}
    offsets = np.zeros(len(matches) + 1, dtype=np.int64)
    index: list[int] = []
    for r, row in enumerate(matches):
        for term in dict.fromkeys(row):
            index.append(terms.setdefault(term, len(terms)))
        offsets[r + 1] = len(index)
    return list(terms), offsets, np.asarray(index, dtype=np.int64)


def fuse_keywords(
    embeddings: np.ndarray,
    offsets: np.ndarray,
    term_index: np.ndarray,
    term_vectors: np.ndarray,
    *,
    keyword_weight: float = 0.5,
) -> np.ndarray:
    """Keyword-enhanced embeddings, ``L2norm((1 - w) e + w mean(e_k))`` with w = ``keyword_weight``.

    Args:
        embeddings: ``[n, d]`` embeddings of the texts.
        offsets: ``[n + 1]`` CSR offsets into ``term_index`` (from :func:`keyword_term_ids`).
        term_index: indices into ``term_vectors`` of each row's matched terms.
        term_vectors: ``[num_terms, d]`` embeddings of the terms.
        keyword_weight: w; the paper uses 1/2.

    Returns:
        ``[n, d]`` float32, unit-norm rows; rows without terms are just normalised.
    """
    if embeddings.shape[1] != term_vectors.shape[1]:
        raise ValueError(f"term vectors have dimension {term_vectors.shape[1]}, embeddings {embeddings.shape[1]}")
    if not 0.0 <= keyword_weight <= 1.0:
        raise ValueError(f"keyword_weight must be in [0, 1], got {keyword_weight}")
    counts = np.diff(offsets)
    membership = scipy.sparse.csr_matrix(
        (np.ones(len(term_index)), term_index, offsets), shape=(len(counts), len(term_vectors))
    )
    sums = membership @ term_vectors.astype(np.float64)
    has = counts > 0
    fused = embeddings.astype(np.float64).copy()
    fused[has] = (1.0 - keyword_weight) * fused[has] + keyword_weight * sums[has] / counts[has, None]
    return l2_normalize(fused)


def fuse_texts(
    vectors: np.ndarray,
    texts: Sequence[str],
    lexicon: AttributeLexicon,
    embedder: TextEmbedder,
    keyword_weight: float = 0.5,
) -> tuple[np.ndarray, float]:
    """Fuses the lexicon keywords matched in ``texts`` into their ``vectors``.

    Terms are embedded with ``embedder`` (the one that embedded the texts); a term with a zero
    embedding (no known n-gram) adds nothing and is dropped.

    Returns:
        ``(fused vectors, share of texts with at least one usable keyword)``.
    """
    matches = [[m.term for m in lexicon.match(t)] for t in texts]
    terms, offsets, index = keyword_term_ids(matches)
    if not terms:
        return vectors, 0.0
    if isinstance(embedder, PrecomputedEmbeddings):
        known = [t in embedder for t in terms]
        if not all(known):
            missing = [t for t, k in zip(terms, known, strict=True) if not k]
            raise EmbeddingError(f"{embedder.source}: {len(missing)} matched keywords have no embedding, "
                                 f"first {missing[0]!r}")  # fmt: skip
    term_vectors = embedder.embed(terms)
    usable = np.linalg.norm(term_vectors, axis=1) > 0  # a term with no known n-gram adds nothing
    if not usable.all():
        keep = {t for t, ok in zip(terms, usable.tolist(), strict=True) if ok}
        matches = [[t for t in row if t in keep] for row in matches]
        terms, offsets, index = keyword_term_ids(matches)
        term_vectors = embedder.embed(terms) if terms else np.zeros((0, vectors.shape[1]), np.float32)
    fused = fuse_keywords(vectors, offsets, index, term_vectors, keyword_weight=keyword_weight)
    return fused, float((np.diff(offsets) > 0).mean())
