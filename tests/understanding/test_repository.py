"""The keyword repository: file format, lookups, coverage and the incremental refresh."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from onesearch_jax.data.schema import RecordError
from onesearch_jax.understanding.keywords import Keyword
from onesearch_jax.understanding.pipeline import QueryUnderstanding
from onesearch_jax.understanding.repository import (
    FORMAT,
    KeywordRepository,
    RepositoryEntry,
    build_repository,
    refresh_repository,
)
from tests.understanding import tiny


def _kw(text: str, score: float = 1.0) -> Keyword:
    return Keyword(text=text, score=score, types=("entity",), sources=("ontology",))


def _header(**extra):
    return {"format": FORMAT, "format_version": 1, "version": 1, "max_keywords": 2, **extra}


def _repo() -> KeywordRepository:
    entries = [
        RepositoryEntry(query="shoes", segment=None, session_id=None, version=1,
                        keywords=(_kw("high heels"), _kw("running shoes"), _kw("canvas shoes"))),
        RepositoryEntry(query="shoes", segment="gender=M", session_id=None, version=1,
                        keywords=(_kw("running shoes"), _kw("hiking boots"))),
        RepositoryEntry(query="shoes", segment="gender=M", session_id=7, version=1, keywords=(_kw("hiking boots"),)),
        RepositoryEntry(query="tent", segment=None, session_id=None, version=1, keywords=()),
    ]  # fmt: skip
    return KeywordRepository(header=_header(), entries=entries)


def test_lookup_precedence_and_k():
    repo = _repo()
    assert [k.text for k in repo.lookup("Shoes")] == ["high heels", "running shoes"]  # first max_keywords
    assert [k.text for k in repo.lookup("shoes", k=0)] == ["high heels", "running shoes", "canvas shoes"]
    assert [k.text for k in repo.lookup("shoes", segment="gender=M")] == ["running shoes", "hiking boots"]
    assert [k.text for k in repo.lookup("shoes", segment="gender=F")] == ["high heels", "running shoes"]
    assert [k.text for k in repo.lookup("shoes", segment="gender=M", session_id=7)] == ["hiking boots"]
    # an override only answers its own query and segment
    assert [k.text for k in repo.lookup("shoes", session_id=7)] == ["high heels", "running shoes"]
    assert repo.lookup("umbrella") == ()
    with pytest.raises(ValueError, match="empty query"):
        repo.lookup(" ")


def test_coverage_and_stats():
    repo = _repo()
    coverage = repo.coverage(["shoes", "shoes", "tent", "umbrella"])
    assert (coverage.requests, coverage.covered, coverage.fraction) == (4, 2, 0.5)
    assert repo.stats() == {
        "queries": 2, "queries_with_keywords": 1, "query_coverage": 0.5, "segment_entries": 1,
        "session_overrides": 1, "mean_keywords": 1.0,
    }  # fmt: skip


def test_save_and_load_round_trip(tmp_path):
    path = tmp_path / "keywords.jsonl"
    _repo().save(path)
    lines = path.read_text("utf-8").splitlines()
    header = json.loads(lines[0])
    assert header["format"] == FORMAT and header["version"] == 1 and header["stats"]["queries"] == 2
    assert json.loads(lines[-1]) == {
        "session_id": 7, "query": "shoes", "segment": "gender=M", "version": 1,
        "keywords": [{"text": "hiking boots", "score": 1.0, "types": ["entity"], "sources": ["ontology"]}],
    }  # fmt: skip
    loaded = KeywordRepository.load(path)
    assert loaded.entries == _repo().entries and loaded.overrides == _repo().overrides
    assert not (tmp_path / "keywords.jsonl.partial").exists()


@pytest.mark.parametrize(
    ("line2", "field", "kind"),
    [
        ('{"query": "", "segment": null, "version": 1, "keywords": []}', "query", "empty_query"),
        ('{"query": "q", "segment": null, "version": 0, "keywords": []}', "version", "type"),
        ('{"query": "q", "segment": null, "version": 1}', "keywords", "type"),
        ('{"query": "q", "segment": 3, "version": 1, "keywords": []}', "segment", "type"),
        ('{"query": "q", "segment": null, "version": 1, "keywords": [{"text": "a"}]}', "keywords[0]", "type"),
        ('{"query": "q", "segment": null, "version": 1, "keywords": [], "note": 1}', "note", "type"),
        ("[1, 2", None, "json"),
    ],
)
def test_bad_entries_name_file_line_and_field(tmp_path, line2, field, kind):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(_header()) + "\n" + line2 + "\n", encoding="utf-8")
    with pytest.raises(RecordError) as info:
        KeywordRepository.load(path)
    assert (info.value.path, info.value.line, info.value.field, info.value.kind) == (str(path), 2, field, kind)


def test_bad_headers_and_duplicates(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"format": "something-else"}\n', encoding="utf-8")
    with pytest.raises(RecordError, match=r"r\.jsonl:1: field 'format': not a keyword repository"):
        KeywordRepository.load(path)
    entry = '{"query": "q", "segment": null, "version": 1, "keywords": []}\n'
    path.write_text(json.dumps(_header()) + "\n" + entry + entry, encoding="utf-8")
    with pytest.raises(RecordError, match=r"r\.jsonl:3: field 'query': entry \('q', None\) already on line 2"):
        KeywordRepository.load(path)
    path.write_text("", encoding="utf-8")
    with pytest.raises(RecordError, match="no header line"):
        KeywordRepository.load(path)


def test_build_and_refresh_on_the_tiny_log(tmp_path):
    understanding = QueryUnderstanding(tiny.logs(), lexicon=tiny.lexicon())
    repo, report = build_repository(understanding, targets=["yoga mat", "dress", "umbrella", "yoag mat"])
    assert repo.queries() == ["dress", "treadmill", "yoga mat"]
    assert Counter(s for _, s in repo.entries) == {None: 3, "gender=F": 3, "gender=M": 3}
    assert (report.version, report.added_queries) == (1, 3)
    assert report.coverage_before.fraction == 0.0
    assert repo.header["window_end"] == 46 and repo.header["segments"] == ["gender=F", "gender=M"]
    covered_before = repo.coverage(["yoga mat", "dress", "umbrella", "yoag mat"]).covered
    repo.save(tmp_path / "v1.jsonl")
    old = KeywordRepository.load(tmp_path / "v1.jsonl")
    new, refresh = refresh_repository(old, understanding, ["yoag mat", "umbrella", "yoga mat"])
    assert (refresh.version, refresh.added_queries) == (2, 2)  # "yoga mat" was there already
    assert new.entries[("yoga mat", None)] == old.entries[("yoga mat", None)]  # untouched, version 1
    assert new.entries[("yoag mat", None)].version == 2
    assert new.lookup("yoag mat")[0].text == "yoga mat"  # the spelling correction
    assert refresh.coverage_after.covered > refresh.coverage_before.covered
    assert refresh.coverage_before.covered == old.coverage(["yoag mat", "umbrella", "yoga mat"]).covered
    assert [h["version"] for h in new.header["history"]] == [1, 2]
    assert covered_before <= 3


def test_a_repository_without_overrides_refuses_session_lookups():
    understanding = QueryUnderstanding(tiny.logs(), lexicon=tiny.lexicon())
    repo, report = build_repository(understanding, overrides=False)
    assert report.overrides == 0 and repo.lookup("yoga mat") is not None
    with pytest.raises(ValueError, match="without leave-one-session-out overrides"):
        repo.lookup("yoga mat", session_id=1)
