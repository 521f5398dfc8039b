"""Training records: exact records of a hand-made log, invariants over a generated world, formats,
the keyword leakage guard, CTR from the training window only, Chinese text and bad input."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from onesearch_jax.data.example_io import (
    FEATURES,
    PERSONALIZED,
    STAGE1,
    STAGE2,
    STAGES,
    check_sids,
    float32_value,
    read_examples,
)
from onesearch_jax.data.examples import (
    ExamplesConfig,
    build_examples,
    ctr_table,
    load_manifest,
    load_sid_ctr,
    recent_history,
)
from onesearch_jax.data.kuaisearch import KuaiSearchDataset, KuaiSearchWriter, dumps
from onesearch_jax.data.prompts import (
    MARKER_KEYWORDS,
    PromptRecord,
    UserProfile,
    remove_segment,
    render_prompts,
    split_segments,
)
from onesearch_jax.data.schema import SPLITS, RecordError, RelevancePair, SearchSession
from onesearch_jax.sid.build import SidBuildConfig, build_sids, resolve_data_dir
from onesearch_jax.sid.codebook import SidCodebook
from onesearch_jax.sid.embed import TfidfSvdConfig
from onesearch_jax.sid.quantize import QuantizerConfig
from onesearch_jax.understanding.job import KeywordJobConfig, run_keywords_job
from onesearch_jax.understanding.keywords import Keyword
from onesearch_jax.understanding.logs import TrainingLogs
from onesearch_jax.understanding.profiles import Segmenter
from onesearch_jax.understanding.repository import FORMAT, KeywordRepository, RepositoryEntry
from tests.understanding import tiny

JSONL_ONLY = ExamplesConfig(write_tfrecord=False, ctr_prior_mean=0.1, ctr_prior_strength=10.0)


# ---------------------------------------------------------------------- a hand-made log
def _sid(item_id: int) -> str:
    """Item k of the tiny codebook has SID (k - 1, 0, 0)."""
    return f"<a_{item_id - 1}><b_0><c_0>"


QUERY_SIDS = {"yoga mat": "<a_0><b_1><c_0>", "dress": "<a_4><b_1><c_0>", "treadmill": "<a_6><b_1><c_0>",
              "tent": "<a_3><b_1><c_0>"}  # fmt: skip
PROFILE_F = "[user] gender F, age 24-30, location Zhejiang Hangzhou"


def _tiny_codebook(item_ids, queries: dict[str, tuple[int, ...]], sizes=(8, 4, 4)) -> SidCodebook:
    item_ids = np.asarray(sorted(item_ids), np.int64)
    codes = np.asarray([(int(i) - 1, 0, 0) for i in item_ids], np.int32).reshape(len(item_ids), len(sizes))
    return SidCodebook(
        code_sizes=sizes, num_levels=len(sizes), opq_bits=8, item_ids=item_ids, item_codes=codes,
        raw_item_codes=codes.copy(), queries=np.asarray(list(queries), dtype=str),
        query_codes=np.asarray(list(queries.values()), np.int32).reshape(len(queries), len(sizes)),
        collision_mode="keep",
    )  # fmt: skip


def _kw(*texts: str) -> tuple[Keyword, ...]:
    return tuple(Keyword(text=t, score=1.0, types=("entity",), sources=("ontology",)) for t in texts)


def _tiny_repository() -> KeywordRepository:
    header = {"format": FORMAT, "format_version": 1, "version": 1, "max_keywords": 2, "window_end": 46,
              "segment_fields": ["gender"], "has_session_overrides": True}  # fmt: skip
    entries = [
        RepositoryEntry(query="yoga mat", segment=None, session_id=None, version=1, keywords=_kw("non-slip", "kara")),
        RepositoryEntry(query="yoga mat", segment="gender=F", session_id=None, version=1,
                        keywords=_kw("pink", "non-slip", "thick")),
        # session 1 left out changes the F keywords: the override is what session 1 must get
        RepositoryEntry(query="yoga mat", segment="gender=F", session_id=1, version=1, keywords=_kw("lovo")),
        RepositoryEntry(query="treadmill", segment=None, session_id=None, version=1, keywords=()),
    ]  # fmt: skip
    return KeywordRepository(header=header, entries=entries)


def _tiny_sessions() -> list[SearchSession]:
    """tiny's eight sessions (session 3 also impressing the item 3 it clicks, as the schema wants)
    plus session 9: user 1 again at time 40, like session 4 (neither is in the other's history)."""
    extra = SearchSession(user_id=1, session_id=9, impressed_item_ids=(4,), clicked_item_ids=(4,),
                          purchased_item_ids=(), time_index=40, query="tent", split="train")  # fmt: skip
    sessions = [dataclasses.replace(s, impressed_item_ids=(1, 2, 3, 5)) if s.session_id == 3 else s
                for s in tiny.sessions()]  # fmt: skip
    return [*sessions, extra]


def _relevance() -> list[RelevancePair]:
    def pair(query: str, title: str, score: int) -> RelevancePair:
        return RelevancePair(query=query, item_title=title, brand="", seller_name="", attr_value="", score=score)

    return [
        pair("yoga mat", "Kara red yoga mat", 3),
        pair("Yoga  Mat", "lovo  BLUE yoga mat", 1),  # joins item 2 (title compared folded)
        pair("yoga mat", "Kara red yoga mat", 2),  # conflicts with the first: the highest tier wins
        pair("dress", "a title no item has", 0),
    ]


def write_tiny(root: Path, *, sessions=None, codebook: SidCodebook | None = None) -> dict[str, Path]:
    """The tiny log, a codebook without quantiser and a hand-made repository under ``root``."""
    data = root / "data"
    with KuaiSearchWriter(data) as w:
        w.write_all(tiny.items())
        w.write_all(tiny.users())
        w.write_all(sessions if sessions is not None else _tiny_sessions())
        w.write_all(_relevance())
    book = codebook or _tiny_codebook(range(1, 9), {q: _parse(s) for q, s in QUERY_SIDS.items()})
    book.save(root / "sids")
    _tiny_repository().save(root / "kw.jsonl")
    return {"data": data, "sids": root / "sids", "keywords": root / "kw.jsonl"}


def _parse(tokens: str) -> tuple[int, ...]:
    return tuple(int(t.split("_")[1]) for t in tokens.strip("<>").split("><"))


def _read(out: Path, stage: str, split: str, ext: str = "jsonl") -> list[dict]:
    return list(read_examples(out / stage / f"{split}.{ext}"))


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    paths = write_tiny(root)
    summary = build_examples(paths["data"], root / "out", sids_dir=paths["sids"], keywords_path=paths["keywords"],
                             config=JSONL_ONLY)  # fmt: skip
    return summary, root / "out"


def test_tiny_personalised_records_exactly(tiny_build):
    summary, out = tiny_build
    train = _read(out, PERSONALIZED, "train")
    assert [(r["session_id"], r["item_id"]) for r in train] == [(1, 1), (2, 2), (3, 1), (3, 3), (4, 5), (4, 6),
                                                                (9, 4), (6, 7)]  # fmt: skip
    first = train[0]
    assert first["inputs"] == (
        f"{PROFILE_F} [query] yoga mat [query_sid] <a_0><b_1><c_0> [recent_queries] none [recent_items] none"
    )
    # session 1's own override: its keywords were computed without it
    assert first["teacher_inputs"] == (
        f"{PROFILE_F} [query] yoga mat [query_sid] <a_0><b_1><c_0> [keywords] lovo "
        "[recent_queries] none [recent_items] none"
    )
    assert first == {
        "inputs": first["inputs"], "teacher_inputs": first["teacher_inputs"], "targets": "<a_0><b_0><c_0>",
        "split": "train", "session_id": 1, "user_id": 1, "item_id": 1, "time_index": 10, "query": "yoga mat",
        "segment": "gender=F", "keywords": ["lovo"], "clicked_sids": [_sid(1)], "ordered_sids": [],
        "impressed_sids": [_sid(1), _sid(2), _sid(3), _sid(4)],
        # Beta(1, 9) prior; training sessions 1-6 and 9 only: item 1 shown 4 times, clicked in 2
        "impressed_ctr": [float32_value(3 / 14), float32_value(2 / 13), float32_value(2 / 13), float32_value(2 / 12)],
        "relevance_sids": [_sid(1), _sid(2)], "relevance_tiers": [3, 1],
    }  # fmt: skip
    # session 4 (user 1, time 40): only session 1 is earlier (session 9 has the same time)
    dress = train[4]
    assert dress["inputs"] == (
        f"{PROFILE_F} [query] dress [query_sid] <a_4><b_1><c_0> [recent_queries] yoga mat [recent_items] {_sid(1)}"
    )
    assert dress["teacher_inputs"] == remove_segment(dress["teacher_inputs"], MARKER_KEYWORDS).replace(
        "[recent_queries]", "[keywords] none [recent_queries]"
    )
    assert dress["keywords"] == [] and dress["relevance_sids"] == []
    # user 2 (M) has no segment entry: the query's entry for everyone
    assert train[1]["keywords"] == ["non-slip", "kara"] and train[1]["ordered_sids"] == [_sid(2)]
    assert train[2]["keywords"] == ["pink", "non-slip"]  # segment F, max_keywords 2
    (test,) = _read(out, PERSONALIZED, "test")
    # user 1 at time 60: sessions 9, 4, 1 most recent first (time, then session id)
    assert test["inputs"] == (
        f"{PROFILE_F} [query] yoga mat [query_sid] <a_0><b_1><c_0> [recent_queries] tent | dress | yoga mat "
        f"[recent_items] {_sid(4)} {_sid(5)} {_sid(6)} {_sid(1)}"
    )
    assert test["keywords"] == ["pink", "non-slip"] and test["ordered_sids"] == [_sid(2)]
    assert [r["session_id"] for r in _read(out, PERSONALIZED, "valid")] == [7]
    assert summary.counts[PERSONALIZED] == {"train": 8, "valid": 1, "test": 1}
    assert summary.not_written[PERSONALIZED] == {"no_target_train": 1}  # session 5


def test_tiny_ctr_comes_from_the_training_window_only(tiny_build):
    summary, out = tiny_build
    table = load_sid_ctr(out / "sid_ctr.tsv")
    # item 1: training sessions 1, 2, 3, 4 showed it, 1 and 3 clicked it -> (2 + 1) / (4 + 10);
    # counting valid session 7 (shown, clicked) and test session 8 (shown) would give 4 / 16
    assert table[_sid(1)] == float32_value(3 / 14)
    assert table[_sid(2)] == float32_value((1 + 1) / (3 + 10))  # session 2 clicked and bought it
    assert table[_sid(8)] == float32_value(1 / 12)  # shown twice in training, never clicked
    assert len(table) == 8
    (test,) = _read(out, PERSONALIZED, "test")
    assert test["impressed_sids"] == [_sid(2), _sid(1)]
    assert test["impressed_ctr"] == [table[_sid(2)], table[_sid(1)]]
    assert summary.ctr["train_sessions"] == 7 and summary.ctr["alpha"] == 1.0 and summary.ctr["beta"] == 9.0


def test_ctr_table_prior():
    sessions = _tiny_sessions()
    train = [s for s in sessions if s.split == "train"]
    table = ctr_table(train, _sid, prior_mean=None, prior_strength=19.0)
    # 19 training impressions, 8 of them clicked: prior mean 8/19, so alpha = 8, beta = 11
    assert (table.alpha, table.beta) == pytest.approx((8.0, 11.0))
    assert table.ctr(_sid(1)) == pytest.approx((2 + 8) / (4 + 19))
    assert table.ctr("<a_7><b_3><c_3>") == pytest.approx(8 / 19)  # never shown: the prior mean
    raw = ctr_table(train, _sid, prior_mean=0.5, prior_strength=0.0, counts_purchases=False)
    assert raw.ctr(_sid(1)) == 0.5 and raw.ctr("<a_7><b_3><c_3>") == 0.5
    assert ctr_table(sessions, _sid, prior_mean=0.1, prior_strength=10).ctr(_sid(1)) == pytest.approx(4 / 16)


def test_tiny_relevance_alignment_and_cooccurrence(tiny_build):
    summary, out = tiny_build
    assert summary.relevance == {"pairs": 4, "matched": 3, "unmatched": 1, "conflicting": 1, "labelled": 2,
                                 "queries": 1}  # fmt: skip
    assert (out / "sid_relevance.tsv").read_text().splitlines() == [
        "query\tsid\ttier", f"yoga mat\t{_sid(1)}\t3", f"yoga mat\t{_sid(2)}\t1"
    ]  # fmt: skip
    stage1 = _read(out, STAGE1, "train")
    queries = [(r["inputs"], r["targets"]) for r in stage1 if r["task"] == "query_to_sid"]
    assert queries == [("[task] query_to_sid [query] yoga mat", "<a_0><b_1><c_0>"),
                       ("[task] query_to_sid [query] dress", "<a_4><b_1><c_0>"),
                       ("[task] query_to_sid [query] tent", "<a_3><b_1><c_0>"),
                       ("[task] query_to_sid [query] treadmill", "<a_6><b_1><c_0>")]  # fmt: skip
    by_task = defaultdict(list)
    for r in stage1:
        by_task[r["task"]].append(r)
    assert by_task["query_to_keywords"] == [{"task": "query_to_keywords", "inputs": "[task] query_to_keywords "
                                             "[query] yoga mat", "targets": "non-slip, kara", "query": "yoga mat",
                                             "item_id": -1}]  # fmt: skip
    assert by_task["title_to_sid"][0] == {"task": "title_to_sid", "inputs": "[task] title_to_sid [title] Kara red "
                                          "yoga mat", "targets": _sid(1), "query": "", "item_id": 1}  # fmt: skip
    assert by_task["sid_to_title"][6]["targets"] == "Xiven green treadmill"
    assert by_task["sid_to_category"][3] == {"task": "sid_to_category", "inputs": "[task] sid_to_category "
                                             f"[item_sid] {_sid(4)}", "targets": "Sports > Camping > tent", "query": "",
                                             "item_id": 4}  # fmt: skip
    # the codebook has no quantiser: keyword SIDs cannot be encoded, and the manifest says so
    assert "query_sid_to_keyword_sids" in summary.unavailable and not by_task["query_sid_to_keyword_sids"]
    assert summary.not_written[STAGE1] == {"query_to_keywords_no_keywords": 3}
    assert _read(out, STAGE1, "valid") == [] and _read(out, STAGE1, "test") == []
    pairs = [(r["task"], r["query"], r["item_id"], r["count"]) for r in _read(out, STAGE2, "train")]
    assert pairs[:7] == [("query_to_item_sid", "yoga mat", 1, 2), ("query_to_item_sid", "yoga mat", 2, 1),
                         ("query_to_item_sid", "yoga mat", 3, 1), ("query_to_item_sid", "dress", 5, 1),
                         ("query_to_item_sid", "dress", 6, 1), ("query_to_item_sid", "tent", 4, 1),
                         ("query_to_item_sid", "treadmill", 7, 1)]  # fmt: skip
    assert [(r["inputs"], r["item_id"], r["count"]) for r in _read(out, STAGE2, "test")] == [
        ("[task] query_to_item_sid [query] yoga mat", 2, 1), ("[task] query_sid_to_item_sid [query_sid] "
                                                              "<a_0><b_1><c_0>", 2, 1)]  # fmt: skip


def test_manifest(tiny_build):
    summary, out = tiny_build
    manifest = load_manifest(out)
    assert manifest["format"] == "onesearch-examples" and manifest["version"] == 1
    assert manifest["counts"] == summary.counts
    assert manifest["features"][PERSONALIZED]["impressed_ctr"] == "float_list"
    assert manifest["files"][PERSONALIZED]["train"] == ["personalized/train.jsonl"]
    assert manifest["config"]["ctr_prior_strength"] == 10.0 and manifest["skipped"] == {}
    assert manifest["sources"]["keyword_repository_version"] == 1
    for stage in STAGES:
        for split, n in manifest["counts"][stage].items():
            assert len((out / stage / f"{split}.jsonl").read_text("utf-8").splitlines()) == n


def test_recent_history_caps_and_dedupes():
    sessions = _tiny_sessions()
    earlier = sorted([s for s in sessions if s.user_id == 1 and s.time_index < 60], key=lambda s: s.time_index)
    assert recent_history(earlier, _sid, max_queries=2, max_items=2) == (("tent", "dress"), (_sid(4), _sid(5)))
    twice = [*earlier, earlier[0]]  # "yoga mat" again, most recently
    assert recent_history(twice, _sid, max_queries=10, max_items=10)[0] == ("yoga mat", "tent", "dress")
    assert recent_history(twice, _sid, max_queries=10, max_items=10, dedupe_queries=False)[0] == (
        "yoga mat", "tent", "dress", "yoga mat"
    )  # fmt: skip
    assert recent_history([], _sid, max_queries=10, max_items=20) == ((), ())


# ---------------------------------------------------------------------- bad input
def _session(session_id: int, **kw) -> SearchSession:
    fields = dict(user_id=1, session_id=session_id, impressed_item_ids=(1, 2), clicked_item_ids=(1,),
                  purchased_item_ids=(), time_index=100 + session_id, query="yoga mat", split="train")  # fmt: skip
    return SearchSession(**{**fields, **kw})


@pytest.mark.parametrize(
    ("bad", "field", "kind"),
    [
        (_session(20, impressed_item_ids=(1, 99), clicked_item_ids=(99,)), "impressed_item_ids", "missing_sid"),
        (_session(20, query="umbrella"), "query", "missing_query_sid"),
        (_session(20, user_id=77), "user_id", "unknown_user"),
        (_session(3), "session_id", "duplicate"),
    ],
)
def test_bad_sessions_name_file_line_and_field(tmp_path, bad, field, kind):
    paths = write_tiny(tmp_path, sessions=[*_tiny_sessions(), bad])
    recall = str(paths["data"] / "recall.jsonl")
    with pytest.raises(RecordError) as e:
        build_examples(paths["data"], tmp_path / "out", sids_dir=paths["sids"], keywords_path=paths["keywords"],
                       config=JSONL_ONLY)  # fmt: skip
    assert (e.value.path, e.value.line, e.value.field, e.value.kind) == (recall, 10, field, kind)
    assert str(e.value).startswith(f"{recall}:10: field '{field}': ")
    assert not (tmp_path / "out" / "manifest.json").exists()
    summary = build_examples(paths["data"], tmp_path / "out", sids_dir=paths["sids"],
                             keywords_path=paths["keywords"], config=JSONL_ONLY, skip_invalid=True)  # fmt: skip
    assert summary.skipped == {recall: {kind: 1}}
    assert load_manifest(tmp_path / "out")["skipped"] == {recall: {kind: 1}}
    assert summary.counts[PERSONALIZED] == {"train": 8, "valid": 1, "test": 1}  # the others are all there
    assert str(e.value) in summary.first_errors


def test_unparsable_lines_and_items_without_sid_are_counted(tmp_path):
    book = _tiny_codebook(range(1, 8), {q: _parse(s) for q, s in QUERY_SIDS.items()})  # item 8 has no SID
    sessions = [s for s in _tiny_sessions() if 8 not in s.impressed_item_ids]
    paths = write_tiny(tmp_path, sessions=sessions, codebook=book)
    with open(paths["data"] / "recall.jsonl", "a", encoding="utf-8") as f:
        f.write('{"user_id": 1, "session_id": 30}\n')
    items = str(paths["data"] / "items.jsonl")
    with pytest.raises(RecordError, match=f"^{items}:8: field 'item_id': item 8 has no SID"):
        build_examples(paths["data"], tmp_path / "out", sids_dir=paths["sids"], keywords_path=paths["keywords"],
                       config=JSONL_ONLY)  # fmt: skip
    summary = build_examples(paths["data"], tmp_path / "out", sids_dir=paths["sids"],
                             keywords_path=paths["keywords"], config=JSONL_ONLY, skip_invalid=True)  # fmt: skip
    assert summary.skipped == {items: {"missing_sid": 1}, str(paths["data"] / "recall.jsonl"): {"missing_field": 1}}
    assert summary.task_counts[STAGE1]["title_to_sid"] == 7


def test_reader_names_file_line_and_field_of_bad_records(tiny_build, tmp_path):
    _, out = tiny_build
    book = SidCodebook.load(out.parent / "sids")
    lines = (out / PERSONALIZED / "train.jsonl").read_text("utf-8").splitlines()
    bad = json.loads(lines[1])
    bad["clicked_sids"] = ["<a_1><b_0>"]
    missing = json.loads(lines[2])
    del missing["targets"]
    path = tmp_path / PERSONALIZED / "train.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join([lines[0], json.dumps(bad), json.dumps(missing)]) + "\n", encoding="utf-8")
    records = read_examples(path, codebook=book)
    assert next(records)["session_id"] == 1
    with pytest.raises(RecordError, match=rf"^{path}:2: field 'clicked_sids\[0\]': '<a_1><b_0>' is not 3 SID tokens"):
        next(records)
    with pytest.raises(RecordError, match=rf"^{path}:3: field 'targets': missing"):
        list(read_examples(path))[2:]
    record = json.loads(lines[0])
    record["impressed_ctr"] = record["impressed_ctr"][:1]
    with pytest.raises(RecordError, match="field 'impressed_ctr': 1 values for 4 impressed_sids"):
        check_sids(record, PERSONALIZED, book, path="x", line=1)
    with pytest.raises(RecordError, match="field 'targets': '<a_9><b_0><c_0>': token 1 <a_9>"):
        check_sids({"task": "query_to_sid", "targets": "<a_9><b_0><c_0>"}, STAGE1, book, path="x", line=1)


def test_command_line(tmp_path):
    paths = write_tiny(tmp_path)
    with open(paths["data"] / "recall.jsonl", "a", encoding="utf-8") as f:
        f.write(dumps(_session(20, query="umbrella")) + "\n")
    args = [sys.executable, "-m", "onesearch_jax.main", "data", "build-examples", str(paths["data"]),
            str(tmp_path / "out"), f"--sids={paths['sids']}", f"--keywords={paths['keywords']}",
            "--gin_file=gin/examples/default.gin", "--gin.ExamplesConfig.write_tfrecord=False"]  # fmt: skip
    run = subprocess.run(args, capture_output=True, text=True)
    assert run.returncode == 2
    assert f"error: {paths['data'] / 'recall.jsonl'}:10: field 'query': query 'umbrella' has no SID" in run.stderr
    run = subprocess.run([*args, "--skip_invalid"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "personalized: train 8, valid 1, test 1" in run.stdout and "seconds:" in run.stdout
    assert "missing_query_sid" in run.stdout
    assert load_manifest(tmp_path / "out")["files"][PERSONALIZED]["test"] == ["personalized/test.jsonl"]


# ---------------------------------------------------------------------- a generated world
SMALL_SIDS = SidBuildConfig(tfidf=TfidfSvdConfig(dim=32), quantizer=QuantizerConfig(level_sizes=(8, 4, 4), niter=10))


@pytest.fixture(scope="module")
def world(small_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("examples")
    data, lexicon = resolve_data_dir(small_world, None)
    build_sids(data, root / "sids", SMALL_SIDS, lexicon_path=lexicon)
    run_keywords_job(small_world, root / "kw.jsonl", job=KeywordJobConfig(evaluate=False))
    summary = build_examples(data, root / "out", sids_dir=root / "sids", keywords_path=root / "kw.jsonl")
    return summary, root, data


def test_world_student_and_teacher_differ_only_by_the_keyword_segment(world):
    summary, root, _ = world
    n = 0
    for split in SPLITS:
        for r in _read(root / "out", PERSONALIZED, split):
            assert remove_segment(r["teacher_inputs"], MARKER_KEYWORDS) == r["inputs"]
            teacher = split_segments(r["teacher_inputs"])
            assert [m for m, _ in teacher].count(MARKER_KEYWORDS) == 1
            assert teacher[3][1] == (", ".join(r["keywords"]) or "none")
            n += 1
    assert n == sum(summary.counts[PERSONALIZED].values()) > 2000


def test_world_keywords_are_the_repositorys_session_lookup(world):
    """No leakage: a session's keywords are exactly the repository's leave-one-session-out answer."""
    _, root, data = world
    repo = KeywordRepository.load(root / "kw.jsonl")
    dataset = KuaiSearchDataset(data)
    logs = TrainingLogs(items=(), users=dataset.read("users"), sessions=())
    segmenter = Segmenter(fields=tuple(repo.header["segment_fields"]))
    overridden = 0
    for split in SPLITS:
        for r in _read(root / "out", PERSONALIZED, split):
            segment = segmenter.of(logs, r["user_id"])
            assert r["segment"] == (segment or "")
            expected = [k.text for k in repo.lookup(r["query"], segment=segment, session_id=r["session_id"])]
            assert r["keywords"] == expected
            overridden += r["session_id"] in repo.overrides
    assert overridden > 100  # the guard is exercised, not vacuous


def test_world_history_is_strictly_earlier(world):
    _, root, data = world
    sessions = sorted(KuaiSearchDataset(data).read("recall"), key=lambda s: (s.time_index, s.session_id))
    by_user = defaultdict(list)
    for s in sessions:
        by_user[s.user_id].append(s)
    book = SidCodebook.load(root / "sids")
    time_of = {s.session_id: s.time_index for s in sessions}
    checked = 0
    for r in _read(root / "out", PERSONALIZED, "test") + _read(root / "out", PERSONALIZED, "train")[:500]:
        earlier = [s for s in by_user[r["user_id"]] if s.time_index < time_of[r["session_id"]]]
        queries, items = [], []
        for s in reversed(earlier):  # independent oracle: distinct, most recent first
            if " ".join(s.query.lower().split()) not in queries:
                queries.append(" ".join(s.query.lower().split()))
            for i in (*s.clicked_item_ids, *s.purchased_item_ids):
                if i not in items:
                    items.append(i)
        segments = dict(split_segments(r["inputs"]))
        assert segments["[recent_queries]"].lower() == (" | ".join(queries[:10]) or "none")
        assert segments["[recent_items]"] == (" ".join(book.tokens(book.item_sid(i)) for i in items[:20]) or "none")
        checked += bool(earlier)
    assert checked > 200


def test_world_tfrecord_and_jsonl_give_identical_records(world):
    summary, root, _ = world
    book = SidCodebook.load(root / "sids")
    for stage in STAGES:
        for split in SPLITS:
            from_jsonl = _read(root / "out", stage, split)
            from_tfrecord = list(read_examples(root / "out" / stage / f"{split}.tfrecord", codebook=book))
            assert from_tfrecord == from_jsonl
            assert len(from_jsonl) == summary.counts[stage][split]
    assert summary.task_counts[STAGE1]["query_sid_to_keyword_sids"] > 100  # the real encoder is used


def test_world_tfrecords_parse_with_tensorflow(world):
    import tensorflow as tf

    _, root, _ = world
    kinds = {"string": tf.string, "int64": tf.int64, "float": tf.float32}
    spec = {
        name: tf.io.FixedLenFeature([], kinds[kind]) if not kind.endswith("_list")
        else tf.io.VarLenFeature(kinds[kind.removesuffix("_list")])
        for name, kind in FEATURES[PERSONALIZED].items()
    }  # fmt: skip
    path = str(root / "out" / PERSONALIZED / "valid.tfrecord")
    parsed = next(iter(tf.data.TFRecordDataset(path).map(lambda pb: tf.io.parse_single_example(pb, spec))))
    first = _read(root / "out", PERSONALIZED, "valid")[0]
    assert parsed["teacher_inputs"].numpy().decode() == first["teacher_inputs"]
    assert parsed["session_id"].numpy() == first["session_id"]
    assert tf.sparse.to_dense(parsed["impressed_ctr"]).numpy().tolist() == pytest.approx(first["impressed_ctr"])


def test_world_reward_fields(world):
    summary, root, _ = world
    table = load_sid_ctr(root / "out" / "sid_ctr.tsv")
    for r in _read(root / "out", PERSONALIZED, "valid"):
        assert r["targets"] in r["clicked_sids"] + r["ordered_sids"]
        assert r["impressed_ctr"] == [table[s] for s in r["impressed_sids"]]
        assert all(0.0 <= c <= 1.0 for c in r["impressed_ctr"])
        assert set(r["clicked_sids"]) <= set(r["impressed_sids"])
    assert summary.relevance["matched"] > 0 and summary.relevance["labelled"] > 0
    assert summary.keywords["train"] > 0.5
    assert summary.counts[STAGE2]["train"] > 0


def test_data_code_does_not_import_jax():
    code = "import sys, onesearch_jax.data.examples, onesearch_jax.data.prompts; print('jax' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.stdout.strip() == "False", run.stderr


# ---------------------------------------------------------------------- Chinese text, real files
def test_kuaisearch_demo_chinese_records(kuaisearch_demo, tmp_path):
    """The demo files do not join across files: every session is a counted skip, and the item and
    query records carry the Chinese text (with a tiny hand-made codebook)."""
    dataset = KuaiSearchDataset(kuaisearch_demo)
    item_ids = sorted(i.item_id for i in dataset.read("items"))
    queries = list(dict.fromkeys(s.query for s in dataset.read("recall")))
    sizes = (256, 4, 4)
    codes = np.asarray([(k % 256, k // 256, 0) for k in range(len(item_ids))], np.int32)
    book = SidCodebook(
        code_sizes=sizes, num_levels=3, opq_bits=8, item_ids=np.asarray(item_ids, np.int64), item_codes=codes,
        raw_item_codes=codes.copy(), queries=np.asarray(queries, dtype=str),
        query_codes=np.asarray([(k % 256, 3, 3) for k in range(len(queries))], np.int32), collision_mode="keep",
    )  # fmt: skip
    book.save(tmp_path / "sids")
    header = {"format": FORMAT, "format_version": 1, "version": 1, "max_keywords": 3, "segment_fields": ["gender"]}
    first_query = queries[0]
    KeywordRepository(header=header, entries=[RepositoryEntry(query=first_query, segment=None, session_id=None,
                      version=1, keywords=_kw("广场舞", "连衣裙"))]).save(tmp_path / "kw.jsonl")  # fmt: skip
    recall = str(kuaisearch_demo / "recall.jsonl")
    with pytest.raises(RecordError, match=f"^{recall}:1: field 'user_id': user 1 is not in users.jsonl"):
        build_examples(kuaisearch_demo, tmp_path / "out", sids_dir=tmp_path / "sids",
                       keywords_path=tmp_path / "kw.jsonl", config=JSONL_ONLY)  # fmt: skip
    summary = build_examples(kuaisearch_demo, tmp_path / "out", sids_dir=tmp_path / "sids",
                             keywords_path=tmp_path / "kw.jsonl", config=JSONL_ONLY, skip_invalid=True)  # fmt: skip
    assert sum(summary.skipped[recall].values()) == 200  # every session counted, none lost silently
    assert summary.skipped[recall]["unknown_user"] > 190  # (one names a user that exists, and unknown items)
    assert sum(summary.counts[PERSONALIZED].values()) == 0
    assert summary.relevance["pairs"] == 200 and summary.relevance["matched"] + summary.relevance["unmatched"] == 200
    records = {(r["task"], r["item_id"]): r for r in _read(tmp_path / "out", STAGE1, "train")}
    first = records[("title_to_sid", 3359347)]
    assert first["inputs"] == "[task] title_to_sid [title] 【香榭丽舍】高级静奢风法式长款遮肉显瘦进口貂皮大衣"
    assert first["targets"] == book.tokens(book.item_sid(3359347))
    assert records[("sid_to_category", 3359347)]["targets"] == "女装 > 皮草"  # level 3 UNKNOWN left out
    assert summary.task_counts[STAGE1]["title_to_sid"] == 200 and summary.task_counts[STAGE1]["query_to_sid"] == 0
    # a personalised prompt from the demo's own profile and queries (they just do not join)
    user = next(dataset.read("users"))
    prompts = render_prompts(PromptRecord(
        profile=UserProfile.from_user(user), query=first_query, query_sid=book.tokens(book.query_sid(first_query)),
        recent_queries=tuple(queries[1:3]), recent_item_sids=(first["targets"],), keywords=("广场舞", "连衣裙"),
    ))  # fmt: skip
    assert prompts.teacher_inputs == (
        f"[user] gender M, age 31-40, location 辽宁 鞍山 [query] {first_query} [query_sid] <a_0><b_3><c_3> "
        f"[keywords] 广场舞, 连衣裙 [recent_queries] {queries[1]} | {queries[2]} [recent_items] {first['targets']}"
    )
    assert remove_segment(prompts.teacher_inputs, MARKER_KEYWORDS) == prompts.inputs
