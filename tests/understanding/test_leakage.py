"""Target leakage: no keyword of an example may come from its own session or from future logs.

The checks are counterfactual, so they hold whatever the pipeline computes inside: the keywords a
training session gets (leave-one-session-out, and from the repository with its session id) must
equal those of a pipeline rebuilt from logs where that session was never logged; the keywords of
a valid or test session must equal those of a pipeline rebuilt from the training window alone
(later sessions, their rank rows and the catalogue items only they show, all removed). Each check
is also run on a deliberately leaky variant, to show it catches the leak it guards against.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from onesearch_jax.data.kuaisearch import KuaiSearchDataset
from onesearch_jax.understanding import logs as logs_module
from onesearch_jax.understanding.lexicon import AttributeLexicon
from onesearch_jax.understanding.logs import TrainingLogs
from onesearch_jax.understanding.ontology import Ontology
from onesearch_jax.understanding.pipeline import QueryUnderstanding
from onesearch_jax.understanding.repository import build_repository


@dataclasses.dataclass
class Records:
    items: list
    users: list
    sessions: list
    rank: list
    lexicon: AttributeLexicon
    ontology: Ontology

    def build(self, *, drop: int | None = None, window_only: bool = False, splits=("train",)) -> QueryUnderstanding:
        sessions = [s for s in self.sessions if s.session_id != drop]
        rank = [r for r in self.rank if r.session_id != drop]
        items = self.items
        if window_only:
            sessions = [s for s in sessions if s.split == "train"]
            kept = {s.session_id for s in sessions}
            rank = [r for r in rank if r.session_id in kept]
            shown = {i for s in sessions for i in s.impressed_item_ids}
            items = [i for i in items if i.item_id in shown]
        logs = TrainingLogs(items=items, users=self.users, sessions=sessions, rank_rows=rank, splits=splits)
        return QueryUnderstanding(logs, lexicon=self.lexicon, ontology=self.ontology)


@pytest.fixture(scope="module")
def records(small_world) -> Records:
    dataset = KuaiSearchDataset(small_world / "kuaisearch")
    return Records(
        items=list(dataset.read("items")),
        users=list(dataset.read("users")),
        sessions=list(dataset.read("recall")),
        rank=list(dataset.read("rank")),
        lexicon=AttributeLexicon.from_tsv(small_world / "lexicon" / "attributes.tsv"),
        ontology=Ontology.from_jsonl(small_world / "lexicon" / "ontology.jsonl"),
    )


@pytest.fixture(scope="module")
def picked(records) -> list:
    """Training sessions whose own behaviour matters most: clicked or bought, from rare queries
    (a few sessions: leaving one out changes the statistics), some with rank rows (prices)."""
    train = [s for s in records.sessions if s.split == "train"]
    per_query = Counter(s.query for s in train)
    priced = {r.session_id for r in records.rank}
    engaged = [s for s in train if s.clicked_item_ids or s.purchased_item_ids]
    rare = [s for s in engaged if 2 <= per_query[s.query] <= 4][:6]
    with_prices = [s for s in engaged if s.session_id in priced and s not in rare][:2]
    frequent = [s for s in engaged if per_query[s.query] >= 20][:2]
    assert len(rare) == 6 and len(with_prices) == 2 and len(frequent) == 2
    return rare + with_prices + frequent


@pytest.fixture(scope="module")
def rebuilt(records, picked) -> dict:
    return {s.session_id: records.build(drop=s.session_id) for s in picked}


def _segment(qu: QueryUnderstanding, s) -> str | None:
    return qu.profiles.segment_of(s.user_id)


def own_session_violations(full: QueryUnderstanding, rebuilt: dict, sessions) -> list[str]:
    """Where a training session's keywords differ from those the logs without it give."""
    out = []
    for s in sessions:
        without = rebuilt[s.session_id]
        segment = _segment(full, s)
        for seg in (None, segment):
            if full.pool(s.query, segment=seg, exclude=s.session_id) != without.pool(s.query, segment=seg):
                out.append(f"session {s.session_id} ({s.query!r}, {seg}): pool uses its own session")
        request = {"session_id": s.session_id, "user_id": s.user_id, "query": s.query, "time_index": s.time_index}
        if full.session_keywords(**request) != without.session_keywords(**request):
            out.append(f"session {s.session_id}: personalised keywords use its own session")
    return out


def future_violations(full: QueryUnderstanding, past: QueryUnderstanding, sessions) -> list[str]:
    """Where a later session's keywords differ from those the training window alone gives."""
    out = []
    for s in sessions:
        request = {"session_id": s.session_id, "user_id": s.user_id, "query": s.query, "time_index": s.time_index}
        if full.session_keywords(**request) != past.session_keywords(**request):
            out.append(f"{s.split} session {s.session_id} ({s.query!r}) uses logs after the window")
    return out


def test_training_keywords_never_come_from_the_own_session(records, picked, rebuilt):
    full = records.build()
    assert own_session_violations(full, rebuilt, picked) == []


def test_the_own_session_check_catches_a_pipeline_that_does_not_leave_it_out(records, picked, rebuilt, monkeypatch):
    full = records.build()
    monkeypatch.setattr(logs_module.GroupedCounts, "_own", lambda self, exclude: {})  # "exclude" ignored
    violations = own_session_violations(full, rebuilt, picked)
    assert len(violations) >= 3, violations


def test_repository_lookups_with_the_session_id_are_leave_one_out(records, picked, rebuilt):
    full = records.build()
    later = [s.query for s in records.sessions if s.split != "train"]
    repo, _ = build_repository(full, queries=later)
    for s in picked:
        segment = _segment(full, s)
        got = [k.text for k in repo.lookup(s.query, segment=segment, session_id=s.session_id, k=0)]
        assert got == [k.text for k in rebuilt[s.session_id].pool(s.query, segment=segment)], s.session_id
    # and the check is not vacuous: without the session id some picked session reads keywords
    # its own clicks shaped
    shared = [
        s
        for s in picked
        if [k.text for k in repo.lookup(s.query, segment=_segment(full, s), k=0)]
        != [k.text for k in rebuilt[s.session_id].pool(s.query, segment=_segment(full, s))]
    ]
    assert shared, "no picked session depends on its own clicks; pick rarer queries"


def test_valid_and_test_keywords_never_come_from_future_logs(records):
    full = records.build()
    past = records.build(window_only=True)
    later = [s for s in records.sessions if s.split != "train"]
    assert len(later) > 500
    assert future_violations(full, past, later[::2]) == []
    later_queries = [s.query for s in later]
    repo, _ = build_repository(full, queries=later_queries, overrides=False)
    past_repo, _ = build_repository(past, queries=later_queries, overrides=False)
    assert len(repo.entries) > 3 * 250 and repo.entries == past_repo.entries


def test_the_future_check_catches_a_window_that_includes_later_splits(records):
    leaky = records.build(splits=("train", "valid", "test"))
    past = records.build(window_only=True)
    later = [s for s in records.sessions if s.split != "train"][:200]
    assert len(future_violations(leaky, past, later)) >= 10
