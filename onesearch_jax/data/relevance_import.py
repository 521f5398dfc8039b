"""Importer for query-product relevance tables, the shape most public product-search sets share.

A CSV (optionally the only member of a ``.zip``) with a query, a product title, optionally a
product id, and a graded relevance on any numeric scale becomes a KuaiSearch directory:

* ``items.jsonl``: one item per distinct product (keyed by id, or by title when there is none),
  ids 1.. in order of first appearance; brand, seller and categories unknown (id 0, ``UNKNOWN``);
* ``relevance.jsonl``: one pair per CSV row, the score mapped linearly onto tiers 0-3
  (``round(3 (v - lo) / (hi - lo))``);
* ``recall.jsonl``: one search session per query (in order of first appearance) that impressed
  every judged product and "clicked" those whose best tier is at least ``click_tier``;
* ``users.jsonl``: the single anonymous user (id 0) all those sessions belong to.

Every CSV row lands in the output or, with ``skip_invalid``, in the skip count: none is lost.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from onesearch_jax.data.kuaisearch import KuaiSearchWriter, SkipLog
from onesearch_jax.data.schema import SPLITS, Item, RecordError, RelevancePair, SearchSession, User

UNKNOWN = "UNKNOWN"


@dataclasses.dataclass(frozen=True, kw_only=True)
class RelevanceTableConfig:
    """How to read a relevance table.

    Attributes:
        query_column: column with the query text.
        title_column: column with the product title.
        id_column: column with a product id; None keys products by title.
        score_column: column with the graded relevance (any numeric scale).
        scale_min: lowest value of the scale; None reads it off the file (a first pass).
        scale_max: highest value of the scale; None reads it off the file.
        click_tier: tier (0-3) at or above which a judged product counts as clicked.
        valid_fraction: share of queries put in the valid split (stable hash of the query).
        test_fraction: share of queries put in the test split (stable hash of the query).
    """

    query_column: str = "query"
    title_column: str = "product_title"
    id_column: str | None = None
    score_column: str = "median_relevance"
    scale_min: float | None = None
    scale_max: float | None = None
    click_tier: int = 2
    valid_fraction: float = 0.0
    test_fraction: float = 0.0

    def __post_init__(self):
        if not 0 <= self.click_tier <= 3:
            raise ValueError(f"click_tier must be a tier in 0-3, got {self.click_tier}")
        if (self.scale_min is None) != (self.scale_max is None):
            raise ValueError("give both scale_min and scale_max, or neither to read them off the file")
        if self.scale_min is not None and not self.scale_min < self.scale_max:
            raise ValueError(f"scale_min ({self.scale_min}) must be below scale_max ({self.scale_max})")
        for name in ("valid_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.valid_fraction + self.test_fraction > 1.0:
            raise ValueError("valid_fraction + test_fraction must not exceed 1")


@dataclasses.dataclass(frozen=True)
class ImportSummary:
    """What an import wrote and what it skipped."""

    rows: int
    items: int
    sessions: int
    scale: tuple[float, float]
    tiers: dict[int, int]
    skipped: SkipLog


@contextmanager
def _open_table(path: Path) -> Iterator[TextIO]:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as z:
            members = [m for m in z.namelist() if not m.endswith("/")]
            if len(members) != 1:
                raise ValueError(f"{path}: expected one CSV inside the zip, found {members}")
            with z.open(members[0]) as raw:
                yield io.TextIOWrapper(raw, encoding="utf-8", newline="")
    else:
        with open(path, encoding="utf-8", newline="") as f:
            yield f


def _rows(path: Path, cfg: RelevanceTableConfig) -> Iterator[tuple[int, dict[str, str] | RecordError]]:
    """Yields (line, row) with the columns checked; undecodable rows come back as errors."""
    csv.field_size_limit(sys.maxsize)
    name = os.fspath(path)
    with _open_table(path) as f:
        reader = csv.DictReader(f)
        try:
            header = reader.fieldnames or []
        except UnicodeDecodeError as e:
            raise RecordError(
                path=name, line=1, field=None, kind="utf8", reason=f"invalid UTF-8 in header: {e.reason}"
            ) from None
        wanted = [cfg.query_column, cfg.title_column, cfg.score_column] + ([cfg.id_column] if cfg.id_column else [])
        for column in wanted:
            if column not in header:
                raise RecordError(
                    path=name, line=1, field=column, kind="missing_field", reason=f"no such column; header has {header}"
                )
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as e:
                yield (
                    reader.line_num + 1,
                    RecordError(
                        path=name,
                        line=reader.line_num + 1,
                        field=None,
                        kind="utf8",
                        reason=f"invalid UTF-8: {e.reason}",
                    ),
                )
                return  # the decoder cannot resynchronise; everything after this line is unread
            if None in row or any(v is None for v in row.values()):
                yield reader.line_num, RecordError(
                    path=name, line=reader.line_num, field=None, kind="columns",
                    reason=f"row has {len(row) - (None in row) + len(row.get(None) or [])} cells, "
                    f"header has {len(header)}",
                )  # fmt: skip
                continue
            yield reader.line_num, row


def _score(row: dict[str, str], cfg: RelevanceTableConfig, path: str, line: int) -> float:
    text = row[cfg.score_column].strip()
    try:
        value = float(text)
    except ValueError:
        raise RecordError(
            path=path, line=line, field=cfg.score_column, kind="type", reason=f"not a number: {text!r}"
        ) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise RecordError(path=path, line=line, field=cfg.score_column, kind="value", reason=f"not finite: {text!r}")
    return value


def _checked(row: dict[str, str], cfg: RelevanceTableConfig, path: str, line: int) -> tuple[str, str, str, float]:
    query = row[cfg.query_column].strip()
    title = row[cfg.title_column].strip()
    if not query:
        raise RecordError(path=path, line=line, field=cfg.query_column, kind="empty_query", reason="empty or blank")
    if not title:
        raise RecordError(path=path, line=line, field=cfg.title_column, kind="value", reason="empty or blank")
    key = row[cfg.id_column].strip() if cfg.id_column else title
    if cfg.id_column and not key:
        raise RecordError(path=path, line=line, field=cfg.id_column, kind="value", reason="empty or blank")
    return query, title, key, _score(row, cfg, path, line)


def _tier(value: float, lo: float, hi: float) -> int:
    """``round(3 (value - lo) / (hi - lo))``, 0 for a single-grade scale (``hi == lo``).

    Computed on halves, so that a scale as wide as the float range (``hi - lo`` overflowing to
    inf) still maps its rows to tiers instead of dividing inf by inf.
    """
    if hi <= lo:
        return 0
    return min(3, max(0, round(3 * ((value / 2 - lo / 2) / (hi / 2 - lo / 2)))))


def _split(query: str, cfg: RelevanceTableConfig) -> str:
    h = int.from_bytes(hashlib.sha256(query.encode("utf-8")).digest()[:8], "big") / 2**64
    if h < cfg.test_fraction:
        return SPLITS[2]
    return SPLITS[1] if h < cfg.test_fraction + cfg.valid_fraction else SPLITS[0]


def import_relevance_table(
    path: str | Path,
    out_dir: str | Path,
    cfg: RelevanceTableConfig = RelevanceTableConfig(),
    *,
    skip_invalid: bool = False,
) -> ImportSummary:
    """Converts a relevance CSV into a KuaiSearch directory (see the module docstring).

    Raises:
        RecordError: on the first bad row (file, line, column) unless ``skip_invalid``, and
            always for a missing column or a score outside a given scale.
    """
    path = Path(path)
    name = os.fspath(path)
    skipped = SkipLog()

    def good_rows(log: SkipLog) -> Iterator[tuple[int, tuple[str, str, str, float]]]:
        for line, row in _rows(path, cfg):
            try:
                if isinstance(row, RecordError):
                    raise row
                yield line, _checked(row, cfg, name, line)
            except RecordError as e:
                if not skip_invalid:
                    raise
                log.add(e)

    lo, hi = cfg.scale_min, cfg.scale_max
    if lo is None:
        # First pass for the scale; its skips are counted again, once, by the writing pass.
        values = [v for _, (_, _, _, v) in good_rows(SkipLog())]
        if not values:
            raise RecordError(
                path=name, line=1, field=cfg.score_column, kind="value", reason="no valid rows to read the scale from"
            )
        lo, hi = min(values), max(values)  # lo == hi: a single grade, every row gets tier 0
    item_ids: dict[str, int] = {}
    sessions: dict[str, list[int]] = {}
    best: dict[tuple[str, int], int] = {}
    tiers = dict.fromkeys(range(4), 0)
    rows = 0
    out = Path(out_dir)
    with KuaiSearchWriter(out) as writer:
        writer.open("recall")
        for line, (query, title, key, value) in good_rows(skipped):
            if not lo <= value <= hi:
                raise RecordError(path=name, line=line, field=cfg.score_column, kind="value",
                                  reason=f"{value} outside the scale [{lo}, {hi}]")  # fmt: skip
            tier = _tier(value, lo, hi)
            if key not in item_ids:
                item_ids[key] = len(item_ids) + 1
                writer.write(_unknown_item(item_ids[key], title))
            item = item_ids[key]
            impressed = sessions.setdefault(query, [])
            if (query, item) not in best:
                impressed.append(item)
            best[(query, item)] = max(tier, best.get((query, item), 0))
            writer.write(
                RelevancePair(
                    query=query, item_title=title, brand=UNKNOWN, seller_name=UNKNOWN, attr_value="", score=tier
                )
            )
            tiers[tier] += 1
            rows += 1
        for index, (query, impressed) in enumerate(sessions.items(), start=1):
            writer.write(
                SearchSession(
                    user_id=0,
                    session_id=index,
                    impressed_item_ids=tuple(impressed),
                    clicked_item_ids=tuple(i for i in impressed if best[(query, i)] >= cfg.click_tier),
                    purchased_item_ids=(),
                    time_index=index,
                    query=query,
                    split=_split(query, cfg),
                )
            )
        writer.write(
            User(
                user_id=0,
                gender=UNKNOWN,
                age_bucket=UNKNOWN,
                fre_country=UNKNOWN,
                fre_province=UNKNOWN,
                fre_city=UNKNOWN,
            )
        )
    return ImportSummary(
        rows=rows, items=len(item_ids), sessions=len(sessions), scale=(lo, hi), tiers=tiers, skipped=skipped
    )


def _unknown_item(item_id: int, title: str) -> Item:
    return Item(
        item_id=item_id, item_title=title, brand_id=0, brand_name=UNKNOWN, seller_id=0, seller_name=UNKNOWN,
        category_level1_id=0, category_level1_name=UNKNOWN, category_level2_id=0, category_level2_name=UNKNOWN,
        category_level3_id=0, category_level3_name=UNKNOWN,
    )  # fmt: skip
