import numpy as np
import pytest

from onesearch_jax.sid.quantize import QuantizerConfig, QuantizerError, ResidualQuantizer

CONFIG = QuantizerConfig(level_sizes=(8, 4, 4), opq_subcodes=2, opq_bits=6, niter=10, seed=3)


def _data(n=600, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, d)) * 3
    return (centres[rng.integers(0, 20, n)] + rng.standard_normal((n, d))).astype(np.float32)


def test_same_seed_gives_the_same_codes_and_codes_are_in_range():
    x = _data()
    a = ResidualQuantizer.fit(x, CONFIG).encode(x)[0]
    b = ResidualQuantizer.fit(x, CONFIG).encode(x)[0]
    assert (a == b).all()
    assert a.shape == (600, 5)
    assert (a >= 0).all() and (a < np.array(CONFIG.code_sizes())).all()


def test_residual_levels_reduce_the_reconstruction_error():
    x = _data()
    q = ResidualQuantizer.fit(x, QuantizerConfig(level_sizes=(8, 4, 4), opq_subcodes=0, niter=10))
    codes, residual = q.encode(x)
    level1 = x - q.shared[0][codes[:, 0]]
    assert (residual**2).sum() < (level1**2).sum() < (x**2).sum()
    np.testing.assert_allclose(
        residual, level1 - q.shared[1][codes[:, 1]] - q.last[codes[:, 1], codes[:, 2]], atol=1e-5
    )


def test_last_level_is_trained_per_parent():
    x = _data()
    q = ResidualQuantizer.fit(x, CONFIG)
    assert q.last.shape == (4, 4, 16)  # one codebook of 4 per level-2 code
    codes = q.encode(x)[0]
    for p in range(4):
        assert (codes[codes[:, 1] == p, 2] < q.last_counts[p]).all()
    pairs = ResidualQuantizer.fit(x, QuantizerConfig(level_sizes=(8, 4, 4), last_level_parent="l1l2", opq_subcodes=0))
    assert pairs.last.shape == (32, 4, 16)


def test_a_parent_with_few_vectors_gives_each_its_own_code():
    x = _data(n=40)
    q = ResidualQuantizer.fit(x, QuantizerConfig(level_sizes=(2, 2, 30), opq_subcodes=0, niter=5))
    codes = q.encode(x)[0]
    small = [p for p in range(2) if 0 < (codes[:, 1] == p).sum() <= 30]
    assert small  # 40 vectors over 2 parents: at least one has at most 30
    for p in small:
        members = codes[:, 1] == p
        assert q.last_counts[p] == members.sum()
        assert len(np.unique(codes[members, 2])) == members.sum()  # every vector its own code


def test_opq_rotation_is_orthogonal_and_save_load_encodes_identically(tmp_path):
    x = _data()
    q = ResidualQuantizer.fit(x, CONFIG)
    np.testing.assert_allclose(q.rotation @ q.rotation.T, np.eye(16), atol=1e-4)
    q.save(tmp_path / "q.npz")
    loaded = ResidualQuantizer.load(tmp_path / "q.npz")
    assert loaded.config == CONFIG
    assert (loaded.encode(x)[0] == q.encode(x)[0]).all()


def test_opq_codes_are_the_nearest_pq_centroids():
    x = _data()
    q = ResidualQuantizer.fit(x, CONFIG)
    codes, rotated = q.encode(x)
    for m in range(2):
        assert (q.subcode_distances(rotated, m).argmin(1) == codes[:, 3 + m]).all()


def test_incremental_mode_keeps_the_upper_levels():
    x = _data()
    old = ResidualQuantizer.fit(x, CONFIG)
    new_data = np.concatenate([x, _data(n=300, seed=9)])
    new = ResidualQuantizer.fit(new_data, CONFIG, previous=old, keep_levels=2)
    assert all((a == b).all() for a, b in zip(new.shared, old.shared, strict=True))
    assert (new.encode(x)[0][:, :2] == old.encode(x)[0][:, :2]).all()
    with pytest.raises(QuantizerError, match="kept levels differ"):
        ResidualQuantizer.fit(x, QuantizerConfig(level_sizes=(4, 4, 4), opq_bits=6), previous=old, keep_levels=1)
    with pytest.raises(QuantizerError, match="needs a previous"):
        ResidualQuantizer.fit(x, CONFIG, keep_levels=1)


@pytest.mark.parametrize(
    "x, config, message",
    [
        (_data(n=30), QuantizerConfig(level_sizes=(64, 4, 4), opq_subcodes=0), "level 1 has 64 codes but .* only 30"),
        (_data(n=100), QuantizerConfig(level_sizes=(4, 4, 4)), "OPQ needs at least 256"),
        (_data(d=15), CONFIG, "not divisible by opq_subcodes"),
        (np.ones(10, np.float32), CONFIG, r"\[n, d\] matrix"),
    ],
)
def test_training_errors_are_clear(x, config, message):
    with pytest.raises(QuantizerError, match=message):
        ResidualQuantizer.fit(x, config)


def test_non_finite_rows_are_named():
    x = _data()
    x[17, 3] = np.nan
    with pytest.raises(QuantizerError, match="row 17 has a NaN"):
        ResidualQuantizer.fit(x, CONFIG)
    q = ResidualQuantizer.fit(_data(), CONFIG)
    with pytest.raises(QuantizerError, match="dimension 8, the quantiser was trained on 16"):
        q.encode(np.ones((2, 8), np.float32))


@pytest.mark.parametrize(
    "kwargs", [dict(level_sizes=()), dict(level_sizes=(4, 0)), dict(last_level_parent="l3"),
               dict(level_sizes=(4, 4), last_level_parent="l1l2"), dict(opq_bits=0), dict(niter=0)],
)  # fmt: skip
def test_config_is_validated(kwargs):
    with pytest.raises(ValueError):
        QuantizerConfig(**kwargs)
