"""The registered OneSearch tasks on hand-written records, checked with seqio's test utilities."""

import numpy as np
import pytest
import seqio
import tensorflow as tf
from seqio import test_utils

from onesearch_jax.data.batches import BatchConfig, ResumableBatches
from onesearch_jax.data.prompts import PROMPT_MARKERS
from onesearch_jax.sid.codebook import SidCodebook
from onesearch_jax.vocab import VocabConfig, train_vocabulary
from tasks.onesearch import MIXTURES, TASKS, register_onesearch_tasks

SID_A = "<a_1><b_0><c_1><d_4><d_261>"
SID_B = "<a_3><b_1><c_0><d_9><d_300>"
PERSONALIZED = [
    {"inputs": "[user] gender F [query] red dress [query_sid] " + SID_B,
     "teacher_inputs": "[user] gender F [query] red dress [query_sid] " + SID_B + " [keywords] summer dress",
     "targets": SID_A, "session_id": 7, "item_id": 11},
    {"inputs": "[user] gender M [query] 运动鞋 [query_sid] " + SID_A,
     "teacher_inputs": "[user] gender M [query] 运动鞋 [query_sid] " + SID_A + " [keywords] 跑步鞋",
     "targets": SID_B, "session_id": 8, "item_id": 12},
]  # fmt: skip
ALIGNMENT = [
    {"inputs": "[task] title_to_sid [title] red summer dress", "targets": SID_A, "task": "title_to_sid"},
    {"inputs": "[task] sid_to_title [item_sid] " + SID_B, "targets": "white running shoes", "task": "sid_to_title"},
]
COOCCURRENCE = [{"inputs": "[task] query_to_sid [query] red dress", "targets": SID_A, "task": "query_to_sid"}]


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as w:
        for row in rows:
            feats = {
                k: tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
                if isinstance(v, int)
                else tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))
                for k, v in row.items()
            }
            w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())


def _codebook():
    codes = np.array([[1, 0, 1, 4, 5], [3, 1, 0, 9, 44]], np.int32)
    return SidCodebook(
        code_sizes=(4, 2, 2, 256, 256), num_levels=3, opq_bits=8, item_ids=np.array([11, 12]), item_codes=codes,
        raw_item_codes=codes, queries=np.array([], str), query_codes=np.zeros((0, 5), np.int32),
        collision_mode="reassign",
    )  # fmt: skip


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    for split in ("train", "valid", "test"):
        _write(root / "personalized" / f"{split}.tfrecord", PERSONALIZED)
        _write(root / "stage1_alignment" / f"{split}.tfrecord", ALIGNMENT)
        _write(root / "stage2_cooccurrence" / f"{split}.tfrecord", COOCCURRENCE)
    texts = [r[k] for r in PERSONALIZED for k in ("inputs", "teacher_inputs")] + [r["inputs"] for r in ALIGNMENT]
    config = VocabConfig(vocab_size=1200, hard_vocab_limit=False, extra_symbols=PROMPT_MARKERS)
    vocab = train_vocabulary(texts * 20, _codebook(), root / "vocab", config)
    register_onesearch_tasks(str(root), str(root / "vocab"))
    return vocab


def test_every_task_and_mixture_is_registered(registered):
    assert set(TASKS) <= set(seqio.TaskRegistry.names())
    assert set(MIXTURES) <= set(seqio.MixtureRegistry.names())


def test_distill_examples_carry_student_teacher_and_sid_targets(registered):
    vocab = registered
    ds = seqio.get_mixture_or_task("onesearch_personalized_distill").get_dataset(
        {"inputs": 64, "teacher_inputs": 64, "targets": 8}, split="train", shuffle=False
    )
    first = PERSONALIZED[0]
    test_utils.assert_dataset(
        ds.take(1),
        {
            "inputs": [*vocab.encode(first["inputs"]), 1],
            "teacher_inputs": [*vocab.encode(first["teacher_inputs"]), 1],
            "targets": [*vocab.sid_token_ids(_codebook().parse_tokens(SID_A)), 1],
            "inputs_pretokenized": first["inputs"],
            "teacher_inputs_pretokenized": first["teacher_inputs"],
            "targets_pretokenized": SID_A,
            "truncated": 0,
        },
    )


def test_raw_and_keyword_tasks_differ_only_in_the_encoder_text(registered):
    lengths = {"inputs": 64, "targets": 8}
    raw = list(
        seqio.get_mixture_or_task("onesearch_personalized_raw").get_dataset(lengths, shuffle=False).as_numpy_iterator()
    )
    kw = list(
        seqio.get_mixture_or_task("onesearch_personalized_keyword")
        .get_dataset(lengths, shuffle=False)
        .as_numpy_iterator()
    )
    for r, k, record in zip(raw, kw, PERSONALIZED, strict=True):
        assert r["inputs_pretokenized"].decode() == record["inputs"]
        assert k["inputs_pretokenized"].decode() == record["teacher_inputs"]
        np.testing.assert_array_equal(r["targets"], k["targets"])


def test_chinese_text_round_trips_through_the_task(registered):
    vocab = registered
    ds = seqio.get_mixture_or_task("onesearch_personalized_raw").get_dataset(
        {"inputs": 64, "targets": 8}, shuffle=False
    )
    second = list(ds.as_numpy_iterator())[1]
    assert vocab.decode(second["inputs"].tolist()) == PERSONALIZED[1]["inputs"]
    assert 2 not in second["inputs"].tolist()  # no <unk>: byte fallback covers any character


def test_alignment_targets_may_be_text_and_long_inputs_are_truncated_with_a_mark(registered):
    ds = seqio.get_mixture_or_task("onesearch_stage1_alignment").get_dataset(
        {"inputs": 6, "targets": 32}, shuffle=False
    )
    examples = list(ds.as_numpy_iterator())
    assert [e["truncated"] for e in examples] == [1, 1]
    assert all(len(e["inputs"]) == 6 and e["inputs"][-1] == 1 for e in examples)
    assert registered.decode(examples[1]["targets"].tolist()) == "white running shoes"


def test_a_target_longer_than_its_length_is_an_error(registered):
    ds = seqio.get_mixture_or_task("onesearch_stage1_alignment").get_dataset(
        {"inputs": 64, "targets": 3}, shuffle=False
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="feature targets has more tokens"):
        list(ds.as_numpy_iterator())


def test_batches_are_deterministic_and_resume_where_they_stopped(registered):
    config = BatchConfig(
        mixture_or_task="onesearch_stage3", task_feature_lengths={"inputs": 64, "targets": 8}, batch_size=2, seed=3
    )
    straight = ResumableBatches(config)
    first = [next(straight) for _ in range(6)]
    again = [next(ResumableBatches(config)) for _ in range(1)]
    np.testing.assert_array_equal(again[0]["encoder_input_tokens"], first[0]["encoder_input_tokens"])
    stopped = ResumableBatches(config)
    for _ in range(4):
        next(stopped)
    resumed = ResumableBatches.restore(stopped.state(), config)
    for expected in first[4:]:
        got = next(resumed)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])
    assert resumed.position == 6
    with pytest.raises(ValueError, match="data stream changed"):
        ResumableBatches.restore(stopped.state(), BatchConfig(**{**config.__dict__, "seed": 4}))


def test_input_shards_make_the_global_batches_independent_of_the_host_count(registered):
    """K = 2 shards: one host reading both (rows of shard 0, then of shard 1) sees the batches that
    two hosts reading one shard each see together, in host order; resuming keeps that."""
    common = dict(mixture_or_task="onesearch_stage3", task_feature_lengths={"inputs": 64, "targets": 8}, seed=3,
                  num_shards=2)  # fmt: skip
    one_host = ResumableBatches(BatchConfig(**common, batch_size=4, num_host_shards=2))
    hosts = [ResumableBatches(BatchConfig(**common, batch_size=2, shard_index=h)) for h in (0, 1)]
    for _ in range(3):
        whole, parts = next(one_host), [next(h) for h in hosts]
        assert whole["encoder_input_tokens"].shape[0] == 4
        for key in whole:
            np.testing.assert_array_equal(whole[key], np.concatenate([p[key] for p in parts]))
    assert not np.array_equal(parts[0]["encoder_input_tokens"], parts[1]["encoder_input_tokens"])
    resumed = ResumableBatches.restore(one_host.state(), one_host.config)
    np.testing.assert_array_equal(next(resumed)["decoder_target_tokens"],
                                  np.concatenate([next(h)["decoder_target_tokens"] for h in hosts]))  # fmt: skip
    # a stream saved before num_host_shards existed restores as one shard per host
    old = one_host.state() | {"config": {k: v for k, v in hosts[0].state()["config"].items() if k != "num_host_shards"}}
    assert ResumableBatches.restore(old, hosts[0].config).config.num_host_shards == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_host_shards": 2, "shard_index": 1}, "num_host_shards 2 from shard 1 goes past the 2 shards"),
        ({"num_host_shards": 2, "batch_size": 3}, "batch_size 3 does not split over its 2 shards"),
        ({"num_host_shards": 2, "drop_remainder": False}, "several shards per host need drop_remainder"),
    ],
)
def test_batch_config_checks_its_shards(change, message):
    base = dict(mixture_or_task="t", task_feature_lengths={"inputs": 8}, batch_size=4, num_shards=2)
    with pytest.raises(ValueError, match=message):
        BatchConfig(**{**base, **change})


def test_distill_batches_have_teacher_encoder_tokens(registered):
    config = BatchConfig(
        mixture_or_task="onesearch_personalized_distill", batch_size=2, feature_converter="encdec_teacher",
        task_feature_lengths={"inputs": 48, "teacher_inputs": 64, "targets": 8}, shuffle=False,
    )  # fmt: skip
    batch = next(ResumableBatches(config))
    assert batch["encoder_input_tokens"].shape == (2, 48)
    assert batch["teacher_encoder_input_tokens"].shape == (2, 64)
    assert batch["decoder_target_tokens"][:, :5].tolist() == [
        registered.sid_token_ids(_codebook().parse_tokens(s)) for s in (SID_A, SID_B)
    ]
