"""Spelling correction of query words against the attribute lexicon (symmetric-delete lookup).

Part of OneSearch-V2's (arXiv 2603.24422) intent extraction for "misspellings and synonyms":
a misspelt product word ("yoag mat", "dumbells") matches no lexicon term, so the query would get
neither attributes nor a category. Each stretch of the query (one to ``max_words`` words, as
typed) that is not an exact lexicon match and cuts through none (it may hold shorter ones: "mat"
in "yoag mat") is compared with the lexicon terms of at least ``min_length`` characters; a term
within Damerau-Levenshtein distance 1 (one dropped, added, changed or swapped character) is a
correction. Lookup uses the symmetric-delete index
(every term and every string one deletion away from it), so a query costs a few dictionary hits.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from onesearch_jax.understanding.lexicon import AttributeLexicon, LexiconMatch, fold
from onesearch_jax.understanding.text import spans


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Correction:
    """A query stretch read as a lexicon term.

    Attributes:
        start, end: character offsets of the stretch in the query (end exclusive).
        observed: the stretch as folded text.
        term: the lexicon term it is read as.
        types, weight: the term's attribute types and weight.
    """

    start: int
    end: int
    observed: str
    term: str
    types: tuple[str, ...]
    weight: float


def _free(start: int, end: int, exact: list[tuple[int, int]]) -> bool:
    """A stretch may be corrected unless it is an exact match or cuts through one; it may hold
    shorter exact matches ("mat" inside "yoag mat")."""
    for s, e in exact:
        if (s, e) == (start, end) or (s < end and start < e and not (start <= s and e <= end)):
            return False
    return True


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


def damerau_at_most_one(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` differ by at most one insertion, deletion, substitution or
    transposition of adjacent characters."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    i = 0
    while i < min(la, lb) and a[i] == b[i]:
        i += 1
    if la == lb:
        if a[i + 1 :] == b[i + 1 :]:
            return True  # substitution
        return i + 1 < la and a[i] == b[i + 1] and a[i + 1] == b[i] and a[i + 2 :] == b[i + 2 :]
    if la > lb:
        return a[i + 1 :] == b[i:]
    return a[i:] == b[i + 1 :]


class SpellingCorrector:
    """Finds lexicon terms one edit away from query words (see the module docstring)."""

    def __init__(self, lexicon: AttributeLexicon, *, min_length: int = 4, max_words: int = 3):
        if min_length < 2 or max_words < 1:
            raise ValueError(
                f"SpellingCorrector: min_length must be >= 2 and max_words >= 1, got {min_length}, {max_words}"
            )
        self.lexicon, self.min_length, self.max_words = lexicon, min_length, max_words
        self._index: dict[str, set[str]] = defaultdict(set)
        for term in lexicon.terms:
            if len(term) >= min_length:
                self._index[term].add(term)
                for d in _deletes(term):
                    self._index[d].add(term)

    def correct(self, query: str, exact: list[LexiconMatch]) -> list[Correction]:
        """Corrections for the stretches of ``query`` that no exact match covers, in text order.

        Longer stretches win; an ambiguous stretch (several terms one edit away) yields each
        term, the heaviest first.
        """
        folded = fold(query)
        spans_exact = [(m.start, m.end) for m in exact]
        words = [(start, end) for _, _, start, end in spans(query)]
        used = [False] * len(words)
        out: list[Correction] = []
        for size in range(min(self.max_words, len(words)), 0, -1):
            for i in range(len(words) - size + 1):
                start, end = words[i][0], words[i + size - 1][1]
                if any(used[i : i + size]) or not _free(start, end, spans_exact):
                    continue
                observed = folded[start:end]
                if len(observed) < self.min_length - 1:
                    continue
                found = self._lookup(observed)
                if found:
                    used[i : i + size] = [True] * size
                    for term in found:
                        entry = self.lexicon.entry(term)
                        out.append(
                            Correction(
                                start=start,
                                end=end,
                                observed=observed,
                                term=term,
                                types=entry.types,
                                weight=entry.weight,
                            )
                        )
        out.sort(key=lambda c: (c.start, -c.weight, c.term))
        return out

    def _lookup(self, observed: str) -> list[str]:
        if observed in self.lexicon:
            return []
        candidates: set[str] = set(self._index.get(observed, ()))
        for d in _deletes(observed):
            candidates.update(self._index.get(d, ()))
        hits = [t for t in candidates if damerau_at_most_one(observed, t)]
        return sorted(hits, key=lambda t: (-self.lexicon.entry(t).weight, t))
