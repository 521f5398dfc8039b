"""Query analysis: attributes, spelling corrections and ontology intents of a query.

OneSearch-V2 (arXiv 2603.24422), thought-augmented query understanding, step 1 ("intent and
attribute extraction"): the lexicon terms of the 18 attribute types found in the query, the
lexicon terms its misspelt words stand for, and the ontology intents it names. The spelling
corrections are also a keyword source: the corrected product word is a keyword the query implies
but does not contain ("yoag mat" -> "yoga mat").
"""

from __future__ import annotations

import dataclasses

from onesearch_jax.understanding.keywords import Candidate, KeywordRequest
from onesearch_jax.understanding.lexicon import AttributeLexicon, LexiconMatch
from onesearch_jax.understanding.logs import query_key
from onesearch_jax.understanding.ontology import Intent, Ontology
from onesearch_jax.understanding.spelling import Correction, SpellingCorrector


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class QueryAnalysis:
    """What the lexicon and the ontology say about a query.

    Attributes:
        key: the query key.
        matches: exact lexicon matches (offsets into ``key``).
        corrections: lexicon terms that misspelt stretches of ``key`` stand for.
        intents: ontology intents named in ``key`` (or in its corrected form).
    """

    key: str
    matches: tuple[LexiconMatch, ...] = ()
    corrections: tuple[Correction, ...] = ()
    intents: tuple[Intent, ...] = ()

    def terms(self) -> list[tuple[str, float]]:
        """``(term, weight)`` of the matched and corrected terms, in text order."""
        return [(m.term, m.weight) for m in self.matches] + [(c.term, c.weight) for c in self.corrections]

    def attributes(self) -> dict[str, list[str]]:
        """Attribute type -> terms of that type in the query (corrections included)."""
        out: dict[str, list[str]] = {}
        for term, types in [(m.term, m.types) for m in self.matches] + [(c.term, c.types) for c in self.corrections]:
            for t in types:
                out.setdefault(t, []).append(term)
        return out

    def corrected(self) -> str:
        """The query key with every corrected stretch replaced by its (first) term."""
        out, last = [], 0
        for c in self.corrections:
            if c.start >= last:
                out.extend((self.key[last : c.start], c.term))
                last = c.end
        out.append(self.key[last:])
        return "".join(out)


class QueryAnalyzer:
    """Runs the lexicon, the spelling corrector and the ontology over a query."""

    def __init__(
        self,
        lexicon: AttributeLexicon | None,
        ontology: Ontology | None = None,
        *,
        spelling: bool = True,
        spelling_min_length: int = 4,
    ):
        self.lexicon, self.ontology = lexicon, ontology
        self.corrector = (
            SpellingCorrector(lexicon, min_length=spelling_min_length) if lexicon is not None and spelling else None
        )

    def analyse(self, query: str) -> QueryAnalysis:
        """The analysis of ``query`` (raises ValueError when it is empty)."""
        key = query_key(query)
        matches = tuple(self.lexicon.match(key)) if self.lexicon is not None else ()
        corrections = tuple(self.corrector.correct(key, list(matches))) if self.corrector is not None else ()
        intents: list[Intent] = []
        if self.ontology is not None:
            intents = self.ontology.find(key, inside=[(m.start, m.end) for m in matches])
            if corrections:
                corrected = QueryAnalysis(key=key, corrections=corrections).corrected()
                inside = [(m.start, m.end) for m in (self.lexicon.match(corrected) if self.lexicon else ())]
                for intent in self.ontology.find(corrected, inside=inside):
                    if intent not in intents:
                        intents.append(intent)
        return QueryAnalysis(key=key, matches=matches, corrections=corrections, intents=tuple(intents))


class SpellingSource:
    """Keyword source: the lexicon terms that misspelt query words stand for (score 1 / number
    of readings of the stretch)."""

    name = "spelling"

    def propose(self, request: KeywordRequest) -> list[Candidate]:
        corrections = request.analysis.corrections
        readings: dict[tuple[int, int], int] = {}
        for c in corrections:
            readings[(c.start, c.end)] = readings.get((c.start, c.end), 0) + 1
        return [
            Candidate(text=c.term, score=1.0 / readings[(c.start, c.end)], types=c.types, source=self.name)
            for c in corrections
        ]
