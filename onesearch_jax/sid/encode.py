"""`SidEncoder`: SIDs for new texts (queries, keywords), computed as `build_sids` computed its own.

A codebook directory holds everything encoding needs: the embedder (``embedder/`` for tfidf), the
lexicon used for keyword fusion (``lexicon.tsv``), the quantiser (``quantizer.npz``) and the
build settings (``codebook.json``). Encoding a logged query gives exactly its stored SID.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from onesearch_jax.sid.build import LEXICON_FILE
from onesearch_jax.sid.codebook import SidCodebook
from onesearch_jax.sid.embed import EmbeddingError, MiniLmEmbedder, TextEmbedder, TfidfSvdEmbedder
from onesearch_jax.sid.fuse import fuse_texts
from onesearch_jax.sid.quantize import ResidualQuantizer
from onesearch_jax.understanding.lexicon import AttributeLexicon


class SidEncoder:
    """Embeds, fuses and quantises texts with a saved codebook's components."""

    def __init__(
        self,
        *,
        embedder: TextEmbedder,
        quantizer: ResidualQuantizer,
        lexicon: AttributeLexicon | None,
        keyword_weight: float = 0.5,
    ):
        self.embedder, self.quantizer, self.lexicon = embedder, quantizer, lexicon
        self.keyword_weight = keyword_weight

    @classmethod
    def load(cls, directory: str | os.PathLike) -> SidEncoder:
        """Loads the components of a codebook directory written by ``build_sids``.

        Raises:
            EmbeddingError: the codebook was built from precomputed embeddings (new texts cannot
                be embedded; bring their vectors and call the quantiser directly).
        """
        root = Path(directory)
        config = SidCodebook.load(root).metadata.get("config", {})
        kind = config.get("embedder", "tfidf")
        if kind == "precomputed":
            raise EmbeddingError(
                f"{root}: built from precomputed embeddings; new texts need vectors from the same service"
            )
        embedder: TextEmbedder = MiniLmEmbedder() if kind == "minilm" else TfidfSvdEmbedder.load(root / "embedder")
        lexicon = AttributeLexicon.from_tsv(root / LEXICON_FILE) if config.get("fuse_keywords", False) else None
        return cls(
            embedder=embedder, quantizer=ResidualQuantizer.load(root / "quantizer.npz"), lexicon=lexicon,
            keyword_weight=config.get("keyword_weight", 0.5),
        )  # fmt: skip

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Keyword-fused (when the codebook was built with fusion) unit-norm embeddings."""
        vectors = self.embedder.embed(list(texts))
        if self.lexicon is not None:
            vectors, _ = fuse_texts(vectors, texts, self.lexicon, self.embedder, self.keyword_weight)
        return vectors

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``[len(texts), L]`` int32 SIDs (no collision handling: texts may share a SID)."""
        if not len(texts):
            return np.zeros((0, self.quantizer.config.sid_length), np.int32)
        return self.quantizer.encode(self.embed(texts))[0]
