"""Streaming reader and writer for the KuaiSearch JSON-lines layout.

A dataset is a directory holding ``items.jsonl``, ``users.jsonl`` and ``recall.jsonl`` (required)
and ``rank.jsonl`` and ``relevance.jsonl`` (optional), one JSON object per line, UTF-8. Readers
yield one record at a time, so memory does not grow with the file. Writers put each file in place
atomically on a clean close, so an interrupted write never leaves a file that looks complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from onesearch_jax.data.schema import RECORD_TYPES, RecordError, from_json, to_json_dict

R = TypeVar("R")
REQUIRED_FILES: tuple[str, ...] = ("items", "users", "recall")
OPTIONAL_FILES: tuple[str, ...] = ("rank", "relevance")
MAX_KEPT_ERRORS = 100


@dataclasses.dataclass
class SkipLog:
    """Counts records skipped in ``skip_invalid`` mode and keeps the first messages.

    Attributes:
        count: number of skipped lines, exact.
        by_kind: skipped lines per error kind.
        errors: the first ``MAX_KEPT_ERRORS`` errors, in reading order.
    """

    count: int = 0
    by_kind: dict[str, int] = dataclasses.field(default_factory=dict)
    errors: list[RecordError] = dataclasses.field(default_factory=list)

    def add(self, error: RecordError) -> None:
        self.count += 1
        self.by_kind[error.kind] = self.by_kind.get(error.kind, 0) + 1
        if len(self.errors) < MAX_KEPT_ERRORS:
            self.errors.append(error)

    def summary(self) -> str:
        kinds = ", ".join(f"{k}={v}" for k, v in sorted(self.by_kind.items()))
        return f"skipped {self.count} invalid lines ({kinds})" if self.count else "skipped 0 lines"


def decode_json_line(raw: bytes, *, path: str, line: int) -> Any:
    """Decodes one raw JSON-lines line (UTF-8, then JSON) into its Python value.

    Raises:
        RecordError: kind ``utf8`` or ``json``, naming ``path`` and ``line``.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecordError(
            path=path, line=line, field=None, kind="utf8", reason=f"invalid UTF-8 at byte {e.start}"
        ) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise RecordError(
            path=path, line=line, field=None, kind="json", reason=f"invalid JSON: {e.msg} at column {e.colno}"
        ) from None
    return obj


def parse_line(cls: type[R], raw: bytes, *, path: str, line: int) -> R:
    """Decodes one raw line (UTF-8, then JSON) and builds a record of type ``cls``.

    Raises:
        RecordError: naming ``path``, ``line`` and the offending field.
    """
    return from_json(cls, decode_json_line(raw, path=path, line=line), path=path, line=line)


def iter_numbered(
    path: str | os.PathLike, cls: type[R], *, skip_invalid: bool = False, skipped: SkipLog | None = None
) -> Iterator[tuple[int, R]]:
    """Yields ``(line_number, record)`` for every record of a JSON-lines file, streaming.

    Blank lines are not records and are passed over. With ``skip_invalid`` an invalid line is
    recorded in ``skipped`` (required then) instead of raising.
    """
    if skip_invalid and skipped is None:
        raise ValueError("skip_invalid=True needs a SkipLog to count what it skips")
    name = os.fspath(path)
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield number, parse_line(cls, raw, path=name, line=number)
            except RecordError as e:
                if not skip_invalid:
                    raise
                skipped.add(e)


def iter_records(path: str | os.PathLike, cls: type[R], **kwargs: Any) -> Iterator[R]:
    """Like :func:`iter_numbered` without the line numbers."""
    for _, record in iter_numbered(path, cls, **kwargs):
        yield record


def dumps(record: Any) -> str:
    """One record as a KuaiSearch JSON line (no trailing newline), as the public files write it."""
    return json.dumps(to_json_dict(record), ensure_ascii=False)


@dataclasses.dataclass(frozen=True)
class KuaiSearchDataset:
    """A KuaiSearch directory. ``dataset.read("items")`` streams its items, and so on."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    def path(self, name: str) -> Path:
        return self.root / RECORD_TYPES[name].FILE

    def has(self, name: str) -> bool:
        return self.path(name).is_file()

    def check_layout(self) -> None:
        """Raises FileNotFoundError naming every required file that is missing."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: not a directory")
        missing = [str(self.path(n)) for n in REQUIRED_FILES if not self.has(n)]
        if missing:
            raise FileNotFoundError(f"missing KuaiSearch files: {', '.join(missing)}")

    def read(self, name: str, **kwargs: Any) -> Iterator[Any]:
        return iter_records(self.path(name), RECORD_TYPES[name], **kwargs)

    def read_numbered(self, name: str, **kwargs: Any) -> Iterator[tuple[int, Any]]:
        return iter_numbered(self.path(name), RECORD_TYPES[name], **kwargs)


class KuaiSearchWriter:
    """Writes records into a KuaiSearch directory, each type to its own file.

    Files are written as ``NAME.jsonl.partial`` and renamed into place when the writer closes
    without an exception; on an exception the partial files are removed.

    Example:
        with KuaiSearchWriter(out_dir) as w:
            w.write(item)
            w.write_all(sessions)
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.counts: dict[str, int] = {}
        self._files: dict[type, Any] = {}
        self._names = {cls: name for name, cls in RECORD_TYPES.items()}

    def __enter__(self) -> KuaiSearchWriter:
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    def _partial(self, cls: type) -> Path:
        return self.root / (cls.FILE + ".partial")

    def open(self, name: str) -> None:
        """Creates the file for ``name`` even when no record of that type is written."""
        cls = RECORD_TYPES[name]
        if cls not in self._files:
            self._files[cls] = open(self._partial(cls), "w", encoding="utf-8", newline="\n")  # noqa: SIM115 (closed in __exit__)
            self.counts[name] = 0

    def write(self, record: Any) -> None:
        cls = type(record)
        if cls not in self._names:
            raise TypeError(f"not a KuaiSearch record: {cls.__name__}")
        name = self._names[cls]
        self.open(name)
        self._files[cls].write(dumps(record) + "\n")
        self.counts[name] += 1

    def write_all(self, records: Iterable[Any]) -> None:
        for record in records:
            self.write(record)

    def __exit__(self, exc_type, exc, tb) -> None:
        for cls, f in self._files.items():
            f.close()
            if exc_type is None:
                os.replace(self._partial(cls), self.root / cls.FILE)
            else:
                self._partial(cls).unlink(missing_ok=True)
