"""Profiles, price bands and preference calibration, computed by hand on the tiny log."""

from __future__ import annotations

import math

import pytest

from onesearch_jax.understanding.calibrate import CalibrationConfig, PreferenceCalibrator, UserCalibrationConfig
from onesearch_jax.understanding.keywords import Keyword
from onesearch_jax.understanding.profiles import HistoryProfile, ProfileBuilder, Segmenter, segment_value
from tests.understanding import tiny


def _builder(logs=None) -> ProfileBuilder:
    return ProfileBuilder(logs or tiny.logs(), lexicon=tiny.lexicon(), segmenter=Segmenter())


def _kw(text: str, score: float = 1.0, types=("entity",)) -> Keyword:
    return Keyword(text=text, score=score, types=types, sources=("mined",))


def test_segments_from_user_fields():
    logs = tiny.logs()
    assert Segmenter().of(logs, 1) == "gender=F"
    assert Segmenter(fields=("gender", "age_bucket")).of(logs, 2) == "gender=M,age_bucket=24-30"
    assert Segmenter().of(logs, 404) is None
    assert segment_value("gender=M,age_bucket=24-30", "age_bucket") == "24-30"
    assert segment_value(None, "gender") is None


def test_user_profile_uses_only_earlier_window_sessions():
    builder = _builder()
    profile = builder.user(1, before=60)  # sessions 1 (item 1) and 4 (items 5, 6); test session 8 is not in the window
    assert profile.events == 3
    assert profile.share("category1", "Women") == pytest.approx(2 / 3)
    assert profile.share("brand", "pona") == pytest.approx(2 / 3)
    assert profile.share("term", "red") == pytest.approx(2 / 3)  # items 1 and 5
    assert profile.price_band == 0.0  # item 1 is the cheapest priced Fitness item
    assert builder.user(1, before=40).events == 1
    assert builder.user(1, before=60, exclude=4).events == 1
    assert builder.user(404, before=60).events == 0


def test_segment_profile_and_leave_one_out():
    builder = _builder()
    female = builder.segment("gender=F")  # sessions 1, 3, 4 (5 has no clicks)
    assert female.events == 5
    assert female.share("category1", "Sports") == pytest.approx(3 / 5)
    without_4 = builder.segment("gender=F", exclude=4)
    assert without_4.events == 3 and without_4.share("category1", "Women") == 0.0
    assert builder.segment(None).events == 9


def test_price_bands_are_quartiles_in_the_level2_category_and_leave_one_out():
    builder = _builder()
    # Fitness priced items: 1 (20), 2 (30), 7 (300) -> bands floor(4 * rank / 3) = 0, 1, 2
    assert builder.bands.table() == {1: 0, 2: 1, 7: 2}
    # without session 2, item 2 has no price: 1 -> 0, 7 -> floor(4 * 1 / 2) = 2
    assert builder.bands.table(exclude=2) == {1: 0, 7: 2}
    # "yoga mat" clicks: item 1 (weight 1, band 0) twice, item 2 (weight 3, band 1)
    assert builder.term_band("yoga mat") == pytest.approx(3 / 5)
    assert builder.term_band("yoga mat", exclude=2) == 0.0
    assert builder.term_categories("dress", 2) == {"Dresses": 1.0}
    assert builder.category_parents("dumbbells", 2) == {"Fitness": 1.0}


def test_calibration_factor_by_hand():
    calibrator = PreferenceCalibrator(
        _builder(),
        CalibrationConfig(category_weight=1.0, term_weight=0.0, price_weight=0.0, prior_events=10, keep_ratio=0.2),
    )
    profile = HistoryProfile(events=10, shares={"category2": {"Dresses": 0.8, "Fitness": 0.2}}, price_band=None)
    reference = HistoryProfile(events=100, shares={"category2": {"Dresses": 0.4, "Fitness": 0.6}}, price_band=None)
    # shrunk shares: Dresses (8 + 4) / 20 = 0.6, Fitness (2 + 6) / 20 = 0.4
    lift = math.log(0.601 / 0.401)
    out = calibrator.calibrate([_kw("yoga mat"), _kw("dress")], profile, reference)
    assert [(k.text, k.score) for k in out] == [
        ("dress", round(math.exp(lift), 6)),
        ("yoga mat", round(math.exp(-lift), 6)),
    ]
    strict = PreferenceCalibrator(_builder(), CalibrationConfig(term_weight=0.0, price_weight=0.0, prior_events=10,
                                                                 keep_ratio=0.5))  # fmt: skip
    assert [k.text for k in strict.calibrate([_kw("yoga mat"), _kw("dress")], profile, reference)] == ["dress"]


def test_term_lift_uses_brand_shares_for_brands_and_price_gap():
    builder = _builder()
    calibrator = PreferenceCalibrator(
        builder, CalibrationConfig(category_weight=0.0, term_weight=1.0, price_weight=0.5, prior_events=0)
    )
    profile = HistoryProfile(events=4, shares={"brand": {"kara": 0.5}, "term": {"kara": 0.0}}, price_band=2.6)
    reference = HistoryProfile(events=100, shares={"brand": {"kara": 0.25}}, price_band=None)
    (adjustment,) = calibrator.adjustments([_kw("kara", types=("brand",))], profile, reference)
    assert adjustment.term_lift == round(math.log(0.501 / 0.251), 6)
    # "kara" clicks: item 1 (band 0) twice, item 3 (unpriced) -> band 0; gap |0 - 2.6| / 3
    assert adjustment.price_gap == round(2.6 / 3, 6)
    assert adjustment.factor == pytest.approx(math.exp(math.log(0.501 / 0.251) - 0.5 * 2.6 / 3))


def test_an_empty_profile_changes_nothing_and_configs_validate():
    calibrator = PreferenceCalibrator(_builder(), CalibrationConfig())
    keywords = [_kw("dress", 0.3), _kw("yoga mat", 0.9)]
    assert (
        calibrator.calibrate(keywords, HistoryProfile(events=0, shares={}, price_band=None), _builder().segment(None))
        == keywords
    )
    assert UserCalibrationConfig().term_weight == 0.25 and isinstance(UserCalibrationConfig(), CalibrationConfig)
    with pytest.raises(ValueError, match="keep_ratio must be in"):
        CalibrationConfig(keep_ratio=1.0)
    with pytest.raises(ValueError, match="category_level must be 1, 2 or 3"):
        CalibrationConfig(category_level=4)
