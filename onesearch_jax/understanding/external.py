"""Adapter for keywords generated elsewhere, for example offline by a large language model.

OneSearch-V2 (arXiv 2603.24422) produces its keyword chain of thought with an LLM run offline;
this source lets users bring such keywords. Format: JSON lines, UTF-8, one query per line::

    {"query": "camping gear", "keywords": ["tent", "sleeping bag", "camping lantern"]}
    {"query": "shoes", "segment": "gender=F", "keywords": [{"text": "high heels", "score": 0.9}]}

* ``query`` (required, non-empty string): matched by :func:`~.logs.query_key` (case and spacing
  do not matter).
* ``keywords`` (required list): strings (score 1.0, or by rank when ``rank_scores`` is on) or
  objects with ``text`` and optional ``score`` in (0, 1] and ``types`` (attribute types).
* ``segment`` (optional string): the keywords are for that user segment only (``gender=F``).
Unknown fields, empty queries, bad keywords and a query (with segment) given twice raise
:class:`RecordError` naming the file, the line and the field.

Leakage is the producer's responsibility: keywords made from a session's own clicks, or from
logs after the training window, must not be fed here.
"""

from __future__ import annotations

import dataclasses
import math
import os

from onesearch_jax.data.kuaisearch import decode_json_line
from onesearch_jax.data.schema import ATTRIBUTE_TYPES, RecordError
from onesearch_jax.understanding.keywords import Candidate, KeywordRequest, ordered_types
from onesearch_jax.understanding.lexicon import AttributeLexicon, normalize_term
from onesearch_jax.understanding.logs import query_key

_FIELDS = ("query", "segment", "keywords")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ExternalKeyword:
    text: str
    score: float
    types: tuple[str, ...]


class ExternalKeywords:
    """Keywords per (query key, segment) read from a JSON-lines file (format in the module docstring)."""

    def __init__(self, table: dict[tuple[str, str | None], tuple[ExternalKeyword, ...]]):
        self.table = dict(table)

    def __len__(self) -> int:
        return len(self.table)

    def get(self, key: str, segment: str | None) -> tuple[ExternalKeyword, ...]:
        """The segment's keywords when given, else the query's general ones (may be empty)."""
        if segment is not None and (key, segment) in self.table:
            return self.table[(key, segment)]
        return self.table.get((key, None), ())

    @classmethod
    def from_jsonl(cls, path: str | os.PathLike, *, rank_scores: bool = False) -> ExternalKeywords:
        """Reads the file.

        Args:
            path: the JSON-lines file.
            rank_scores: score plain-string keywords 1/rank (1, 0.5, 0.33...) instead of 1.0.

        Raises:
            RecordError: naming the file, line and field of the first bad line.
        """
        name = os.fspath(path)
        table: dict[tuple[str, str | None], tuple[ExternalKeyword, ...]] = {}
        seen: dict[tuple[str, str | None], int] = {}
        with open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                key, segment, keywords = _parse(raw, name, number, rank_scores)
                if (key, segment) in seen:
                    raise RecordError(
                        path=name,
                        line=number,
                        field="query",
                        kind="duplicate",
                        reason=f"query {key!r} (segment {segment}) already given on line {seen[(key, segment)]}",
                    )
                seen[(key, segment)] = number
                table[(key, segment)] = keywords
        return cls(table)


def _parse(raw: bytes, path: str, line: int, rank_scores: bool):
    def fail(field: str | None, kind: str, reason: str) -> RecordError:
        return RecordError(path=path, line=line, field=field, kind=kind, reason=reason)

    obj = decode_json_line(raw, path=path, line=line)
    if not isinstance(obj, dict):
        raise fail(None, "type", "expected a JSON object")
    for k in obj:
        if k not in _FIELDS:
            raise fail(k, "unknown_field", f"unknown field; known: {', '.join(_FIELDS)}")
    for required in ("query", "keywords"):
        if required not in obj:
            raise fail(required, "missing_field", "missing")
    if not isinstance(obj["query"], str):
        raise fail("query", "type", "expected a string")
    if not obj["query"].strip():
        raise fail("query", "empty_query", "empty or blank")
    key = query_key(obj["query"])
    segment = obj.get("segment")
    if segment is not None and (not isinstance(segment, str) or not segment.strip()):
        raise fail("segment", "type", "expected a non-empty string")
    items = obj["keywords"]
    if not isinstance(items, list):
        raise fail("keywords", "type", "expected a list")
    out: list[ExternalKeyword] = []
    for i, item in enumerate(items):
        field = f"keywords[{i}]"
        if isinstance(item, str):
            text, score, types = item, (1.0 / (i + 1) if rank_scores else 1.0), ()
        elif isinstance(item, dict):
            unknown = set(item) - {"text", "score", "types"}
            if unknown or "text" not in item:
                raise fail(field, "type", "expected an object with text and optional score, types")
            text, score, types = item["text"], item.get("score", 1.0), item.get("types", [])
            if type(score) not in (int, float) or not math.isfinite(score) or not 0 < score <= 1:
                raise fail(f"{field}.score", "value", f"score must be in (0, 1], got {score!r}")
            if not isinstance(types, list) or any(t not in ATTRIBUTE_TYPES for t in types):
                raise fail(f"{field}.types", "unknown_type", f"expected a list of attribute types, got {types!r}")
        else:
            raise fail(field, "type", "expected a string or an object")
        if not isinstance(text, str) or not text.strip():
            raise fail(field, "empty", "empty keyword")
        out.append(ExternalKeyword(text=normalize_term(text), score=float(score), types=ordered_types(types)))
    return key, segment, tuple(out)


class ExternalSource:
    """Keyword source (c): the external generator's keywords for the query (and segment).

    Types not given in the file are looked up in the lexicon when one is provided.
    """

    name = "external"

    def __init__(self, keywords: ExternalKeywords, *, lexicon: AttributeLexicon | None = None):
        self.keywords, self.lexicon = keywords, lexicon

    def propose(self, request: KeywordRequest) -> list[Candidate]:
        out = []
        for k in self.keywords.get(request.key, request.segment):
            types = k.types
            if not types and self.lexicon is not None:
                entry = self.lexicon.entry(k.text)
                types = entry.types if entry is not None else ()
            out.append(Candidate(text=k.text, score=k.score, types=types, source=self.name))
        return out
