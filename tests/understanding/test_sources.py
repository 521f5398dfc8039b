"""Ontology and external-generator sources: file formats, errors with file/line/field, behaviour."""

from __future__ import annotations

import json

import pytest

from onesearch_jax.data.schema import RecordError
from onesearch_jax.understanding.analysis import QueryAnalyzer, SpellingSource
from onesearch_jax.understanding.categories import EMPTY
from onesearch_jax.understanding.external import ExternalKeywords, ExternalSource
from onesearch_jax.understanding.keywords import KeywordRequest
from onesearch_jax.understanding.lexicon import AttributeLexicon
from onesearch_jax.understanding.ontology import Ontology, OntologySource

LEXICON = AttributeLexicon.from_terms(
    [("running shoes", "entity"), ("high heels", "entity"), ("tent", "entity"), ("outdoor", "scene"),
     ("camping stove", "entity"), ("sofa", "entity"), ("couch", "entity", 0.8)]
)  # fmt: skip
ONTOLOGY = Ontology.from_records(
    [
        {"intent": "camping gear", "kind": "complex", "entities": ["tent", "camping stove"],
         "attributes": {"scene": ["outdoor"]}},
        {"intent": "Shoes", "kind": "ambiguous", "entities": ["high heels", "running shoes"],
         "by_gender": {"F": ["high heels"], "M": ["running shoes"]}},
        {"intent": "camping", "kind": "category", "entities": ["tent", "camping stove"]},
        {"intent": "couch", "kind": "synonym", "entities": ["sofa"]},
    ]
)  # fmt: skip


def _request(query: str, segment: str | None = None, analyzer=None) -> KeywordRequest:
    analysis = (analyzer or QueryAnalyzer(LEXICON, ONTOLOGY)).analyse(query)
    return KeywordRequest(key=analysis.key, analysis=analysis, categories=EMPTY, segment=segment)


def _proposed(source, query, segment=None):
    return [(c.text, c.score, c.types) for c in source.propose(_request(query, segment))]


def test_ontology_expansion_with_gendered_entities():
    source = OntologySource(ONTOLOGY, lexicon=LEXICON)
    assert _proposed(source, "camping gear") == [
        ("tent", 1.0, ("entity",)), ("camping stove", 1.0, ("entity",)), ("outdoor", 0.8, ("scene",)),
    ]  # fmt: skip
    assert _proposed(source, "shoes", "gender=F") == [
        ("high heels", 1.0, ("entity",)),
        ("running shoes", 0.2, ("entity",)),
    ]
    assert _proposed(source, "SHOES", "gender=M") == [
        ("high heels", 0.2, ("entity",)),
        ("running shoes", 1.0, ("entity",)),
    ]
    assert _proposed(source, "shoes") == [("high heels", 1.0, ("entity",)), ("running shoes", 1.0, ("entity",))]


def test_an_intent_inside_a_longer_lexicon_term_is_not_an_intent():
    analyzer = QueryAnalyzer(LEXICON, ONTOLOGY)
    assert analyzer.analyse("running shoes").intents == ()  # "shoes" belongs to the product name
    assert analyzer.analyse("camping stove").intents == ()
    assert [i.intent for i in analyzer.analyse("cheap shoes").intents] == ["shoes"]
    assert [i.intent for i in analyzer.analyse("couch").intents] == ["couch"]


def test_a_corrected_query_finds_its_intent_and_spelling_proposes_the_term():
    analyzer = QueryAnalyzer(LEXICON, ONTOLOGY)
    analysis = analyzer.analyse("runing shoes")
    assert [c.term for c in analysis.corrections] == ["running shoes"]
    assert analysis.corrected() == "running shoes"
    request = KeywordRequest(key=analysis.key, analysis=analysis, categories=EMPTY)
    assert [(c.text, c.score) for c in SpellingSource().propose(request)] == [("running shoes", 1.0)]


def _jsonl(tmp_path, rows, name="f.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("row", "field", "kind"),
    [
        ("{not json", None, "json"),
        ({"entities": ["tent"]}, "intent", "missing_field"),
        ({"intent": " ", "entities": ["tent"]}, "intent", "empty"),
        ({"intent": "x", "entities": "tent"}, "entities", "type"),
        ({"intent": "x", "entities": ["tent", ""]}, "entities[1]", "empty"),
        ({"intent": "x", "attributes": {"colour": ["red"]}}, "attributes.colour", "unknown_type"),
        ({"intent": "x", "by_gender": {"F": "dress"}}, "by_gender.F", "type"),
        ({"intent": "x"}, "entities", "empty"),
        ({"intent": "x", "entities": ["a"], "extra": 1}, "extra", "unknown_field"),
        ({"intent": "camping gear", "entities": ["a"]}, "intent", "duplicate"),
    ],
)
def test_ontology_file_errors_name_file_line_and_field(tmp_path, row, field, kind):
    path = _jsonl(tmp_path, [{"intent": "camping gear", "entities": ["tent"]}, row])
    with pytest.raises(RecordError) as info:
        Ontology.from_jsonl(path)
    assert (info.value.path, info.value.line, info.value.field, info.value.kind) == (str(path), 2, field, kind)


def test_reads_the_world_ontology(small_world):
    ontology = Ontology.from_jsonl(small_world / "lexicon" / "ontology.jsonl")
    shoes = ontology.intents["shoes"]
    assert shoes.kind == "ambiguous" and "high heels" in shoes.entities_for("F")
    assert "running shoes" not in shoes.entities_for("F") and "running shoes" in shoes.entities_for("M")
    assert ontology.intents["camping gear"].attributes == (("scene", ("outdoor",)),)


def test_external_keywords_adapter(tmp_path):
    path = _jsonl(
        tmp_path,
        [
            {"query": "Camping  Gear", "keywords": ["Tent", "camping stove"]},
            {"query": "shoes", "segment": "gender=F", "keywords": [{"text": "high heels", "score": 0.9}]},
            {"query": "shoes", "keywords": [{"text": "sneakers", "types": ["entity"]}]},
        ],
    )
    external = ExternalKeywords.from_jsonl(path)
    source = ExternalSource(external, lexicon=LEXICON)
    assert _proposed(source, "camping gear") == [("tent", 1.0, ("entity",)), ("camping stove", 1.0, ("entity",))]
    assert _proposed(source, "shoes", "gender=F") == [("high heels", 0.9, ("entity",))]
    assert _proposed(source, "shoes", "gender=M") == [("sneakers", 1.0, ("entity",))]
    assert _proposed(source, "tent") == []
    ranked = ExternalKeywords.from_jsonl(path, rank_scores=True)
    assert [k.score for k in ranked.get("camping gear", None)] == [1.0, 0.5]


@pytest.mark.parametrize(
    ("row", "field", "kind"),
    [
        ({"query": "", "keywords": ["a"]}, "query", "empty_query"),
        ({"query": "  ", "keywords": ["a"]}, "query", "empty_query"),
        ({"keywords": ["a"]}, "query", "missing_field"),
        ({"query": "q", "keywords": "a"}, "keywords", "type"),
        ({"query": "q", "keywords": [""]}, "keywords[0]", "empty"),
        ({"query": "q", "keywords": [{"text": "a", "score": 2}]}, "keywords[0].score", "value"),
        ({"query": "q", "keywords": [{"text": "a", "types": ["size"]}]}, "keywords[0].types", "unknown_type"),
        ({"query": "Q", "keywords": ["b"]}, "query", "duplicate"),
        ({"query": "r", "keywords": [], "why": "llm"}, "why", "unknown_field"),
    ],
)
def test_external_file_errors_name_file_line_and_field(tmp_path, row, field, kind):
    path = _jsonl(tmp_path, [{"query": "q", "keywords": ["a"]}, row], name="llm.jsonl")
    with pytest.raises(RecordError) as info:
        ExternalKeywords.from_jsonl(path)
    assert (info.value.path, info.value.line, info.value.field, info.value.kind) == (str(path), 2, field, kind)
    assert str(info.value).startswith(f"{path}:2: ")
