"""Preference calibration: re-rank and filter keywords with a user's (or segment's) profile.

OneSearch-V2 (arXiv 2603.24422), thought-augmented query understanding, step 3 ("preference
calibration"): the keywords of a query are adjusted to the searcher, so that "shoes" yields high
heels for one user and running shoes for another, and brands, styles and price levels the user
favours come first. For a keyword k with fused score s, a profile P (the user's history, or a
segment's clicks) and a reference profile R (everyone, or the user's segment):

* ``lift_f(k) = log((P'_f(k) + eps) / (R_f(k) + eps))`` clipped to ``[-lift_cap, lift_cap]``, where
  ``P' = (n P + m R) / (n + m)`` shrinks a profile of n weighted clicks toward R with ``m =
  prior_events`` pseudo-clicks (a short history moves little);
* category lift: expectation of the level-``category_level`` lift over k's category distribution
  (the categories of clicked items whose titles contain k, or the category k names);
* term lift for k itself (share of clicked titles containing k; brand share for brands);
* price gap: ``|band(k) - band(P)| / 3`` when both are known (bands 0-3 of the level-2 category);

``s' = s * exp(category_weight * lift_cat + term_weight * lift_term - price_weight * gap)``.
Keywords with ``s' < keep_ratio * max s'`` are dropped; the rest are sorted by ``s'``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from onesearch_jax.understanding.keywords import Keyword
from onesearch_jax.understanding.profiles import Profile, ProfileBuilder


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CalibrationConfig:
    """Knobs of preference calibration (equation in the module docstring).

    Attributes:
        category_weight: weight of the category lift.
        term_weight: weight of the keyword's own term (or brand) lift.
        price_weight: weight of the price-band gap.
        category_level: category level of the category lift (2: "Women's Shoes" vs "Sports Shoes").
        prior_events: pseudo-clicks shrinking a profile toward its reference.
        lift_cap: bound on each log-lift.
        epsilon: added to both shares of a lift.
        keep_ratio: keywords under this share of the best calibrated score are dropped.
    """

    category_weight: float = 1.0
    term_weight: float = 0.5
    price_weight: float = 0.5
    category_level: int = 2
    prior_events: float = 20.0
    lift_cap: float = 2.0
    epsilon: float = 1e-3
    keep_ratio: float = 0.2

    def __post_init__(self):
        for name in ("category_weight", "term_weight", "price_weight", "prior_events"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"CalibrationConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.category_level not in (1, 2, 3):
            raise ValueError(f"CalibrationConfig.category_level must be 1, 2 or 3, got {self.category_level}")
        if not self.lift_cap > 0 or not self.epsilon > 0:
            raise ValueError(f"CalibrationConfig: lift_cap, epsilon must be > 0, got {self.lift_cap}, {self.epsilon}")
        if not 0 <= self.keep_ratio < 1:
            raise ValueError(f"CalibrationConfig.keep_ratio must be in [0, 1), got {self.keep_ratio}")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class UserCalibrationConfig(CalibrationConfig):
    """Calibration of one user's keywords against the user's segment: gentler defaults, since a
    single history is short and sparse (it re-ranks more than it filters)."""

    category_weight: float = 0.5
    term_weight: float = 0.25
    keep_ratio: float = 0.1


@dataclasses.dataclass(frozen=True, slots=True)
class Adjustment:
    """Why a keyword moved: its lifts and price gap (for reports and tests)."""

    text: str
    category_lift: float
    term_lift: float
    price_gap: float
    factor: float


class PreferenceCalibrator:
    """Calibrates keywords to a profile against a reference (see the module docstring).

    Args:
        profiles: where keyword categories and price bands come from.
        config: weights and thresholds.
    """

    def __init__(self, profiles: ProfileBuilder, config: CalibrationConfig):
        self.profiles, self.config = profiles, config

    def adjustments(
        self, keywords: Sequence[Keyword], profile: Profile, reference: Profile, *, exclude: int | None = None
    ) -> list[Adjustment]:
        """The lift and gap of each keyword (same order)."""
        cfg = self.config
        out = []
        for k in keywords:
            cats = self.profiles.term_categories(k.text, cfg.category_level, exclude=exclude)
            if not cats:
                cats = self.profiles.category_parents(k.text, cfg.category_level, exclude=exclude)
            feature = f"category{cfg.category_level}"
            cat_lift = sum(p * self._lift(profile, reference, feature, c) for c, p in sorted(cats.items()))
            term_feature = "brand" if "brand" in k.types else "term"
            term_lift = self._lift(profile, reference, term_feature, k.text)
            gap = 0.0
            if profile.price_band is not None and cfg.price_weight > 0:
                band = self.profiles.term_band(k.text, exclude=exclude)
                if band is not None:
                    gap = abs(band - profile.price_band) / 3.0
            factor = math.exp(cfg.category_weight * cat_lift + cfg.term_weight * term_lift - cfg.price_weight * gap)
            out.append(Adjustment(k.text, round(cat_lift, 6), round(term_lift, 6), round(gap, 6), factor))
        return out

    def calibrate(
        self, keywords: Sequence[Keyword], profile: Profile, reference: Profile, *, exclude: int | None = None
    ) -> list[Keyword]:
        """Keywords re-scored by the profile, filtered by ``keep_ratio`` and re-sorted.

        Args:
            keywords: fused keywords of a query.
            profile: the user's (or segment's) profile.
            reference: what the profile is compared with (the segment, or everyone).
            exclude: the asking session (its clicks never shape the keyword categories).
        """
        if not keywords or profile.events <= 0:
            return list(keywords)
        scored = [
            (round(k.score * a.factor, 6), k)
            for k, a in zip(keywords, self.adjustments(keywords, profile, reference, exclude=exclude), strict=True)
        ]
        best = max(s for s, _ in scored)
        kept = [dataclasses.replace(k, score=s) for s, k in scored if s > 0 and s >= self.config.keep_ratio * best]
        kept.sort(key=lambda k: (-k.score, k.text))
        return kept

    def _lift(self, profile: Profile, reference: Profile, feature: str, key: str) -> float:
        cfg = self.config
        ref = reference.share(feature, key)
        n, m = profile.events, cfg.prior_events
        own = (n * profile.share(feature, key) + m * ref) / (n + m) if n + m > 0 else ref
        lift = math.log((own + cfg.epsilon) / (ref + cfg.epsilon))
        return max(-cfg.lift_cap, min(cfg.lift_cap, lift))
