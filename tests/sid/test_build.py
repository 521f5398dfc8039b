import json
import subprocess
import sys

import numpy as np
import pytest

from onesearch_jax.data.kuaisearch import KuaiSearchDataset
from onesearch_jax.sid.build import SidBuildConfig, build_sids, resolve_data_dir
from onesearch_jax.sid.codebook import SidCodebook
from onesearch_jax.sid.embed import EmbeddingError, TfidfSvdConfig
from onesearch_jax.sid.encode import SidEncoder
from onesearch_jax.sid.quantize import QuantizerConfig, QuantizerError

SMALL = SidBuildConfig(tfidf=TfidfSvdConfig(dim=32), quantizer=QuantizerConfig(level_sizes=(8, 4, 4), niter=10))


@pytest.fixture(scope="module")
def world_sids(small_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("sids")
    data, lexicon = resolve_data_dir(small_world, None)
    return build_sids(data, out, SMALL, lexicon_path=lexicon), out


def test_world_layout_is_resolved(small_world, tmp_path):
    assert resolve_data_dir(small_world, None) == (small_world / "kuaisearch", small_world / "lexicon/attributes.tsv")
    assert resolve_data_dir(small_world / "kuaisearch", None) == (small_world / "kuaisearch", None)
    with pytest.raises(FileNotFoundError, match="neither a KuaiSearch directory"):
        resolve_data_dir(tmp_path, None)


def test_build_covers_every_item_and_logged_query(world_sids, small_world):
    result, _out = world_sids
    book = result.codebook
    items = [i.item_id for i in KuaiSearchDataset(small_world / "kuaisearch").read("items")]
    queries = {s.query for s in KuaiSearchDataset(small_world / "kuaisearch").read("recall")}
    assert book.item_ids.tolist() == sorted(items)
    assert set(book.queries.tolist()) == queries
    assert result.keyword_coverage["items"] > 0.9  # the world's titles name lexicon entities
    trie = book.trie()
    assert trie.num_sids == result.report.unique_sids
    assert sorted(trie.leaf_items.tolist()) == sorted(items)
    for item_id in items[:50]:
        assert item_id in trie.items(book.item_sid(item_id)).tolist()


def test_saved_codebook_round_trips_and_records_its_settings(world_sids):
    result, out = world_sids
    loaded = SidCodebook.load(out)
    assert (loaded.item_codes == result.codebook.item_codes).all()
    assert (loaded.query_codes == result.codebook.query_codes).all()
    meta = json.loads((out / "codebook.json").read_text())
    assert meta["report"]["icr"] == result.report.icr
    assert meta["metadata"]["config"]["quantizer"]["level_sizes"] == [8, 4, 4]
    assert (out / "quantizer.npz").exists() and (out / "embedder" / "embedder.json").exists()


def test_same_seed_same_codes(world_sids, small_world):
    result, _ = world_sids
    data, lexicon = resolve_data_dir(small_world, None)
    again = build_sids(data, None, SMALL, lexicon_path=lexicon)
    assert (again.codebook.item_codes == result.codebook.item_codes).all()
    assert (again.codebook.query_codes == result.codebook.query_codes).all()


def test_opq_and_collision_handling_raise_identifiability(world_sids):
    report = world_sids[0].report
    assert report.icr_raw > report.icr_rq  # OPQ codes separate items the residual levels merge
    assert report.icr >= report.icr_raw
    assert report.icr == 1.0 - sum(k * v for k, v in report.collisions.items()) / report.num_items


def test_incremental_mode_reuses_the_embedder_and_upper_levels(world_sids, small_world):
    result, out = world_sids
    data, lexicon = resolve_data_dir(small_world, None)
    config = SidBuildConfig(tfidf=SMALL.tfidf, quantizer=QuantizerConfig(level_sizes=(8, 4, 6), niter=10, seed=5))
    new = build_sids(data, None, config, lexicon_path=lexicon, previous_dir=out, keep_levels=2)
    assert (new.quantizer.shared[0] == result.quantizer.shared[0]).all()
    assert (new.quantizer.shared[1] == result.quantizer.shared[1]).all()
    assert (new.codebook.raw_item_codes[:, :2] == result.codebook.raw_item_codes[:, :2]).all()
    assert new.codebook.code_sizes[2] == 6


def test_chinese_titles_of_the_real_kuaisearch_demo(kuaisearch_demo):
    config = SidBuildConfig(
        fuse_keywords=False, tfidf=TfidfSvdConfig(dim=16),
        quantizer=QuantizerConfig(level_sizes=(8, 4, 4), opq_bits=4, niter=10),
    )  # fmt: skip
    result = build_sids(kuaisearch_demo, None, config)
    book = result.codebook
    assert len(book.item_ids) == 200 and 3359347 in book.item_ids.tolist()
    assert len(book.queries) > 0 and all(book.query_sid(q) is not None for q in book.queries.tolist()[:10])
    assert result.report.cur[0] == 1.0 and result.report.icr_raw > 0.9


def test_codebook_larger_than_the_data_is_a_clear_error(small_world):
    data, _ = resolve_data_dir(small_world, None)
    config = SidBuildConfig(
        fuse_keywords=False, fit_on_queries=False, quantizer=QuantizerConfig(level_sizes=(512, 4, 4))
    )
    with pytest.raises(QuantizerError, match="level 1 has 512 codes but there are only 400 training vectors"):
        build_sids(data, None, config)


def _precomputed(tmp_path, small_world, drop_item=None, dim=8):
    book_items = [i.item_id for i in KuaiSearchDataset(small_world / "kuaisearch").read("items")]
    queries = sorted({s.query for s in KuaiSearchDataset(small_world / "kuaisearch").read("recall")})
    rng = np.random.default_rng(0)
    ids = [i for i in book_items if i != drop_item]
    np.save(tmp_path / "items.npy", rng.standard_normal((len(ids), dim)).astype(np.float32))
    (tmp_path / "items.txt").write_text("".join(f"{i}\n" for i in ids))
    np.save(tmp_path / "queries.npy", rng.standard_normal((len(queries), 8)).astype(np.float32))
    (tmp_path / "queries.txt").write_text("".join(f"{q}\n" for q in queries), encoding="utf-8")
    return SidBuildConfig(
        embedder="precomputed", fuse_keywords=False, quantizer=QuantizerConfig(level_sizes=(8, 4, 4), niter=5),
        item_embeddings=str(tmp_path / "items.npy"), item_ids=str(tmp_path / "items.txt"),
        query_embeddings=str(tmp_path / "queries.npy"), query_ids=str(tmp_path / "queries.txt"),
    )  # fmt: skip


def test_precomputed_embeddings_build(tmp_path, small_world):
    result = build_sids(small_world / "kuaisearch", None, _precomputed(tmp_path, small_world))
    assert result.codebook.item_codes.shape == (400, 5)


def test_precomputed_item_without_embedding_names_its_items_line(tmp_path, small_world):
    with pytest.raises(EmbeddingError, match=r"items.jsonl:7: item 7 has no embedding .*\(1 items have none\)"):
        build_sids(small_world / "kuaisearch", None, _precomputed(tmp_path, small_world, drop_item=7))
    with pytest.raises(EmbeddingError, match=r"queries\.npy: embedding dimension 8, expected 6"):
        build_sids(small_world / "kuaisearch", None, _precomputed(tmp_path, small_world, dim=6))


def test_config_validation(small_world):
    with pytest.raises(ValueError, match="embedder"):
        SidBuildConfig(embedder="bert")
    with pytest.raises(ValueError, match="item_embeddings"):
        SidBuildConfig(embedder="precomputed")
    with pytest.raises(ValueError, match="item_text_fields"):
        SidBuildConfig(item_text_fields=("price",))
    with pytest.raises(ValueError, match="keyword fusion needs an attribute lexicon"):
        build_sids(small_world / "kuaisearch", None, SMALL)


def test_cli_builds_prints_the_report_and_compares(small_world, tmp_path):
    out = tmp_path / "sids"
    cmd = [sys.executable, "-m", "onesearch_jax.main", "build-sids", str(small_world), str(out),
           "--gin.QuantizerConfig.level_sizes=(8, 4, 4)", "--gin.TfidfSvdConfig.dim=32", "--compare"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "CUR(L1xL2)" in proc.stdout and "ICR with OPQ" in proc.stdout and "example: item 1 -> <a_" in proc.stdout
    assert SidCodebook.load(out).item_ids.size == 400
    bad = subprocess.run([*cmd[:5], str(tmp_path / "x"), "--gin.QuantizerConfig.level_sizes=(4096, 4, 4)"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 2
    assert "error: codebook level 1 has 4096 codes" in bad.stderr and "Traceback" not in bad.stderr


def test_encoder_reproduces_the_stored_query_sids_from_the_saved_directory(world_sids):
    result, out = world_sids
    assert (out / "lexicon.tsv").exists()  # the codebook carries its fusion lexicon
    encoder = SidEncoder.load(out)
    book = result.codebook
    queries = book.queries.tolist()[:200]
    assert (encoder.encode(queries) == book.query_codes[:200]).all()
    assert encoder.encode([]).shape == (0, 5)
    new = encoder.encode(["red cotton dress for summer", "全新 连衣裙"])
    assert new.shape == (2, 5) and (new < np.array(book.code_sizes)).all()


def test_encoder_refuses_precomputed_codebooks(tmp_path, small_world):
    out = tmp_path / "pre"
    build_sids(small_world / "kuaisearch", out, _precomputed(tmp_path, small_world))
    with pytest.raises(EmbeddingError, match="precomputed embeddings"):
        SidEncoder.load(out)
