import numpy as np
import pytest

from onesearch_jax.sid.codebook import SidCodebook


def _book(item_codes, raw=None, queries=("red dress",)):
    item_codes = np.asarray(item_codes, np.int32)
    return SidCodebook(
        code_sizes=(4, 2, 2, 256, 256), num_levels=3, opq_bits=8,
        item_ids=np.arange(1, len(item_codes) + 1, dtype=np.int64), item_codes=item_codes,
        raw_item_codes=item_codes if raw is None else np.asarray(raw, np.int32),
        queries=np.asarray(queries), query_codes=np.array([[3, 1, 0, 7, 9]] * len(queries), np.int32),
        collision_mode="reassign",
    )  # fmt: skip


def test_tokens_follow_the_paper_format_and_parse_back():
    book = _book([[1, 0, 1, 4, 5]])
    assert book.tokens((1, 0, 1, 4, 5)) == "<a_1><b_0><c_1><d_4><d_261>"
    assert book.parse_tokens("<a_1><b_0><c_1><d_4><d_261>") == (1, 0, 1, 4, 5)
    vocab = book.vocabulary()
    assert len(vocab) == 4 + 2 + 2 + 512
    assert vocab[:4] == ["<a_0>", "<a_1>", "<a_2>", "<a_3>"] and vocab[-1] == "<d_511>"


@pytest.mark.parametrize(
    "text, message",
    [
        ("<a_1><b_0><c_1><d_4>", "is not 5 SID tokens"),
        ("<a_1><b_0><c_1><d_4><d_4>", "token 5"),  # second OPQ code must be offset by 256
        ("<a_4><b_0><c_1><d_4><d_260>", "token 1"),
        ("<b_1><b_0><c_1><d_4><d_260>", "token 1"),
        ("<a_1> junk <b_0><c_1><d_4><d_260>", "is not 5 SID tokens"),
    ],
)
def test_bad_token_strings_are_rejected(text, message):
    with pytest.raises(ValueError, match=message):
        _book([[0, 0, 0, 0, 0]]).parse_tokens(text)


def test_lookups():
    book = _book([[1, 0, 1, 4, 5], [2, 1, 0, 4, 5]])
    assert book.item_sid(2) == (2, 1, 0, 4, 5)
    assert book.query_sid("red dress") == (3, 1, 0, 7, 9)
    assert book.query_sid("unseen") is None
    with pytest.raises(KeyError, match="item 9"):
        book.item_sid(9)
    assert book.trie().items((2, 1, 0, 4, 5)).tolist() == [2]


def test_quality_report_on_a_hand_computed_example():
    raw = [[0, 0, 0, 1, 1], [0, 0, 0, 1, 1], [0, 1, 1, 2, 2], [3, 1, 1, 2, 3]]
    final = [[0, 0, 0, 1, 1], [0, 0, 0, 1, 2], [0, 1, 1, 2, 2], [3, 1, 1, 2, 3]]
    report = _book(final, raw).report()
    assert report.cur[0] == 2 / 4 and report.cur[1] == 2 / 2 and report.cur[4] == 3 / 256
    assert report.cur_l1xl2 == 3 / 8  # (0,0), (0,1), (3,1)
    assert report.cur_total == 3 / 16  # residual prefixes (0,0,0), (0,1,1), (3,1,1)
    assert report.icr == 1.0 and report.icr_raw == 0.5 and report.icr_rq == 0.5
    assert report.moved == 1 and report.collisions == {}
    assert _book(raw).report().collisions == {2: 1}


def test_save_and_load_round_trip(tmp_path):
    book = _book([[1, 0, 1, 4, 5], [2, 1, 0, 4, 5]], queries=("red dress", "连衣裙 女"))
    book.save(tmp_path)
    loaded = SidCodebook.load(tmp_path)
    for name in ("item_ids", "item_codes", "raw_item_codes", "queries", "query_codes"):
        assert (getattr(loaded, name) == getattr(book, name)).all(), name
    assert loaded.code_sizes == book.code_sizes and loaded.query_sid("连衣裙 女") == (3, 1, 0, 7, 9)
    lines = (tmp_path / "item_sids.tsv").read_text(encoding="utf-8").splitlines()
    assert lines == ["item_id\tsid", "1\t<a_1><b_0><c_1><d_4><d_261>", "2\t<a_2><b_1><c_0><d_4><d_261>"]


def test_load_refuses_another_version(tmp_path):
    _book([[0, 0, 0, 0, 0]]).save(tmp_path)
    text = (tmp_path / "codebook.json").read_text().replace('"version": 1', '"version": 99')
    (tmp_path / "codebook.json").write_text(text)
    with pytest.raises(ValueError, match="version 99"):
        SidCodebook.load(tmp_path)


def test_unsorted_item_ids_are_rejected():
    with pytest.raises(ValueError, match="ascending"):
        SidCodebook(
            code_sizes=(2,), num_levels=1, opq_bits=8, item_ids=np.array([2, 1]), item_codes=np.zeros((2, 1), np.int32),
            raw_item_codes=np.zeros((2, 1), np.int32), queries=np.array([], str),
            query_codes=np.zeros((0, 1), np.int32), collision_mode="keep",
        )  # fmt: skip
