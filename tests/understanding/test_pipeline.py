"""The whole pipeline on a generated world: coverage of ambiguous and complex queries,
personalisation and the chain of thought."""

from __future__ import annotations

import pytest

from onesearch_jax.understanding.evaluate import load_query_truth
from onesearch_jax.understanding.lexicon import AttributeLexicon
from onesearch_jax.understanding.logs import TrainingLogs
from onesearch_jax.understanding.ontology import Ontology
from onesearch_jax.understanding.pipeline import QueryUnderstanding, UnderstandingConfig


@pytest.fixture(scope="module")
def understanding(small_world) -> QueryUnderstanding:
    return QueryUnderstanding(
        TrainingLogs.load(small_world / "kuaisearch"),
        lexicon=AttributeLexicon.from_tsv(small_world / "lexicon" / "attributes.tsv"),
        ontology=Ontology.from_jsonl(small_world / "lexicon" / "ontology.jsonl"),
    )


def test_every_ambiguous_and_complex_query_gets_its_entities(understanding, small_world):
    truth = load_query_truth(small_world / "truth" / "queries.jsonl")
    hard = {q: t for q, t in truth.items() if t.kind in ("ambiguous", "complex")}
    assert len(hard) == 21
    for query, t in hard.items():
        for gender in ("F", "M"):
            keywords = understanding.keywords(query, segment=f"gender={gender}")
            assert keywords, (query, gender)
            implied = {e for e in t.entities(gender) if e not in query}
            named = {k.text for k in keywords if "entity" in k.types}
            if implied:
                assert named & implied, (query, gender, named)
                assert named <= t.entities(gender) | t.entities(None), (query, gender, named)


def test_personalisation_splits_ambiguous_queries_by_segment(understanding):
    women = [k.text for k in understanding.keywords("shoes", segment="gender=F")]
    men = [k.text for k in understanding.keywords("shoes", segment="gender=M")]
    assert set(women) <= {"high heels", "canvas shoes", "ankle boots"} and len(women) >= 2
    assert set(men) <= {"running shoes", "hiking boots", "basketball shoes"} and len(men) >= 2
    everyone = {k.text for k in understanding.keywords("shoes")}
    assert everyone & set(women) and everyone & set(men)


def test_misspellings_and_synonyms_name_the_product(understanding):
    assert understanding.keywords("yoag mat")[0].text == "yoga mat"
    assert understanding.keywords("dumbells")[0].text == "dumbbells"
    assert understanding.keywords("couch")[0].text == "sofa"
    assert all("mat" not in k.text.split() for k in understanding.keywords("yoga mat"))  # never words of the query


def test_the_chain_of_thought(understanding):
    chain = understanding.chain("camping gear", segment="gender=M")
    assert [i.intent for i in chain.analysis.intents] == ["camping gear"]
    assert chain.categories.top(2) == "Camping"
    assert {c.source for c in chain.candidates} >= {"ontology", "category"}
    thought = chain.thought(k=5)
    assert thought.startswith("intent complex:camping gear | category Sports & Outdoors > Camping > ")
    assert "keywords tent" in thought or "tent" in thought.split("keywords ")[1]
    with pytest.raises(ValueError, match="empty query"):
        understanding.keywords("   ")


def test_personal_keywords_come_from_the_segment_pool(understanding):
    logs = understanding.logs
    s = next(s for s in logs.sessions.values() if s.key == "shoes")
    pool = understanding.pool("shoes", segment=understanding.profiles.segment_of(s.user_id), exclude=s.session_id)
    mine = understanding.session_keywords(
        session_id=s.session_id, user_id=s.user_id, query=s.query, time_index=s.time_index
    )
    assert mine and {k.text for k in mine} <= {k.text for k in pool}
    assert len(mine) <= understanding.config.keywords.max_keywords


def test_config_validation():
    with pytest.raises(ValueError, match="category_keyword_level must be 1-3"):
        UnderstandingConfig(category_keyword_level=0)
    with pytest.raises(ValueError, match=r"UnderstandingConfig\.keywords must be a KeywordConfig"):
        UnderstandingConfig(keywords=None)
