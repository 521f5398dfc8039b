"""TrainState: a pytree of arrays that splits from and merges back into the model; sharded init."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from onesearch_jax.models.partitioning import DEFAULT_RULES, MeshConfig, make_mesh
from onesearch_jax.train.optimizers import OptimizerConfig, make_optimizer
from onesearch_jax.train.state import TrainState, init_train_state, shard_train_state, split_params
from tests.train.mini_model import MiniEncoderDecoder

ENC = jnp.array([[3, 4, 5, 0], [6, 7, 0, 0]], jnp.int32)
DEC = jnp.array([[0, 8, 9], [0, 10, 11]], jnp.int32)
# One compile per call site instead of op-by-op dispatch (seconds on a busy CPU).
forward = nnx.jit(lambda model: model(ENC, DEC))


def test_create_splits_the_model_and_merge_restores_it():
    model = MiniEncoderDecoder(seed=1)
    optimizer = make_optimizer(OptimizerConfig())
    graphdef, state = TrainState.create(model, optimizer, rng=7)
    assert int(state.step) == 0 and state.step.dtype == jnp.int32
    assert jnp.issubdtype(state.rng.dtype, jax.dtypes.prng_key)
    assert isinstance(state.params, nnx.State)
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(state))
    assert jax.tree.structure(state.opt_state) == jax.tree.structure(optimizer.tx.init(state.params))
    np.testing.assert_array_equal(forward(state.model(graphdef)), forward(model))
    # The state holds copies: changing the model afterwards leaves it alone.
    model.scale[...] = jnp.zeros_like(model.scale[...])
    np.testing.assert_array_equal(state.params["scale"][...], np.ones(16, np.float32))


def test_state_is_a_pytree_that_round_trips():
    _, state = TrainState.create(MiniEncoderDecoder(seed=0), optax.sgd(0.1), rng=jax.random.key(3))
    leaves, treedef = jax.tree.flatten(state)
    again = jax.tree.unflatten(treedef, leaves)
    assert isinstance(again, TrainState)
    assert again.replace(step=again.step + 1).step == 1


def test_models_with_stored_rng_streams_are_refused():
    class WithRngs(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.ones((2, 2)))
            self.dropout = nnx.Dropout(0.1, rngs=nnx.Rngs(0))

    with pytest.raises(ValueError, match=r"non-parameter state .*pass dropout keys at call time"):
        split_params(WithRngs())
    with pytest.raises(TypeError, match="rng must be an int seed or a typed key"):
        TrainState.create(MiniEncoderDecoder(), optax.sgd(0.1), rng=jnp.zeros((2,), jnp.uint32))


def test_shard_train_state_places_params_by_the_rules():
    mesh = make_mesh(MeshConfig())
    _, state = TrainState.create(MiniEncoderDecoder(), make_optimizer(OptimizerConfig()))
    sharded, shardings = shard_train_state(state, mesh, DEFAULT_RULES)
    assert shardings.params["wi"].get_value().spec == P("fsdp", "tensor")
    assert shardings.params["q"].get_value().spec == P("fsdp", "tensor", None)
    assert sharded.params["wi"].get_value().sharding == shardings.params["wi"].get_value()
    assert shardings.step.spec == P() and shardings.rng.spec == P()
    adam = shardings.opt_state[1][0]
    assert adam.mu["embedding"].get_value().spec == P("tensor", "fsdp") and adam.count.spec == P()


def test_init_train_state_builds_the_state_sharded():
    mesh = make_mesh(MeshConfig())
    optimizer = make_optimizer(OptimizerConfig())
    graphdef, state, shardings = init_train_state(
        lambda rngs: MiniEncoderDecoder(seed=2), optimizer, mesh, DEFAULT_RULES
    )
    for array, sharding in zip(jax.tree.leaves(state), jax.tree.leaves(shardings), strict=True):
        assert array.sharding.spec == sharding.spec
    reference = MiniEncoderDecoder(seed=2)
    np.testing.assert_array_equal(forward(state.model(graphdef)), forward(reference))
    assert int(state.step) == 0
