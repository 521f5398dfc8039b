"""The ``onesearch keywords`` job: build or refresh the keyword repository and report on it.

Reads a KuaiSearch directory (or a synthetic world directory holding ``kuaisearch/``,
``lexicon/`` and ``truth/``), runs :class:`~.pipeline.QueryUnderstanding` over the training
window, and writes the versioned repository (:mod:`.repository`):

* without ``refresh_from``: version 1, the training window's queries, with the coverage of the
  ``target_split`` sessions (traffic the window has not seen) it reaches;
* with ``refresh_from``: the old repository plus entries for the queries of ``refresh_splits``
  it lacks (an incremental refresh), with the coverage before and after.

When the directory is a world with ``truth/``, the report adds keyword quality against the hidden
truth (:mod:`.evaluate`) on the target sessions, for the keywords of the query for everyone, of
the user's segment, and calibrated to the user's history.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from onesearch_jax.data.kuaisearch import KuaiSearchDataset, SkipLog
from onesearch_jax.data.schema import SPLITS
from onesearch_jax.understanding.evaluate import (
    Request,
    canonical_entities,
    evaluate,
    load_query_truth,
    load_user_truth,
)
from onesearch_jax.understanding.external import ExternalKeywords
from onesearch_jax.understanding.lexicon import AttributeLexicon
from onesearch_jax.understanding.logs import TrainingLogs
from onesearch_jax.understanding.ontology import Ontology
from onesearch_jax.understanding.pipeline import QueryUnderstanding, UnderstandingConfig
from onesearch_jax.understanding.repository import KeywordRepository, build_repository, refresh_repository

EVAL_MODES: tuple[str, ...] = ("query", "segment", "user")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class KeywordJobConfig:
    """What the job builds and measures.

    Attributes:
        refresh_splits: splits whose queries a refresh adds (traffic after the window).
        target_split: the split whose sessions coverage and quality are measured on.
        evaluate: compare with the world's hidden truth when ``truth/`` is there.
    """

    refresh_splits: tuple[str, ...] = ("valid", "test")
    target_split: str = "test"
    evaluate: bool = True

    def __post_init__(self):
        object.__setattr__(self, "refresh_splits", tuple(self.refresh_splits))
        for split in (*self.refresh_splits, self.target_split):
            if split not in SPLITS:
                raise ValueError(f"KeywordJobConfig: unknown split {split!r}; known: {SPLITS}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class KeywordJobReport:
    """Everything the job did and measured (``to_json`` for ``--report_json``)."""

    output: Path
    inputs: dict[str, str | None]
    window: dict[str, Any]
    build: dict[str, Any]
    repository: dict[str, Any]
    quality: dict[str, dict[str, Any]]
    seconds: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "inputs": self.inputs,
            "window": self.window,
            "build": self.build,
            "repository": self.repository,
            "quality": self.quality,
            "seconds": self.seconds,
        }

    def format(self) -> str:
        b, w, r = self.build, self.window, self.repository
        before, after = b["coverage_before"], b["coverage_after"]
        lines = [
            f"training window: {w['sessions']} sessions up to time {w['window_end']} "
            f"({w['later_sessions']} later sessions not used)"
            + (f"; {w['missing_item_refs']} item ids not in items.jsonl ignored" if w["missing_item_refs"] else ""),
            f"repository v{b['version']}: {r['queries']} queries ({r['query_coverage']:.1%} with keywords), "
            f"{r['segment_entries']} segment entries, {r['session_overrides']} leave-one-session-out overrides, "
            f"{b['added_queries']} queries added",
            f"coverage of {after['requests']} {w['target_split']} sessions: {before['fraction']:.1%} before -> "
            f"{after['fraction']:.1%} after",
        ]
        if self.quality:
            split = self.window["target_split"]
            lines.append(f"keyword quality against the world's hidden truth ({split} sessions):")
            header = f"  {'mode':8} {'kind':11} {'requests':>8} {'coverage':>8} {'precision':>9} {'recall':>7}"
            lines.append(header + f" {'pref.hit':>8} {'cat.acc':>7}")
            for mode, by_kind in self.quality.items():
                for kind, m in by_kind.items():
                    lines.append(
                        f"  {mode:8} {kind:11} {m['requests']:>8} {_pct(m['coverage']):>8} "
                        f"{_pct(m['entity_precision']):>9} {_pct(m['entity_recall']):>7} "
                        f"{_pct(m['preference_hit_rate']):>8} {_pct(m['category_accuracy']):>7}"
                    )
        s = self.seconds
        lines.append(f"wrote {self.output} in {s['total']:.1f} s (load {s['load']:.1f}, build {s['build']:.1f})")
        return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def resolve_inputs(
    data_dir: str | os.PathLike,
    *,
    lexicon: str | os.PathLike | None = None,
    ontology: str | os.PathLike | None = None,
) -> dict[str, Path | None]:
    """The KuaiSearch directory, lexicon, ontology and truth directory of ``data_dir``: a world
    directory gives its own ``lexicon/`` files unless others are named."""
    root = Path(data_dir)
    world = (root / "kuaisearch").is_dir()
    kuaisearch = root / "kuaisearch" if world else root

    def default(given, *parts: str) -> Path | None:
        if given is not None:
            return Path(given)
        path = root.joinpath(*parts)
        return path if world and path.is_file() else None

    truth = root / "truth"
    return {
        "kuaisearch": kuaisearch,
        "lexicon": default(lexicon, "lexicon", "attributes.tsv"),
        "ontology": default(ontology, "lexicon", "ontology.jsonl"),
        "truth": truth if world and (truth / "queries.jsonl").is_file() else None,
    }


def run_keywords_job(
    data_dir: str | os.PathLike,
    output: str | os.PathLike,
    *,
    lexicon: str | os.PathLike | None = None,
    ontology: str | os.PathLike | None = None,
    external: str | os.PathLike | None = None,
    refresh_from: str | os.PathLike | None = None,
    config: UnderstandingConfig | None = None,
    job: KeywordJobConfig | None = None,
    skip_invalid: bool = False,
) -> KeywordJobReport:
    """Builds (or refreshes) the keyword repository of ``data_dir`` into ``output``.

    Raises:
        RecordError: for bad input (file, line and field named), unless ``skip_invalid`` applies.
        FileNotFoundError: for a missing input.
    """
    job = job or KeywordJobConfig()
    start = time.perf_counter()
    paths = resolve_inputs(data_dir, lexicon=lexicon, ontology=ontology)
    dataset = KuaiSearchDataset(paths["kuaisearch"])
    dataset.check_layout()
    skipped = SkipLog()
    kwargs = {"skip_invalid": skip_invalid, "skipped": skipped}
    sessions = list(dataset.read("recall", **kwargs))
    logs = TrainingLogs(
        items=dataset.read("items", **kwargs),
        users=dataset.read("users", **kwargs),
        sessions=sessions,
        rank_rows=dataset.read("rank", **kwargs) if dataset.has("rank") else (),
    )
    lex = AttributeLexicon.from_tsv(paths["lexicon"]) if paths["lexicon"] is not None else None
    onto = Ontology.from_jsonl(paths["ontology"]) if paths["ontology"] is not None else None
    ext = ExternalKeywords.from_jsonl(external) if external is not None else None
    understanding = QueryUnderstanding(logs, lexicon=lex, ontology=onto, external=ext, config=config)
    loaded = time.perf_counter()
    targets = [s for s in sessions if s.split == job.target_split]
    target_queries = [s.query for s in targets]
    if refresh_from is not None:
        old = KeywordRepository.load(refresh_from)
        new_queries = [s.query for s in sessions if s.split in job.refresh_splits]
        repo, report = refresh_repository(old, understanding, new_queries, targets=target_queries)
    else:
        sources = {name: (str(p) if p is not None else None) for name, p in paths.items() if name != "truth"}
        sources["external"] = str(external) if external is not None else None
        repo, report = build_repository(understanding, targets=target_queries, sources=sources)
    built = time.perf_counter()
    repo.save(output)
    quality: dict[str, dict[str, Any]] = {}
    if job.evaluate and paths["truth"] is not None:
        quality = _quality(understanding, repo, targets, paths["truth"], onto)
    done = time.perf_counter()
    return KeywordJobReport(
        output=Path(output),
        inputs={
            **{k: (str(v) if v is not None else None) for k, v in paths.items()},
            "external": str(external) if external is not None else None,
            "refresh_from": str(refresh_from) if refresh_from is not None else None,
            "skipped": skipped.summary(),
        },
        window={
            "sessions": len(logs.sessions),
            "window_end": logs.window_end,
            "later_sessions": logs.excluded_sessions,
            "missing_item_refs": logs.missing_item_refs,
            "target_split": job.target_split,
        },
        build=report.to_json(),
        repository=repo.stats(),
        quality=quality,
        seconds={
            "load": round(loaded - start, 2),
            "build": round(built - loaded, 2),
            "evaluate": round(done - built, 2),
            "total": round(done - start, 2),
        },
    )


def _quality(understanding: QueryUnderstanding, repo: KeywordRepository, targets, truth_dir: Path, ontology):
    queries = load_query_truth(truth_dir / "queries.jsonl")
    users = load_user_truth(truth_dir / "users.jsonl") if (truth_dir / "users.jsonl").is_file() else None
    canonical = canonical_entities(ontology)
    logs = understanding.logs
    out = {}
    for mode in EVAL_MODES:
        requests = []
        for s in targets:
            user = logs.users.get(s.user_id)
            segment = understanding.profiles.segment_of(s.user_id)
            if mode == "query":
                keywords = repo.lookup(s.query, session_id=s.session_id)
            elif mode == "segment":
                keywords = repo.lookup(s.query, segment=segment, session_id=s.session_id)
            else:
                pool = repo.lookup(s.query, segment=segment, session_id=s.session_id, k=0)
                keywords = tuple(
                    understanding.personalise(pool, user_id=s.user_id, before=s.time_index, exclude=s.session_id)
                )
            top = None
            if mode != "query":
                request = understanding.request(s.query, segment=segment, exclude=s.session_id)
                top = request.categories.top(1)
            requests.append(
                Request(
                    query=s.query,
                    gender=user.gender if user is not None else None,
                    user_id=s.user_id,
                    keywords=keywords,
                    top_category=top,
                )
            )
        out[mode] = evaluate(requests, queries, users=users, canonical=canonical)
    return out


def write_report_json(report: KeywordJobReport, path: str | os.PathLike) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report.to_json(), f, indent=2, ensure_ascii=False)
        f.write("\n")
