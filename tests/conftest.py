"""Shared fixtures: the real public files in ../shared/data and a small generated world."""

from __future__ import annotations

from pathlib import Path

import pytest

from onesearch_jax.data.world import WorldConfig, generate_world
from onesearch_jax.xla_flags import apply_xla_defaults

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SMALL_WORLD = WorldConfig(num_items=400, num_users=150, num_sessions=4000, query_pool_size=300, relevance_pairs=400)


def shared_path(*parts: str) -> Path:
    """A file under ../shared/data, or a skip saying why it is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the public data sits beside the project in CI, not in a user's clone")
    return path


@pytest.fixture(scope="session")
def kuaisearch_demo() -> Path:
    return shared_path("kuaisearch_demo")


@pytest.fixture(scope="session")
def crowdflower_zip() -> Path:
    return shared_path("crowdflower_search_relevance", "train.csv.zip")


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    """A small world (about 1 s to make), shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("world")
    generate_world(SMALL_WORLD, out)
    return out


@pytest.fixture(scope="session")
def world_records(small_world, tmp_path_factory) -> Path:
    """The whole data path on the small world: keywords, SIDs, records and vocabulary (about 15 s).

    Returns the root holding ``sids/``, ``kw.jsonl``, ``out/`` (the records) and ``vocab/``.
    """
    from onesearch_jax.data.example_io import vocabulary_corpus
    from onesearch_jax.data.examples import build_examples
    from onesearch_jax.data.prompts import PROMPT_MARKERS
    from onesearch_jax.sid.build import SidBuildConfig, build_sids, resolve_data_dir
    from onesearch_jax.sid.codebook import SidCodebook
    from onesearch_jax.sid.embed import TfidfSvdConfig
    from onesearch_jax.sid.quantize import QuantizerConfig
    from onesearch_jax.understanding.job import KeywordJobConfig, run_keywords_job
    from onesearch_jax.vocab import VocabConfig, train_vocabulary

    root = tmp_path_factory.mktemp("world_records")
    data, lexicon = resolve_data_dir(small_world, None)
    sids = SidBuildConfig(tfidf=TfidfSvdConfig(dim=32), quantizer=QuantizerConfig(level_sizes=(8, 4, 4), niter=10))
    build_sids(data, root / "sids", sids, lexicon_path=lexicon)
    run_keywords_job(small_world, root / "kw.jsonl", job=KeywordJobConfig(evaluate=False))
    build_examples(data, root / "out", sids_dir=root / "sids", keywords_path=root / "kw.jsonl")
    vocab = VocabConfig(vocab_size=3000, hard_vocab_limit=False, extra_symbols=PROMPT_MARKERS)
    train_vocabulary(vocabulary_corpus(root / "out"), SidCodebook.load(root / "sids"), root / "vocab", vocab)
    return root


@pytest.fixture
def clean_gin():
    """An empty gin configuration for the test, and none left behind."""
    import gin

    gin.clear_config()
    yield
    gin.clear_config()


def pytest_configure(config):
    """The suite runs jax with the XLA flags the ``onesearch`` command sets."""
    apply_xla_defaults()
