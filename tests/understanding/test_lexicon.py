"""The attribute lexicon: TSV parsing, errors naming file/line/field, Aho-Corasick matching."""

from __future__ import annotations

import json

import pytest

from onesearch_jax.data.schema import ATTRIBUTE_TYPES, RecordError
from onesearch_jax.understanding.lexicon import AttributeLexicon, LexiconMatch, PhraseMatcher, fold


def _tsv(tmp_path, text: str, name: str = "attributes.tsv"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def _spans(lexicon: AttributeLexicon, text: str) -> list[tuple[int, int, str]]:
    return [(m.start, m.end, m.term) for m in lexicon.match(text)]


def test_attribute_types_are_the_papers_eighteen():
    assert len(ATTRIBUTE_TYPES) == 18 and len(set(ATTRIBUTE_TYPES)) == 18
    assert ATTRIBUTE_TYPES[:3] == ("entity", "modifier", "brand")


def test_from_tsv_with_header_optional_weight_and_several_types(tmp_path):
    path = _tsv(
        tmp_path, "term\ttype\tweight\nYoga Mat\tentity\t1.0\nred\tcolor\nred\tbrand\t2.5\n\ncouch\tentity\t0.8\n"
    )
    lexicon = AttributeLexicon.from_tsv(path)
    assert lexicon.terms == ("couch", "red", "yoga mat")
    assert len(lexicon) == 3
    red = lexicon.entry("RED")
    assert red.types == ("brand", "color")  # ATTRIBUTE_TYPES order, not file order
    assert red.type_weights == (("brand", 2.5), ("color", 1.0))
    assert red.weight == 2.5
    assert lexicon.entry("couch").weight == 0.8
    assert "Yoga MAT" in lexicon and "yoga" not in lexicon
    assert lexicon.terms_of_type("entity") == ("couch", "yoga mat")


def test_a_two_column_header_is_recognised_and_other_first_lines_are_data(tmp_path):
    assert AttributeLexicon.from_tsv(_tsv(tmp_path, "TERM\tTYPE\ntent\tentity\n")).terms == ("tent",)
    assert AttributeLexicon.from_tsv(_tsv(tmp_path, "tent\tentity\nlamp\tentity\n")).terms == ("lamp", "tent")


def test_reads_the_world_lexicon(small_world):
    lexicon = AttributeLexicon.from_tsv(small_world / "lexicon" / "attributes.tsv")
    assert {"yoga mat", "running shoes", "red", "home gym"} <= set(lexicon.terms)
    assert lexicon.entry("couch").types == ("entity",) and lexicon.entry("couch").weight == 0.8
    assert lexicon.entry("home gym").types == ("scene",)


@pytest.mark.parametrize(
    ("text", "line", "field", "kind", "fragment"),
    [
        ("term\ttype\nsofa\n", 2, None, "columns", "got 1 tab-separated columns"),
        ("sofa\tentity\t1\textra\n", 1, None, "columns", "got 4 tab-separated columns"),
        ("sofa\tentity\n\t\tcolor\n", 2, "term", "empty_term", "empty or blank term"),
        ("sofa\tentity\n  \tcolor\n", 2, "term", "empty_term", "empty or blank term"),
        ("sofa\tentity\nred\tcolour\n", 2, "type", "unknown_type", "unknown attribute type 'colour'"),
        ("sofa\tentity\theavy\n", 1, "weight", "weight", "expected a number, got 'heavy'"),
        ("sofa\tentity\t0\n", 1, "weight", "weight", "finite number > 0"),
        ("sofa\tentity\tnan\n", 1, "weight", "weight", "finite number > 0"),
        ("sofa\tentity\nSOFA\tentity\n", 2, "term", "duplicate", "already defined on line 1"),
    ],
)
def test_bad_lines_name_file_line_and_field(tmp_path, text, line, field, kind, fragment):
    path = _tsv(tmp_path, text)
    with pytest.raises(RecordError) as info:
        AttributeLexicon.from_tsv(path)
    error = info.value
    assert (error.path, error.line, error.field, error.kind) == (str(path), line, field, kind)
    assert fragment in str(error)
    assert str(error).startswith(f"{path}:{line}: ")


def test_invalid_utf8_names_the_line(tmp_path):
    path = _tsv(tmp_path, b"sofa\tentity\n\xff\xfe\tcolor\n")
    with pytest.raises(RecordError, match=r"attributes\.tsv:2: invalid UTF-8 at byte 0") as info:
        AttributeLexicon.from_tsv(path)
    assert info.value.kind == "utf8"


def test_from_terms_errors_count_rows_from_one():
    with pytest.raises(RecordError, match=r"<memory>:2: field 'type': unknown attribute type 'size'"):
        AttributeLexicon.from_terms([("a", "color"), ("b", "size")])


def test_match_is_case_insensitive_leftmost_longest_in_text_order():
    lexicon = AttributeLexicon.from_terms(
        [("red", "color"), ("yoga mat", "entity"), ("yoga", "style", 0.5), ("mat", "entity"), ("red", "brand", 2.0)]
    )
    matches = lexicon.match("Bored? RED Yoga Mat, yoga class")
    assert matches == [
        LexiconMatch(start=7, end=10, term="red", types=("brand", "color"), weight=2.0),
        LexiconMatch(start=11, end=19, term="yoga mat", types=("entity",), weight=1.0),
        LexiconMatch(start=21, end=25, term="yoga", types=("style",), weight=0.5),
    ]


def test_word_boundaries_for_latin_and_digits_only():
    lexicon = AttributeLexicon.from_terms(
        [("red", "color"), ("size m", "specifications"), ("size", "modifier"), ("5kg", "specifications")]
    )
    assert _spans(lexicon, "bored redness") == []
    # the longest candidate fails its boundary, the shorter one still matches
    assert _spans(lexicon, "size ml red") == [(0, 4, "size"), (8, 11, "red")]
    assert _spans(lexicon, "red-5kg/red") == [(0, 3, "red"), (4, 7, "5kg"), (8, 11, "red")]
    assert _spans(lexicon, "15kg") == []


def test_cjk_has_no_boundaries_and_full_width_is_folded():
    lexicon = AttributeLexicon.from_terms(
        [("瑜伽垫", "entity"), ("瑜伽", "style"), ("red", "color"), ("t恤", "entity")]
    )
    assert _spans(lexicon, "粉色瑜伽垫加厚瑜伽") == [(2, 5, "瑜伽垫"), (7, 9, "瑜伽")]
    text = "ＲＥＤ纯棉T恤"
    assert _spans(lexicon, text) == [(0, 3, "red"), (5, 7, "t恤")]
    assert text[5:7] == "T恤" and fold(text) == "red纯棉t恤"


def test_empty_lexicon_and_empty_text():
    empty = AttributeLexicon.from_terms([])
    assert len(empty) == 0 and empty.match("anything") == []
    assert AttributeLexicon.from_terms([("a b", "color")]).match("") == []


def test_phrase_matcher_returns_payloads():
    matcher = PhraseMatcher({"camping gear": 1, "Camping": 2})
    assert matcher.find("new camping gear for camping") == [(4, 16, "camping gear", 1), (21, 28, "camping", 2)]
    with pytest.raises(ValueError, match="empty phrase"):
        PhraseMatcher({" ": 0})


def test_lexicon_of_the_real_kuaisearch_demo_matches_chinese_titles(kuaisearch_demo):
    items = [json.loads(line) for line in (kuaisearch_demo / "items.jsonl").read_text("utf-8").splitlines()]
    placeholders = {"其他/other", "无品牌", "UNKNOWN", "其他/QITA"}
    rows = sorted({(i["brand_name"], "brand") for i in items if i["brand_name"] not in placeholders})
    rows += [("T恤", "entity"), ("polo", "style"), ("logo", "marketing")]
    lexicon = AttributeLexicon.from_terms(rows)
    titles = {i["item_id"]: i["item_title"] for i in items}
    # hand-checked: the brand opens the title, or follows a bracket
    assert _spans(lexicon, titles[4682584])[0] == (0, 2, "林肯")
    assert (1, 5, "梦黛薇丝") in _spans(lexicon, titles[2985394])
    assert (1, 5, "哥本优选") in _spans(lexicon, titles[3372828])
    # 中通快递工作服定制POLO衫短袖夏季韵达工衣广告衫T恤印logo: Latin words inside CJK text
    assert _spans(lexicon, titles[2305034]) == [(9, 13, "polo"), (25, 27, "t恤"), (28, 32, "logo")]
    assert _spans(lexicon, titles[4420726])[:2] == [(6, 8, "t恤"), (8, 12, "polo")]
    # every demo item whose title contains its (real) brand gets that brand back
    hits = [
        i for i in items if i["brand_name"] not in placeholders and i["brand_name"].lower() in fold(i["item_title"])
    ]
    assert len(hits) >= 10
    for i in hits:
        assert i["brand_name"].lower() in {m.term for m in lexicon.match(i["item_title"])}, i["item_title"]
