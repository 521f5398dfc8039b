"""The query-understanding pipeline: analysis -> categories -> keyword CoT -> calibration.

OneSearch-V2 (arXiv 2603.24422) feeds its teacher "high-density keywords" made offline in three
steps: (1) intent, category and attribute extraction, (2) keyword chain of thought, (3) preference
calibration with the user profile. :class:`QueryUnderstanding` runs the three over the training
window of a KuaiSearch dataset, without a language model (an external generator's keywords can
be one of the sources):

1. :class:`~.analysis.QueryAnalyzer` (lexicon, spelling, ontology) and
   :class:`~.categories.CategoryPredictor`;
2. the sources (:mod:`.ontology`, :mod:`.external`, spelling, :mod:`.categories`, :mod:`.mining`)
   fused by :func:`~.keywords.fuse`;
3. :class:`~.calibrate.PreferenceCalibrator`: for a segment against everyone (personalised
   repository entries), then for a user's history against the segment.

``exclude`` (a session id) runs everything leave-one-session-out: nothing the session did
(clicks, purchases, impressions, logged prices) is counted, exactly as if it were not logged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from onesearch_jax.understanding.analysis import QueryAnalysis, QueryAnalyzer, SpellingSource
from onesearch_jax.understanding.calibrate import CalibrationConfig, PreferenceCalibrator, UserCalibrationConfig
from onesearch_jax.understanding.categories import CategoryConfig, CategoryPrediction, CategoryPredictor, CategorySource
from onesearch_jax.understanding.external import ExternalKeywords, ExternalSource
from onesearch_jax.understanding.keywords import Candidate, Keyword, KeywordConfig, KeywordRequest, KeywordSource, fuse
from onesearch_jax.understanding.lexicon import AttributeLexicon
from onesearch_jax.understanding.logs import TrainingLogs, query_key
from onesearch_jax.understanding.mining import MinedSource, MiningConfig, NgramMiner
from onesearch_jax.understanding.ontology import Ontology, OntologySource
from onesearch_jax.understanding.profiles import ProfileBuilder, Segmenter


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class UnderstandingConfig:
    """Everything the pipeline can be told (each part validated by its own config).

    Attributes:
        keywords: fusion (K, pool, source weights).
        categories: category prediction.
        mining: n-gram mining.
        calibration: preference calibration of a segment's keywords (against everyone).
        user_calibration: calibration of a user's keywords against the user's segment; gentler
            by default, since one user's history is short (it re-ranks more than it filters).
        segment_fields: users.jsonl fields that define a personalisation segment.
        spelling: correct misspelt query words against the lexicon.
        category_keyword_level: category level whose names the category source proposes.
        category_keyword_min_share: least probability of a proposed category.
    """

    keywords: KeywordConfig = dataclasses.field(default_factory=KeywordConfig)
    categories: CategoryConfig = dataclasses.field(default_factory=CategoryConfig)
    mining: MiningConfig = dataclasses.field(default_factory=MiningConfig)
    calibration: CalibrationConfig = dataclasses.field(default_factory=CalibrationConfig)
    user_calibration: CalibrationConfig = dataclasses.field(default_factory=UserCalibrationConfig)
    segment_fields: tuple[str, ...] = ("gender",)
    spelling: bool = True
    category_keyword_level: int = 3
    category_keyword_min_share: float = 0.1

    def __post_init__(self):
        for name, cls in (
            ("keywords", KeywordConfig),
            ("categories", CategoryConfig),
            ("mining", MiningConfig),
            ("calibration", CalibrationConfig),
            ("user_calibration", CalibrationConfig),
        ):
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"UnderstandingConfig.{name} must be a {cls.__name__}")
        object.__setattr__(self, "segment_fields", tuple(self.segment_fields))
        level, share = self.category_keyword_level, self.category_keyword_min_share
        if level not in (1, 2, 3):
            raise ValueError(f"UnderstandingConfig.category_keyword_level must be 1-3, got {level}")
        if not 0 < share <= 1:
            raise ValueError(f"UnderstandingConfig.category_keyword_min_share must be in (0, 1], got {share}")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class KeywordChain:
    """The whole thought for one query: what was found, inferred and proposed, and the result.

    Attributes:
        key: the query key.
        segment: the segment it was personalised for, or None.
        analysis: lexicon attributes, corrections, intents.
        categories: predicted categories.
        candidates: every source's candidates.
        keywords: fused (and segment-calibrated) keywords, at most the pool size.
    """

    key: str
    segment: str | None
    analysis: QueryAnalysis
    categories: CategoryPrediction
    candidates: tuple[Candidate, ...]
    keywords: tuple[Keyword, ...]

    def thought(self, k: int | None = None) -> str:
        """A one-line rendering of the chain (what a teacher prompt can show)."""
        parts = []
        intents = [f"{i.kind or 'intent'}:{i.intent}" for i in self.analysis.intents]
        if intents:
            parts.append("intent " + ", ".join(intents))
        top = [self.categories.top(level) for level in (1, 2, 3)]
        if any(top):
            parts.append("category " + " > ".join(t for t in top if t))
        attributes = self.analysis.attributes()
        if attributes:
            parts.append("attributes " + "; ".join(f"{t}={','.join(v)}" for t, v in attributes.items()))
        keywords = self.keywords[:k] if k is not None else self.keywords
        parts.append("keywords " + ", ".join(kw.text for kw in keywords))
        return " | ".join(parts)


class QueryUnderstanding:
    """The pipeline over one training window (see the module docstring).

    Args:
        logs: the training window.
        lexicon: attribute lexicon (None: no attributes, spelling or lexicon-typed mining).
        ontology: intent ontology (None: no ontology expansion).
        external: keywords from an external generator (None: not used).
        config: pipeline settings.
    """

    def __init__(
        self,
        logs: TrainingLogs,
        *,
        lexicon: AttributeLexicon | None = None,
        ontology: Ontology | None = None,
        external: ExternalKeywords | None = None,
        config: UnderstandingConfig | None = None,
    ):
        config = config if config is not None else UnderstandingConfig()
        self.logs, self.lexicon, self.config = logs, lexicon, config
        self._analyses: dict[str, QueryAnalysis] = {}
        self.analyzer = QueryAnalyzer(lexicon, ontology, spelling=config.spelling)
        self.segmenter = Segmenter(fields=config.segment_fields)
        self.profiles = ProfileBuilder(
            logs, lexicon=lexicon, segmenter=self.segmenter, purchase_weight=config.categories.purchase_weight
        )
        self.categories = CategoryPredictor(
            logs, config.categories, lexicon=lexicon, segment_of=self.profiles.segment_of
        )
        self.miner = NgramMiner(
            logs, config.mining, lexicon=lexicon, query_terms=self._product_terms, segment_of=self.profiles.segment_of
        )
        self.calibrator = PreferenceCalibrator(self.profiles, config.calibration)
        self.user_calibrator = PreferenceCalibrator(self.profiles, config.user_calibration)
        sources: list[KeywordSource] = []
        if ontology is not None:
            sources.append(OntologySource(ontology, lexicon=lexicon))
        if external is not None:
            sources.append(ExternalSource(external, lexicon=lexicon))
        if self.analyzer.corrector is not None:
            sources.append(SpellingSource())
        sources.append(
            CategorySource(
                lexicon=lexicon, level=config.category_keyword_level, min_share=config.category_keyword_min_share
            )
        )
        sources.append(MinedSource(self.miner))
        weights = config.keywords.weights
        self.sources: tuple[KeywordSource, ...] = tuple(s for s in sources if s.name in weights)

    # ------------------------------------------------------------------ step 1
    def analyse(self, query: str) -> QueryAnalysis:
        """Attributes, corrections and intents of a query (cached by query key)."""
        key = query_key(query)
        analysis = self._analyses.get(key)
        if analysis is None:
            analysis = self.analyzer.analyse(key)
            self._analyses[key] = analysis
        return analysis

    def _product_terms(self, key: str) -> list[str]:
        wanted = set(self.config.mining.backoff_types)
        a = self.analyse(key)
        terms = [m.term for m in a.matches if wanted.intersection(m.types)]
        terms += [c.term for c in a.corrections if wanted.intersection(c.types)]
        return sorted(set(terms))

    def request(self, query: str, *, segment: str | None = None, exclude: int | None = None) -> KeywordRequest:
        """The analysed and categorised request the sources see."""
        analysis = self.analyse(query)
        categories = self.categories.predict(analysis.key, segment=segment, terms=analysis.terms(), exclude=exclude)
        return KeywordRequest(
            key=analysis.key, analysis=analysis, categories=categories, segment=segment, exclude=exclude
        )

    # ------------------------------------------------------------------ steps 2 and 3
    def chain(self, query: str, *, segment: str | None = None, exclude: int | None = None) -> KeywordChain:
        """The full keyword chain of thought for a query (personalised for ``segment`` if given).

        Args:
            query: the query text.
            segment: a segment name (:class:`~.profiles.Segmenter`) or None for everyone.
            exclude: a session whose own behaviour must not count (leave-one-session-out).
        """
        request = self.request(query, segment=segment, exclude=exclude)
        candidates = tuple(c for source in self.sources for c in source.propose(request))
        cfg = self.config.keywords
        analysis = request.analysis
        names_entity = any("entity" in m.types for m in (*analysis.matches, *analysis.corrections))
        keywords = fuse(request.key, candidates, cfg, limit=cfg.pool_size, names_entity=names_entity)
        if segment is not None:
            keywords = self.calibrator.calibrate(
                keywords,
                self.profiles.segment(segment, exclude=exclude),
                self.profiles.segment(None, exclude=exclude),
                exclude=exclude,
            )
        return KeywordChain(
            key=request.key,
            segment=segment,
            analysis=request.analysis,
            categories=request.categories,
            candidates=candidates,
            keywords=tuple(keywords),
        )

    def pool(self, query: str, *, segment: str | None = None, exclude: int | None = None) -> list[Keyword]:
        """The ranked keyword pool (up to ``pool_size``) of a query, for ``segment`` if given."""
        return list(self.chain(query, segment=segment, exclude=exclude).keywords)

    def keywords(self, query: str, *, segment: str | None = None, exclude: int | None = None) -> list[Keyword]:
        """The first K keywords of :meth:`pool`."""
        return self.pool(query, segment=segment, exclude=exclude)[: self.config.keywords.max_keywords]

    def personalise(
        self,
        pool: Sequence[Keyword],
        *,
        user_id: int,
        before: int,
        exclude: int | None = None,
    ) -> list[Keyword]:
        """A user's K keywords: the segment pool calibrated with the user's window history
        strictly before time ``before`` (never session ``exclude``) against the user's segment."""
        segment = self.profiles.segment_of(user_id)
        profile = self.profiles.user(user_id, before=before, exclude=exclude)
        reference = self.profiles.segment(segment, exclude=exclude)
        calibrated = self.user_calibrator.calibrate(pool, profile, reference, exclude=exclude)
        return calibrated[: self.config.keywords.max_keywords]

    def session_keywords(self, *, session_id: int, user_id: int, query: str, time_index: int) -> list[Keyword]:
        """The personalised keywords of one search (training example or test request): the
        user's segment pool without that session, calibrated with the user's earlier history."""
        segment = self.profiles.segment_of(user_id)
        pool = self.pool(query, segment=segment, exclude=session_id)
        return self.personalise(pool, user_id=user_id, before=time_index, exclude=session_id)

    def segments(self) -> list[str]:
        """The segments of the users seen in the training window, sorted."""
        found = {self.profiles.segment_of(s.user_id) for s in self.logs.sessions.values()}
        return sorted(s for s in found if s is not None)
