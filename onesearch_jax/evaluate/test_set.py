"""The queries an evaluation ranks items for: one per search session of a records split.

A personalised record (``onesearch data build-examples``) is one (session, clicked item) pair; the
records of a session share its input. The evaluation keeps one query per session (its first
record, in file order) and takes the ground truth from the session itself, in the KuaiSearch
``recall.jsonl`` the records were built from: R_click = the session's clicked items, R_order =
its purchased items (item ids, so a SID that stands for several items is judged by its items).
Segments (:mod:`onesearch_jax.evaluate.segments`) are learned from the train sessions of the same
file, and the query type from a generated world's ``truth/sessions.jsonl`` when it is there.

Nothing is dropped silently: a record whose session is not in ``recall.jsonl``, or whose target
SID is not its item's SID in the codebook (records built with another codebook), is an error
naming the file, line and field.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onesearch_jax.data.example_io import FEATURES, PERSONALIZED, read_numbered_examples
from onesearch_jax.data.kuaisearch import KuaiSearchDataset, decode_json_line
from onesearch_jax.data.schema import RecordError, SearchSession
from onesearch_jax.evaluate.segments import SegmentConfig, SegmentTables, session_segments
from onesearch_jax.sid.codebook import SidCodebook

MANIFEST = "manifest.json"
TRUTH_SESSIONS = Path("truth") / "sessions.jsonl"


@dataclasses.dataclass(frozen=True)
class EvalQuery:
    """One test session as the evaluation sees it.

    Attributes:
        session_id: the session.
        user_id: its user.
        query: the query as typed.
        text: the model input (the record's ``inputs`` or ``teacher_inputs``).
        keywords: the record's keyword chain of thought (what ``teacher_inputs`` adds).
        target_sid: the first record's target SID tokens (a clicked item's SID).
        clicked: the session's clicked item ids (R_click).
        ordered: the session's purchased item ids (R_order).
        segments: family -> label (:data:`~onesearch_jax.evaluate.segments.SEGMENTS`).
        where: ``file:line`` of the session's first record.
    """

    session_id: int
    user_id: int
    query: str
    text: str
    keywords: tuple[str, ...]
    target_sid: str
    clicked: tuple[int, ...]
    ordered: tuple[int, ...]
    segments: Mapping[str, str]
    where: str


@dataclasses.dataclass(frozen=True)
class EvalSources:
    """Where an evaluation reads from.

    Attributes:
        records: the personalised records file (``.jsonl``) of the split.
        sids_dir: the SID codebook directory.
        data_dir: the KuaiSearch directory (``recall.jsonl``, ``items.jsonl``).
        truth_sessions: a generated world's ``truth/sessions.jsonl`` (query kinds), or None.
    """

    records: Path
    sids_dir: Path
    data_dir: Path
    truth_sessions: Path | None


def resolve_sources(examples_dir: str | os.PathLike, split: str, *, sids_dir: str | None,
                    data_dir: str | None) -> EvalSources:  # fmt: skip
    """The records file of ``split`` and, unless given, the codebook and logs the manifest names.

    Raises:
        FileNotFoundError: a missing records file, manifest (when a default is needed), codebook
            or KuaiSearch directory; the message says which setting to pass instead.
    """
    examples = Path(examples_dir)
    records = examples / PERSONALIZED / f"{split}.jsonl"
    if not records.is_file():
        raise FileNotFoundError(f"{records}: no personalised {split} records (run onesearch data build-examples)")
    sources: Mapping[str, Any] = {}
    if sids_dir is None or data_dir is None:
        manifest = examples / MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest} is missing: set EvalConfig.sids_dir and EvalConfig.data_dir")
        with open(manifest, encoding="utf-8") as f:
            sources = json.load(f).get("sources", {})
    sids = Path(sids_dir or sources.get("sids", ""))
    if not (sids / "codebook.json").is_file():
        raise FileNotFoundError(f"{sids}: no SID codebook (codebook.json); set EvalConfig.sids_dir")
    data = Path(data_dir) if data_dir else Path(sources.get("recall", "")).parent
    if (data / "kuaisearch").is_dir():  # a world directory
        data = data / "kuaisearch"
    if not (data / SearchSession.FILE).is_file():
        raise FileNotFoundError(f"{data}: no {SearchSession.FILE} (the records' sessions); set EvalConfig.data_dir")
    truth = data.parent / TRUTH_SESSIONS
    return EvalSources(records=records, sids_dir=sids, data_dir=data, truth_sessions=truth if truth.is_file() else None)


def read_query_kinds(path: Path | None) -> dict[int, str]:
    """session id -> the generator's query kind, from a world's ``truth/sessions.jsonl`` (empty without one).

    Raises:
        RecordError: a line that is not an object with an int ``session_id`` and a string ``query_kind``.
    """
    if path is None:
        return {}
    out: dict[int, str] = {}
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            row = decode_json_line(raw, path=str(path), line=number)
            for field, kind in (("session_id", int), ("query_kind", str)):
                if not isinstance(row, dict) or not isinstance(row.get(field), kind) or isinstance(row[field], bool):
                    raise RecordError(path=str(path), line=number, field=field, kind="type",
                                      reason=f"expected {kind.__name__}")  # fmt: skip
            out[row["session_id"]] = row["query_kind"]
    return out


def load_eval_queries(
    sources: EvalSources,
    codebook: SidCodebook,
    *,
    input_field: str,
    segment_config: SegmentConfig,
    max_queries: int | None = None,
) -> list[EvalQuery]:
    """One :class:`EvalQuery` per session of the records, in file order of first appearance.

    Raises:
        RecordError: a malformed record, a record whose target is not its item's SID in
            ``codebook``, or whose session is missing from ``recall.jsonl`` or has another user.
        ValueError: the split has no records (an empty test split cannot be evaluated).
    """
    sessions = {s.session_id: s for s in KuaiSearchDataset(sources.data_dir).read("recall")}
    tables = SegmentTables.from_sessions(sessions.values(), segment_config)
    kinds = read_query_kinds(sources.truth_sessions)
    path = str(sources.records)
    out: dict[int, EvalQuery] = {}
    line = 0
    for line, record in read_numbered_examples(sources.records, features=FEATURES[PERSONALIZED]):
        expected = _item_sid_tokens(codebook, record["item_id"], path=path, line=line)
        if record["targets"] != expected:
            raise RecordError(
                path=path, line=line, field="targets", kind="codebook_mismatch",
                reason=f"item {record['item_id']} has SID {expected} in the codebook {sources.sids_dir} but "
                f"{record['targets']} in the record: the records were built with another codebook",
            )  # fmt: skip
        session_id = record["session_id"]
        if session_id in out:
            continue
        session = sessions.get(session_id)
        if session is None or session.user_id != record["user_id"]:
            what = "is not in" if session is None else f"has user {session.user_id} in"
            where = sources.data_dir / SearchSession.FILE
            raise RecordError(path=path, line=line, field="session_id", kind="unknown_session",
                              reason=f"session {session_id} {what} {where}")  # fmt: skip
        out[session_id] = EvalQuery(
            session_id=session_id, user_id=record["user_id"], query=record["query"], text=record[input_field],
            keywords=tuple(record["keywords"]), target_sid=record["targets"], clicked=tuple(session.clicked_item_ids),
            ordered=tuple(session.purchased_item_ids),
            segments=session_segments(session, tables, kinds.get(session_id)), where=f"{path}:{line}",
        )  # fmt: skip
        if max_queries is not None and len(out) == max_queries:
            break
    if not out:
        raise ValueError(f"{path}: the split has no records ({line} lines): nothing to evaluate")
    return list(out.values())


def _item_sid_tokens(codebook: SidCodebook, item_id: int, *, path: str, line: int) -> str:
    try:
        return codebook.tokens(codebook.item_sid(item_id))
    except KeyError:
        raise RecordError(path=path, line=line, field="item_id", kind="codebook_mismatch",
                          reason=f"item {item_id} has no SID in the codebook: the records were built with "
                          f"another codebook") from None  # fmt: skip
