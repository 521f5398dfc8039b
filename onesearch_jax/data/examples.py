"""Training records for every OneSearch stage, from search logs, SIDs and the keyword repository.

``build_examples(data_dir, out_dir, sids_dir=..., keywords_path=...)`` writes (formats in
:mod:`.example_io`, feature schemas in :data:`~onesearch_jax.data.example_io.FEATURES`)::

    OUT/stage1_alignment/{train,valid,test}.{tfrecord,jsonl}
    OUT/stage2_cooccurrence/{train,valid,test}.{tfrecord,jsonl}
    OUT/personalized/{train,valid,test}.{tfrecord,jsonl}
    OUT/sid_ctr.tsv          sid, impressions, clicks, ctr (every SID of the codebook)
    OUT/sid_relevance.tsv    query (key), sid, tier (every labelled pair that joins)
    OUT/manifest.json        format, version, counts, skips, feature schemas, sources, settings

**Personalised records** (stage 3; OneSearch-V2's SFT, LR-ESD and TPMA-GRPO data): one per
(search session, target item), targets being the session's clicked items then its purchased
items that were not clicked (distinct, in that order). Sessions without a target are counted per
split and not written. ``inputs`` / ``teacher_inputs`` are rendered by
:func:`~onesearch_jax.data.prompts.render_prompts` from:

* the user's profile (users.jsonl);
* the query and its SID (the codebook's SID of the logged query);
* the history: the user's sessions *strictly* before this one in time (``time_index`` smaller;
  any split, since a server knows everything before the request): their queries, most recent
  first, distinct by query key, up to ``max_recent_queries``; the SIDs of the items clicked or
  bought in them, most recent session first (clicks then purchases within a session), distinct
  items, up to ``max_recent_items``;
* keywords (teacher only): ``repository.lookup(query, segment=user's segment, session_id=...)``
  with the segment computed by the repository's own :class:`Segmenter` fields, so a training
  session's keywords never come from its own clicks (the leave-one-session-out overrides).

Reward fields (DESIGN.md, Eq. 9-10): ``clicked_sids`` and ``ordered_sids`` of the session;
``impressed_sids`` (distinct, in impression order) with ``impressed_ctr``; ``relevance_sids``
with ``relevance_tiers`` for every SID labelled for the session's query.

**Calibrated posterior CTR** (R_CTR). Per SID, from the *training window* only (split ``train``):
``n`` = training sessions that impressed an item with that SID, ``c`` = those in which such an
item was clicked (or bought, with ``ctr_counts_purchases``). With a Beta(α, β) prior of mean
``m`` and strength ``S`` (α = m·S, β = (1 − m)·S; ``m`` defaults to the training window's
overall c / n)::

    ctr = clip((c + α) / (n + α + β), 0, 1)

so a SID never impressed in training gets ``m``. The same table is written to ``sid_ctr.tsv``.

**Relevance tiers.** relevance.jsonl pairs join items by title: the pair's ``item_title`` and the
catalogue titles compared after :func:`~onesearch_jax.understanding.logs.query_key` (NFKC, lower
case, whitespace collapsed); a pair labels every item with that title, and the label belongs to
(query key, item SID). Several labels for one (query, SID): the highest tier wins (counted as
``conflicting``). Pairs whose title matches no catalogue item are counted (``unmatched``).

**Stage-1 alignment** (one ``task`` per record; inputs from
:func:`~onesearch_jax.data.prompts.render_task_input`): ``query_to_sid``, ``query_to_keywords``
and ``query_sid_to_keyword_sids`` for each distinct logged query, in the split of its first
session (so ``train`` holds the training window's queries, valid/test the queries first seen
there); keywords are the repository's entry for everyone (``lookup(query)``), keyword SIDs
come from :class:`~onesearch_jax.sid.encode.SidEncoder` (distinct, in keyword order); queries
without keywords get no keyword records (counted). ``title_to_sid``, ``sid_to_title`` and
``sid_to_category`` (``level1 > level2 > level3``, unknown levels left out) for every catalogue
item, in ``train`` (catalogue content, no behaviour).

**Stage-2 co-occurrence**: ``query_to_item_sid`` per distinct (query, target item) and
``query_sid_to_item_sid`` per distinct (query SID, target item), with ``count`` = the sessions in
which the item was a target for it, in first-occurrence order. Each split counts its own
sessions only: ``train`` is the training window alone; ``valid`` and ``test`` are held-out
co-occurrences of the later windows, for evaluation.

**Bad input.** A session whose user is not in users.jsonl, whose query has no SID, or which
names an item without a SID; a catalogue item without a SID; an unparsable line: a
:class:`RecordError` naming file, line and field, or with ``skip_invalid`` a skip counted by
file and kind in the manifest (a skipped session is left out of histories and CTR too).
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onesearch_jax.data.example_io import (
    FEATURES,
    PERSONALIZED,
    STAGE1,
    STAGE1_TASKS,
    STAGE2,
    STAGE2_TASKS,
    STAGES,
    ExampleWriter,
    float32_value,
    import_tensorflow,
)
from onesearch_jax.data.kuaisearch import KuaiSearchDataset, SkipLog
from onesearch_jax.data.prompts import (
    KEYWORD_SEPARATOR,
    MARKER_ITEM_SID,
    MARKER_QUERY,
    MARKER_QUERY_SID,
    MARKER_TITLE,
    PromptRecord,
    UserProfile,
    clean_text,
    render_prompts,
    render_task_input,
)
from onesearch_jax.data.schema import SPLITS, Item, RecordError, SearchSession, User
from onesearch_jax.sid.codebook import SidCodebook
from onesearch_jax.understanding.logs import CategoryPath, TrainingLogs, query_key
from onesearch_jax.understanding.profiles import Segmenter
from onesearch_jax.understanding.repository import KeywordRepository

MANIFEST_FORMAT = "onesearch-examples"
MANIFEST_VERSION = 1
MANIFEST_FILE = "manifest.json"
CTR_FILE = "sid_ctr.tsv"
RELEVANCE_FILE = "sid_relevance.tsv"
CATEGORY_SEPARATOR = " > "
SID_LIST_SEPARATOR = " "


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExamplesConfig:
    """How training records are built; gin binds it as ``ExamplesConfig`` (``gin/examples/default.gin``).

    Attributes:
        max_recent_queries: recent queries in a prompt (the paper: 10).
        max_recent_items: SIDs of recently clicked or bought items in a prompt (the paper: 20).
        dedupe_recent_queries: keep only the most recent occurrence of a repeated query.
        dedupe_recent_items: keep only the most recent engagement with an item.
        max_keywords: keywords in a teacher prompt; 0 takes the repository's ``max_keywords``.
        ctr_prior_mean: mean m of the Beta prior of the posterior CTR; None takes the training
            window's overall click rate.
        ctr_prior_strength: pseudo-impressions S of the prior (α = m·S, β = (1 − m)·S); 0 gives
            the raw click rate (and m for SIDs never impressed).
        ctr_counts_purchases: a purchase without a logged click counts as a click for the CTR.
        splits: splits whose sessions get personalised records.
        stage1_tasks: stage-1 sub-tasks written (names in ``example_io.STAGE1_TASKS``).
        stage2_tasks: stage-2 sub-tasks written (names in ``example_io.STAGE2_TASKS``).
        write_tfrecord: write ``.tfrecord`` files beside the ``.jsonl`` ones (needs TensorFlow).
    """

    max_recent_queries: int = 10
    max_recent_items: int = 20
    dedupe_recent_queries: bool = True
    dedupe_recent_items: bool = True
    max_keywords: int = 0
    ctr_prior_mean: float | None = None
    ctr_prior_strength: float = 20.0
    ctr_counts_purchases: bool = True
    splits: tuple[str, ...] = SPLITS
    stage1_tasks: tuple[str, ...] = tuple(STAGE1_TASKS)
    stage2_tasks: tuple[str, ...] = tuple(STAGE2_TASKS)
    write_tfrecord: bool = True

    def __post_init__(self) -> None:
        for name in ("splits", "stage1_tasks", "stage2_tasks"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("max_recent_queries", "max_recent_items", "max_keywords"):
            if type(getattr(self, name)) is not int or getattr(self, name) < 0:
                raise ValueError(f"ExamplesConfig.{name} must be a non-negative integer, got {getattr(self, name)!r}")
        if self.ctr_prior_mean is not None and not 0.0 <= self.ctr_prior_mean <= 1.0:
            raise ValueError(f"ExamplesConfig.ctr_prior_mean must be in [0, 1] or None, got {self.ctr_prior_mean}")
        if not self.ctr_prior_strength >= 0.0:
            raise ValueError(f"ExamplesConfig.ctr_prior_strength must be >= 0, got {self.ctr_prior_strength}")
        if not self.splits or not set(self.splits) <= set(SPLITS):
            raise ValueError(f"ExamplesConfig.splits must be a non-empty subset of {SPLITS}, got {self.splits}")
        for name, known in (("stage1_tasks", STAGE1_TASKS), ("stage2_tasks", STAGE2_TASKS)):
            unknown = set(getattr(self, name)) - set(known)
            if unknown:
                raise ValueError(f"ExamplesConfig.{name}: unknown tasks {sorted(unknown)}; known: {list(known)}")


# ---------------------------------------------------------------------- CTR
@dataclasses.dataclass(frozen=True, kw_only=True)
class CtrTable:
    """Calibrated posterior CTR per SID (equation in the module docstring).

    Attributes:
        prior_mean: the prior's mean (what a SID never impressed in training gets).
        alpha, beta: the Beta prior.
        impressions: SID tokens -> training sessions that impressed it.
        clicks: SID tokens -> of them, sessions with a click (or purchase).
    """

    prior_mean: float
    alpha: float
    beta: float
    impressions: Mapping[str, int]
    clicks: Mapping[str, int]

    def ctr(self, sid: str) -> float:
        """The posterior CTR of a SID (the prior mean for one never impressed in training)."""
        n, c = self.impressions.get(sid, 0), self.clicks.get(sid, 0)
        denominator = n + self.alpha + self.beta
        value = (c + self.alpha) / denominator if denominator > 0 else self.prior_mean
        return min(1.0, max(0.0, value))


def ctr_table(
    sessions: Iterable[SearchSession],
    sid_of: Any,
    *,
    prior_mean: float | None,
    prior_strength: float,
    counts_purchases: bool = True,
) -> CtrTable:
    """Counts impressions and clicks per SID over ``sessions`` (pass the training window only).

    Args:
        sessions: the sessions counted.
        sid_of: item id -> SID tokens.
        prior_mean: mean of the Beta prior; None for the sessions' overall click rate.
        prior_strength: pseudo-impressions of the prior.
        counts_purchases: a purchase counts as a click.
    """
    impressions: Counter[str] = Counter()
    clicks: Counter[str] = Counter()
    for s in sessions:
        engaged = set(s.clicked_item_ids) | (set(s.purchased_item_ids) if counts_purchases else set())
        shown: dict[str, bool] = {}
        for item in s.impressed_item_ids:
            sid = sid_of(item)
            shown[sid] = shown.get(sid, False) or item in engaged
        for sid, clicked in shown.items():
            impressions[sid] += 1
            clicks[sid] += clicked
    if prior_mean is None:
        total = sum(impressions.values())
        prior_mean = sum(clicks.values()) / total if total else 0.0
    return CtrTable(
        prior_mean=prior_mean,
        alpha=prior_mean * prior_strength,
        beta=(1.0 - prior_mean) * prior_strength,
        impressions=dict(impressions),
        clicks=dict(clicks),
    )


def load_sid_ctr(path: str | os.PathLike) -> dict[str, float]:
    """Reads ``sid_ctr.tsv`` back as SID tokens -> CTR (RecordError naming file, line and field)."""
    name = os.fspath(path)
    out: dict[str, float] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            parts = line.rstrip("\n").split("\t")
            if number == 1 and parts[0] == "sid":
                continue
            if len(parts) != 4:
                raise RecordError(path=name, line=number, field=None, kind="columns", reason="expected 4 columns")
            try:
                value = float(parts[3])
            except ValueError:
                raise RecordError(path=name, line=number, field="ctr", kind="type", reason="not a number") from None
            if not 0.0 <= value <= 1.0:
                raise RecordError(path=name, line=number, field="ctr", kind="value", reason=f"{value} not in [0, 1]")
            out[parts[0]] = value
    return out


# ---------------------------------------------------------------------- summary
@dataclasses.dataclass(frozen=True, kw_only=True)
class ExamplesSummary:
    """What :func:`build_examples` wrote and measured (also the body of ``manifest.json``).

    Attributes:
        out_dir: the output directory.
        counts: stage -> split -> records written.
        task_counts: stage -> task -> records written (stages 1 and 2).
        not_written: stage -> reason -> count of units that give no record (not errors), e.g.
            ``no_target_train`` sessions, ``no_keywords`` queries.
        skipped: file -> kind -> invalid records skipped (``skip_invalid``).
        first_errors: the first skipped errors, as messages.
        unavailable: task -> why it could not be written (e.g. no SID encoder).
        warnings: things worth a look that did not stop the build.
        ctr: the CTR prior and what the training window gave.
        relevance: relevance pairs joined, unmatched and conflicting.
        keywords: share of personalised records with at least one keyword, per split.
        seconds: wall time per phase.
    """

    out_dir: Path
    counts: dict[str, dict[str, int]]
    task_counts: dict[str, dict[str, int]]
    not_written: dict[str, dict[str, int]]
    skipped: dict[str, dict[str, int]]
    first_errors: list[str]
    unavailable: dict[str, str]
    warnings: list[str]
    ctr: dict[str, Any]
    relevance: dict[str, int]
    keywords: dict[str, float]
    seconds: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["out_dir"] = str(self.out_dir)
        return out

    def format(self) -> str:
        lines = [f"training records in {self.out_dir}"]
        for stage in STAGES:
            per_split = ", ".join(f"{s} {n:,}" for s, n in self.counts.get(stage, {}).items())
            lines.append(f"  {stage}: {per_split}")
            if self.task_counts.get(stage):
                lines.append("    tasks: " + ", ".join(f"{t} {n:,}" for t, n in self.task_counts[stage].items()))
            if self.not_written.get(stage):
                lines.append("    not written: " + ", ".join(f"{k} {v:,}" for k, v in self.not_written[stage].items()))
        lines.append("  keywords: " + ", ".join(f"{s} {v:.1%}" for s, v in self.keywords.items()) + " of records")
        c = self.ctr
        lines.append(
            f"  CTR prior mean {c['prior_mean']:.4f} strength {c['prior_strength']:g} (Beta({c['alpha']:.3f}, "
            f"{c['beta']:.3f})); {c['sids_impressed']:,} SIDs impressed in {c['train_sessions']:,} training sessions"
        )
        r = self.relevance
        lines.append(
            f"  relevance: {r['pairs']:,} pairs, {r['matched']:,} joined by title, {r['unmatched']:,} unmatched, "
            f"{r['conflicting']:,} conflicting labels; {r['labelled']:,} (query, SID) labels"
        )
        skipped = sum(sum(v.values()) for v in self.skipped.values())
        lines.append(f"  skipped invalid: {skipped:,}" + "".join(f"\n    {f}: {k}" for f, k in self.skipped.items()))
        lines.extend(f"    e.g. {e}" for e in self.first_errors[:5])
        lines.extend(f"  unavailable: {t}: {why}" for t, why in self.unavailable.items())
        lines.extend(f"  warning: {w}" for w in self.warnings)
        lines.append("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in self.seconds.items()))
        return "\n".join(lines)


# ---------------------------------------------------------------------- inputs
@dataclasses.dataclass(frozen=True, slots=True)
class _Session:
    line: int
    record: SearchSession
    query_sid: str
    targets: tuple[int, ...]


class _Skips:
    """Per-file SkipLogs; ``fail`` raises unless skipping."""

    def __init__(self, skip_invalid: bool):
        self.skip_invalid = skip_invalid
        self.logs: dict[str, SkipLog] = {}

    def log(self, path: str | os.PathLike) -> SkipLog:
        return self.logs.setdefault(os.fspath(path), SkipLog())

    def fail(self, error: RecordError) -> None:
        if not self.skip_invalid:
            raise error
        self.log(error.path).add(error)

    def counts(self) -> dict[str, dict[str, int]]:
        return {p: dict(sorted(log.by_kind.items())) for p, log in self.logs.items() if log.count}

    def first_errors(self, n: int = 20) -> list[str]:
        return [str(e) for log in self.logs.values() for e in log.errors][:n]


class _Sids:
    """Item id -> SID tokens, cached, from the codebook."""

    def __init__(self, codebook: SidCodebook, path: str):
        self.codebook = codebook
        self._cache: dict[int, str] = {}
        sizes = np.asarray(codebook.code_sizes)
        bad = ((codebook.item_codes < 0) | (codebook.item_codes >= sizes)).any(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise RecordError(
                path=path, line=row + 1, field="item_codes", kind="bad_sid",
                reason=f"item {int(codebook.item_ids[row])}: codes {codebook.item_codes[row].tolist()} "
                f"outside the code sizes {list(codebook.code_sizes)}",
            )  # fmt: skip

    def has(self, item_id: int) -> bool:
        i = int(np.searchsorted(self.codebook.item_ids, item_id))
        return i < len(self.codebook.item_ids) and int(self.codebook.item_ids[i]) == item_id

    def __call__(self, item_id: int) -> str:
        sid = self._cache.get(item_id)
        if sid is None:
            sid = self._cache[item_id] = self.codebook.tokens(self.codebook.item_sid(item_id))
        return sid


def _distinct(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def _targets(s: SearchSession) -> tuple[int, ...]:
    return tuple(_distinct((*s.clicked_item_ids, *s.purchased_item_ids)))


def _check_session(
    line: int, s: SearchSession, path: str, users: Mapping[int, User], sids: _Sids, codebook: SidCodebook
) -> str:
    """The session's query SID tokens; RecordError for a reference that cannot be resolved."""

    def fail(field: str, kind: str, reason: str) -> RecordError:
        return RecordError(path=path, line=line, field=field, kind=kind, reason=reason)

    if s.user_id not in users:
        raise fail("user_id", "unknown_user", f"user {s.user_id} is not in users.jsonl")
    query_sid = codebook.query_sid(s.query)
    if query_sid is None:
        raise fail("query", "missing_query_sid", f"query {s.query!r} has no SID in the codebook")
    for name in ("impressed_item_ids", "clicked_item_ids", "purchased_item_ids"):
        missing = [i for i in getattr(s, name) if not sids.has(i)]
        if missing:
            raise fail(name, "missing_sid", f"items {missing[:5]} have no SID in the codebook")
    return codebook.tokens(query_sid)


@dataclasses.dataclass
class _Inputs:
    items: dict[int, tuple[int, Item]]
    users: dict[int, User]
    sessions: list[_Session]  # valid ones, sorted by (time_index, session_id)
    relevance: list[tuple[int, Any]]
    paths: dict[str, str]


def _load(dataset: KuaiSearchDataset, codebook: SidCodebook, sids: _Sids, skips: _Skips) -> _Inputs:
    paths = {name: str(dataset.path(name)) for name in ("items", "users", "recall", "relevance")}

    def read(name: str) -> Iterator[tuple[int, Any]]:
        return dataset.read_numbered(name, skip_invalid=skips.skip_invalid, skipped=skips.log(paths[name]))

    items: dict[int, tuple[int, Item]] = {}
    for line, item in read("items"):
        if item.item_id in items:
            skips.fail(RecordError(path=paths["items"], line=line, field="item_id", kind="duplicate",
                                   reason=f"item {item.item_id} already on line {items[item.item_id][0]}"))  # fmt: skip
        elif not sids.has(item.item_id):
            skips.fail(RecordError(path=paths["items"], line=line, field="item_id", kind="missing_sid",
                                   reason=f"item {item.item_id} has no SID in the codebook"))  # fmt: skip
        else:
            items[item.item_id] = (line, item)
    users: dict[int, User] = {}
    user_lines: dict[int, int] = {}
    for line, user in read("users"):
        if user.user_id in users:
            reason = f"user {user.user_id} already on line {user_lines[user.user_id]}"
            skips.fail(RecordError(path=paths["users"], line=line, field="user_id", kind="duplicate", reason=reason))
            continue
        users[user.user_id], user_lines[user.user_id] = user, line
    sessions: list[_Session] = []
    seen: dict[int, int] = {}
    for line, s in read("recall"):
        try:
            if s.session_id in seen:
                raise RecordError(path=paths["recall"], line=line, field="session_id", kind="duplicate",
                                  reason=f"session {s.session_id} already on line {seen[s.session_id]}")  # fmt: skip
            query_sid = _check_session(line, s, paths["recall"], users, sids, codebook)
        except RecordError as e:
            skips.fail(e)
            continue
        seen[s.session_id] = line
        sessions.append(_Session(line, s, query_sid, _targets(s)))
    sessions.sort(key=lambda x: (x.record.time_index, x.record.session_id))
    relevance = list(read("relevance")) if dataset.has("relevance") else []
    return _Inputs(items=items, users=users, sessions=sessions, relevance=relevance, paths=paths)


# ---------------------------------------------------------------------- history
class _History:
    """Per user, sessions in time order, for "strictly before" look-ups."""

    def __init__(self, sessions: Sequence[_Session]):
        self.by_user: dict[int, list[_Session]] = defaultdict(list)
        for s in sessions:  # already sorted by (time_index, session_id)
            self.by_user[s.record.user_id].append(s)
        self.times = {u: [s.record.time_index for s in ss] for u, ss in self.by_user.items()}

    def before(self, s: SearchSession) -> list[_Session]:
        """The user's sessions with a smaller time_index, oldest first."""
        end = bisect.bisect_left(self.times.get(s.user_id, []), s.time_index)
        return self.by_user.get(s.user_id, [])[:end]


def recent_history(
    earlier: Sequence[SearchSession],
    sid_of: Any,
    *,
    max_queries: int,
    max_items: int,
    dedupe_queries: bool = True,
    dedupe_items: bool = True,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Recent queries and recent item SIDs, most recent first, from sessions given oldest first.

    Args:
        earlier: the user's sessions strictly before the request, oldest first.
        sid_of: item id -> SID tokens.
        max_queries, max_items: caps.
        dedupe_queries, dedupe_items: keep only the most recent occurrence (queries compared by
            :func:`query_key`, so "Cat  food" repeats "cat food").

    Returns:
        ``(queries, item_sids)``.
    """
    queries: list[str] = []
    items: list[int] = []
    seen_q: set[str] = set()
    seen_i: set[int] = set()
    for s in reversed(earlier):
        if len(queries) >= max_queries and len(items) >= max_items:
            break
        key = query_key(s.query)
        if len(queries) < max_queries and not (dedupe_queries and key in seen_q):
            queries.append(s.query)
            seen_q.add(key)
        for item in _targets(s):
            if len(items) < max_items and not (dedupe_items and item in seen_i):
                items.append(item)
                seen_i.add(item)
    return tuple(queries), tuple(sid_of(i) for i in items)


# ---------------------------------------------------------------------- relevance
@dataclasses.dataclass(frozen=True)
class _Relevance:
    by_query: dict[str, dict[str, int]]  # query key -> SID -> tier
    stats: dict[str, int]


def _relevance(pairs: Sequence[tuple[int, Any]], items: Mapping[int, tuple[int, Item]], sid_of: Any) -> _Relevance:
    titles: dict[str, list[int]] = defaultdict(list)
    for item_id, (_, item) in sorted(items.items()):
        titles[query_key(item.item_title)].append(item_id)
    by_query: dict[str, dict[str, int]] = defaultdict(dict)
    matched = unmatched = conflicting = 0
    for _, pair in pairs:
        ids = titles.get(query_key(pair.item_title))
        if not ids:
            unmatched += 1
            continue
        matched += 1
        labels = by_query[query_key(pair.query)]
        for sid in _distinct(sid_of(i) for i in ids):
            previous = labels.get(sid)
            if previous is not None and previous != pair.score:
                conflicting += 1
            labels[sid] = max(pair.score, previous if previous is not None else pair.score)
    stats = {
        "pairs": len(pairs), "matched": matched, "unmatched": unmatched, "conflicting": conflicting,
        "labelled": sum(len(v) for v in by_query.values()), "queries": len(by_query),
    }  # fmt: skip
    return _Relevance(by_query=dict(by_query), stats=stats)


# ---------------------------------------------------------------------- records
def _personalized(
    inputs: _Inputs,
    *,
    config: ExamplesConfig,
    repository: KeywordRepository,
    segmenter: Segmenter,
    sid_of: Any,
    ctr: CtrTable,
    relevance: _Relevance,
    not_written: Counter[str],
) -> Iterator[dict[str, Any]]:
    """Personalised records of the selected splits, sessions in time order."""
    history = _History(inputs.sessions)
    users_view = TrainingLogs(items=(), users=inputs.users.values(), sessions=())
    k = config.max_keywords or None
    for entry in inputs.sessions:
        s = entry.record
        if s.split not in config.splits:
            not_written[f"split_not_selected_{s.split}"] += 1
            continue
        if not entry.targets:
            not_written[f"no_target_{s.split}"] += 1
            continue
        queries, item_sids = recent_history(
            [h.record for h in history.before(s)], sid_of,
            max_queries=config.max_recent_queries, max_items=config.max_recent_items,
            dedupe_queries=config.dedupe_recent_queries, dedupe_items=config.dedupe_recent_items,
        )  # fmt: skip
        segment = segmenter.of(users_view, s.user_id)
        keywords = tuple(kw.text for kw in repository.lookup(s.query, segment=segment, session_id=s.session_id, k=k))
        prompts = render_prompts(
            PromptRecord(
                profile=UserProfile.from_user(inputs.users.get(s.user_id)), query=s.query, query_sid=entry.query_sid,
                recent_queries=queries, recent_item_sids=item_sids, keywords=keywords,
            )
        )  # fmt: skip
        impressed = _distinct(sid_of(i) for i in s.impressed_item_ids)
        labels = sorted(relevance.by_query.get(query_key(s.query), {}).items())
        shared = {
            "split": s.split,
            "session_id": s.session_id,
            "user_id": s.user_id,
            "time_index": s.time_index,
            "query": s.query,
            "segment": segment or "",
            "keywords": list(keywords),
            "clicked_sids": _distinct(sid_of(i) for i in s.clicked_item_ids),
            "ordered_sids": _distinct(sid_of(i) for i in s.purchased_item_ids),
            "impressed_sids": impressed,
            "impressed_ctr": [ctr.ctr(sid) for sid in impressed],
            "relevance_sids": [sid for sid, _ in labels],
            "relevance_tiers": [tier for _, tier in labels],
        }
        for item in entry.targets:
            yield {
                "inputs": prompts.inputs,
                "teacher_inputs": prompts.teacher_inputs,
                "targets": sid_of(item),
                "item_id": item,
                **shared,
            }


def _task(task: str, inputs: str, targets: str, *, query: str = "", item_id: int = -1, **extra: Any) -> dict:
    return {"task": task, "inputs": inputs, "targets": targets, "query": query, "item_id": item_id, **extra}


def _stage1(
    split: str,
    inputs: _Inputs,
    *,
    tasks: Sequence[str],
    first_split: Mapping[str, str],
    query_sids: Mapping[str, str],
    query_keywords: Mapping[str, tuple[str, ...]],
    keyword_sids: Mapping[str, str] | None,
    sid_of: Any,
    not_written: Counter[str],
) -> Iterator[dict[str, Any]]:
    """Stage-1 records of one split, task by task (items in ``train`` only)."""
    queries = [q for q, sp in first_split.items() if sp == split]
    items = sorted(inputs.items.items()) if split == "train" else []
    for task in tasks:
        if task == "query_to_sid":
            for q in queries:
                yield _task(task, render_task_input(task, [(MARKER_QUERY, q)]), query_sids[q], query=q)
        elif task == "query_to_keywords":
            for q in queries:
                if query_keywords[q]:
                    target = KEYWORD_SEPARATOR.join(clean_text(k) for k in query_keywords[q])
                    yield _task(task, render_task_input(task, [(MARKER_QUERY, q)]), target, query=q)
                else:
                    not_written[f"{task}_no_keywords"] += 1
        elif task == "query_sid_to_keyword_sids":
            if keyword_sids is None:
                continue
            for q in queries:
                if query_keywords[q]:
                    target = SID_LIST_SEPARATOR.join(_distinct(keyword_sids[k] for k in query_keywords[q]))
                    yield _task(task, render_task_input(task, [(MARKER_QUERY_SID, query_sids[q])]), target, query=q)
                else:
                    not_written[f"{task}_no_keywords"] += 1
        elif task == "title_to_sid":
            for item_id, (_, item) in items:
                text = render_task_input(task, [(MARKER_TITLE, item.item_title)])
                yield _task(task, text, sid_of(item_id), item_id=item_id)
        elif task == "sid_to_title":
            for item_id, (_, item) in items:
                text = render_task_input(task, [(MARKER_ITEM_SID, sid_of(item_id))])
                yield _task(task, text, clean_text(item.item_title), item_id=item_id)
        elif task == "sid_to_category":
            for item_id, (_, item) in items:
                path = CategoryPath.of(item)
                names = [clean_text(n) for n in (path.level1, path.level2, path.level3) if n is not None]
                if not names:
                    not_written[f"{task}_no_category"] += 1
                    continue
                text = render_task_input(task, [(MARKER_ITEM_SID, sid_of(item_id))])
                yield _task(task, text, CATEGORY_SEPARATOR.join(names), item_id=item_id)


def _stage2(split: str, inputs: _Inputs, *, tasks: Sequence[str], sid_of: Any) -> Iterator[dict[str, Any]]:
    """Stage-2 co-occurrence records of the sessions of one split."""
    by_query: Counter[tuple[str, int]] = Counter()
    by_sid: Counter[tuple[str, int]] = Counter()
    for entry in inputs.sessions:
        if entry.record.split != split:
            continue
        for item in entry.targets:
            by_query[(entry.record.query, item)] += 1
            by_sid[(entry.query_sid, item)] += 1
    for task in tasks:
        if task == "query_to_item_sid":
            for (q, item), n in by_query.items():
                text = render_task_input(task, [(MARKER_QUERY, q)])
                yield _task(task, text, sid_of(item), query=q, item_id=item, count=n)
        elif task == "query_sid_to_item_sid":
            for (qsid, item), n in by_sid.items():
                text = render_task_input(task, [(MARKER_QUERY_SID, qsid)])
                yield _task(task, text, sid_of(item), item_id=item, count=n)


def _encode_keywords(sids_dir: Path, texts: Sequence[str], codebook: SidCodebook) -> dict[str, str]:
    from onesearch_jax.sid.encode import SidEncoder  # faiss and the embedder: only when needed

    codes = SidEncoder.load(sids_dir).encode(list(texts))
    return {t: codebook.tokens(c) for t, c in zip(texts, codes, strict=True)}


def _write(base: Path, features: Mapping[str, str], records: Iterable[Mapping[str, Any]], tfrecord: bool) -> int:
    with ExampleWriter(base, features, tfrecord=tfrecord) as writer:
        for record in records:
            writer.write(record)
    return writer.count


# ---------------------------------------------------------------------- the job
def build_examples(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    sids_dir: str | os.PathLike,
    keywords_path: str | os.PathLike,
    config: ExamplesConfig | None = None,
    skip_invalid: bool = False,
) -> ExamplesSummary:
    """Builds every stage's records (layout and rules in the module docstring).

    Args:
        data_dir: a KuaiSearch directory.
        out_dir: where the records, tables and manifest go (created; files replaced).
        sids_dir: the codebook directory (``onesearch build-sids``).
        keywords_path: the keyword repository (``onesearch keywords``), with session overrides.
        config: settings (default :class:`ExamplesConfig`).
        skip_invalid: count and skip invalid records instead of raising.

    Returns:
        The summary, also written as ``manifest.json``.

    Raises:
        RecordError: bad input (file, line and field named), unless ``skip_invalid``.
        FileNotFoundError: a required file is missing.
        ValueError: a repository without session overrides, or an unknown format.
    """
    config = config or ExamplesConfig()
    start = time.perf_counter()
    if config.write_tfrecord:
        import_tensorflow()
    tf_loaded = time.perf_counter()
    out, sids_dir = Path(out_dir), Path(sids_dir)
    dataset = KuaiSearchDataset(Path(data_dir))
    dataset.check_layout()
    codebook = SidCodebook.load(sids_dir)
    repository = KeywordRepository.load(keywords_path)
    if not repository.header.get("has_session_overrides", True):
        raise ValueError(
            f"{keywords_path}: built without leave-one-session-out overrides; training records need them "
            "(rebuild with `onesearch keywords`)"
        )
    segmenter = Segmenter(fields=tuple(repository.header.get("segment_fields", Segmenter().fields)))
    skips = _Skips(skip_invalid)
    sid_of = _Sids(codebook, str(sids_dir / "codebook.npz"))
    inputs = _load(dataset, codebook, sid_of, skips)
    loaded = time.perf_counter()

    warnings: list[str] = []
    train = [e.record for e in inputs.sessions if e.record.split == "train"]
    window_end = max((s.time_index for s in train), default=None)
    if repository.header.get("window_end") not in (None, window_end):
        warnings.append(
            f"{keywords_path}: repository window ends at time {repository.header.get('window_end')}, the data's "
            f"training window at {window_end}: was it built from this dataset?"
        )
    ctr = ctr_table(
        train, sid_of, prior_mean=config.ctr_prior_mean, prior_strength=config.ctr_prior_strength,
        counts_purchases=config.ctr_counts_purchases,
    )  # fmt: skip
    relevance = _relevance(inputs.relevance, inputs.items, sid_of)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # written last: no manifest, no complete output
    if not config.write_tfrecord:  # no stale TFRecords beside the new JSON lines
        for stale in out.glob("*/*.tfrecord"):
            if stale.parent.name in STAGES:
                stale.unlink()
    _write_tables(out, codebook, ctr, relevance)
    indexed = time.perf_counter()

    counts: dict[str, dict[str, int]] = {stage: {} for stage in STAGES}
    not_written: dict[str, Counter[str]] = {stage: Counter() for stage in STAGES}
    keyword_share: dict[str, float] = {}
    records = _personalized(
        inputs, config=config, repository=repository, segmenter=segmenter, sid_of=sid_of, ctr=ctr,
        relevance=relevance, not_written=not_written[PERSONALIZED],
    )  # fmt: skip
    with_keywords: Counter[str] = Counter()
    with contextlib.ExitStack() as stack:
        writers = {
            split: stack.enter_context(
                ExampleWriter(out / PERSONALIZED / split, FEATURES[PERSONALIZED], tfrecord=config.write_tfrecord)
            )
            for split in config.splits
        }
        for record in records:
            writers[record["split"]].write(record)
            with_keywords[record["split"]] += bool(record["keywords"])
    for split, w in writers.items():
        counts[PERSONALIZED][split] = w.count
        keyword_share[split] = round(with_keywords[split] / w.count, 4) if w.count else 0.0
    personalized_done = time.perf_counter()

    first_split = {}
    for e in inputs.sessions:
        first_split.setdefault(e.record.query, e.record.split)
    query_sids = {e.record.query: e.query_sid for e in inputs.sessions}
    k = config.max_keywords or None
    query_keywords = {q: tuple(kw.text for kw in repository.lookup(q, k=k)) for q in first_split}
    keyword_sids = None
    unavailable: dict[str, str] = {}
    if "query_sid_to_keyword_sids" in config.stage1_tasks:
        texts = sorted({t for kws in query_keywords.values() for t in kws})
        try:
            keyword_sids = _encode_keywords(sids_dir, texts, codebook)
        except (OSError, ValueError) as e:  # EmbeddingError is a ValueError
            unavailable["query_sid_to_keyword_sids"] = f"no SID encoder in {sids_dir}: {e}"
    task_counts = {STAGE1: Counter(dict.fromkeys(config.stage1_tasks, 0)),
                   STAGE2: Counter(dict.fromkeys(config.stage2_tasks, 0))}  # fmt: skip
    for split in SPLITS:
        stage1 = _stage1(
            split, inputs, tasks=config.stage1_tasks, first_split=first_split, query_sids=query_sids,
            query_keywords=query_keywords, keyword_sids=keyword_sids, sid_of=sid_of, not_written=not_written[STAGE1],
        )  # fmt: skip
        counts[STAGE1][split] = _write(out / STAGE1 / split, FEATURES[STAGE1],
                                       _counted(stage1, task_counts[STAGE1]), config.write_tfrecord)  # fmt: skip
    stage1_done = time.perf_counter()
    for split in SPLITS:
        stage2 = _counted(_stage2(split, inputs, tasks=config.stage2_tasks, sid_of=sid_of), task_counts[STAGE2])
        counts[STAGE2][split] = _write(out / STAGE2 / split, FEATURES[STAGE2], stage2, config.write_tfrecord)
    done = time.perf_counter()

    summary = ExamplesSummary(
        out_dir=out,
        counts=counts,
        task_counts={stage: dict(c) for stage, c in task_counts.items()},
        not_written={stage: dict(sorted(c.items())) for stage, c in not_written.items() if c},
        skipped=skips.counts(),
        first_errors=skips.first_errors(),
        unavailable=unavailable,
        warnings=warnings,
        ctr={
            "prior_mean": round(ctr.prior_mean, 6),
            "prior_strength": config.ctr_prior_strength,
            "alpha": round(ctr.alpha, 6),
            "beta": round(ctr.beta, 6),
            "train_sessions": len(train),
            "sids_impressed": len(ctr.impressions),
            "impressions": sum(ctr.impressions.values()),
            "clicks": sum(ctr.clicks.values()),
        },
        relevance=relevance.stats,
        keywords=keyword_share,
        seconds={
            "import_tensorflow": round(tf_loaded - start, 2),
            "load": round(loaded - tf_loaded, 2),
            "index": round(indexed - loaded, 2),
            "personalized": round(personalized_done - indexed, 2),
            "stage1": round(stage1_done - personalized_done, 2),
            "stage2": round(done - stage1_done, 2),
            "total": round(done - start, 2),
        },
    )
    _write_manifest(out, summary, config=config, inputs=inputs, sids_dir=sids_dir, codebook=codebook,
                    keywords_path=Path(keywords_path), repository=repository)  # fmt: skip
    return summary


def _counted(records: Iterable[dict[str, Any]], counter: Counter[str]) -> Iterator[dict[str, Any]]:
    for record in records:
        counter[record["task"]] += 1
        yield record


def _write_tables(out: Path, codebook: SidCodebook, ctr: CtrTable, relevance: _Relevance) -> None:
    # every impressed item has a SID of the codebook (checked on load): its distinct SIDs, in code order
    sids = [codebook.tokens(codes) for codes in np.unique(codebook.item_codes, axis=0)]
    _write_text(
        out / CTR_FILE,
        ["sid\timpressions\tclicks\tctr"]
        + [f"{s}\t{ctr.impressions.get(s, 0)}\t{ctr.clicks.get(s, 0)}\t{float32_value(ctr.ctr(s))}" for s in sids],
    )
    _write_text(
        out / RELEVANCE_FILE,
        ["query\tsid\ttier"]
        + [f"{q}\t{s}\t{t}" for q, labels in sorted(relevance.by_query.items()) for s, t in sorted(labels.items())],
    )


def _write_text(path: Path, lines: Sequence[str]) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(line + "\n" for line in lines)
    os.replace(partial, path)


def _write_manifest(
    out: Path,
    summary: ExamplesSummary,
    *,
    config: ExamplesConfig,
    inputs: _Inputs,
    sids_dir: Path,
    codebook: SidCodebook,
    keywords_path: Path,
    repository: KeywordRepository,
) -> None:
    exts = ((".tfrecord",) if config.write_tfrecord else ()) + (".jsonl",)
    files = {
        stage: {split: [f"{stage}/{split}{ext}" for ext in exts] for split in summary.counts[stage]} for stage in STAGES
    }
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "files": files,
        "tables": {"ctr": CTR_FILE, "relevance": RELEVANCE_FILE},
        "features": FEATURES,
        "sources": {
            **{name: path for name, path in inputs.paths.items() if Path(path).is_file()},
            "sids": str(sids_dir),
            "keywords": str(keywords_path),
            "sid_length": codebook.sid_length,
            "code_sizes": list(codebook.code_sizes),
            "keyword_repository_version": repository.version,
            "segment_fields": list(repository.header.get("segment_fields", Segmenter().fields)),
        },
        "config": dataclasses.asdict(config),
        **summary.to_json(),
    }
    _write_text(out / MANIFEST_FILE, [json.dumps(manifest, indent=2, ensure_ascii=False)])


def load_manifest(out_dir: str | os.PathLike) -> dict[str, Any]:
    """Reads ``manifest.json`` of a records directory (ValueError on another format or version)."""
    path = Path(out_dir) / MANIFEST_FILE
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("version") != MANIFEST_VERSION:
        raise ValueError(f"{path}: expected format {MANIFEST_FORMAT} version {MANIFEST_VERSION}")
    return manifest


def examples_sids_dir(out_dir: str | os.PathLike) -> Path:
    """The SID codebook directory the records of ``out_dir`` were built with (its manifest's
    ``sources.sids``).

    Raises:
        FileNotFoundError: no manifest, or no codebook where it points.
    """
    path = Path(out_dir) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run onesearch data build-examples")
    sids = Path(load_manifest(out_dir).get("sources", {}).get("sids", ""))
    if not (sids / "codebook.json").is_file():
        raise FileNotFoundError(f"{path}: sources.sids {str(sids)!r} holds no SID codebook (codebook.json)")
    return sids
