"""Validation of a whole KuaiSearch directory: records, ids across files, and a report.

Every problem becomes a :class:`RecordError` naming file, line and field. Per-record problems
(schema, types, values, empty queries, invalid UTF-8, clicks on items never shown) come from the
reader; this module adds what needs more than one line: duplicate ids and ids that point nowhere.
In ``skip_invalid`` mode invalid records are counted as skipped and the references of the
remaining records are checked against what remains, exactly what a skipping reader would see.
"""

from __future__ import annotations

import array
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from onesearch_jax.data.kuaisearch import OPTIONAL_FILES, KuaiSearchDataset, SkipLog
from onesearch_jax.data.schema import RECORD_TYPES, RecordError
from onesearch_jax.data.stats import DatasetStats

# Fields that reference another file: (file, field) -> the file whose ids they must be in.
_REFERENCES: dict[str, tuple[tuple[str, str], ...]] = {
    "recall": (
        ("user_id", "users"),
        ("impressed_item_ids", "items"),
        ("clicked_item_ids", "items"),
        ("purchased_item_ids", "items"),
    ),
    "rank": (
        ("user_id", "users"),
        ("session_id", "recall"),
        ("target_item_id", "items"),
        ("recently_clicked_item_ids", "items"),
        ("recently_purchased_item_ids", "items"),
    ),
}
_KEYS = {"items": "item_id", "users": "user_id", "recall": "session_id"}


@dataclasses.dataclass
class FileReport:
    """What validation found in one file."""

    lines: int = 0
    valid: int = 0
    problems: SkipLog = dataclasses.field(default_factory=SkipLog)


@dataclasses.dataclass
class ValidationReport:
    """The outcome of :func:`validate_dataset`."""

    root: Path
    skip_invalid: bool
    check_references: bool
    files: dict[str, FileReport]
    stats: dict[str, Any]

    @property
    def problem_count(self) -> int:
        return sum(f.problems.count for f in self.files.values())

    @property
    def ok(self) -> bool:
        """True when nothing was wrong, or when everything wrong was skipped on request."""
        return self.problem_count == 0 or self.skip_invalid

    def by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.files.values():
            for kind, n in f.problems.by_kind.items():
                out[kind] = out.get(kind, 0) + n
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "ok": self.ok,
            "skip_invalid": self.skip_invalid,
            "problems": self.problem_count,
            "problems_by_kind": self.by_kind(),
            "files": {
                n: {"lines": f.lines, "valid": f.valid, "invalid": f.problems.count} for n, f in self.files.items()
            },
            "first_problems": [str(e) for f in self.files.values() for e in f.problems.errors],
            "stats": self.stats,
        }

    def format(self, max_messages: int = 20) -> str:
        """A human-readable report: per-file counts, problems by kind, the first messages."""
        out = [f"KuaiSearch dataset {self.root}"]
        out.append(f"  {'file':<16}{'lines':>10}{'valid':>10}{'invalid':>10}")
        for name, f in self.files.items():
            file_name = RECORD_TYPES[name].FILE
            out.append(f"  {file_name:<16}{f.lines:>10}{f.valid:>10}{f.problems.count:>10}")
        if self.problem_count:
            kinds = ", ".join(f"{k}={v}" for k, v in self.by_kind().items())
            out.append(f"problems by kind: {kinds}")
            shown = [e for f in self.files.values() for e in f.problems.errors][:max_messages]
            out.append(f"first {len(shown)} of {self.problem_count} problems:")
            out.extend(f"  {e}" for e in shown)
        if not self.problem_count:
            out.append("result: VALID")
        elif self.skip_invalid:
            out.append(f"result: VALID after skipping {self.problem_count} invalid records")
        else:
            out.append(f"result: INVALID ({self.problem_count} problems; --skip_invalid to skip them)")
        return "\n".join(out)


def validate_dataset(
    root: str | Path, *, skip_invalid: bool = False, check_references: bool = True
) -> ValidationReport:
    """Reads every file of a KuaiSearch directory once and checks it.

    Args:
        root: the dataset directory.
        skip_invalid: count invalid records as skipped instead of failing the dataset.
        check_references: check that ids used in sessions and rank rows exist in items/users/
            recall (off for samples whose files do not join, such as the public demo).

    Returns:
        The report, with statistics over the valid records.

    Raises:
        FileNotFoundError: when the directory or one of its required files is missing.
    """
    dataset = KuaiSearchDataset(Path(root))
    dataset.check_layout()
    stats = DatasetStats()
    files: dict[str, FileReport] = {}
    known: dict[str, np.ndarray] = {}
    for name in RECORD_TYPES:
        if name in OPTIONAL_FILES and not dataset.has(name):
            continue
        report = FileReport()
        files[name] = report
        path = str(dataset.path(name))
        keys, key_lines = array.array("q"), array.array("q")
        for line, record in dataset.read_numbered(name, skip_invalid=True, skipped=report.problems):
            report.valid += 1
            error = _dangling(record, name, known, path, line) if check_references else None
            if error is not None:
                report.problems.add(error)
                report.valid -= 1
                continue
            if name in _KEYS:
                keys.append(getattr(record, _KEYS[name]))
                key_lines.append(line)
            stats.add(record)
        if name in _KEYS:
            _report_duplicates(keys, key_lines, name, path, report)
            known[name] = np.unique(np.frombuffer(keys, dtype=np.int64))
        report.lines = report.valid + report.problems.count
    return ValidationReport(
        root=Path(root),
        skip_invalid=skip_invalid,
        check_references=check_references,
        files=files,
        stats=stats.summary(),
    )


def _dangling(record: Any, name: str, known: dict[str, np.ndarray], path: str, line: int) -> RecordError | None:
    for field, target in _REFERENCES.get(name, ()):
        value = getattr(record, field)
        ids = np.asarray(value if isinstance(value, tuple) else (value,), dtype=np.int64)
        missing = ids[~np.isin(ids, known[target])]
        if missing.size:
            target_file = RECORD_TYPES[target].FILE
            what = f"id {missing[0]}" if ids.size == 1 else f"{missing.size} of {ids.size} ids (first {missing[0]})"
            return RecordError(
                path=path, line=line, field=field, kind="dangling_id", reason=f"{what} not in {target_file}"
            )
    return None


def _report_duplicates(keys: array.array, lines: array.array, name: str, path: str, report: FileReport) -> None:
    """Reports every repeat of an id after its first occurrence as an invalid record."""
    ids = np.frombuffer(keys, dtype=np.int64)
    line_numbers = np.frombuffer(lines, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    repeat = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1]) + 1
    if not repeat.size:
        return
    first_of_run = np.maximum.accumulate(
        np.where(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]], np.arange(ids.size), 0)
    )
    for pos in repeat:
        line = int(line_numbers[order[pos]])
        first = int(line_numbers[order[first_of_run[pos]]])
        report.problems.add(
            RecordError(
                path=path,
                line=line,
                field=_KEYS[name],
                kind="duplicate_id",
                reason=f"duplicate id {sorted_ids[pos]} (first at line {first})",
            )
        )
        report.valid -= 1
