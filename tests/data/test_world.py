"""The synthetic world: valid, deterministic, and carrying the structure OneSearch-V2 needs."""

from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from onesearch_jax.data import world_catalog
from onesearch_jax.data.kuaisearch import KuaiSearchDataset
from onesearch_jax.data.validate import validate_dataset
from onesearch_jax.data.world import WorldConfig, generate_world
from tests.conftest import SMALL_WORLD


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def logs(small_world):
    ds = KuaiSearchDataset(small_world / "kuaisearch")
    return {
        "sessions": list(ds.read("recall")),
        "items": {i.item_id: i for i in ds.read("items")},
        "users": {u.user_id: u for u in ds.read("users")},
        "truth_items": {r["item_id"]: r for r in _jsonl(small_world / "truth" / "items.jsonl")},
        "truth_users": {r["user_id"]: r for r in _jsonl(small_world / "truth" / "users.jsonl")},
        "queries": {r["query"]: r for r in _jsonl(small_world / "truth" / "queries.jsonl")},
    }


def test_world_is_valid_and_complete(small_world):
    report = validate_dataset(small_world / "kuaisearch")
    assert report.problem_count == 0
    assert {n: f.lines for n, f in report.files.items()} == {
        "items": 400, "users": 150, "recall": 4000, "rank": report.files["rank"].lines, "relevance": 400,
    }  # fmt: skip
    assert report.files["rank"].lines > 0
    assert set(report.stats["sessions_by_split"]) == {"train", "valid", "test"}
    assert sorted(report.stats["relevance_scores"]) == ["0", "1", "2", "3"]


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    config = dataclasses.replace(SMALL_WORLD, num_sessions=500)
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate_world(dataclasses.replace(config, seed=seed), tmp_path / name)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 12
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert (tmp_path / "a/kuaisearch/recall.jsonl").read_bytes() != (
        tmp_path / "c/kuaisearch/recall.jsonl"
    ).read_bytes()


def test_lexicon_covers_the_18_attribute_types_and_the_ontology(small_world):
    rows = [line.split("\t") for line in (small_world / "lexicon/attributes.tsv").read_text().splitlines()]
    assert rows[0] == ["term", "type", "weight"]
    types = {t for _, t, _ in rows[1:]}
    assert types == set(world_catalog.ATTRIBUTE_TYPES) and len(types) == 18
    assert ["couch", "entity", "0.8"] in rows
    ontology = {r["intent"]: r for r in _jsonl(small_world / "lexicon/ontology.jsonl")}
    assert ontology["indoor fitness equipment"]["entities"] == [
        "dumbbells", "exercise bike", "kettlebell", "treadmill", "yoga mat",
    ]  # fmt: skip
    assert ontology["shoes"]["by_gender"]["F"] == ["ankle boots", "canvas shoes", "high heels"]
    assert ontology["couch"] == {"intent": "couch", "kind": "synonym", "entities": ["sofa"]}


def test_item_popularity_follows_a_power_law(logs):
    shown = collections.Counter(i for s in logs["sessions"] for i in s.impressed_item_ids)
    counts = np.sort(np.asarray(list(shown.values())))[::-1]
    top_decile_share = counts[: len(logs["items"]) // 10].sum() / counts.sum()
    assert top_decile_share > 0.4  # a uniform catalogue would give 0.1


def test_cold_start_items_have_no_history_before_the_test_period(logs):
    cold = {i for i, t in logs["truth_items"].items() if t["cold_start"]}
    assert 0.02 < len(cold) / len(logs["items"]) < 0.1
    seen = collections.defaultdict(set)
    for s in logs["sessions"]:
        seen[s.split].update(s.impressed_item_ids)
    assert not cold & (seen["train"] | seen["valid"])
    assert cold & seen["test"]


def test_splits_are_ordered_in_time(logs):
    times = {
        split: [s.time_index for s in logs["sessions"] if s.split == split] for split in ("train", "valid", "test")
    }
    assert max(times["train"]) < min(times["valid"]) <= max(times["valid"]) < min(times["test"])
    assert [s.session_id for s in logs["sessions"]] == list(range(1, 4001))


def test_clicks_follow_latent_user_preferences(logs):
    """Personalisation matters: clicked items are of the user's preferred brands far more often."""
    preferred = {u: set(t["preferred_brand_ids"]) for u, t in logs["truth_users"].items()}
    clicked = shown = clicked_match = shown_match = 0
    for s in logs["sessions"]:
        for i in s.impressed_item_ids:
            match = logs["items"][i].brand_id in preferred[s.user_id]
            shown, shown_match = shown + 1, shown_match + match
        for i in s.clicked_item_ids:
            match = logs["items"][i].brand_id in preferred[s.user_id]
            clicked, clicked_match = clicked + 1, clicked_match + match
    assert clicked_match / clicked > 1.5 * (shown_match / shown)


def test_ambiguous_queries_mean_different_items_for_different_users(logs):
    """'t-shirt' and friends: women click women's items, men click men's items."""
    by_gender = collections.defaultdict(collections.Counter)
    for s in logs["sessions"]:
        if logs["queries"][s.query]["kind"] == "ambiguous":
            gender = logs["users"][s.user_id].gender
            for i in s.clicked_item_ids:
                by_gender[gender][logs["items"][i].category_level1_name] += 1
    assert by_gender["F"]["Women's Clothing"] > 3 * by_gender["F"]["Men's Clothing"]
    assert by_gender["M"]["Men's Clothing"] > 3 * by_gender["M"]["Women's Clothing"]


def test_complex_queries_lead_to_several_entities(logs):
    entities = collections.defaultdict(set)
    for s in logs["sessions"]:
        if logs["queries"][s.query]["kind"] == "complex":
            for i in s.clicked_item_ids:
                entities[s.query].add(logs["truth_items"][i]["attributes"]["entity"])
    assert entities, "no complex query got a click"
    assert max(len(e) for e in entities.values()) >= 3


def test_query_frequency_is_long_tailed_and_all_kinds_occur(logs):
    counts = collections.Counter(s.query for s in logs["sessions"])
    ordered = sorted(counts.values(), reverse=True)
    assert sum(ordered[: max(1, len(ordered) // 100)]) / len(logs["sessions"]) > 0.1
    assert sum(ordered[len(ordered) // 2 :]) / len(logs["sessions"]) < 0.1  # the tail half: rare queries
    kinds = collections.Counter(logs["queries"][q]["kind"] for q in counts)
    assert set(kinds) == {"plain", "variant", "constraint", "complex", "ambiguous"}
    assert any(q not in world_catalog.SYNONYMS and logs["queries"][q]["kind"] == "variant" for q in counts)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_items": 0}, "num_items must be positive"),
        ({"valid_days": 20, "test_days": 10}, "must leave training days"),
        ({"cold_start_fraction": 1.5}, r"cold_start_fraction must be in \[0, 1\]"),
        ({"query_pool_size": 5}, "query_pool_size must be >= 22"),
    ],
)
def test_config_is_validated_on_construction(change, message):
    with pytest.raises(ValueError, match=message):
        WorldConfig(**change)
