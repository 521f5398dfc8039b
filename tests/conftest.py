"""Shared fixtures: the real public files in ../shared/data and a small generated world."""

from __future__ import annotations

from pathlib import Path

import pytest

from onesearch_jax.data.world import WorldConfig, generate_world

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
