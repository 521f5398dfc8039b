"""Beam search and sampling on a (data=4) mesh against one device; prints one JSON line.

Run in a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (by
``test_sharded_decode.py``).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from onesearch_jax.decode.beam_search import beam_search, make_beam_search
from onesearch_jax.decode.device_trie import DeviceTrie
from onesearch_jax.decode.sampling import SamplingConfig, make_sampler, sample_sids
from onesearch_jax.models import partitioning
from onesearch_jax.models.configs import named_config
from onesearch_jax.models.encoder_decoder import abstract_model
from onesearch_jax.models.mesh_config import MeshConfig, standard_logical_axis_rules
from onesearch_jax.sid.trie import SidTrie
from tests.models.model_utils import fill

CODE_SIZES, OFFSETS = (4, 5, 6), (10, 14, 19)


def main() -> None:
    rng = np.random.default_rng(0)
    trie = SidTrie.build(np.stack([rng.integers(0, k, 40) for k in CODE_SIZES], 1), np.arange(40), CODE_SIZES)
    device_trie = DeviceTrie.from_trie(trie, OFFSETS)
    model = fill(abstract_model(named_config("tiny", vocab_size=32, dtype="float32", dropout_rate=0.0)), seed=3)
    queries = jnp.asarray(np.random.default_rng(1).integers(2, 32, (8, 12)).astype(np.int32))
    config = SamplingConfig(num_samples=6, temperature=1.2, top_p=0.9)
    key = jax.random.key(5)

    single_beam = jax.jit(lambda q, t: beam_search(model, q, t, beam_size=8, top_k=4))(queries, device_trie)
    single_sample = jax.jit(lambda q, t, k: sample_sids(model, q, t, k, config))(queries, device_trie, key)

    mesh = partitioning.make_mesh(MeshConfig(data=4), devices=jax.devices())
    rules = standard_logical_axis_rules()
    graphdef, params = nnx.split(model)
    with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
        shardings = partitioning.param_shardings(params, mesh, rules)
    params = jax.device_put(params, shardings)
    sharded_queries = jax.device_put(queries, partitioning.batch_sharding(mesh, rules))
    search = make_beam_search(graphdef, shardings, mesh, rules, beam_size=8, top_k=4)
    sampler = make_sampler(graphdef, shardings, mesh, rules, config=config)
    mesh_beam = search(params, sharded_queries, device_trie)
    mesh_sample = sampler(params, sharded_queries, device_trie, key)
    print(
        json.dumps(
            {
                "devices": jax.device_count(),
                "beam_shards": len(mesh_beam.scores.sharding.device_set),
                "beam_leaves_equal": bool((np.asarray(mesh_beam.leaves) == np.asarray(single_beam.leaves)).all()),
                "beam_score_diff": float(np.abs(np.asarray(mesh_beam.scores) - np.asarray(single_beam.scores)).max()),
                "sample_leaves_equal": bool((np.asarray(mesh_sample.leaves) == np.asarray(single_sample.leaves)).all()),
                "sample_logprob_diff": float(
                    np.abs(np.asarray(mesh_sample.logprobs) - np.asarray(single_sample.logprobs)).max()
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
