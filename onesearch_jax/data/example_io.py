"""Training records on disk: feature schemas, a TFRecord + JSON-lines writer, and readers.

Each stage and split is one pair of files with the same records in the same order:

* ``{stage}/{split}.tfrecord``: serialized ``tf.train.Example`` protos (what seqio reads). Strings
  are UTF-8 ``bytes_list``; ``int64`` fields ``int64_list``; ``float`` fields ``float_list``
  (float32). A scalar feature is a list of one value; list features may be empty.
* ``{stage}/{split}.jsonl``: one JSON object per line, fields in schema order, for people and
  debugging (``ensure_ascii=False``).

Floats are stored as the shortest decimal that round-trips through float32, so the two readers
give identical Python records. Files are written as ``NAME.partial`` and renamed into place on a
clean close. TensorFlow is imported only when a TFRecord is written or read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from onesearch_jax.data.kuaisearch import decode_json_line
from onesearch_jax.data.schema import RecordError
from onesearch_jax.sid.codebook import SidCodebook

FEATURE_TYPES: tuple[str, ...] = ("string", "int64", "float", "string_list", "int64_list", "float_list")

STAGE1 = "stage1_alignment"
STAGE2 = "stage2_cooccurrence"
PERSONALIZED = "personalized"
STAGES: tuple[str, ...] = (STAGE1, STAGE2, PERSONALIZED)

# Sub-tasks (the ``task`` feature) and how many SIDs their ``targets`` hold (None: one or more,
# space-separated; 0: plain text).
STAGE1_TASKS: dict[str, int | None] = {
    "query_to_sid": 1,
    "title_to_sid": 1,
    "sid_to_title": 0,
    "sid_to_category": 0,
    "query_to_keywords": 0,
    "query_sid_to_keyword_sids": None,
}
STAGE2_TASKS: dict[str, int | None] = {"query_to_item_sid": 1, "query_sid_to_item_sid": 1}
PERSONALIZED_SID_LISTS: tuple[str, ...] = ("clicked_sids", "ordered_sids", "impressed_sids", "relevance_sids")

_TASK_FEATURES: dict[str, str] = {
    "task": "string",
    "inputs": "string",
    "targets": "string",
    "query": "string",
    "item_id": "int64",
}
FEATURES: dict[str, dict[str, str]] = {
    STAGE1: dict(_TASK_FEATURES),
    STAGE2: {**_TASK_FEATURES, "count": "int64"},
    PERSONALIZED: {
        "inputs": "string",
        "teacher_inputs": "string",
        "targets": "string",
        "split": "string",
        "session_id": "int64",
        "user_id": "int64",
        "item_id": "int64",
        "time_index": "int64",
        "query": "string",
        "segment": "string",
        "keywords": "string_list",
        "clicked_sids": "string_list",
        "ordered_sids": "string_list",
        "impressed_sids": "string_list",
        "impressed_ctr": "float_list",
        "relevance_sids": "string_list",
        "relevance_tiers": "int64_list",
    },
}
"""Feature name -> type, per stage (also written to ``manifest.json``)."""


def float32_value(x: float) -> float:
    """``x`` as float32, written as the shortest decimal that round-trips (e.g. 0.1, not 0.100000001)."""
    return float(str(np.float32(x)))


def _check_type(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "int64":
        return type(value) is int
    if kind == "float":
        return type(value) in (int, float)
    if not isinstance(value, list | tuple):
        return False
    return all(_check_type(v, kind.removesuffix("_list")) for v in value)


def _reject_unknown_fields(names: Iterable[str], features: Mapping[str, str], *, path: str, line: int) -> None:
    """Raises RecordError (kind ``unknown_field``) for the first of ``names`` that is not a feature."""
    for name in names:
        if name not in features:
            raise RecordError(path=path, line=line, field=name, kind="unknown_field", reason="unknown feature")


def check_record(record: Mapping[str, Any], features: Mapping[str, str], *, path: str, line: int) -> None:
    """Raises RecordError naming ``path``, ``line`` and the field when ``record`` does not match ``features``."""
    _reject_unknown_fields(record, features, path=path, line=line)
    for name, kind in features.items():
        if name not in record:
            raise RecordError(path=path, line=line, field=name, kind="missing_field", reason="missing")
        if not _check_type(record[name], kind):
            raise RecordError(
                path=path, line=line, field=name, kind="type", reason=f"expected {kind}, got {record[name]!r:.60}"
            )


def check_sids(record: Mapping[str, Any], stage: str, codebook: SidCodebook, *, path: str, line: int) -> None:
    """Checks that every SID-valued field of a record of ``stage`` parses with ``codebook``, and
    that the aligned reward lists have equal lengths.

    Raises:
        RecordError: naming ``path``, ``line`` and the field (kind ``bad_sid`` or ``inconsistent``).
    """

    def parse(field: str, text: str) -> None:
        try:
            codebook.parse_tokens(text)
        except ValueError as e:
            raise RecordError(path=path, line=line, field=field, kind="bad_sid", reason=str(e)) from None

    if stage == PERSONALIZED:
        parse("targets", record["targets"])
        for name in PERSONALIZED_SID_LISTS:
            for i, text in enumerate(record[name]):
                parse(f"{name}[{i}]", text)
        for a, b in (("impressed_sids", "impressed_ctr"), ("relevance_sids", "relevance_tiers")):
            if len(record[a]) != len(record[b]):
                raise RecordError(
                    path=path, line=line, field=b, kind="inconsistent",
                    reason=f"{len(record[b])} values for {len(record[a])} {a}",
                )  # fmt: skip
        return
    tasks = STAGE1_TASKS if stage == STAGE1 else STAGE2_TASKS
    if record["task"] not in tasks:
        raise RecordError(path=path, line=line, field="task", kind="value", reason=f"unknown task {record['task']!r}")
    sids = tasks[record["task"]]
    if sids == 1:
        parse("targets", record["targets"])
    elif sids is None:
        parts = record["targets"].split(" ")
        for i, text in enumerate(parts):
            parse(f"targets[{i}]", text)


def _tf():
    import tensorflow as tf  # heavy: imported only for TFRecord files

    return tf


def import_tensorflow() -> None:
    """Imports TensorFlow now (several seconds, once per process), e.g. to keep it out of a timing."""
    _tf()


def to_tf_example(record: Mapping[str, Any], features: Mapping[str, str]):
    """A ``tf.train.Example`` of ``record`` (types from ``features``)."""
    tf = _tf()
    out = {}
    for name, kind in features.items():
        value = record[name]
        values = list(value) if kind.endswith("_list") else [value]
        base = kind.removesuffix("_list")
        if base == "string":
            out[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode("utf-8") for v in values]))
        elif base == "int64":
            out[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        else:
            out[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Example(features=tf.train.Features(feature=out))


def from_tf_example(data: bytes, features: Mapping[str, str], *, path: str, line: int) -> dict[str, Any]:
    """The record of a serialized ``tf.train.Example`` (RecordError for a missing or mistyped feature)."""
    tf = _tf()
    example = tf.train.Example.FromString(data)
    got = example.features.feature
    out: dict[str, Any] = {}
    _reject_unknown_fields(got, features, path=path, line=line)
    for name, kind in features.items():
        if name not in got:
            raise RecordError(path=path, line=line, field=name, kind="missing_field", reason="missing")
        base = kind.removesuffix("_list")
        feature = got[name]
        which = feature.WhichOneof("kind")
        want = {"string": "bytes_list", "int64": "int64_list", "float": "float_list"}[base]
        if which not in (want, None):
            raise RecordError(path=path, line=line, field=name, kind="type", reason=f"expected {want}, got {which}")
        raw = list(getattr(feature, want).value)
        if base == "string":
            try:
                values: list[Any] = [v.decode("utf-8") for v in raw]
            except UnicodeDecodeError:
                raise RecordError(path=path, line=line, field=name, kind="utf8", reason="invalid UTF-8") from None
        elif base == "int64":
            values = [int(v) for v in raw]
        else:
            values = [float32_value(v) for v in raw]
        if kind.endswith("_list"):
            out[name] = values
        elif len(values) != 1:
            raise RecordError(
                path=path, line=line, field=name, kind="type", reason=f"expected one value, got {len(values)}"
            )
        else:
            out[name] = values[0]
    return out


class ExampleWriter:
    """Writes records to ``BASE.tfrecord`` and ``BASE.jsonl`` at once (atomically, on clean close).

    Example:
        with ExampleWriter(out / "personalized" / "train", FEATURES[PERSONALIZED]) as w:
            w.write(record)
    """

    def __init__(self, base: str | os.PathLike, features: Mapping[str, str], *, tfrecord: bool = True):
        self.base = Path(base)
        self.features = dict(features)
        self.count = 0
        self.paths = [self.base.with_suffix(".jsonl")] + ([self.base.with_suffix(".tfrecord")] if tfrecord else [])
        self._jsonl: Any = None
        self._tfrecord: Any = None

    def __enter__(self) -> ExampleWriter:
        self.base.parent.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self._partial(self.paths[0]), "w", encoding="utf-8", newline="\n")
        if len(self.paths) > 1:
            self._tfrecord = _tf().io.TFRecordWriter(str(self._partial(self.paths[1])))
        return self

    @staticmethod
    def _partial(path: Path) -> Path:
        return path.with_name(path.name + ".partial")

    def write(self, record: Mapping[str, Any]) -> None:
        """Writes one record (checked against the features; float values rounded to float32)."""
        check_record(record, self.features, path=str(self.paths[0]), line=self.count + 1)
        row = {}
        for name, kind in self.features.items():
            value = record[name]
            if kind == "float":
                value = float32_value(value)
            elif kind == "float_list":
                value = [float32_value(v) for v in value]
            elif kind.endswith("_list"):
                value = list(value)
            row[name] = value
        self._jsonl.write(json.dumps(row, ensure_ascii=False) + "\n")
        if self._tfrecord is not None:
            self._tfrecord.write(to_tf_example(row, self.features).SerializeToString())
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        self._jsonl.close()
        if self._tfrecord is not None:
            self._tfrecord.close()
        for path in self.paths:
            if exc_type is None:
                os.replace(self._partial(path), path)
            else:
                self._partial(path).unlink(missing_ok=True)


def features_for(path: str | os.PathLike) -> dict[str, str]:
    """The feature schema of a records file, from its stage folder name (``.../personalized/train.jsonl``)."""
    stage = Path(path).parent.name
    if stage not in FEATURES:
        raise ValueError(f"{path}: not under a stage folder ({', '.join(STAGES)}); pass features=")
    return FEATURES[stage]


def read_examples(
    path: str | os.PathLike, *, features: Mapping[str, str] | None = None, codebook: SidCodebook | None = None
) -> Iterator[dict[str, Any]]:
    """Yields the records of a ``.jsonl`` or ``.tfrecord`` file, streaming, in file order.

    :func:`read_numbered_examples` also gives each record's line (record) number.

    Args:
        path: the file; its suffix selects the format.
        features: the schema (default: that of the stage folder the file is in).
        codebook: when given, every SID-valued field is parsed with it (:func:`check_sids`; the
            stage is the file's folder name).

    Raises:
        RecordError: for a malformed record (file, line -- the record number for a TFRecord --
            and field named).
    """
    for _, record in read_numbered_examples(path, features=features, codebook=codebook):
        yield record


def read_numbered_examples(
    path: str | os.PathLike, *, features: Mapping[str, str] | None = None, codebook: SidCodebook | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line, record)`` pairs of :func:`read_examples` (the record number for a TFRecord)."""
    path = Path(path)
    features = dict(features) if features is not None else features_for(path)
    name = str(path)
    stage = path.parent.name
    if codebook is not None and stage not in FEATURES:
        raise ValueError(f"{path}: checking SIDs needs the file under its stage folder ({', '.join(STAGES)})")
    for number, record in _read(path, features, name):
        if codebook is not None:
            check_sids(record, stage, codebook, path=name, line=number)
        yield number, record


def _read(path: Path, features: Mapping[str, str], name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    if path.suffix == ".jsonl":
        with open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                record = decode_json_line(raw, path=name, line=number)
                if not isinstance(record, dict):
                    raise RecordError(path=name, line=number, field=None, kind="type", reason="expected an object")
                check_record(record, features, path=name, line=number)
                yield number, record
    elif path.suffix == ".tfrecord":
        tf = _tf()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        dataset = tf.data.TFRecordDataset(name)
        number = 0
        try:
            for data in dataset.as_numpy_iterator():
                number += 1
                yield number, from_tf_example(data, features, path=name, line=number)
        except tf.errors.DataLossError as e:
            raise RecordError(
                path=name, line=number + 1, field=None, kind="corrupt", reason=f"corrupt TFRecord: {e.message}"
            ) from None
    else:
        raise ValueError(f"{path}: expected a .jsonl or .tfrecord file")


def vocabulary_corpus(examples_dir: str | os.PathLike, split: str = "train") -> Iterator[str]:
    """The texts a vocabulary is trained on: every text feature of ``split`` in every stage.

    Reads the JSON-lines files (the TFRecords hold the same records), in stage order, so the
    corpus, and with it the trained vocabulary, is deterministic.
    """
    root = Path(examples_dir)
    for stage in STAGES:
        path = root / stage / f"{split}.jsonl"
        if not path.exists():
            continue
        for record in read_examples(path):
            for name in ("inputs", "teacher_inputs", "targets"):
                if record.get(name):
                    yield record[name]
