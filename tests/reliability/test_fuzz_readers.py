"""Fuzzing the readers of user files: any input gives a record or a RecordError naming the file,
the line (and the field when one is at fault), never another exception, and ``skip_invalid``
counts every line it skips.

Inputs are mutations of valid records of each type (a field replaced by any JSON value, removed,
or an unknown one added), arbitrary JSON values and arbitrary bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onesearch_jax.data.example_io import FEATURES, PERSONALIZED, read_numbered_examples
from onesearch_jax.data.kuaisearch import SkipLog, iter_numbered, parse_line
from onesearch_jax.data.schema import RECORD_TYPES, RecordError
from onesearch_jax.understanding.repository import FORMAT, FORMAT_VERSION, KeywordRepository

NAMES = ("items", "users", "recall", "rank", "relevance")


@pytest.fixture(scope="module")
def valid(small_world) -> dict[str, dict]:
    """The first record of each file of a generated world: valid by construction."""
    out = {}
    for name in NAMES:
        with open(small_world / "kuaisearch" / RECORD_TYPES[name].FILE, encoding="utf-8") as f:
            out[name] = json.loads(f.readline())
    return out


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _mutations(record: dict) -> st.SearchStrategy[dict]:
    keys = sorted(record)
    replaced = st.tuples(st.sampled_from(keys), JSON).map(lambda kv: {**record, kv[0]: kv[1]})
    removed = st.sampled_from(keys).map(lambda k: {f: v for f, v in record.items() if f != k})
    added = st.tuples(st.text(min_size=1, max_size=6), JSON).map(lambda kv: {**record, kv[0]: kv[1]})
    return replaced | removed | added


def _check_error(error: RecordError, line: int) -> None:
    assert error.path == "f.jsonl" and error.line == line and error.kind and error.reason
    assert str(error).startswith(f"f.jsonl:{line}: ")


def _line_strategy(record: dict) -> st.SearchStrategy[bytes]:
    as_json = (_mutations(record) | JSON).map(lambda v: json.dumps(v).encode())
    return as_json | st.binary(max_size=40)


def test_the_valid_records_parse(valid):
    for name, record in valid.items():
        parse_line(RECORD_TYPES[name], json.dumps(record).encode(), path="f.jsonl", line=1)


@FUZZ
@given(name=st.sampled_from(NAMES), data=st.data())
def test_record_lines_parse_or_name_the_line(valid, name, data):
    raw = data.draw(_line_strategy(valid[name]))
    try:
        parse_line(RECORD_TYPES[name], raw, path="f.jsonl", line=7)
    except RecordError as error:
        _check_error(error, 7)


@FUZZ
@given(data=st.data())
def test_skip_invalid_counts_every_line_it_does_not_return(valid, tmp_path, data):
    lines = data.draw(st.lists(_line_strategy(valid["recall"]), min_size=1, max_size=6))
    path = tmp_path / "recall.jsonl"
    lines = [line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines]
    path.write_bytes(b"\n".join(lines) + b"\n")
    skipped = SkipLog()
    kept = list(iter_numbered(path, RECORD_TYPES["recall"], skip_invalid=True, skipped=skipped))
    blank = sum(not line.strip() for line in lines)
    assert len(kept) + skipped.count + blank == len(lines)


@FUZZ
@given(value=_mutations({"inputs": "q", "teacher_inputs": "q k", "targets": "<a_1>", "split": "test", "session_id": 1,
                         "user_id": 1, "item_id": 1, "time_index": 0, "query": "q", "segment": "gender=F",
                         "keywords": [], "clicked_sids": [], "ordered_sids": [], "impressed_sids": [],
                         "impressed_ctr": [], "relevance_sids": [], "relevance_tiers": []}))  # fmt: skip
def test_example_records_read_or_name_the_line(tmp_path, value):
    path = tmp_path / PERSONALIZED / "test.jsonl"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(value) + "\n", encoding="utf-8")
    try:
        assert [n for n, _ in read_numbered_examples(path, features=FEATURES[PERSONALIZED])] == [1]
    except RecordError as error:
        assert error.path == str(path) and error.line == 1


@FUZZ
@given(entry=_mutations({"session_id": None, "query": "red dress", "segment": None, "version": 1, "keywords": []})
       | JSON)  # fmt: skip
def test_keyword_repository_entries_load_or_name_the_line(tmp_path, entry):
    path: Path = tmp_path / "kw.jsonl"
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "version": 1, "max_keywords": 5}
    path.write_text(json.dumps(header) + "\n" + json.dumps(entry) + "\n", encoding="utf-8")
    try:
        KeywordRepository.load(path)
    except RecordError as error:
        assert error.path == str(path) and error.line == 2


CSV_CELL = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@FUZZ
@given(rows=st.lists(st.tuples(CSV_CELL, CSV_CELL, CSV_CELL | st.floats(allow_nan=True).map(str)), max_size=6),
       skip=st.booleans())  # fmt: skip
def test_relevance_tables_import_or_name_the_line(tmp_path, rows, skip):
    """The importer reads any CSV (quotes, commas, newlines in cells, bad scores) into records or a
    RecordError naming the table, a line and the column; with --skip_invalid it counts what it skips."""
    import csv
    import shutil

    from onesearch_jax.data.relevance_import import RelevanceTableConfig, import_relevance_table

    table = tmp_path / "table.csv"
    with open(table, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["query", "product_title", "median_relevance"])
        writer.writerows(rows)
    out = tmp_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    try:
        summary = import_relevance_table(table, out, RelevanceTableConfig(), skip_invalid=skip)
    except RecordError as error:
        assert error.path == str(table) and error.line >= 1
        return
    assert summary.rows + summary.skipped.count == len(rows)


GIN_TEXT = st.text(alphabet=st.sampled_from(list("TrainConfig.batch_size=[]{}()'\"@%/ 0123456789-_:,\\n")), max_size=40)


@FUZZ
@given(binding=GIN_TEXT | st.text(max_size=30))
def test_gin_overrides_fail_with_the_errors_the_command_reports(binding):
    """``onesearch`` turns ValueError and SyntaxError from gin into one ``error:`` line (main.py);
    any binding must parse or raise one of those (or gin's own parse errors, which subclass them)."""
    import gin

    from onesearch_jax import configurables  # noqa: F401  (registers the configurables)
    from onesearch_jax.gin_utils import parse_gin

    with gin.unlock_config():
        gin.clear_config()
    try:
        parse_gin([], [], [binding])
    except (ValueError, SyntaxError):
        pass
    finally:
        with gin.unlock_config():
            gin.clear_config()
