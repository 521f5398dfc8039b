"""The attribute lexicon: terms of the 18 attribute types, matched in text with Aho-Corasick.

OneSearch-V2 (arXiv 2603.24422), thought-augmented query understanding, step 1: "intent,
category and attribute extraction". Queries and titles are tagged with the terms of an
attribute lexicon (entity, brand, colour, material, ... the 18 types of
:data:`onesearch_jax.data.schema.ATTRIBUTE_TYPES`). In production the lexicon is mined by a
language model; here it is a file, and the synthetic world writes one (``lexicon/attributes.tsv``).

TSV format (UTF-8, one term per line, tab-separated)::

    term<TAB>type[<TAB>weight]

* The first line may be the header ``term<TAB>type`` or ``term<TAB>type<TAB>weight``; it is
  recognised only by those exact column names (any letter case). Any other first line is data.
* ``weight`` is optional (default 1.0) and must be a finite number > 0.
* A term may appear with several types (one line each); repeating a (term, type) pair is an error.
* Blank lines are passed over. Everything else that breaks the format (wrong column count, empty
  term, unknown type, bad weight, invalid UTF-8) raises :class:`RecordError` naming the file,
  the line and the field.

Matching (:meth:`AttributeLexicon.match`) is case-insensitive (each character is NFKC-folded and
lower-cased on its own, so full-width ``ＡＢＣ`` matches ``abc`` and offsets stay those of the
original text), leftmost-longest and non-overlapping, in text order. A match whose first or last
character is a letter or digit of an alphabetic script must not continue a word there ("red" is
not found in "bored", "size m" not in "size ml"); CJK text has no word boundaries and gets no check.
"""

from __future__ import annotations

import dataclasses
import math
import os
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Generic, TypeVar

import ahocorasick

from onesearch_jax.data.schema import ATTRIBUTE_TYPES, RecordError

P = TypeVar("P")
_HEADERS = (("term", "type"), ("term", "type", "weight"))
_MEMORY = "<memory>"
# Code points from here on (CJK radicals, kana, ideographs, Hangul, full-width forms, ...) belong
# to scripts written without spaces; alphanumerics below it are word characters.
_CJK_START = 0x2E80


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LexiconMatch:
    """One lexicon term found in a text.

    Attributes:
        start: character offset of the first matched character in the original text.
        end: character offset one past the last matched character (exclusive).
        term: the lexicon term, in its folded (lower-case) form.
        types: the attribute types of the term, in :data:`ATTRIBUTE_TYPES` order.
        weight: the largest weight over the term's types.
    """

    start: int
    end: int
    term: str
    types: tuple[str, ...]
    weight: float


@dataclasses.dataclass(frozen=True, slots=True)
class LexiconEntry:
    """A term with its per-type weights (types in :data:`ATTRIBUTE_TYPES` order)."""

    term: str
    type_weights: tuple[tuple[str, float], ...]

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(t for t, _ in self.type_weights)

    @property
    def weight(self) -> float:
        return max(w for _, w in self.type_weights)


def fold_char(ch: str) -> str:
    """One character NFKC-normalised and lower-cased, or lower-cased alone when that would
    change the length (so folded text keeps the offsets of the original)."""
    folded = unicodedata.normalize("NFKC", ch).lower()
    if len(folded) == 1:
        return folded
    lower = ch.lower()
    return lower if len(lower) == 1 else ch


def fold(text: str) -> str:
    """``text`` folded character by character (same length; see :func:`fold_char`)."""
    return "".join(map(fold_char, text))


def normalize_term(term: str) -> str:
    """The folded form under which a term is stored and matched (outer whitespace removed)."""
    return fold(term.strip())


def is_word_char(ch: str) -> bool:
    """True for letters and digits of scripts that separate words with spaces."""
    return ch.isalnum() and ord(ch) < _CJK_START


class AttributeLexicon:
    """Terms of the 18 attribute types and an Aho-Corasick automaton over them.

    Build with :meth:`from_tsv` or :meth:`from_terms`; the object is immutable afterwards.
    """

    def __init__(self, entries: dict[str, LexiconEntry]):
        """Use :meth:`from_tsv` or :meth:`from_terms`; ``entries`` maps folded term -> entry."""
        self._entries = dict(sorted(entries.items()))
        self.terms: tuple[str, ...] = tuple(self._entries)
        self._matcher = PhraseMatcher(self._entries)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_tsv(cls, path: str | os.PathLike) -> AttributeLexicon:
        """Reads a lexicon TSV (format in the module docstring).

        Raises:
            RecordError: naming the file, line and field of the first bad line.
            OSError: when the file cannot be read.
        """
        name = os.fspath(path)
        with open(path, "rb") as f:
            raw_lines = f.read().split(b"\n")
        rows = []
        for number, raw in enumerate(raw_lines, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r")
            except UnicodeDecodeError as e:
                raise RecordError(
                    path=name, line=number, field=None, kind="utf8", reason=f"invalid UTF-8 at byte {e.start}"
                ) from None
            if not line.strip():
                continue
            columns = line.split("\t")
            if not rows and number == _first_nonblank(raw_lines) and _is_header(columns):
                continue
            if len(columns) not in (2, 3):
                raise RecordError(
                    path=name,
                    line=number,
                    field=None,
                    kind="columns",
                    reason=f"expected 'term<TAB>type[<TAB>weight]', got {len(columns)} tab-separated columns",
                )
            rows.append((number, columns))
        return cls._build(rows, name)

    @classmethod
    def from_terms(cls, rows: Iterable[tuple[str, str] | tuple[str, str, float]]) -> AttributeLexicon:
        """Builds a lexicon from ``(term, type[, weight])`` rows (line numbers in errors are 1-based row indices).

        Raises:
            RecordError: for an empty term, unknown type, bad weight or repeated (term, type).
        """
        numbered = []
        for number, row in enumerate(rows, start=1):
            if len(row) not in (2, 3):
                raise RecordError(
                    path=_MEMORY, line=number, field=None, kind="columns", reason=f"expected 2 or 3 values, got {row!r}"
                )
            numbered.append((number, list(row)))
        return cls._build(numbered, _MEMORY)

    @classmethod
    def _build(cls, rows: list[tuple[int, list]], path: str) -> AttributeLexicon:
        weights: dict[str, dict[str, float]] = {}
        first_line: dict[tuple[str, str], int] = {}
        for number, columns in rows:

            def fail(field: str, kind: str, reason: str, number: int = number) -> RecordError:
                return RecordError(path=path, line=number, field=field, kind=kind, reason=reason)

            raw_term, raw_type = columns[0], columns[1]
            if not isinstance(raw_term, str) or not raw_term.strip():
                raise fail("term", "empty_term", "empty or blank term")
            term = normalize_term(raw_term)
            kind = raw_type.strip().lower() if isinstance(raw_type, str) else raw_type
            if kind not in ATTRIBUTE_TYPES:
                known = ", ".join(ATTRIBUTE_TYPES)
                raise fail("type", "unknown_type", f"unknown attribute type {raw_type!r}; known: {known}")
            weight = _parse_weight(columns[2] if len(columns) == 3 else 1.0, fail)
            if (term, kind) in first_line:
                first = first_line[(term, kind)]
                raise fail("term", "duplicate", f"({term!r}, {kind}) already defined on line {first}")
            first_line[(term, kind)] = number
            weights.setdefault(term, {})[kind] = weight
        entries = {
            term: LexiconEntry(term, tuple((t, by_type[t]) for t in ATTRIBUTE_TYPES if t in by_type))
            for term, by_type in weights.items()
        }
        return cls(entries)

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, term: object) -> bool:
        return isinstance(term, str) and normalize_term(term) in self._entries

    def entry(self, term: str) -> LexiconEntry | None:
        """The entry of ``term`` (any case), or None."""
        return self._entries.get(normalize_term(term))

    def terms_of_type(self, kind: str) -> tuple[str, ...]:
        """The terms that carry attribute type ``kind``, sorted."""
        if kind not in ATTRIBUTE_TYPES:
            raise ValueError(f"unknown attribute type {kind!r}")
        return tuple(t for t, e in self._entries.items() if kind in e.types)

    def match(self, text: str) -> list[LexiconMatch]:
        """All lexicon terms in ``text``: leftmost-longest, non-overlapping, in text order.

        Args:
            text: any string (a query or a title); offsets refer to it unchanged.

        Returns:
            The matches, sorted by start offset.
        """
        return [
            LexiconMatch(start=start, end=end, term=term, types=entry.types, weight=entry.weight)
            for start, end, term, entry in self._matcher.find(text)
        ]


class PhraseMatcher(Generic[P]):
    """Leftmost-longest, non-overlapping phrase search with Aho-Corasick (the engine of the lexicon).

    Phrases are folded with :func:`normalize_term`; matching follows the rules of the module
    docstring (case-insensitive, word boundaries for alphabetic scripts, none for CJK).
    """

    def __init__(self, phrases: Mapping[str, P]):
        """Args: phrases: phrase -> payload returned with each match (phrases folded on the way in)."""
        self._size = 0
        self._automaton = ahocorasick.Automaton(ahocorasick.STORE_ANY, ahocorasick.KEY_STRING)
        for phrase, payload in phrases.items():
            key = normalize_term(phrase)
            if not key:
                raise ValueError(f"empty phrase {phrase!r}")
            self._automaton.add_word(key, (len(key), key, payload))
            self._size += 1
        if self._size:
            self._automaton.make_automaton()

    def __len__(self) -> int:
        return self._size

    def find(self, text: str) -> list[tuple[int, int, str, P]]:
        """``(start, end, folded phrase, payload)`` of each match in ``text``, in text order."""
        if not self._size or not text:
            return []
        folded = fold(text)
        candidates = []
        for end_inclusive, (length, key, payload) in self._automaton.iter(folded):
            start, end = end_inclusive - length + 1, end_inclusive + 1
            if _at_boundary(folded, start, end):
                candidates.append((start, -length, key, payload))
        candidates.sort(key=lambda c: (c[0], c[1]))
        out = []
        covered_until = 0
        for start, neg_length, key, payload in candidates:
            if start >= covered_until:
                out.append((start, start - neg_length, key, payload))
                covered_until = start - neg_length
        return out


def _first_nonblank(raw_lines: list[bytes]) -> int:
    return next((i for i, raw in enumerate(raw_lines, start=1) if raw.strip()), 0)


def _is_header(columns: list[str]) -> bool:
    return tuple(c.strip().lower() for c in columns) in _HEADERS


def _parse_weight(value, fail) -> float:
    if isinstance(value, bool):
        raise fail("weight", "weight", f"expected a number, got {value!r}")
    try:
        weight = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise fail("weight", "weight", f"expected a number, got {value!r}") from None
    if not math.isfinite(weight) or weight <= 0:
        raise fail("weight", "weight", f"weight must be a finite number > 0, got {value!r}")
    return weight


def _at_boundary(folded: str, start: int, end: int) -> bool:
    """False when the match at [start, end) continues an alphabetic word on either side."""
    if is_word_char(folded[start]) and start > 0 and is_word_char(folded[start - 1]):
        return False
    return not (is_word_char(folded[end - 1]) and end < len(folded) and is_word_char(folded[end]))
