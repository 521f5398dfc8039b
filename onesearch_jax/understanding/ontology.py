"""The intent ontology (intent -> entities and attributes) and its keyword source.

OneSearch-V2 (arXiv 2603.24422), keyword chain of thought: a language model reasons from a
query's intent to the concrete products and attributes it implies ("camping gear" -> tent,
sleeping bag, ...; "shoes" -> high heels for her, running shoes for him). The ontology holds that
knowledge as data; the synthetic world writes one (``lexicon/ontology.jsonl``).

Format: JSON lines, UTF-8, one intent per line::

    {"intent": "camping gear", "kind": "complex", "entities": ["tent", "sleeping bag"],
     "attributes": {"scene": ["outdoor"]}}
    {"intent": "shoes", "kind": "ambiguous", "entities": [...],
     "by_gender": {"F": ["high heels"], "M": ["running shoes"]}}

* ``intent`` (required, non-empty): the phrase matched in queries (as lexicon terms are).
* ``kind`` (optional string): free-form label (the world writes complex, ambiguous, synonym,
  category).
* ``entities`` (optional list of strings): products the intent implies.
* ``attributes`` (optional object): attribute type (one of the 18) -> list of values.
* ``by_gender`` (optional object): gender code as in users.jsonl -> entities meant by users of
  that gender (personalised expansion).
Unknown fields, wrong types, empty strings, unknown attribute types and repeated intents raise
:class:`RecordError` naming the file, line and field.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from typing import Any

from onesearch_jax.data.kuaisearch import decode_json_line
from onesearch_jax.data.schema import ATTRIBUTE_TYPES, RecordError
from onesearch_jax.understanding.keywords import Candidate, KeywordRequest
from onesearch_jax.understanding.lexicon import AttributeLexicon, PhraseMatcher, normalize_term

_FIELDS = ("intent", "kind", "entities", "attributes", "by_gender")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Intent:
    """One ontology entry (terms folded with :func:`~.lexicon.normalize_term`)."""

    intent: str
    kind: str
    entities: tuple[str, ...]
    attributes: tuple[tuple[str, tuple[str, ...]], ...]
    by_gender: tuple[tuple[str, tuple[str, ...]], ...]

    def all_entities(self) -> tuple[str, ...]:
        """Entities of the intent and of every gender, first-seen order."""
        out = list(self.entities)
        for _, entities in self.by_gender:
            out.extend(e for e in entities if e not in out)
        return tuple(out)

    def entities_for(self, gender: str | None) -> tuple[str, ...]:
        """Entities meant by users of ``gender`` (all entities when unknown or not split)."""
        split = dict(self.by_gender)
        return split.get(gender, self.entities) if gender is not None else self.entities


class Ontology:
    """Intents by phrase, with a matcher that finds them inside queries."""

    def __init__(self, intents: Mapping[str, Intent]):
        self.intents = dict(intents)
        self._matcher = PhraseMatcher(self.intents)

    def __len__(self) -> int:
        return len(self.intents)

    def find(self, text: str, *, inside: Iterable[tuple[int, int]] = ()) -> list[Intent]:
        """Intents whose phrase occurs in ``text`` (leftmost-longest, in text order).

        Args:
            text: the query.
            inside: spans of longer terms (lexicon matches); an intent found strictly inside one
                is part of that term, not an intent of the query ("camping" in "camping stove",
                "shoes" in "running shoes").
        """
        spans = list(inside)
        return [
            intent
            for start, end, _, intent in self._matcher.find(text)
            if not any(s <= start and end <= e and e - s > end - start for s, e in spans)
        ]

    @classmethod
    def from_jsonl(cls, path: str | os.PathLike) -> Ontology:
        """Reads an ontology file (format in the module docstring).

        Raises:
            RecordError: naming the file, line and field of the first bad line.
        """
        name = os.fspath(path)
        intents: dict[str, Intent] = {}
        first_line: dict[str, int] = {}
        with open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                intent = _parse(raw, name, number)
                if intent.intent in intents:
                    raise RecordError(
                        path=name,
                        line=number,
                        field="intent",
                        kind="duplicate",
                        reason=f"intent {intent.intent!r} already defined on line {first_line[intent.intent]}",
                    )
                intents[intent.intent] = intent
                first_line[intent.intent] = number
        return cls(intents)

    @classmethod
    def from_records(cls, records: list[Mapping[str, Any]]) -> Ontology:
        """Builds an ontology from decoded entries (errors name ``<memory>`` and the 1-based index)."""
        intents = {}
        for number, obj in enumerate(records, start=1):
            intent = _from_obj(obj, "<memory>", number)
            intents[intent.intent] = intent
        return cls(intents)


def _parse(raw: bytes, path: str, line: int) -> Intent:
    return _from_obj(decode_json_line(raw, path=path, line=line), path, line)


def _from_obj(obj: Any, path: str, line: int) -> Intent:
    def fail(field: str | None, kind: str, reason: str) -> RecordError:
        return RecordError(path=path, line=line, field=field, kind=kind, reason=reason)

    if not isinstance(obj, dict):
        raise fail(None, "type", "expected a JSON object")
    for key in obj:
        if key not in _FIELDS:
            raise fail(key, "unknown_field", f"unknown field; known: {', '.join(_FIELDS)}")
    if "intent" not in obj:
        raise fail("intent", "missing_field", "missing")
    intent = _text(obj["intent"], "intent", fail)
    kind = obj.get("kind", "")
    if not isinstance(kind, str):
        raise fail("kind", "type", "expected a string")
    entities = _texts(obj.get("entities", []), "entities", fail)
    attributes = obj.get("attributes", {})
    if not isinstance(attributes, dict):
        raise fail("attributes", "type", "expected an object of attribute type -> list of values")
    attr_pairs = []
    for t in sorted(attributes):
        if t not in ATTRIBUTE_TYPES:
            raise fail(f"attributes.{t}", "unknown_type", f"unknown attribute type {t!r}")
        attr_pairs.append((t, _texts(attributes[t], f"attributes.{t}", fail)))
    by_gender = obj.get("by_gender", {})
    if not isinstance(by_gender, dict):
        raise fail("by_gender", "type", "expected an object of gender -> list of entities")
    gender_pairs = tuple((g, _texts(by_gender[g], f"by_gender.{g}", fail)) for g in sorted(by_gender))
    if not entities and not attr_pairs and not gender_pairs:
        raise fail("entities", "empty", "an intent needs entities, attributes or by_gender")
    return Intent(intent=intent, kind=kind, entities=entities, attributes=tuple(attr_pairs), by_gender=gender_pairs)


def _text(value: Any, field: str, fail) -> str:
    if not isinstance(value, str):
        raise fail(field, "type", f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise fail(field, "empty", "empty or blank")
    return normalize_term(value)


def _texts(value: Any, field: str, fail) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise fail(field, "type", f"expected a list of strings, got {type(value).__name__}")
    out = []
    for i, v in enumerate(value):
        text = _text(v, f"{field}[{i}]", fail)
        if text not in out:
            out.append(text)
    return tuple(out)


class OntologySource:
    """Keyword source (a): expansion of the intents found in the query.

    Entities of an intent score 1.0; for a gendered intent and a request whose segment names a
    gender, the other gender's entities score ``other_gender_score``. Attributes score
    ``attribute_score``. Types come from the lexicon when it knows the term (else ``entity`` for
    entities and the declared type for attributes).
    """

    name = "ontology"

    def __init__(
        self,
        ontology: Ontology,
        *,
        lexicon: AttributeLexicon | None = None,
        attribute_score: float = 0.8,
        other_gender_score: float = 0.2,
    ):
        self.ontology, self.lexicon = ontology, lexicon
        self.attribute_score, self.other_gender_score = attribute_score, other_gender_score

    def propose(self, request: KeywordRequest) -> list[Candidate]:
        gender = request.gender
        out: list[Candidate] = []
        for intent in request.analysis.intents:
            mine = intent.entities_for(gender)
            for entity in intent.all_entities():
                score = 1.0 if entity in mine else self.other_gender_score
                out.append(Candidate(text=entity, score=score, types=self._types(entity, "entity"), source=self.name))
            for t, values in intent.attributes:
                for value in values:
                    out.append(
                        Candidate(text=value, score=self.attribute_score, types=self._types(value, t), source=self.name)
                    )
        return out

    def _types(self, term: str, declared: str) -> tuple[str, ...]:
        entry = self.lexicon.entry(term) if self.lexicon is not None else None
        return entry.types if entry is not None else (declared,)
