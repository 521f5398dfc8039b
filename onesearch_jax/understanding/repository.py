"""The keyword repository: versioned keywords per query (and user segment), with coverage.

OneSearch-V2 (arXiv 2603.24422) computes its thought-augmented keywords offline and looks them
up when building teacher inputs. The repository is that lookup table, as a JSON-lines file:

Line 1, the header::

    {"format": "onesearch-keywords", "format_version": 1, "version": 2, "max_keywords": 5,
     "window_end": 2073520, "segments": ["gender=F", "gender=M"], "sources": {...},
     "config": {...}, "stats": {...}, "history": [{"version": 1, "added_queries": 1363, ...}, ...]}

Then one entry per line, in (query, segment) order, then per session::

    {"query": "shoes", "segment": null, "version": 1, "keywords": [KEYWORD, ...]}
    {"query": "shoes", "segment": "gender=F", "version": 1, "keywords": [...]}
    {"session_id": 17, "query": "shoes", "segment": "gender=F", "version": 1, "keywords": [...]}

with ``KEYWORD = {"text": "high heels", "score": 1.87, "types": ["entity"], "sources": [...]}``.
Keyword lists are ranked pools (up to ``pool_size``); a reader takes the first ``max_keywords``
(or calibrates the pool for a user first).

* ``segment: null`` entries are the query's keywords for everyone; ``segment`` entries are
  calibrated for a user segment (personalised).
* ``session_id`` entries are leave-one-session-out overrides: the keywords of a training-window
  session computed without that session, kept where their texts or order differ from its
  (query, segment) entry. So the keyword texts, in order, that :meth:`KeywordRepository.lookup`
  gives a session are exactly those computed without it (only the scores of a shared entry
  keep the shared values). A training example must pass its ``session_id`` (the target-leakage
  guard).
* ``version`` is the repository version that added the entry; :func:`refresh_repository` adds
  entries for new queries without touching old ones and bumps the header's version.
Malformed files raise :class:`RecordError` naming the file, line and field.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from onesearch_jax.data.kuaisearch import decode_json_line
from onesearch_jax.data.schema import RecordError
from onesearch_jax.understanding.keywords import Keyword
from onesearch_jax.understanding.logs import query_key
from onesearch_jax.understanding.pipeline import QueryUnderstanding

FORMAT = "onesearch-keywords"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RepositoryEntry:
    """Keywords of one query (for a segment, or for one session left out).

    Attributes:
        query: the query key.
        segment: the user segment, or None for everyone.
        session_id: for a leave-one-session-out override, the session; else None.
        version: the repository version that added the entry.
        keywords: the ranked keyword pool.
    """

    query: str
    segment: str | None
    session_id: int | None
    version: int
    keywords: tuple[Keyword, ...]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.session_id is not None:
            out["session_id"] = self.session_id
        out.update(query=self.query, segment=self.segment, version=self.version)
        out["keywords"] = [k.to_json() for k in self.keywords]
        return out


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Coverage:
    """How much of a set of requests the repository answers with at least one keyword.

    Attributes:
        requests: requests counted (sessions, or distinct queries).
        covered: of them, those with at least one keyword.
    """

    requests: int
    covered: int

    @property
    def fraction(self) -> float:
        return self.covered / self.requests if self.requests else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "covered": self.covered, "fraction": round(self.fraction, 4)}


class KeywordRepository:
    """Keywords by (query, segment) and by session (format in the module docstring)."""

    def __init__(self, *, header: Mapping[str, Any], entries: Iterable[RepositoryEntry]):
        self.header = dict(header)
        self.entries: dict[tuple[str, str | None], RepositoryEntry] = {}
        self.overrides: dict[int, RepositoryEntry] = {}
        for e in entries:
            if e.session_id is not None:
                self.overrides[e.session_id] = e
            else:
                self.entries[(e.query, e.segment)] = e

    @property
    def version(self) -> int:
        return int(self.header["version"])

    @property
    def max_keywords(self) -> int:
        return int(self.header["max_keywords"])

    def queries(self) -> list[str]:
        """Query keys with an entry for everyone, sorted."""
        return sorted({q for q, s in self.entries if s is None})

    def lookup(
        self, query: str, *, segment: str | None = None, session_id: int | None = None, k: int | None = None
    ) -> tuple[Keyword, ...]:
        """The keywords for a request: the session's override if there is one, else the
        (query, segment) entry, else the query's entry for everyone, else ().

        Args:
            query: the query text (any case and spacing).
            segment: the user's segment, or None.
            session_id: the request's session (a training example must pass it).
            k: keywords returned (default: the header's ``max_keywords``; 0 or less: the pool).
        """
        key = query_key(query)
        if session_id is not None and not self.header.get("has_session_overrides", True):
            raise ValueError(
                "this repository was built without leave-one-session-out overrides: it cannot serve "
                "training examples (rebuild it with overrides, or look up without session_id for serving)"
            )
        entry = self.overrides.get(session_id) if session_id is not None else None
        if entry is not None and (entry.query != key or entry.segment != segment):
            entry = None
        if entry is None:
            entry = self.entries.get((key, segment)) or self.entries.get((key, None))
        if entry is None:
            return ()
        limit = self.max_keywords if k is None else k
        return entry.keywords[:limit] if limit > 0 else entry.keywords

    def covers(self, query: str) -> bool:
        """True when the query has at least one keyword for everyone."""
        entry = self.entries.get((query_key(query), None))
        return entry is not None and bool(entry.keywords)

    def coverage(self, queries: Iterable[str]) -> Coverage:
        """Coverage of a sequence of requests (repeat a query once per session to weight by traffic)."""
        requests = covered = 0
        for q in queries:
            requests += 1
            covered += self.covers(q)
        return Coverage(requests=requests, covered=covered)

    def stats(self) -> dict[str, Any]:
        """Sizes and coverage of the repository itself."""
        general = [e for (_, s), e in self.entries.items() if s is None]
        personal = [e for (_, s), e in self.entries.items() if s is not None]
        with_keywords = sum(1 for e in general if e.keywords)
        return {
            "queries": len(general),
            "queries_with_keywords": with_keywords,
            "query_coverage": round(with_keywords / len(general), 4) if general else 0.0,
            "segment_entries": len(personal),
            "session_overrides": len(self.overrides),
            "mean_keywords": round(sum(min(len(e.keywords), self.max_keywords) for e in general) / len(general), 3)
            if general
            else 0.0,
        }

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> None:
        """Writes the file atomically (``PATH.partial`` renamed into place)."""
        path = Path(path)
        partial = path.with_name(path.name + ".partial")
        header = dict(self.header, stats=self.stats())
        try:
            with open(partial, "w", encoding="utf-8", newline="\n") as f:
                f.write(json.dumps(header, ensure_ascii=False, sort_keys=True) + "\n")
                for key in sorted(self.entries, key=lambda qs: (qs[0], qs[1] or "")):
                    f.write(json.dumps(self.entries[key].to_json(), ensure_ascii=False) + "\n")
                for sid in sorted(self.overrides):
                    f.write(json.dumps(self.overrides[sid].to_json(), ensure_ascii=False) + "\n")
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> KeywordRepository:
        """Reads a repository file.

        Raises:
            RecordError: for a bad header or entry (file, line and field named).
        """
        name = os.fspath(path)
        header: dict[str, Any] | None = None
        entries: list[RepositoryEntry] = []
        seen: dict[tuple, int] = {}
        with open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                obj = decode_json_line(raw, path=name, line=number)
                if header is None:
                    header = _check_header(obj, name, number)
                    continue
                entry = _parse_entry(obj, name, number)
                ident = (entry.session_id,) if entry.session_id is not None else (entry.query, entry.segment)
                if ident in seen:
                    raise RecordError(
                        path=name, line=number, field="query", kind="duplicate",
                        reason=f"entry {ident} already on line {seen[ident]}",
                    )  # fmt: skip
                seen[ident] = number
                entries.append(entry)
        if header is None:
            raise RecordError(path=name, line=1, field=None, kind="empty", reason="no header line")
        return cls(header=header, entries=entries)


def _check_header(obj: Any, path: str, line: int) -> dict[str, Any]:
    def fail(field: str | None, reason: str) -> RecordError:
        return RecordError(path=path, line=line, field=field, kind="header", reason=reason)

    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise fail("format", f"not a keyword repository (expected format {FORMAT!r})")
    if obj.get("format_version") != FORMAT_VERSION:
        raise fail("format_version", f"unsupported format_version {obj.get('format_version')!r}")
    for name in ("version", "max_keywords"):
        if type(obj.get(name)) is not int or obj[name] < 1:
            raise fail(name, f"expected a positive integer, got {obj.get(name)!r}")
    return obj


def _parse_entry(obj: Any, path: str, line: int) -> RepositoryEntry:
    def fail(field: str | None, reason: str) -> RecordError:
        return RecordError(path=path, line=line, field=field, kind="type", reason=reason)

    if not isinstance(obj, dict):
        raise fail(None, "expected a JSON object")
    allowed = {"session_id", "query", "segment", "version", "keywords"}
    for key in obj:
        if key not in allowed:
            raise fail(key, "unknown field")
    for key in ("query", "segment", "version", "keywords"):
        if key not in obj:
            raise fail(key, "missing")
    query, segment, version = obj["query"], obj["segment"], obj["version"]
    if not isinstance(query, str) or not query.strip():
        raise RecordError(path=path, line=line, field="query", kind="empty_query", reason="empty or not a string")
    if segment is not None and not isinstance(segment, str):
        raise fail("segment", "expected a string or null")
    if type(version) is not int or version < 1:
        raise fail("version", f"expected a positive integer, got {version!r}")
    session_id = obj.get("session_id")
    if session_id is not None and (type(session_id) is not int or session_id < 0):
        raise fail("session_id", f"expected a non-negative integer, got {session_id!r}")
    if not isinstance(obj["keywords"], list):
        raise fail("keywords", "expected a list")
    keywords = tuple(
        Keyword.from_json(k, path=path, line=line, field=f"keywords[{i}]") for i, k in enumerate(obj["keywords"])
    )
    return RepositoryEntry(
        query=query_key(query), segment=segment, session_id=session_id, version=version, keywords=keywords
    )


# ---------------------------------------------------------------------- building
@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RefreshReport:
    """What a build or refresh did.

    Attributes:
        version: the repository version written.
        added_queries: queries that got entries in this version.
        overrides: leave-one-session-out overrides added.
        coverage_before, coverage_after: coverage of the target requests before and after.
    """

    version: int
    added_queries: int
    overrides: int
    coverage_before: Coverage
    coverage_after: Coverage

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "added_queries": self.added_queries,
            "overrides": self.overrides,
            "coverage_before": self.coverage_before.to_json(),
            "coverage_after": self.coverage_after.to_json(),
        }


def _entries_for(
    understanding: QueryUnderstanding, keys: Sequence[str], segments: Sequence[str], version: int
) -> list[RepositoryEntry]:
    out = []
    for key in keys:
        for segment in (None, *segments):
            pool = understanding.pool(key, segment=segment)
            out.append(
                RepositoryEntry(query=key, segment=segment, session_id=None, version=version, keywords=tuple(pool))
            )
    return out


def _overrides(
    understanding: QueryUnderstanding,
    entries: Mapping[tuple[str, str | None], RepositoryEntry],
    version: int,
    keys: set[str] | None = None,
) -> list[RepositoryEntry]:
    """Leave-one-session-out entries of the window sessions (of queries ``keys``, default all)
    whose keywords change without them."""
    out = []
    for sid, s in sorted(understanding.logs.sessions.items()):
        if keys is not None and s.key not in keys:
            continue
        segment = understanding.profiles.segment_of(s.user_id)
        own = tuple(understanding.pool(s.key, segment=segment, exclude=sid))
        shared = entries.get((s.key, segment))
        if shared is None or _texts(shared.keywords) != _texts(own):
            out.append(RepositoryEntry(query=s.key, segment=segment, session_id=sid, version=version, keywords=own))
    return out


def _texts(keywords: Sequence[Keyword]) -> tuple[str, ...]:
    return tuple(k.text for k in keywords)


def build_repository(
    understanding: QueryUnderstanding,
    *,
    queries: Iterable[str] | None = None,
    targets: Iterable[str] = (),
    sources: Mapping[str, Any] | None = None,
    overrides: bool = True,
) -> tuple[KeywordRepository, RefreshReport]:
    """Builds version 1: every query of the training window (and ``queries``), for everyone and
    each segment, plus the leave-one-session-out overrides of the window sessions.

    Args:
        understanding: the pipeline over the training window.
        queries: extra queries to cover (default: none beyond the window's).
        targets: requests (one query per session) whose coverage the report gives.
        sources: file names to record in the header.
        overrides: compute the leave-one-session-out overrides (needed by anything that builds
            training examples; a serving-only repository can skip them).
    """
    keys = sorted(set(understanding.logs.by_query) | {query_key(q) for q in (queries or ())})
    segments = understanding.segments()
    entries = _entries_for(understanding, keys, segments, 1)
    by_key = {(e.query, e.segment): e for e in entries}
    loo = _overrides(understanding, by_key, 1) if overrides else []
    cfg = understanding.config
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": 1,
        "max_keywords": cfg.keywords.max_keywords,
        "pool_size": cfg.keywords.pool_size,
        "window_end": understanding.logs.window_end,
        "window_sessions": len(understanding.logs.sessions),
        "has_session_overrides": overrides,
        "segments": segments,
        "segment_fields": list(cfg.segment_fields),
        "sources": dict(sources or {}),
        "config": _config_json(cfg),
        "history": [],
    }
    target_list = list(targets)
    empty = KeywordRepository(header=header, entries=())
    repo = KeywordRepository(header=header, entries=[*entries, *loo])
    report = RefreshReport(
        version=1,
        added_queries=len(keys),
        overrides=len(loo),
        coverage_before=empty.coverage(target_list),
        coverage_after=repo.coverage(target_list),
    )
    repo.header["history"] = [report.to_json()]
    return repo, report


def refresh_repository(
    repository: KeywordRepository,
    understanding: QueryUnderstanding,
    queries: Iterable[str],
    *,
    targets: Iterable[str] | None = None,
) -> tuple[KeywordRepository, RefreshReport]:
    """Adds entries for the queries the repository does not have yet (incremental refresh).

    Existing entries are kept as they are; new ones are computed by ``understanding`` (built on
    the current training window) and marked with the new version, with the leave-one-session-out
    overrides of the window sessions of the new queries.

    Args:
        repository: the current repository.
        understanding: the pipeline for the new entries.
        queries: candidate queries (typically the traffic since the last build).
        targets: requests whose coverage change is reported (default: ``queries``).
    """
    query_list = list(queries)
    target_list = list(targets) if targets is not None else query_list
    version = repository.version + 1
    new_keys = sorted({query_key(q) for q in query_list} - set(repository.queries()))
    segments = sorted(set(repository.header.get("segments", [])) | set(understanding.segments()))
    added = _entries_for(understanding, new_keys, segments, version)
    loo = []
    if repository.header.get("has_session_overrides", True):
        by_key = {(e.query, e.segment): e for e in added}
        loo = _overrides(understanding, by_key, version, keys=set(new_keys))
    header = dict(repository.header, version=version, segments=segments)
    repo = KeywordRepository(
        header=header, entries=[*repository.entries.values(), *repository.overrides.values(), *added, *loo]
    )
    report = RefreshReport(
        version=version,
        added_queries=len(new_keys),
        overrides=len(loo),
        coverage_before=repository.coverage(target_list),
        coverage_after=repo.coverage(target_list),
    )
    repo.header["history"] = [*repository.header.get("history", []), report.to_json()]
    return repo, report


def _config_json(config: Any) -> Any:
    if dataclasses.is_dataclass(config):
        return {f.name: _config_json(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, tuple):
        return [_config_json(v) for v in config]
    return config
