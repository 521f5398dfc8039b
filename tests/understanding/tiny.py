"""A hand-made search log small enough to compute every statistic by hand.

Items (id: title | level 1 / level 2 / level 3 | brand)::

    1: Kara red yoga mat        | Sports / Fitness / yoga mat  | Kara
    2: Lovo blue yoga mat       | Sports / Fitness / yoga mat  | Lovo
    3: Kara dumbbells 5kg       | Sports / Fitness / dumbbells | Kara
    4: Lovo red tent            | Sports / Camping / tent      | Lovo
    5: Pona red dress           | Women / Dresses / dress      | Pona
    6: Pona blue dress          | Women / Dresses / dress      | Pona
    7: Xiven green treadmill    | Sports / Fitness / treadmill | Xiven
    8: Xiven black treadmill    | Sports / Fitness / treadmill | Xiven

Users 1 and 3 are F, user 2 is M. Sessions (id, user, time, query, impressed, clicked, bought, split)::

    1  u1  10  yoga mat   [1,2,3,4]  [1]    []   train
    2  u2  20  yoga mat   [1,2,3]    [2]    [2]  train
    3  u3  30  yoga mat   [1,2,5]    [1,3]  []   train
    4  u1  40  dress      [5,6,1]    [5,6]  []   train
    5  u3  45  treadmill  [7,8]      []     []   train
    6  u2  46  treadmill  [7,8]      [7]    []   train
    7  u2  50  yoga mat   [1,2]      [1]    []   valid
    8  u1  60  yoga mat   [2,1]      [2]    [2]  test

Rank rows price items 1 (20.0, session 1), 2 (30.0, session 2), 7 (300.0, session 6).
"""

from __future__ import annotations

from onesearch_jax.data.schema import Item, ItemStats, RankRow, SearchSession, User, UserStats
from onesearch_jax.understanding.lexicon import AttributeLexicon
from onesearch_jax.understanding.logs import TrainingLogs

_PATHS = {
    "yoga mat": ("Sports", "Fitness", "yoga mat"),
    "dumbbells": ("Sports", "Fitness", "dumbbells"),
    "tent": ("Sports", "Camping", "tent"),
    "dress": ("Women", "Dresses", "dress"),
    "treadmill": ("Sports", "Fitness", "treadmill"),
}
_ITEMS = [
    (1, "Kara red yoga mat", "yoga mat", "Kara"),
    (2, "Lovo blue yoga mat", "yoga mat", "Lovo"),
    (3, "Kara dumbbells 5kg", "dumbbells", "Kara"),
    (4, "Lovo red tent", "tent", "Lovo"),
    (5, "Pona red dress", "dress", "Pona"),
    (6, "Pona blue dress", "dress", "Pona"),
    (7, "Xiven green treadmill", "treadmill", "Xiven"),
    (8, "Xiven black treadmill", "treadmill", "Xiven"),
]
_SESSIONS = [
    (1, 1, 10, "yoga mat", (1, 2, 3, 4), (1,), (), "train"),
    (2, 2, 20, "yoga mat", (1, 2, 3), (2,), (2,), "train"),
    (3, 3, 30, "yoga mat", (1, 2, 5), (1, 3), (), "train"),
    (4, 1, 40, "dress", (5, 6, 1), (5, 6), (), "train"),
    (5, 3, 45, "treadmill", (7, 8), (), (), "train"),
    (6, 2, 46, "treadmill", (7, 8), (7,), (), "train"),
    (7, 2, 50, "yoga mat", (1, 2), (1,), (), "valid"),
    (8, 1, 60, "yoga mat", (2, 1), (2,), (2,), "test"),
]
_NAMES = {"Sports": 1, "Women": 2, "Fitness": 1, "Camping": 2, "Dresses": 3}


def items() -> list[Item]:
    out = []
    for item_id, title, leaf, brand in _ITEMS:
        l1, l2, l3 = _PATHS[leaf]
        out.append(
            Item(
                item_id=item_id,
                item_title=title,
                brand_id=1 + sorted({b for *_, b in _ITEMS}).index(brand),
                brand_name=brand,
                seller_id=1,
                seller_name="shop",
                category_level1_id=_NAMES[l1],
                category_level1_name=l1,
                category_level2_id=_NAMES[l2],
                category_level2_name=l2,
                category_level3_id=1 + list(_PATHS).index(leaf),
                category_level3_name=l3,
            )
        )
    return out


def users() -> list[User]:
    return [
        User(user_id=u, gender=g, age_bucket="24-30", fre_country="China", fre_province="Zhejiang", fre_city="Hangzhou")
        for u, g in ((1, "F"), (2, "M"), (3, "F"))
    ]


def sessions(drop: tuple[int, ...] = ()) -> list[SearchSession]:
    return [
        SearchSession(
            user_id=u,
            session_id=s,
            impressed_item_ids=imp,
            clicked_item_ids=clk,
            purchased_item_ids=buy,
            time_index=t,
            query=q,
            split=split,
        )
        for s, u, t, q, imp, clk, buy, split in _SESSIONS
        if s not in drop
    ]


def rank_rows() -> list[RankRow]:
    zero_user = UserStats(
        user_show_cnt_30d_hist=0.0, user_click_cnt_30d_hist=0.0, user_order_cnt_30d_hist=0.0, user_gmv_30d_hist=0.0
    )
    zero_item = ItemStats(item_show_cnt_30d_hist=0.0, item_click_cnt_30d_hist=0.0, item_order_cnt_30d_hist=0.0)
    rows = []
    for session_id, item, price in ((1, 1, 20.0), (2, 2, 30.0), (6, 7, 300.0)):
        s = next(x for x in _SESSIONS if x[0] == session_id)
        rows.append(
            RankRow(
                user_id=s[1],
                session_id=session_id,
                user_fan_number=0,
                user_follow_number=0,
                time_index=s[2],
                search_entrance="mall",
                recently_clicked_item_ids=(),
                recently_purchased_item_ids=(),
                query=s[3],
                target_item_id=item,
                target_item_price=price,
                is_clicked=1,
                is_purchased=0,
                user_statistical_features=zero_user,
                target_item_statistical_features=zero_item,
                split=s[7],
            )
        )
    return rows


def logs(drop: tuple[int, ...] = (), **kwargs) -> TrainingLogs:
    return TrainingLogs(items=items(), users=users(), sessions=sessions(drop), rank_rows=rank_rows(), **kwargs)


def lexicon() -> AttributeLexicon:
    return AttributeLexicon.from_terms(
        [("kara", "brand"), ("lovo", "brand"), ("pona", "brand"), ("xiven", "brand"), ("red", "color"),
         ("blue", "color"), ("green", "color"), ("black", "color"), ("yoga mat", "entity"), ("dumbbells", "entity"),
         ("tent", "entity"), ("dress", "entity"), ("treadmill", "entity"), ("5kg", "specifications")]
    )  # fmt: skip
