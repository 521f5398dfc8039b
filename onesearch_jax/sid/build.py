"""`build_sids`: a KuaiSearch directory in, a saved `SidCodebook` (with its quantiser) out.

Steps (DESIGN.md, "Semantic IDs"): read items and the logged queries; embed them; fuse the
embeddings of matched lexicon keywords; train residual k-means + OPQ on the items and the
training-split queries (one shared codebook); encode every item and every logged query; resolve
item collisions; save the codebook, the quantiser and the embedder side by side so new items and
queries can later be encoded in the same space (and upper levels kept, incremental mode).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from onesearch_jax.data.kuaisearch import KuaiSearchDataset
from onesearch_jax.data.schema import SPLITS, Item
from onesearch_jax.sid.codebook import SidCodebook, SidQualityReport
from onesearch_jax.sid.collisions import COLLISION_MODES, resolve_collisions
from onesearch_jax.sid.embed import (
    EmbeddingError,
    MiniLmEmbedder,
    PrecomputedEmbeddings,
    TextEmbedder,
    TfidfSvdConfig,
    TfidfSvdEmbedder,
)
from onesearch_jax.sid.fuse import fuse_texts
from onesearch_jax.sid.quantize import QuantizerConfig, ResidualQuantizer
from onesearch_jax.understanding.lexicon import AttributeLexicon

EMBEDDERS = ("tfidf", "minilm", "precomputed")
LEXICON_FILE = "lexicon.tsv"
_ITEM_TEXT_FIELDS = tuple(f.name for f in dataclasses.fields(Item) if f.type == "str")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SidBuildConfig:
    """How SIDs are built; gin binds it as ``SidBuildConfig`` (see ``gin/sid/*.gin``).

    Attributes:
        embedder: ``tfidf`` (default), ``minilm`` or ``precomputed`` (see ``embed.py``).
        tfidf: settings of the default embedder.
        item_text_fields: Item fields joined (with spaces) into the text that is embedded.
        fuse_keywords: fuse matched lexicon keywords into the embeddings (needs a lexicon).
        keyword_weight: weight of the keyword mean in the fusion (the paper: 1/2).
        fit_on_queries: train the codebook on queries too (items and queries share it).
        fit_query_splits: splits whose queries join the training set; every logged query is
            encoded whatever its split.
        collision_mode: ``reassign`` or ``keep`` (see ``collisions.py``).
        quantizer: codebook shape and training settings.
        item_embeddings / item_ids: precomputed item vectors (``.npy``) and their item ids.
        query_embeddings / query_ids: precomputed query vectors and the query texts.
        keyword_embeddings / keyword_ids: precomputed keyword vectors and the terms (for fusion).
    """

    embedder: str = "tfidf"
    tfidf: TfidfSvdConfig = dataclasses.field(default_factory=TfidfSvdConfig)
    item_text_fields: tuple[str, ...] = ("item_title",)
    fuse_keywords: bool = True
    keyword_weight: float = 0.5
    fit_on_queries: bool = True
    fit_query_splits: tuple[str, ...] = ("train",)
    collision_mode: str = "reassign"
    quantizer: QuantizerConfig = dataclasses.field(default_factory=QuantizerConfig)
    item_embeddings: str | None = None
    item_ids: str | None = None
    query_embeddings: str | None = None
    query_ids: str | None = None
    keyword_embeddings: str | None = None
    keyword_ids: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "item_text_fields", tuple(self.item_text_fields))
        object.__setattr__(self, "fit_query_splits", tuple(self.fit_query_splits))
        if self.embedder not in EMBEDDERS:
            raise ValueError(f"SidBuildConfig.embedder must be one of {EMBEDDERS}, got {self.embedder!r}")
        unknown = set(self.item_text_fields) - set(_ITEM_TEXT_FIELDS)
        if not self.item_text_fields or unknown:
            raise ValueError(
                f"SidBuildConfig.item_text_fields must be among {_ITEM_TEXT_FIELDS}, got {unknown or '()'}"
            )
        if not set(self.fit_query_splits) <= set(SPLITS):
            raise ValueError(f"SidBuildConfig.fit_query_splits must be among {SPLITS}, got {self.fit_query_splits}")
        if self.collision_mode not in COLLISION_MODES:
            raise ValueError(f"SidBuildConfig.collision_mode must be one of {COLLISION_MODES}")
        if not 0.0 <= self.keyword_weight <= 1.0:
            raise ValueError(f"SidBuildConfig.keyword_weight must be in [0, 1], got {self.keyword_weight}")
        if self.embedder == "precomputed":
            for kind in ("item", "query") + (("keyword",) if self.fuse_keywords else ()):
                if not (getattr(self, f"{kind}_embeddings") and getattr(self, f"{kind}_ids")):
                    raise ValueError(f"embedder 'precomputed' needs SidBuildConfig.{kind}_embeddings and {kind}_ids"
                                     + (" (or fuse_keywords=False)" if kind == "keyword" else ""))  # fmt: skip


@dataclasses.dataclass(frozen=True, kw_only=True)
class SidBuildResult:
    """What :func:`build_sids` made and measured."""

    codebook: SidCodebook
    quantizer: ResidualQuantizer
    report: SidQualityReport
    seconds: dict[str, float]
    fit_vectors: int
    keyword_coverage: dict[str, float]


@dataclasses.dataclass(frozen=True)
class _Catalogue:
    item_ids: np.ndarray  # ascending
    item_texts: list[str]
    item_lines: np.ndarray  # items.jsonl line of each item
    items_path: Path
    queries: list[str]  # distinct logged queries, first-seen order
    fit_queries: np.ndarray  # indices of queries used for training


def resolve_data_dir(path: str | os.PathLike, lexicon: str | os.PathLike | None) -> tuple[Path, Path | None]:
    """``(kuaisearch_dir, lexicon)`` for a KuaiSearch directory or a world directory.

    A world directory (``kuaisearch/`` and ``lexicon/`` inside, as ``onesearch world`` writes it)
    resolves to its ``kuaisearch/`` and, unless a lexicon is given, its ``lexicon/attributes.tsv``.
    """
    root = Path(path)
    if (root / "kuaisearch" / Item.FILE).is_file():
        default = root / "lexicon" / "attributes.tsv"
        return root / "kuaisearch", Path(lexicon) if lexicon else (default if default.is_file() else None)
    if not (root / Item.FILE).is_file():
        raise FileNotFoundError(f"{root}: neither a KuaiSearch directory ({Item.FILE}) nor a world (kuaisearch/)")
    return root, Path(lexicon) if lexicon else None


def read_catalogue(data_dir: str | os.PathLike, config: SidBuildConfig) -> _Catalogue:
    """Items (sorted by id) and distinct logged queries; a repeated item id is an error."""
    dataset = KuaiSearchDataset(Path(data_dir))
    rows: list[tuple[int, int, str]] = []
    for line, item in dataset.read_numbered("items"):
        text = " ".join(getattr(item, f) for f in config.item_text_fields if getattr(item, f) != "UNKNOWN")
        rows.append((item.item_id, line, text))
    if not rows:
        raise EmbeddingError(f"{dataset.path('items')}: no items")
    rows.sort()
    ids = np.asarray([r[0] for r in rows], dtype=np.int64)
    repeated = np.flatnonzero(ids[1:] == ids[:-1])
    if repeated.size:
        i = int(repeated[0])
        raise EmbeddingError(f"{dataset.path('items')}:{rows[i + 1][1]}: field 'item_id': item {ids[i]} "
                             f"already defined on line {rows[i][1]}")  # fmt: skip
    queries: dict[str, bool] = {}
    if dataset.has("recall"):
        for session in dataset.read("recall"):
            fit = session.split in config.fit_query_splits
            queries[session.query] = queries.get(session.query, False) or fit
    names = list(queries)
    fit = np.asarray([i for i, q in enumerate(names) if queries[q]], dtype=np.int64)
    return _Catalogue(ids, [r[2] for r in rows], np.asarray([r[1] for r in rows]), dataset.path("items"), names, fit)


def build_sids(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None,
    config: SidBuildConfig,
    *,
    lexicon_path: str | os.PathLike | None = None,
    previous_dir: str | os.PathLike | None = None,
    keep_levels: int = 0,
) -> SidBuildResult:
    """Builds (and, with ``out_dir``, saves) the SID codebook of a KuaiSearch directory.

    Args:
        data_dir: KuaiSearch directory (items.jsonl, and recall.jsonl for queries).
        out_dir: where to save the codebook; None builds in memory only (ablations).
        config: build settings.
        lexicon_path: attribute lexicon TSV for keyword fusion.
        previous_dir: a codebook directory to start from: its embedder is reused (same space)
            and, with ``keep_levels``, its first levels are kept (incremental mode).
        keep_levels: residual levels to keep from ``previous_dir``.

    Raises:
        EmbeddingError, QuantizerError, RecordError: bad input, naming file, row and field.
    """
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = now - clock
        clock = now

    cat = read_catalogue(data_dir, config)
    lap("read")
    item_vectors, query_vectors, keyword_embedder, embedder = _embed(cat, config, previous_dir)
    lap("embed")
    coverage = {"items": 0.0, "queries": 0.0}
    if config.fuse_keywords:
        if lexicon_path is None:
            raise ValueError(
                "keyword fusion needs an attribute lexicon (--lexicon), or SidBuildConfig.fuse_keywords=False"
            )
        lexicon = AttributeLexicon.from_tsv(lexicon_path)
        item_vectors, coverage["items"] = fuse_texts(
            item_vectors, cat.item_texts, lexicon, keyword_embedder, config.keyword_weight
        )
        query_vectors, coverage["queries"] = fuse_texts(
            query_vectors, cat.queries, lexicon, keyword_embedder, config.keyword_weight
        )
        lap("fuse")
    fit = item_vectors
    if config.fit_on_queries and len(cat.fit_queries):
        fit = np.concatenate([item_vectors, query_vectors[cat.fit_queries]])
    previous = ResidualQuantizer.load(Path(previous_dir) / "quantizer.npz") if keep_levels else None
    quantizer = ResidualQuantizer.fit(fit, config.quantizer, previous=previous, keep_levels=keep_levels)
    lap("quantize")
    raw_codes, rotated = quantizer.encode(item_vectors)
    query_codes = (
        quantizer.encode(query_vectors)[0] if len(cat.queries) else np.zeros((0, raw_codes.shape[1]), np.int32)
    )
    reassign = config.collision_mode == "reassign" and config.quantizer.opq_subcodes > 0
    last = config.quantizer.opq_subcodes - 1
    item_codes, _ = resolve_collisions(
        raw_codes, cat.item_ids, (lambda rows: quantizer.subcode_distances(rotated[rows], last)) if reassign else None
    )
    lap("encode")
    codebook = SidCodebook(
        code_sizes=config.quantizer.code_sizes(), num_levels=len(config.quantizer.level_sizes),
        opq_bits=config.quantizer.opq_bits, item_ids=cat.item_ids, item_codes=item_codes,
        raw_item_codes=raw_codes, queries=np.asarray(cat.queries, dtype=str), query_codes=query_codes,
        collision_mode=config.collision_mode,
        metadata={
            "data_dir": str(data_dir), "lexicon": None if lexicon_path is None else str(lexicon_path),
            "previous_dir": None if previous_dir is None else str(previous_dir), "keep_levels": keep_levels,
            "config": _jsonable(dataclasses.asdict(config)), "fit_vectors": len(fit),
            "keyword_coverage": coverage,
        },
    )  # fmt: skip
    report = codebook.report()
    if out_dir is not None:
        out = Path(out_dir)
        codebook.save(out)
        quantizer.save(out / "quantizer.npz")
        if isinstance(embedder, TfidfSvdEmbedder):
            embedder.save(out / "embedder")
        if config.fuse_keywords:
            shutil.copyfile(lexicon_path, out / LEXICON_FILE)  # the codebook encodes new texts on its own
        lap("save")
    return SidBuildResult(codebook=codebook, quantizer=quantizer, report=report, seconds=seconds,
                          fit_vectors=len(fit), keyword_coverage=coverage)  # fmt: skip


def _embed(
    cat: _Catalogue, config: SidBuildConfig, previous_dir: str | os.PathLike | None
) -> tuple[np.ndarray, np.ndarray, TextEmbedder, TextEmbedder]:
    """(item vectors, query vectors, keyword embedder, main embedder)."""
    if config.embedder == "precomputed":
        items = PrecomputedEmbeddings.load(config.item_embeddings, config.item_ids)
        missing = [i for i, item_id in enumerate(cat.item_ids.tolist()) if str(item_id) not in items]
        if missing:
            i = missing[0]
            raise EmbeddingError(
                f"{cat.items_path}:{cat.item_lines[i]}: item {cat.item_ids[i]} has no embedding in {config.item_ids} "
                f"({len(missing)} items have none)"
            )
        queries = PrecomputedEmbeddings.load(config.query_embeddings, config.query_ids, dim=items.dim)
        keywords = (
            PrecomputedEmbeddings.load(config.keyword_embeddings, config.keyword_ids, dim=items.dim)
            if config.fuse_keywords
            else queries
        )
        return items.embed([str(i) for i in cat.item_ids.tolist()]), queries.embed(cat.queries), keywords, items
    if config.embedder == "minilm":
        embedder: TextEmbedder = MiniLmEmbedder()
    elif previous_dir is not None and (Path(previous_dir) / "embedder" / "embedder.json").exists():
        embedder = TfidfSvdEmbedder.load(Path(previous_dir) / "embedder")
    else:
        corpus = cat.item_texts + [cat.queries[i] for i in cat.fit_queries.tolist()]
        embedder = TfidfSvdEmbedder.fit(corpus, config.tfidf)
    return embedder.embed(cat.item_texts), embedder.embed(cat.queries), embedder, embedder


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
