import copy
import dataclasses
import json
import shutil

import numpy as np
import pytest
import seqio
import tensorflow as tf
from seqio import test_utils

from onesearch_jax.data.kuaisearch import KuaiSearchDataset
from onesearch_jax.sid.codebook import SidCodebook
from onesearch_jax.vocab import OneSearchVocabulary, VocabConfig, _training_texts, train_vocabulary

# Three residual levels (4, 3, 2) and two OPQ sub-codes of 2^4: S = 4 + 3 + 2 + 32 = 41 SID tokens.
CODE_SIZES = (4, 3, 2, 16, 16)
NUM_SID_TOKENS = 41
MARKERS = ("[query]", "[sid]", "[用户]")
ENGLISH = [
    "red summer dress for women",
    "blue running shoes for men",
    "wireless bluetooth earbuds with charging case",
    "cotton oversized t-shirt black",
    "stainless steel water bottle 500ml",
    "women floral maxi dress summer beach",
    "men leather wallet brown slim",
]
CHINESE = [
    "夏季新款女装连衣裙",
    "男士运动跑步鞋 透气 轻便",
    "无线蓝牙耳机 降噪 长续航",
    "纯棉宽松短袖T恤 黑色",
    "不锈钢保温杯 500ml 大容量",
    "碎花长裙 海边度假",
    "真皮钱包 男 短款",
    "红色连衣裙 女 夏",
]
# What the tasks feed the trainer: record text with markers and SID tokens embedded.
RECORDS = [
    "[query]red summer dress[sid]<a_3><b_1><c_0><d_7><d_30>",
    "[query]连衣裙 女[sid]<a_1><b_2><c_1><d_0><d_16>[用户]女 25岁",
]
CORPUS = (ENGLISH + CHINESE) * 4 + RECORDS
CONFIG = VocabConfig(vocab_size=420, extra_symbols=MARKERS)


def _book() -> SidCodebook:
    codes = np.array([[3, 1, 0, 7, 14], [1, 2, 1, 0, 0], [0, 0, 0, 15, 15]], np.int32)
    return SidCodebook(
        code_sizes=CODE_SIZES, num_levels=3, opq_bits=4, item_ids=np.arange(1, 4, dtype=np.int64),
        item_codes=codes, raw_item_codes=codes, queries=np.asarray(["red dress"]),
        query_codes=np.array([[3, 1, 0, 7, 9]], np.int32), collision_mode="reassign",
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("vocab")
    return train_vocabulary(CORPUS, _book(), out, CONFIG), out


@pytest.fixture(scope="module")
def vocab(trained) -> OneSearchVocabulary:
    return trained[0]


def _all_sids():
    """Every code at every position at least once (SIDs of the form (c % K1, c % K2, ...))."""
    return [tuple(c % k for k in CODE_SIZES) for c in range(max(CODE_SIZES))]


# ---------------------------------------------------------------------------- id layout
def test_id_layout_specials_sid_range_markers_bytes(vocab):
    sp = vocab.tokenizer
    assert (vocab.pad_id, vocab.eos_id, vocab.unk_id, vocab.bos_id, vocab.extra_ids) == (0, 1, 2, -1, 0)
    assert [sp.IdToPiece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
    assert vocab.vocab_size == sp.GetPieceSize() == 420
    assert (vocab.sid_first_id, vocab.sid_num_ids, vocab.sid_length) == (3, NUM_SID_TOKENS, 5)
    assert [sp.IdToPiece(3 + i) for i in range(NUM_SID_TOKENS)] == _book().vocabulary()
    assert vocab.extra_symbol_ids == {"[query]": 44, "[sid]": 45, "[用户]": 46}
    assert [sp.IdToPiece(i) for i in (47, 47 + 255)] == ["<0x00>", "<0xFF>"]
    # OPQ sub-code 1 starts 2^4 after the first OPQ id, as its tokens <d_16>.. do.
    assert vocab.position_id_ranges() == [(3, 7), (7, 10), (10, 12), (12, 28), (28, 44)]
    assert vocab.position_first_ids == (3, 7, 10, 12, 28)


def test_every_code_maps_by_arithmetic_and_back(vocab):
    book = _book()
    ranges = vocab.position_id_ranges()
    for t, (first, end) in enumerate(ranges):
        for code in range(CODE_SIZES[t]):
            sid = tuple(code if u == t else 0 for u in range(5))
            ids = vocab.sid_token_ids(sid)
            assert ids[t] == first + code < end
            assert vocab.tokenizer.IdToPiece(ids[t]) == book.tokens(sid).split(">")[t] + ">"
            assert vocab.sid_from_token_ids(ids) == sid
    covered = [i for first, end in ranges for i in range(first, end)]
    assert covered == list(range(vocab.sid_first_id, vocab.sid_first_id + vocab.sid_num_ids))


def test_sid_text_encodes_to_exactly_the_sid_ids(vocab):
    book = _book()
    for sid in _all_sids():
        ids = vocab.encode(book.tokens(sid))
        assert ids == vocab.sid_token_ids(sid)  # no leading whitespace piece: targets are L ids
        assert vocab.decode(ids) == book.tokens(sid)
        assert book.parse_tokens(vocab.decode(ids)) == sid
    sid = (3, 1, 0, 7, 14)
    text = "red dress " + book.tokens(sid)
    assert book.tokens(sid) == "<a_3><b_1><c_0><d_7><d_30>"
    ids = vocab.encode(text)
    assert ids[-5:] == vocab.sid_token_ids(sid) == [6, 8, 10, 19, 42]
    assert vocab.tokenizer.IdToPiece(ids[-6]) == "▁"  # the space before the SID is its own piece
    assert vocab.decode(ids) == text
    mixed = "[query]连衣裙 女[sid]" + book.tokens(sid) + "[用户]女"
    ids = vocab.encode(mixed)
    assert ids[:1] == [44] and vocab.sid_token_ids(sid) == ids[ids.index(45) + 1 : ids.index(45) + 6]
    assert vocab.decode(ids) == mixed


# ---------------------------------------------------------------------------- text round trips
@pytest.mark.parametrize("text", [*ENGLISH[:3], "summer dress for men", *CHINESE[:3], "女士 跑步鞋 蓝牙 T恤", ""])
def test_text_round_trips_without_unk(vocab, text):
    ids = vocab.encode(text)
    assert vocab.unk_id not in ids
    assert vocab.decode(ids) == text


def test_unseen_chinese_characters_fall_back_to_bytes(vocab):
    assert not any("犇" in t or "龘" in t for t in CORPUS)
    ids = vocab.encode("犇龘")
    assert len(ids) == 6 and all(vocab.tokenizer.IsByte(i) for i in ids)
    assert ids == [47 + b for b in "犇龘".encode()]
    assert vocab.decode(vocab.encode("红色犇裙")) == "红色犇裙"


def test_nfkc_folds_full_width_forms(vocab):
    assert vocab.decode(vocab.encode("ＴＳＨＩＲＴ　５００ｍｌ，红色")) == "TSHIRT 500ml,红色"


def test_without_byte_fallback_unseen_characters_are_unk(tmp_path):
    config = VocabConfig(vocab_size=164, byte_fallback=False)
    plain = train_vocabulary(CORPUS, _book(), tmp_path, config)
    assert plain.vocab_size == 164 and plain.tokenizer.IdToPiece(44) != "<0x00>"
    assert plain.unk_id in plain.encode("犇")


# ---------------------------------------------------------------------------- determinism, files
def test_training_is_deterministic(trained, tmp_path):
    _, first_dir = trained
    again = train_vocabulary(iter(CORPUS), _book(), tmp_path, CONFIG)
    assert (tmp_path / "spm.model").read_bytes() == (first_dir / "spm.model").read_bytes()
    assert (tmp_path / "vocab.json").read_text() == (first_dir / "vocab.json").read_text()
    assert again == OneSearchVocabulary.load(tmp_path)


def test_vocab_json_records_the_layout(trained):
    meta = json.loads((trained[1] / "vocab.json").read_text(encoding="utf-8"))
    assert meta["format"] == "onesearch-vocabulary" and meta["version"] == 1
    assert meta["code_sizes"] == list(CODE_SIZES) and meta["letters"] == ["a", "b", "c", "d", "d"]
    assert meta["token_offsets"] == [0, 0, 0, 0, 16] and meta["sid_first_id"] == 3 and meta["sid_num_ids"] == 41
    assert meta["extra_symbols"] == list(MARKERS) and meta["extra_symbol_ids"] == [44, 45, 46]
    assert meta["num_training_texts"] == len(CORPUS) and meta["config"]["vocab_size"] == 420


def test_sampling_is_seeded_and_keeps_input_order(tmp_path):
    texts = [f"item {i} dress" for i in range(50)] + CHINESE
    sample = _training_texts(texts, VocabConfig(max_sentences=40, seed=1))
    assert len(sample) == 40 and sample == [t for t in texts if t in set(sample)]  # a subsequence
    assert sample != _training_texts(texts, VocabConfig(max_sentences=40, seed=2))
    models = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        config = VocabConfig(vocab_size=500, max_sentences=40, seed=seed, hard_vocab_limit=False)
        train_vocabulary(texts, _book(), tmp_path / name, config)
        models.append((tmp_path / name / "spm.model").read_bytes())
    assert models[0] == models[1] != models[2]
    assert json.loads((tmp_path / "a" / "vocab.json").read_text())["num_training_texts"] == 40


def test_retraining_into_the_same_directory_is_not_served_from_seqio_cache(tmp_path):
    first = train_vocabulary(CORPUS, _book(), tmp_path, VocabConfig(vocab_size=400))
    assert first.vocab_size == 400
    second = train_vocabulary(CORPUS, _book(), tmp_path, VocabConfig(vocab_size=410, extra_symbols=("[q]",)))
    assert second.vocab_size == 410 and second.encode("[q]") == [44]


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "ids, message",
    [
        ([7, 7, 10, 12, 28], "token id 7 at SID position 1 is not a position-1 SID token \\(allowed ids 3..6\\)"),
        ([3, 7, 10, 12, 12], "token id 12 at SID position 5 .* \\(allowed ids 28..43\\)"),  # sub-code 0 id at m=1
        ([3, 7, 10, 44, 28], "token id 44 at SID position 4"),  # a marker
        ([3, 7, 2, 12, 28], "token id 2 at SID position 3"),  # <unk>
        ([3, 7, 10, 12], "are 4 ids, a SID is 5"),
    ],
)
def test_sid_from_token_ids_names_the_bad_position(vocab, ids, message):
    with pytest.raises(ValueError, match=message):
        vocab.sid_from_token_ids(ids)


@pytest.mark.parametrize(
    "sid, message",
    [((4, 0, 0, 0, 0), "code 4 at position 1 is outside 0..3"), ((0, 0, 0, 0, 16), "position 5"), ((0, 0), "2 codes")],
)
def test_sid_token_ids_rejects_codes_out_of_range(vocab, sid, message):
    with pytest.raises(ValueError, match=message):
        vocab.sid_token_ids(sid)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"vocab_size": 200}, "leaves no room for text pieces: 260 ids"),
        ({"model_type": "word"}, "model_type"),
        ({"character_coverage": 0.0}, "character_coverage"),
        ({"extra_symbols": ("[q]", "[q]")}, "duplicates"),
        ({"extra_symbols": ("[a b]",)}, "without spaces"),
        ({"extra_symbols": ("<a_3>",)}, "reserved"),
        ({"extra_symbols": ("</s>",)}, "reserved"),
        ({"max_sentences": -1}, "max_sentences"),
    ],
)
def test_config_is_validated_on_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VocabConfig(**{"extra_symbols": ("[q]",), **kwargs})


def test_vocab_size_too_small_for_sid_tokens_or_characters(tmp_path):
    with pytest.raises(ValueError, match=r"vocab_size 300 is too small: 301 ids are fixed \(3 special, 41 SID tokens"):
        train_vocabulary(CORPUS, _book(), tmp_path, VocabConfig(vocab_size=300, extra_symbols=("[q]",)))
    with pytest.raises(ValueError, match="smaller than required_chars"):
        train_vocabulary(CORPUS, _book(), tmp_path, VocabConfig(vocab_size=310))
    with pytest.raises(ValueError, match="too high"):
        train_vocabulary(CORPUS, _book(), tmp_path, VocabConfig(vocab_size=5000))


def test_training_rejects_texts_it_would_drop(tmp_path):
    with pytest.raises(ValueError, match="training text 1 is 12 UTF-8 bytes"):
        train_vocabulary(["ok", "连衣裙女"], _book(), tmp_path, VocabConfig(vocab_size=400, max_text_bytes=10))
    with pytest.raises(ValueError, match="no training text"):
        train_vocabulary(["", " "], _book(), tmp_path, VocabConfig(vocab_size=400))


def _copy_with_meta(trained, tmp_path, **changes):
    shutil.copytree(trained[1], tmp_path, dirs_exist_ok=True)
    meta = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    meta.update(changes)
    (tmp_path / "vocab.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"code_sizes": [5, 3, 2, 16, 16]}, "SID token <a_4> should be id 7, the model has no such piece"),
        ({"token_offsets": [0, 0, 0, 16, 0]}, "SID token <d_16> should be id 12, the model has it at id 28"),
        ({"code_sizes": [4, 3, 3, 16, 16]}, "SID token <c_2> should be id 12, the model has no such piece"),
        ({"sid_first_id": 4}, "SID token <a_0> should be id 4, the model has it at id 3"),
        ({"letters": ["a", "b", "c", "d", "e"]}, "SID token <e_16> should be id 28"),
        ({"extra_symbol_ids": [44, 46, 45]}, "extra symbol '\\[sid\\]' is not the single piece id 46"),
        ({"vocab_size": 421}, "420 pieces, vocab.json says 421"),
        ({"version": 2}, "version 2"),
        ({"format": "other"}, "expected format onesearch-vocabulary"),
    ],
)
def test_load_rejects_a_mismatching_vocab_json(trained, tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        OneSearchVocabulary.load(_copy_with_meta(trained, tmp_path, **changes))


def test_check_codebook(vocab):
    vocab.check_codebook(_book())
    other = dataclasses.replace(_book(), code_sizes=(4, 3, 3, 16, 16))
    with pytest.raises(ValueError, match="does not match the vocabulary's SID tokens"):
        vocab.check_codebook(other)


# ---------------------------------------------------------------------------- seqio behaviour
def test_encode_tf_and_decode_tf_equal_the_python_path(vocab):
    texts = [ENGLISH[0], CHINESE[0], "[query]红色犇裙[sid]<a_3><b_1><c_0><d_7><d_30>", "summer 连衣裙 <a_0>"]
    for text in texts:
        assert vocab.encode_tf(tf.constant(text)).numpy().tolist() == vocab.encode(text)
    ids = [vocab.encode(t) for t in texts]
    width = max(map(len, ids))
    padded = tf.constant([i + [vocab.pad_id] * (width - len(i)) for i in ids])
    assert [s.decode() for s in vocab.decode_tf(padded).numpy()] == texts


def test_decode_stops_at_eos_and_maps_out_of_range_ids_to_unk(vocab):
    sid_ids = vocab.sid_token_ids((3, 1, 0, 7, 14))
    assert vocab.decode([*sid_ids, vocab.eos_id, 6, 6]) == "<a_3><b_1><c_0><d_7><d_30>"
    assert vocab.decode_tf(tf.constant([*sid_ids, 1, 6])).numpy().decode() == "<a_3><b_1><c_0><d_7><d_30>"
    assert vocab.decode([6, 10_000]) == vocab.decode([6, vocab.unk_id])


def test_deepcopy_as_gin_does_keeps_an_equal_working_vocabulary(vocab):
    clone = copy.deepcopy(vocab)
    assert clone == vocab and clone.position_id_ranges() == vocab.position_id_ranges()
    assert clone.encode("<a_3>") == [6]
    assert vocab != seqio.SentencePieceVocabulary(vocab.sentencepiece_model_file)


def test_a_seqio_task_tokenises_records_with_sid_targets(vocab):
    book = _book()
    inputs = ["[query]red summer dress", "[query]连衣裙 女"]
    targets = [book.tokens(book.item_sid(1)), book.tokens(book.item_sid(2))]
    task = seqio.Task(
        "onesearch_vocab_test_task",
        source=seqio.FunctionDataSource(
            lambda split, shuffle_files: tf.data.Dataset.from_tensor_slices({"inputs": inputs, "targets": targets}),
            splits=["train"],
        ),
        output_features={"inputs": seqio.Feature(vocab), "targets": seqio.Feature(vocab)},
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
    )
    ds = task.get_dataset({"inputs": 16, "targets": 6}, split="train", shuffle=False)
    test_utils.assert_dataset(
        ds,
        [
            {
                "inputs_pretokenized": text,
                "inputs": [*vocab.encode(text), 1],
                "targets_pretokenized": target,
                "targets": [*vocab.sid_token_ids(book.parse_tokens(target)), 1],
            }
            for text, target in zip(inputs, targets, strict=True)
        ],
    )
    assert [vocab.encode(t)[0] for t in inputs] == [44, 44]
    assert vocab.sid_token_ids(book.item_sid(1)) == [6, 8, 10, 19, 42]


# ---------------------------------------------------------------------------- real titles
def test_kuaisearch_demo_titles_round_trip(kuaisearch_demo, tmp_path):
    titles = [item.item_title for item in KuaiSearchDataset(kuaisearch_demo).read("items")]
    vocab = train_vocabulary(titles, _book(), tmp_path, VocabConfig(vocab_size=3000, hard_vocab_limit=False))
    assert vocab.sid_first_id == 3
    assert vocab.vocab_size == json.loads((tmp_path / "vocab.json").read_text())["vocab_size"] <= 3000
    changed = 0
    for title in titles:
        ids = vocab.encode(title)
        normalised = vocab.tokenizer.Normalize(title).replace("▁", " ")  # NFKC: full-width forms fold
        assert vocab.unk_id not in ids and vocab.decode(ids) == normalised, title
        changed += normalised != title
    assert 0 < changed < len(titles) // 2  # e.g. "枕套（1对装）" -> "枕套(1对装)"
    sid = (3, 1, 0, 7, 14)
    assert vocab.encode(titles[0] + _book().tokens(sid))[-5:] == vocab.sid_token_ids(sid)
