"""Every OneSearch task on records built from a tiny generated world, and on Chinese demo titles.

The whole data path runs: world -> keyword repository -> SIDs -> records -> vocabulary -> seqio
tasks; each task's first example must be exactly the vocabulary's encoding of its record.
"""

import json

import numpy as np
import pytest
import seqio
from seqio import test_utils

from onesearch_jax.data.example_io import vocabulary_corpus
from onesearch_jax.data.examples import ExamplesConfig, build_examples
from onesearch_jax.data.kuaisearch import KuaiSearchDataset
from onesearch_jax.data.prompts import MARKER_KEYWORDS, PROMPT_MARKERS, remove_segment
from onesearch_jax.sid.build import SidBuildConfig
from onesearch_jax.sid.codebook import SidCodebook
from onesearch_jax.sid.embed import TfidfSvdConfig
from onesearch_jax.sid.quantize import QuantizerConfig
from onesearch_jax.understanding.repository import FORMAT, KeywordRepository
from onesearch_jax.vocab import VocabConfig, train_vocabulary
from tasks.onesearch import register_onesearch_tasks

SIDS = SidBuildConfig(tfidf=TfidfSvdConfig(dim=32), quantizer=QuantizerConfig(level_sizes=(8, 4, 4), niter=10))
VOCAB = VocabConfig(vocab_size=3000, hard_vocab_limit=False, extra_symbols=PROMPT_MARKERS)
LENGTHS = {"inputs": 512, "teacher_inputs": 512, "targets": 64}


def _first_record(out, stage):
    with open(out / stage / "train.jsonl", encoding="utf-8") as f:
        return json.loads(f.readline())


@pytest.fixture(scope="module")
def world_tasks(world_records):
    vocab = register_onesearch_tasks(str(world_records / "out"), str(world_records / "vocab"))
    return vocab, world_records / "out"


@pytest.mark.parametrize(
    "task, stage, source",
    [
        ("onesearch_stage1_alignment", "stage1_alignment", "inputs"),
        ("onesearch_stage2_cooccurrence", "stage2_cooccurrence", "inputs"),
        ("onesearch_personalized_raw", "personalized", "inputs"),
        ("onesearch_personalized_keyword", "personalized", "teacher_inputs"),
    ],
)
def test_each_task_gives_exactly_the_encoded_record(world_tasks, task, stage, source):
    vocab, out = world_tasks
    record = _first_record(out, stage)
    lengths = {"inputs": LENGTHS["inputs"], "targets": LENGTHS["targets"]}
    ds = seqio.get_mixture_or_task(task).get_dataset(lengths, split="train", shuffle=False)
    test_utils.assert_dataset(
        ds.take(1),
        {
            "inputs": [*vocab.encode(record[source]), 1], "targets": [*vocab.encode(record["targets"]), 1],
            "inputs_pretokenized": record[source], "targets_pretokenized": record["targets"], "truncated": 0,
        },
    )  # fmt: skip


def test_distill_task_carries_both_inputs_that_differ_only_by_keywords(world_tasks):
    vocab, _out = world_tasks
    ds = seqio.get_mixture_or_task("onesearch_personalized_distill").get_dataset(LENGTHS, shuffle=False)
    examples = list(ds.take(50).as_numpy_iterator())
    for ex in examples:
        student, teacher = ex["inputs_pretokenized"].decode(), ex["teacher_inputs_pretokenized"].decode()
        assert remove_segment(teacher, MARKER_KEYWORDS) == student
        assert vocab.decode(ex["inputs"].tolist()) == student
        sid = vocab.sid_from_token_ids(ex["targets"][:-1].tolist())  # a whole valid SID, then EOS
        assert ex["targets"][-1] == 1 and len(sid) == 5
    assert any(len(ex["teacher_inputs"]) > len(ex["inputs"]) for ex in examples)


def test_mixtures_draw_from_their_tasks(world_tasks):
    vocab, _ = world_tasks
    ds = seqio.get_mixture_or_task("onesearch_stage2").get_dataset(
        {"inputs": 512, "targets": 64}, shuffle=True, seed=1, num_epochs=1
    )
    texts = [vocab.decode(ex["inputs"].tolist()) for ex in ds.take(200).as_numpy_iterator()]
    assert any("query_to_item_sid" in t for t in texts) and any("title_to_sid" in t for t in texts)


def test_chinese_titles_of_the_kuaisearch_demo_through_the_alignment_task(kuaisearch_demo, tmp_path):
    dataset = KuaiSearchDataset(kuaisearch_demo)
    item_ids = sorted(i.item_id for i in dataset.read("items"))
    codes = np.asarray([(k % 8, k // 8 % 4, k // 32) for k in range(len(item_ids))], np.int32)
    book = SidCodebook(
        code_sizes=(8, 4, 8), num_levels=3, opq_bits=8, item_ids=np.asarray(item_ids, np.int64), item_codes=codes,
        raw_item_codes=codes, queries=np.asarray([], str), query_codes=np.zeros((0, 3), np.int32),
        collision_mode="keep",
    )  # fmt: skip
    book.save(tmp_path / "sids")
    header = {"format": FORMAT, "format_version": 1, "version": 1, "max_keywords": 3, "segment_fields": ["gender"]}
    KeywordRepository(header=header, entries=[]).save(tmp_path / "kw.jsonl")
    config = ExamplesConfig(stage1_tasks=("title_to_sid", "sid_to_title"), stage2_tasks=())
    build_examples(kuaisearch_demo, tmp_path / "out", sids_dir=tmp_path / "sids", keywords_path=tmp_path / "kw.jsonl",
                   config=config, skip_invalid=True)  # fmt: skip
    vocab = train_vocabulary(vocabulary_corpus(tmp_path / "out"), book, tmp_path / "vocab", VOCAB)
    register_onesearch_tasks(str(tmp_path / "out"), str(tmp_path / "vocab"))
    record = _first_record(tmp_path / "out", "stage1_alignment")
    ds = seqio.get_mixture_or_task("onesearch_stage1_alignment").get_dataset(
        {"inputs": 256, "targets": 128}, shuffle=False
    )
    first = next(ds.as_numpy_iterator())
    assert any("\u4e00" <= ch <= "\u9fff" for ch in record["inputs"])  # Chinese title text
    assert first["inputs"].tolist() == [*vocab.encode(record["inputs"]), 1]
    assert vocab.decode(first["inputs"].tolist()) == record["inputs"]
    assert 2 not in first["inputs"].tolist()  # no <unk>
