"""A seeded synthetic e-commerce search world, written in the KuaiSearch layout.

The world is built so that OneSearch-V2's ideas are measurable on it:

* items are composed from a category tree and the 18 attribute types, with noisy titles,
  power-law popularity and a share of cold-start items launched only in the test period;
* users have profiles and persistent latent preferences (brands per category, price band,
  styles, colours) that drive their clicks and purchases, so personalisation matters;
* queries follow a long-tail frequency law and come in five kinds: plain (entity plus
  attributes), ambiguous short queries whose right items depend on the searcher's gender,
  complex needs that imply several entities, constrained/negated queries, and misspelt or
  synonym variants;
* behaviour = relevance x preference x position bias; graded relevance labels for sampled
  query-item pairs; train/valid/test split by time.

Output of :func:`generate_world` in ``out_dir``::

    kuaisearch/  items, users, recall, rank, relevance (.jsonl), the public layout
    lexicon/     attributes.tsv (term, type, weight) and ontology.jsonl: the world knowledge a
                 language model would bring (synonyms, ambiguous and complex intents)
    truth/       hidden ground truth for tests only: latent item attributes, user preferences,
                 query specs, per-session true relevance of each impression (sessions.jsonl),
                 and world.json (config and figures)

Memory is O(items + users + query pool) in numpy arrays; sessions stream to disk, so a
million-item world fits in bounded memory. The same config gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from onesearch_jax.data import world_catalog as cat
from onesearch_jax.data.kuaisearch import KuaiSearchWriter
from onesearch_jax.data.schema import (
    Item,
    ItemStats,
    RankRow,
    RelevancePair,
    SearchSession,
    User,
    UserStats,
)

QUERY_KINDS: tuple[str, ...] = ("plain", "variant", "constraint", "complex", "ambiguous")
GENDERS: tuple[str, ...] = ("F", "M")
_ABSENT = -1
_SECONDS_PER_DAY = 86_400
# Per item attribute type: probability that an item carries a value (None: decided elsewhere).
_PRESENCE = {
    "color": 0.85, "material": 0.7, "style": 0.5, "season": 0.2, "pattern": 0.12, "function": 0.6,
    "specifications": 0.5, "scene": 0.3, "location": 0.12, "modifier": 0.4, "series": 0.2,
    "marketing": 0.4, "anchor": 0.08, "price": 0.1, "audience": 0.25, "model": 0.3,
}  # fmt: skip
_APPAREL = ("Women's Clothing", "Men's Clothing")
_CATEGORY_TYPES = ("material", "function", "specifications")
_TITLE_ORDER = (
    "marketing", "brand", "series", "location", "style", "color", "pattern", "material", "modifier",
    "function", "entity", "specifications", "model", "season", "audience", "anchor", "price",
)  # fmt: skip


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorldConfig:
    """Size and shape of the synthetic world. Every field is validated on construction.

    Attributes:
        seed: the only source of randomness; same config, same bytes.
        num_items: catalogue size.
        num_users: number of searchers.
        num_sessions: number of search sessions over the whole period.
        num_days: length of the logged period; sessions are spread evenly over days.
        valid_days: last days before the test period that form the validation split.
        test_days: last days of the period, the test split; cold-start items launch here.
        impressions_per_session: mean number of items shown per search.
        brands_per_category: brands per level-1 category (plus the shared "no brand").
        shops: multi-brand shops selling beside the brands' official stores.
        query_pool_size: distinct queries (the ambiguous and complex intents are always in).
        query_zipf_exponent: exponent of the query frequency law (long tail).
        popularity_zipf_exponent: exponent of the item popularity law.
        cold_start_fraction: share of items launched in the test period (no history).
        missing_category3_fraction: share of items whose level-3 category is UNKNOWN.
        title_noise: probability of each kind of title noise (swap, filler, synonym).
        rank_session_fraction: share of sessions that also get per-impression rank rows.
        relevance_pairs: number of graded query-item pairs.
        relevance_label_noise: probability that a graded label is off by one tier.
        history_window_days: window of the 30-day statistics in rank rows.
        recent_items: length of the recent click/purchase lists in rank rows.
    """

    seed: int = 0
    num_items: int = 2000
    num_users: int = 800
    num_sessions: int = 20_000
    num_days: int = 30
    valid_days: int = 3
    test_days: int = 3
    impressions_per_session: int = 20
    brands_per_category: int = 12
    shops: int = 40
    query_pool_size: int = 1500
    query_zipf_exponent: float = 1.0
    popularity_zipf_exponent: float = 1.1
    cold_start_fraction: float = 0.05
    missing_category3_fraction: float = 0.03
    title_noise: float = 0.15
    rank_session_fraction: float = 0.1
    relevance_pairs: int = 3000
    relevance_label_noise: float = 0.1
    history_window_days: int = 30
    recent_items: int = 20

    def __post_init__(self):
        positive = ("num_items", "num_users", "num_sessions", "num_days", "impressions_per_session",
                    "brands_per_category", "shops", "history_window_days", "recent_items")  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"WorldConfig.{name} must be positive, got {getattr(self, name)}")
        for name in ("valid_days", "test_days", "relevance_pairs", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"WorldConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.valid_days + self.test_days >= self.num_days:
            raise ValueError(
                f"WorldConfig: valid_days + test_days ({self.valid_days + self.test_days}) must leave "
                f"training days in num_days={self.num_days}"
            )
        fractions = ("cold_start_fraction", "missing_category3_fraction", "title_noise",
                     "rank_session_fraction", "relevance_label_noise")  # fmt: skip
        for name in fractions:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"WorldConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("query_zipf_exponent", "popularity_zipf_exponent"):
            if getattr(self, name) < 0:
                raise ValueError(f"WorldConfig.{name} must be >= 0, got {getattr(self, name)}")
        minimum_pool = len(cat.AMBIGUOUS_QUERIES) + len(cat.COMPLEX_INTENTS) + 1
        if self.query_pool_size < minimum_pool:
            raise ValueError(f"WorldConfig.query_pool_size must be >= {minimum_pool}, got {self.query_pool_size}")

    @property
    def train_days(self) -> int:
        return self.num_days - self.valid_days - self.test_days

    def split_of_day(self, day: int) -> str:
        if day < self.train_days:
            return "train"
        return "valid" if day < self.num_days - self.test_days else "test"


class _Catalogue:
    """Integer codes for the fixed world knowledge of :mod:`world_catalog`."""

    def __init__(self):
        self.l1_names = list(cat.TAXONOMY)
        self.l2_names: list[str] = []
        self.l2_l1: list[int] = []
        self.entity_names: list[str] = []
        self.entity_l2: list[int] = []
        self.entity_price: list[float] = []
        self.entity_index: dict[tuple[str, str], int] = {}
        for l1, l2s in cat.TAXONOMY.items():
            for l2, entities in l2s.items():
                self.l2_names.append(l2)
                self.l2_l1.append(self.l1_names.index(l1))
                for name, price in entities.items():
                    self.entity_index[(l1, name)] = len(self.entity_names)
                    self.entity_names.append(name)
                    self.entity_l2.append(len(self.l2_names) - 1)
                    self.entity_price.append(float(price))
        self.entity_l2_arr = np.asarray(self.entity_l2, np.int32)
        self.entity_l1_arr = np.asarray(self.l2_l1, np.int32)[self.entity_l2_arr]
        self.entity_price_arr = np.asarray(self.entity_price)
        # Vocabularies: one ordered list per attribute type; category-bound types remember which
        # codes each level-1 category may use.
        self.vocab: dict[str, list[str]] = {t: list(v) for t, v in cat.GLOBAL_ATTRIBUTES.items()}
        self.vocab["audience"] = list(cat.AUDIENCES)
        self.allowed: dict[str, list[np.ndarray]] = {}
        for t in _CATEGORY_TYPES:
            words: list[str] = []
            per_l1 = []
            for l1 in self.l1_names:
                codes = []
                for w in cat.CATEGORY_ATTRIBUTES[l1][t]:
                    if w not in words:
                        words.append(w)
                    codes.append(words.index(w))
                per_l1.append(np.asarray(codes, np.int16))
            self.vocab[t] = words
            self.allowed[t] = per_l1

    def entities_of(self, pairs) -> np.ndarray:
        return np.asarray(sorted(self.entity_index[p] for p in pairs), np.int32)

    def entity_audience(self, e: int) -> str | None:
        l1 = self.l1_names[self.entity_l1_arr[e]]
        if l1 in cat.CATEGORY_AUDIENCE:
            return cat.CATEGORY_AUDIENCE[l1]
        return "women" if self.l2_names[self.entity_l2[e]] == "Women's Shoes" else None


@dataclasses.dataclass(frozen=True)
class QuerySpec:
    """A query of the world and what makes an item right for it (hidden truth).

    Attributes:
        text: the query string users type.
        kind: one of QUERY_KINDS.
        targets: gender -> entity codes whose items are fully relevant.
        required: (attribute type, code) pairs an item must carry for tier 3.
        excluded: (attribute type, code) the query negates, or None.
        max_price: price bound of the query, or None.
    """

    text: str
    kind: str
    targets: dict[str, np.ndarray]
    required: tuple[tuple[str, int], ...] = ()
    excluded: tuple[str, int] | None = None
    max_price: float | None = None

    def all_targets(self) -> np.ndarray:
        return np.unique(np.concatenate([self.targets[g] for g in GENDERS]))


def _zipf_weights(n: int, exponent: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return w / w.sum()


class _World:
    """The state of a world while it is generated (see :func:`generate_world`)."""

    def __init__(self, config: WorldConfig):
        self.cfg = config
        self.rng = np.random.default_rng(config.seed)
        self.cat = _Catalogue()
        self._make_brands_and_shops()
        self._make_items()
        self._make_users()
        self._make_queries()

    # ----------------------------------------------------------------- catalogue
    def _make_brands_and_shops(self) -> None:
        cfg, rng = self.cfg, self.rng
        first, second = cat.BRAND_SYLLABLES
        pool = [a + b for a in first for b in second]
        order = rng.permutation(len(pool))
        n_l1 = len(self.cat.l1_names)
        needed = n_l1 * cfg.brands_per_category
        names = [pool[i % len(pool)] + ("" if i < len(pool) else f" {i // len(pool) + 1}") for i in order]
        names += [f"{pool[i % len(pool)]} {i // len(pool) + 2}" for i in range(len(pool), needed)]
        self.brand_names = [cat.NO_BRAND, *names[:needed]]
        self.brand_l1 = np.r_[-1, np.repeat(np.arange(n_l1), cfg.brands_per_category)].astype(np.int32)
        self.brand_tier = np.r_[0, rng.integers(0, 4, needed)].astype(np.int8)
        self.brand_style = np.r_[_ABSENT, rng.integers(0, len(self.cat.vocab["style"]), needed)].astype(np.int16)
        self.brand_cdf = np.cumsum(_zipf_weights(cfg.brands_per_category, 1.0))
        self.brand_cdf[-1] = 1.0
        a, b = cat.SHOP_WORDS
        combos = len(a) * len(b)
        self.shop_names = [
            f"{a[i % len(a)]} {b[(i // len(a)) % len(b)]}" + (f" {i // combos + 1}" if i >= combos else "")
            for i in range(cfg.shops)
        ]

    def _make_items(self) -> None:
        cfg, rng, c = self.cfg, self.rng, self.cat
        n, n_ent = cfg.num_items, len(c.entity_names)
        entity_share = rng.dirichlet(np.full(n_ent, 2.0))
        self.entity = rng.choice(n_ent, size=n, p=entity_share).astype(np.int16)
        l1 = c.entity_l1_arr[self.entity]
        within = np.searchsorted(self.brand_cdf, rng.random(n), side="right")
        brand = 1 + l1 * cfg.brands_per_category + within
        self.brand = np.where(rng.random(n) < 0.08, 0, brand).astype(np.int32)
        band = self.brand_tier[self.brand] + np.rint(rng.normal(0, 0.7, n))
        band = np.where(self.brand == 0, rng.integers(0, 2, n), band)
        self.band = np.clip(band, 0, 3).astype(np.int8)
        factor = np.asarray(cat.PRICE_BAND_FACTORS)[self.band]
        self.price = np.round(c.entity_price_arr[self.entity] * factor * rng.lognormal(0, 0.2, n), 1) + 0.9
        self.attr: dict[str, np.ndarray] = {}
        for t in cat.ATTRIBUTE_TYPES:
            if t in ("entity", "brand"):
                continue
            p = _PRESENCE[t]
            if t in ("season", "pattern"):
                p = np.where(np.isin(l1, [c.l1_names.index(x) for x in _APPAREL]), 0.6, p)
            present = rng.random(n) < p
            if t in _CATEGORY_TYPES:
                codes = np.empty(n, np.int16)
                for k, allowed in enumerate(c.allowed[t]):
                    mask = l1 == k
                    codes[mask] = rng.choice(allowed, size=int(mask.sum()))
            elif t == "model":
                codes = (self.brand * 3 + rng.integers(0, 3, n)).astype(np.int32)
            elif t == "price":
                codes = self.band.astype(np.int16)
            else:
                codes = rng.integers(0, len(c.vocab[t]), n).astype(np.int16)
            if t == "style":
                own = (rng.random(n) < 0.6) & (self.brand_style[self.brand] >= 0)
                codes = np.where(own, self.brand_style[self.brand], codes)
            if t == "audience":
                fixed = np.asarray([c.vocab["audience"].index(c.entity_audience(e)) if c.entity_audience(e) else -1
                                    for e in range(n_ent)], np.int16)[self.entity]  # fmt: skip
                present = present | (fixed >= 0)
                codes = np.where(fixed >= 0, fixed, codes)
            self.attr[t] = np.where(present, codes, _ABSENT).astype(codes.dtype)
        ranks = rng.permutation(n)
        self.popularity = _zipf_weights(n, cfg.popularity_zipf_exponent)[ranks]
        cold = rng.random(n) < cfg.cold_start_fraction
        test_start = cfg.num_days - cfg.test_days
        self.launch_day = np.where(cold, rng.integers(test_start, cfg.num_days, n), 0).astype(np.int16)
        official = (rng.random(n) < 0.55) & (self.brand > 0)
        self.seller = np.where(official, self.brand, len(self.brand_names) + rng.integers(0, cfg.shops, n)).astype(
            np.int32
        )
        self.cat3_missing = rng.random(n) < cfg.missing_category3_fraction
        self.title_seed = rng.integers(0, 2**63 - 1, n, dtype=np.int64)
        # Sampling indexes: items grouped by entity and by level-2 category, with popularity CDFs.
        self.by_entity = _GroupSampler(self.entity, n_ent, self.popularity)
        self.by_l2 = _GroupSampler(c.entity_l2_arr[self.entity], len(c.l2_names), self.popularity)
        self.everything = _GroupSampler(np.zeros(n, np.int32), 1, self.popularity)

    def seller_name(self, i: int) -> str:
        s = int(self.seller[i])
        if s < len(self.brand_names):
            return f"{self.brand_names[s].title()} Official Store"
        return self.shop_names[s - len(self.brand_names)]

    def attribute_text(self, i: int, t: str) -> str | None:
        """The surface form of item ``i``'s value of attribute type ``t`` (None if absent)."""
        if t == "entity":
            return self.cat.entity_names[self.entity[i]]
        if t == "brand":
            return None if self.brand[i] == 0 else self.brand_names[self.brand[i]]
        code = int(self.attr[t][i])
        if code == _ABSENT:
            return None
        if t == "model":
            return _model_text(code)
        return self.cat.vocab[t][code]

    def title(self, i: int) -> str:
        """The noisy product title of item ``i``; a pure function of the item's seed."""
        r = random.Random(int(self.title_seed[i]))
        words = []
        for t in _TITLE_ORDER:
            text = self.attribute_text(i, t)
            if text is None:
                continue
            if t == "audience":
                text = f"for {text}"
            elif t == "entity" and r.random() < self.cfg.title_noise / 2:
                text = r.choice(cat.SYNONYMS.get(text, (text,)))
            elif t == "brand":
                text = text.title()
            words.append(text)
        if len(words) > 2 and r.random() < self.cfg.title_noise:
            k = r.randrange(len(words) - 1)
            words[k], words[k + 1] = words[k + 1], words[k]
        if r.random() < self.cfg.title_noise:
            words.insert(r.randrange(len(words) + 1), r.choice(cat.TITLE_FILLERS))
        return " ".join(words)

    def attr_value(self, i: int) -> str:
        """Comma-joined attribute values, as KuaiSearch's relevance file carries them."""
        values = [self.attribute_text(i, t) for t in cat.ATTRIBUTE_TYPES if t != "entity"]
        return ",".join(v for v in values if v is not None) or cat.NO_BRAND

    # ----------------------------------------------------------------- users
    def _make_users(self) -> None:
        cfg, rng, c = self.cfg, self.rng, self.cat
        n, n_l1 = cfg.num_users, len(c.l1_names)
        self.gender = np.where(rng.random(n) < 0.6, 0, 1).astype(np.int8)  # index into GENDERS
        self.age = rng.choice(len(cat.AGE_BUCKETS), size=n, p=np.asarray(cat.AGE_WEIGHTS) / sum(cat.AGE_WEIGHTS))
        self.place = rng.integers(0, len(cat.PROVINCES), n)
        self.user_band = np.clip(np.rint(rng.normal(1.3 + 0.25 * (self.age - 3), 0.8)), 0, 3).astype(np.int8)
        n_style, n_color = len(c.vocab["style"]), len(c.vocab["color"])
        self.user_styles = np.argsort(rng.random((n, n_style)), axis=1)[:, :2].astype(np.int16)
        self.user_colors = np.argsort(rng.random((n, n_color)), axis=1)[:, :2].astype(np.int16)
        # Two preferred brands per level-1 category, popular brands preferred more often.
        picks = np.searchsorted(self.brand_cdf, rng.random((n, n_l1, 2)), side="right")
        picks[..., 1] = np.where(
            picks[..., 1] == picks[..., 0], (picks[..., 0] + 1) % cfg.brands_per_category, picks[..., 1]
        )
        self.user_brands = (1 + np.arange(n_l1)[None, :, None] * cfg.brands_per_category + picks).astype(np.int32)
        activity = rng.lognormal(0, 1.0, n)
        self.user_cdf = np.cumsum(activity / activity.sum())
        self.user_cdf[-1] = 1.0
        self.fans = rng.lognormal(3, 1.5, n).astype(np.int64)
        self.follows = rng.lognormal(4, 1.0, n).astype(np.int64)

    # ----------------------------------------------------------------- queries
    def _make_queries(self) -> None:
        cfg, rng, c = self.cfg, self.rng, self.cat
        specs: dict[str, QuerySpec] = {}

        def both(e: np.ndarray) -> dict[str, np.ndarray]:
            return {g: e for g in GENDERS}

        for text, by_gender in cat.AMBIGUOUS_QUERIES.items():
            specs[text] = QuerySpec(text, "ambiguous", {g: c.entities_of(by_gender[g]) for g in GENDERS})
        for text, (pairs, _) in cat.COMPLEX_INTENTS.items():
            specs[text] = QuerySpec(text, "complex", both(c.entities_of(pairs)))
        names = sorted(set(c.entity_names))
        by_name = {nm: np.asarray([e for e, x in enumerate(c.entity_names) if x == nm], np.int32) for nm in names}
        for nm in names:  # every unambiguous entity is a plain query on its own
            if nm not in specs:
                specs[nm] = QuerySpec(nm, "plain", both(by_name[nm]))
        templates = ("plain", "plain", "plain", "plain", "variant", "variant", "constraint", "constraint")
        attempts = 0
        while len(specs) < cfg.query_pool_size and attempts < 50 * cfg.query_pool_size:
            attempts += 1
            nm = names[rng.integers(len(names))]
            spec = self._random_query(templates[rng.integers(len(templates))], nm, both(by_name[nm]))
            if spec is not None and spec.text not in specs:
                specs[spec.text] = spec
        self.queries = list(specs.values())
        # Long-tail frequency; short head queries (ambiguous, bare entities) tend to be frequent.
        head_bias = np.asarray([0.01 if q.kind == "ambiguous" else 0.05 if q.text in by_name else
                                0.2 if q.kind == "complex" else 1.0 for q in self.queries])  # fmt: skip
        rank = np.argsort(np.argsort(rng.random(len(self.queries)) * head_bias))
        weights = _zipf_weights(len(self.queries), cfg.query_zipf_exponent)[rank]
        self.query_weight = weights
        self.query_cdf = {}
        for gi, g in enumerate(GENDERS):
            affinity = np.asarray([self._gender_affinity(q, g) for q in self.queries])
            w = weights * affinity
            self.query_cdf[gi] = np.cumsum(w / w.sum())
            self.query_cdf[gi][-1] = 1.0

    def _random_query(self, kind: str, nm: str, targets: dict[str, np.ndarray]) -> QuerySpec | None:
        rng, c = self.rng, self.cat
        l1 = int(c.entity_l1_arr[targets["F"][0]])

        def pick(t: str) -> tuple[int, str]:
            codes = c.allowed[t][l1] if t in _CATEGORY_TYPES else np.arange(len(c.vocab[t]))
            code = int(codes[rng.integers(len(codes))])
            return code, c.vocab[t][code]

        if kind == "plain":
            t = ("color", "material", "function", "style", "specifications", "season", "brand")[rng.integers(7)]
            if t == "brand":
                b = int(1 + l1 * self.cfg.brands_per_category + rng.integers(self.cfg.brands_per_category))
                return QuerySpec(f"{self.brand_names[b].lower()} {nm}", "plain", targets, (("brand", b),))
            code, word = pick(t)
            text = f"{nm} {word}" if t in ("function", "specifications") else f"{word} {nm}"
            return QuerySpec(text, "plain", targets, ((t, code),))
        if kind == "variant":
            synonyms = cat.SYNONYMS.get(nm)
            if synonyms and rng.random() < 0.5:
                return QuerySpec(synonyms[rng.integers(len(synonyms))], "variant", targets)
            if len(nm) < 5:
                return None
            return QuerySpec(_typo(nm, rng), "variant", targets)
        how = rng.integers(3)
        if how == 0:
            code, word = pick("color")
            return QuerySpec(f"{nm} not {word}", "constraint", targets, excluded=("color", code))
        if how == 1:
            code, word = pick("material")
            return QuerySpec(f"{nm} without {word}", "constraint", targets, excluded=("material", code))
        bound = float(round(c.entity_price_arr[targets["F"]].mean() * 0.9))
        return QuerySpec(f"{nm} under {bound:g}", "constraint", targets, max_price=bound)

    def _gender_affinity(self, q: QuerySpec, gender: str) -> float:
        own = "women" if gender == "F" else "men"
        audiences = {self.cat.entity_audience(int(e)) for e in q.targets[gender]}
        return 0.15 if audiences and audiences <= {"women", "men"} and own not in audiences else 1.0

    # ----------------------------------------------------------------- relevance and behaviour
    def relevance(self, q: QuerySpec, items: np.ndarray, gender: str | None) -> np.ndarray:
        """Graded relevance tiers 0-3 of ``items`` for query ``q`` (for a searcher of ``gender``).

        3: an entity the query means, satisfying its attributes and constraints; 2: right
        entity, a required attribute missing; 1: same level-2 category, an entity the query
        means for the other gender, or a violated negation/price bound; 0: otherwise.
        """
        c = self.cat
        everyone = q.all_targets()
        targets = everyone if gender is None else q.targets[gender]
        ent = self.entity[items]
        exact = np.isin(ent, targets)
        near = np.isin(c.entity_l2_arr[ent], c.entity_l2_arr[everyone]) | np.isin(ent, everyone)
        tier = np.where(exact, 3, np.where(near, 1, 0)).astype(np.int8)
        for t, code in q.required:
            have = self.brand[items] if t == "brand" else self.attr[t][items]
            tier = np.where(exact & (have != code), np.minimum(tier, 2), tier)
        if q.excluded is not None:
            t, code = q.excluded
            tier = np.where(exact & (self.attr[t][items] == code), 1, tier)
        if q.max_price is not None:
            tier = np.where(exact & (self.price[items] > q.max_price), 1, tier)
        return tier

    def candidates(self, q: QuerySpec, gender: str | None, day: int, k: int) -> np.ndarray:
        """Up to ``k`` distinct launched items a retrieval system would show for ``q``."""
        rng = self.rng
        targets = q.all_targets() if gender is None else q.targets[gender]
        n_target, n_near = round(0.6 * k), round(0.25 * k)
        drawn = np.concatenate([
            self.by_entity.sample(rng, targets, 2 * n_target),
            self.by_l2.sample(rng, np.unique(self.cat.entity_l2_arr[targets]), 2 * n_near),
            self.everything.sample(rng, np.zeros(1, np.int32), 2 * (k - n_target - n_near) + 2),
        ])  # fmt: skip
        drawn = drawn[self.launch_day[drawn] <= day]
        _, first = np.unique(drawn, return_index=True)
        return drawn[np.sort(first)][:k]

    def preference(self, user: int, items: np.ndarray) -> np.ndarray:
        """How much ``user`` likes ``items`` regardless of the query (latent taste)."""
        l1 = self.cat.entity_l1_arr[self.entity[items]]
        brand_match = (self.user_brands[user, l1] == self.brand[items][:, None]).any(axis=1)
        price_fit = -np.abs(self.band[items].astype(np.int32) - int(self.user_band[user]))
        style_match = np.isin(self.attr["style"][items], self.user_styles[user])
        color_match = np.isin(self.attr["color"][items], self.user_colors[user])
        return 1.3 * brand_match + 0.5 * price_fit + 0.6 * style_match + 0.4 * color_match


class _GroupSampler:
    """Draws items of given groups (entities, categories) in proportion to their popularity."""

    def __init__(self, group: np.ndarray, n_groups: int, weight: np.ndarray):
        self.order = np.argsort(group, kind="stable").astype(np.int32)
        cum = np.cumsum(weight[self.order])
        self.cum = cum
        counts = np.bincount(group, minlength=n_groups)
        ends = np.cumsum(counts)
        starts = ends - counts
        self.low = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0.0)
        self.high = np.where(ends > 0, cum[np.maximum(ends - 1, 0)], 0.0)
        self.high = np.where(counts > 0, self.high, self.low)

    def sample(self, rng: np.random.Generator, groups: np.ndarray, size: int) -> np.ndarray:
        mass = self.high[groups] - self.low[groups]
        if size <= 0 or mass.sum() <= 0:
            return np.zeros(0, np.int32)
        g = groups[
            np.searchsorted(np.cumsum(mass) / mass.sum(), rng.random(size), side="right").clip(0, len(groups) - 1)
        ]
        u = self.low[g] + rng.random(size) * (self.high[g] - self.low[g])
        return self.order[np.searchsorted(self.cum, u, side="right").clip(0, len(self.order) - 1)]


def _model_text(code: int) -> str:
    letters = "ABCDEFGHJKLMNPRSTUVWXZ"
    return f"{letters[code % len(letters)]}{100 + (code * 37) % 900}"


def _typo(word: str, rng: np.random.Generator) -> str:
    """A plausible misspelling: a dropped, doubled or swapped letter inside the word."""
    i = int(rng.integers(1, len(word) - 1))
    how = rng.integers(3)
    if how == 0:
        out = word[:i] + word[i + 1 :]
    elif how == 1:
        out = word[:i] + word[i] + word[i:]
    else:
        out = word[: i - 1] + word[i] + word[i - 1] + word[i + 1 :]
    return out if out != word else word[:i] + word[i + 1 :]


class _RollingCounts:
    """Exact sums over the last ``window`` days of per-key event counts (30-day statistics)."""

    def __init__(self, size: int, columns: int, window: int):
        self.totals = np.zeros((size, columns))
        self.window = window
        self.days: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}

    def start_day(self, day: int) -> None:
        for keys, values in self.days.pop(day - self.window, ()):
            np.subtract.at(self.totals, keys, values)
        self.days[day] = []

    def add(self, day: int, keys: np.ndarray, values: np.ndarray) -> None:
        np.add.at(self.totals, keys, values)
        self.days[day].append((keys, values))


class _History:
    """What the logs know before each request: 30-day counts and recent clicks/purchases."""

    def __init__(self, cfg: WorldConfig):
        self.items = _RollingCounts(cfg.num_items, 3, cfg.history_window_days)  # show, click, order
        self.users = _RollingCounts(cfg.num_users, 4, cfg.history_window_days)  # + gmv
        self.rings = {k: np.zeros((cfg.num_users, cfg.recent_items), np.int64) for k in ("click", "buy")}
        self.pushed = {k: np.zeros(cfg.num_users, np.int64) for k in self.rings}

    def start_day(self, day: int) -> None:
        self.items.start_day(day)
        self.users.start_day(day)

    def record(self, day: int, user: int, shown: np.ndarray, clicked: np.ndarray, bought: np.ndarray, gmv: float):
        self.items.add(day, shown, np.stack([np.ones(shown.size), clicked, bought], axis=1).astype(np.float64))
        self.users.add(
            day, np.asarray([user]), np.asarray([[shown.size, clicked.sum(), bought.sum(), gmv]], np.float64)
        )
        for kind, mask in (("click", clicked), ("buy", bought)):
            ring = self.rings[kind][user]
            for item in shown[mask]:
                ring[self.pushed[kind][user] % ring.size] = item
                self.pushed[kind][user] += 1

    def recent_ids(self, kind: str, user: int) -> tuple[int, ...]:
        """Item ids of the user's latest clicks or purchases, most recent first."""
        ring, count = self.rings[kind][user], int(self.pushed[kind][user])
        return tuple(int(ring[(count - 1 - j) % ring.size]) + 1 for j in range(min(count, ring.size)))


@dataclasses.dataclass(frozen=True)
class WorldSummary:
    """What :func:`generate_world` wrote, with counts and the generation time."""

    out_dir: Path
    rows: dict[str, int]
    figures: dict[str, Any]

    @property
    def kuaisearch_dir(self) -> Path:
        return self.out_dir / "kuaisearch"


def generate_world(config: WorldConfig, out_dir: str | Path) -> WorldSummary:
    """Generates the world of ``config`` into ``out_dir`` (see the module docstring).

    Args:
        config: size, shape and seed of the world.
        out_dir: directory to write ``kuaisearch/``, ``lexicon/`` and ``truth/`` into.

    Returns:
        Row counts per file and behavioural figures of the generated world.
    """
    out = Path(out_dir)
    world = _World(config)
    for sub in ("kuaisearch", "lexicon", "truth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {}
    with KuaiSearchWriter(out / "kuaisearch") as writer:
        for name in ("items", "users", "recall", "rank", "relevance"):
            writer.open(name)
        _write_items(world, writer)
        _write_users(world, writer)
        figures.update(_simulate_sessions(world, writer, out / "truth"))
        _write_relevance(world, writer)
        rows = dict(writer.counts)
    _write_lexicon(world, out / "lexicon")
    _write_truth(world, out / "truth", figures)
    return WorldSummary(out_dir=out, rows=rows, figures=figures)


def _write_items(w: _World, writer: KuaiSearchWriter) -> None:
    c = w.cat
    for i in range(w.cfg.num_items):
        e = int(w.entity[i])
        l2 = c.entity_l2[e]
        l1 = int(c.entity_l1_arr[e])
        missing3 = bool(w.cat3_missing[i])
        writer.write(
            Item(
                item_id=i + 1,
                item_title=w.title(i),
                brand_id=int(w.brand[i]) + 1,
                brand_name=w.brand_names[w.brand[i]],
                seller_id=int(w.seller[i]) + 1,
                seller_name=w.seller_name(i),
                category_level1_id=l1 + 1,
                category_level1_name=c.l1_names[l1],
                category_level2_id=l2 + 1,
                category_level2_name=c.l2_names[l2],
                category_level3_id=0 if missing3 else e + 1,
                category_level3_name="UNKNOWN" if missing3 else c.entity_names[e],
            )
        )


def _write_users(w: _World, writer: KuaiSearchWriter) -> None:
    for u in range(w.cfg.num_users):
        province, city = cat.PROVINCES[w.place[u]]
        writer.write(
            User(
                user_id=u + 1,
                gender=GENDERS[w.gender[u]],
                age_bucket=cat.AGE_BUCKETS[w.age[u]],
                fre_country="China",
                fre_province=province,
                fre_city=city,
            )
        )


def _simulate_sessions(w: _World, writer: KuaiSearchWriter, truth_dir: Path) -> dict[str, Any]:
    """Runs the searches day by day in time order and writes recall and rank rows.

    Click probability = sigmoid(relevance, preference, popularity) x examination(position);
    purchase probability given a click rises with preference and relevance. Rank rows carry the
    user's recent clicks/purchases and exact 30-day statistics as of the request.
    """
    cfg, rng = w.cfg, w.rng
    history = _History(cfg)
    per_day = np.bincount(rng.integers(0, cfg.num_days, cfg.num_sessions), minlength=cfg.num_days)
    log_pop = np.log(w.popularity * cfg.num_items)
    session_id = 0
    kind_sessions = dict.fromkeys(QUERY_KINDS, 0)
    kind_clicks = dict.fromkeys(QUERY_KINDS, 0)
    pref_clicked, pref_shown, impressions = 0.0, 0.0, 0
    with open(truth_dir / "sessions.jsonl", "w", encoding="utf-8") as truth:
        for day in range(cfg.num_days):
            history.start_day(day)
            split = cfg.split_of_day(day)
            seconds = np.sort(rng.integers(0, _SECONDS_PER_DAY, per_day[day]))
            users = np.searchsorted(w.user_cdf, rng.random(per_day[day]), side="right")
            for sec, user in zip(seconds, users, strict=True):
                gi = int(w.gender[user])
                qi = int(np.searchsorted(w.query_cdf[gi], rng.random(), side="right"))
                q = w.queries[qi]
                k = int(
                    rng.integers(max(1, cfg.impressions_per_session // 2), cfg.impressions_per_session * 3 // 2 + 1)
                )
                shown = w.candidates(q, GENDERS[gi], day, k)
                rel = w.relevance(q, shown, GENDERS[gi])
                legacy = 0.8 * rel + 0.5 * log_pop[shown] + rng.gumbel(size=shown.size)
                order = np.argsort(-legacy, kind="stable")
                shown, rel = shown[order], rel[order]
                pref = w.preference(user, shown)
                logit = -4.2 + 1.1 * rel + pref + 0.25 * log_pop[shown]
                examine = 1.0 / np.sqrt(1.0 + np.arange(shown.size))
                clicked = rng.random(shown.size) < examine / (1.0 + np.exp(-logit))
                buy_logit = -2.2 + 0.9 * pref + 0.4 * (rel - 2)
                bought = clicked & (rng.random(shown.size) < 1.0 / (1.0 + np.exp(-buy_logit)))
                session_id += 1
                time_index = day * _SECONDS_PER_DAY + int(sec)
                ids = shown + 1
                writer.write(
                    SearchSession(
                        user_id=int(user) + 1,
                        session_id=session_id,
                        impressed_item_ids=tuple(ids.tolist()),
                        clicked_item_ids=tuple(ids[clicked].tolist()),
                        purchased_item_ids=tuple(ids[bought].tolist()),
                        time_index=time_index,
                        query=q.text,
                        split=split,
                    )
                )
                truth.write(
                    json.dumps({"session_id": session_id, "query_kind": q.kind, "relevance": rel.tolist()}) + "\n"
                )
                if rng.random() < cfg.rank_session_fraction:
                    session = (int(user), session_id, time_index, q.text, split)
                    _write_rank_rows(w, writer, history, session, shown, clicked, bought)
                kind_sessions[q.kind] += 1
                kind_clicks[q.kind] += int(clicked.sum())
                pref_clicked += float(pref[clicked].sum())
                pref_shown += float(pref.sum())
                impressions += shown.size
                history.record(day, int(user), shown, clicked, bought, float(w.price[shown][bought].sum()))
    return {
        "sessions_by_query_kind": kind_sessions,
        "clicks_by_query_kind": kind_clicks,
        "mean_preference_clicked_vs_shown": [
            round(pref_clicked / max(1, sum(kind_clicks.values())), 4),
            round(pref_shown / max(1, impressions), 4),
        ],
    }


def _write_rank_rows(
    w: _World, writer: KuaiSearchWriter, history: _History, session: tuple, shown, clicked, bought
) -> None:
    """One rank row per impression of a session, with the context as of the request."""
    user, session_id, time_index, query, split = session
    us = history.users.totals[user]
    recent_click = history.recent_ids("click", user)
    recent_buy = history.recent_ids("buy", user)
    entrance = "homepage" if w.rng.random() < 0.1 else "mall"
    user_features = UserStats(
        user_show_cnt_30d_hist=float(us[0]),
        user_click_cnt_30d_hist=float(us[1]),
        user_order_cnt_30d_hist=float(us[2]),
        user_gmv_30d_hist=round(float(us[3]), 2),
    )
    for pos, item in enumerate(shown):
        s = history.items.totals[item]
        writer.write(
            RankRow(
                user_id=user + 1,
                session_id=session_id,
                user_fan_number=int(w.fans[user]),
                user_follow_number=int(w.follows[user]),
                time_index=time_index,
                search_entrance=entrance,
                recently_clicked_item_ids=recent_click,
                recently_purchased_item_ids=recent_buy,
                query=query,
                target_item_id=int(item) + 1,
                target_item_price=float(w.price[item]),
                is_clicked=int(clicked[pos]),
                is_purchased=int(bought[pos]),
                user_statistical_features=user_features,
                target_item_statistical_features=ItemStats(
                    item_show_cnt_30d_hist=float(s[0]),
                    item_click_cnt_30d_hist=float(s[1]),
                    item_order_cnt_30d_hist=float(s[2]),
                ),
                split=split,
            )
        )


def _write_relevance(w: _World, writer: KuaiSearchWriter) -> None:
    """Graded pairs for queries drawn with frequency^0.5 (more tail than traffic), items from
    retrieval, labels = gender-agnostic relevance with ``relevance_label_noise`` off-by-one."""
    cfg, rng = w.cfg, w.rng
    weights = np.sqrt(w.query_weight)
    cdf = np.cumsum(weights / weights.sum())
    cdf[-1] = 1.0
    written = 0
    while written < cfg.relevance_pairs:
        q = w.queries[int(np.searchsorted(cdf, rng.random(), side="right"))]
        items = w.candidates(q, None, cfg.num_days - 1, min(8, cfg.relevance_pairs - written))
        tiers = w.relevance(q, items, None).astype(np.int64)
        noisy = rng.random(items.size) < cfg.relevance_label_noise
        tiers = np.clip(tiers + noisy * rng.choice((-1, 1), items.size), 0, 3)
        for i, tier in zip(items, tiers, strict=True):
            writer.write(
                RelevancePair(
                    query=q.text,
                    item_title=w.title(int(i)),
                    brand=w.brand_names[w.brand[i]],
                    seller_name=w.seller_name(int(i)),
                    attr_value=w.attr_value(int(i)),
                    score=int(tier),
                )
            )
        written += items.size


def _write_lexicon(w: _World, lexicon_dir: Path) -> None:
    """attributes.tsv (term, type, weight) and ontology.jsonl: what a language model would know.

    Weights are 1.0 for canonical terms and 0.8 for synonyms. Typos are not written: finding
    them is the job of the query-understanding pipeline.
    """
    c = w.cat
    rows: dict[tuple[str, str], float] = {}
    for name in c.entity_names:
        rows[(name, "entity")] = 1.0
    for synonyms in cat.SYNONYMS.values():
        for s in synonyms:
            rows.setdefault((s, "entity"), 0.8)
    for b in w.brand_names[1:]:
        rows[(b.lower(), "brand")] = 1.0
    for t, words in c.vocab.items():
        for word in words:
            rows[(word, t)] = 1.0
    for code in np.unique(w.attr["model"][w.attr["model"] >= 0]):
        rows[(_model_text(int(code)).lower(), "model")] = 1.0
    with open(lexicon_dir / "attributes.tsv", "w", encoding="utf-8") as f:
        f.write("term\ttype\tweight\n")
        for (term, t), weight in sorted(rows.items()):
            f.write(f"{term}\t{t}\t{weight}\n")
    with open(lexicon_dir / "ontology.jsonl", "w", encoding="utf-8") as f:

        def emit(**entry: Any) -> None:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")

        for intent, (pairs, attributes) in cat.COMPLEX_INTENTS.items():
            emit(intent=intent, kind="complex", entities=sorted({e for _, e in pairs}),
                 attributes={t: list(v) for t, v in attributes.items()})  # fmt: skip
        for intent, by_gender in cat.AMBIGUOUS_QUERIES.items():
            emit(intent=intent, kind="ambiguous", entities=sorted({e for g in GENDERS for _, e in by_gender[g]}),
                 by_gender={g: sorted({e for _, e in by_gender[g]}) for g in GENDERS})  # fmt: skip
        for canonical, synonyms in cat.SYNONYMS.items():
            for s in synonyms:
                emit(intent=s, kind="synonym", entities=[canonical])
        for l2, name in enumerate(c.l2_names):
            members = sorted({c.entity_names[e] for e in range(len(c.entity_names)) if c.entity_l2[e] == l2})
            emit(intent=name.lower(), kind="category", entities=members)


def _write_truth(w: _World, truth_dir: Path, figures: dict[str, Any]) -> None:
    """Hidden ground truth, for tests and analysis only; never an input of the pipeline."""
    c = w.cat
    with open(truth_dir / "items.jsonl", "w", encoding="utf-8") as f:
        for i in range(w.cfg.num_items):
            attributes = {t: w.attribute_text(i, t) for t in cat.ATTRIBUTE_TYPES}
            f.write(json.dumps({
                "item_id": i + 1, "entity_code": int(w.entity[i]), "attributes": attributes,
                "price_band": int(w.band[i]), "popularity": float(w.popularity[i]),
                "launch_day": int(w.launch_day[i]), "cold_start": bool(w.launch_day[i] > 0),
            }, ensure_ascii=False) + "\n")  # fmt: skip
    with open(truth_dir / "users.jsonl", "w", encoding="utf-8") as f:
        for u in range(w.cfg.num_users):
            f.write(json.dumps({
                "user_id": u + 1, "price_band": int(w.user_band[u]),
                "styles": [c.vocab["style"][s] for s in w.user_styles[u]],
                "colors": [c.vocab["color"][s] for s in w.user_colors[u]],
                "brands": {name: [w.brand_names[b] for b in w.user_brands[u, k]] for k, name in enumerate(c.l1_names)},
                "preferred_brand_ids": sorted(int(b) + 1 for b in w.user_brands[u].ravel()),
            }, ensure_ascii=False) + "\n")  # fmt: skip
    with open(truth_dir / "queries.jsonl", "w", encoding="utf-8") as f:
        for q, weight in zip(w.queries, w.query_weight, strict=True):
            f.write(json.dumps({
                "query": q.text, "kind": q.kind, "weight": float(weight),
                "targets": {g: [[c.l1_names[c.entity_l1_arr[e]], c.entity_names[e]] for e in q.targets[g]]
                            for g in GENDERS},
                "required": [[t, w.brand_names[v].lower() if t == "brand" else c.vocab[t][v]] for t, v in q.required],
                "excluded": None if q.excluded is None else [q.excluded[0], c.vocab[q.excluded[0]][q.excluded[1]]],
                "max_price": q.max_price,
            }, ensure_ascii=False) + "\n")  # fmt: skip
    with open(truth_dir / "world.json", "w", encoding="utf-8") as f:
        json.dump({"config": dataclasses.asdict(w.cfg), "figures": figures}, f, indent=2)
        f.write("\n")
