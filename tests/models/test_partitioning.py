"""Mesh shapes, logical-axis rules, parameter / optimizer-state / batch shardings and their errors.

The test process sees one CPU device; mesh arithmetic on more devices is checked on ``MeshConfig``
itself and on ``jax.sharding.AbstractMesh`` (no devices needed). The 8-device runs are in
``tests/train/test_sharded_equality.py``.
"""

from __future__ import annotations

import re

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AbstractMesh, AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from onesearch_jax import configurables
from onesearch_jax.gin_utils import parse_gin
from onesearch_jax.models import named_config
from onesearch_jax.models.encoder_decoder import abstract_model
from onesearch_jax.models.partitioning import (
    DEFAULT_RULES,
    MESH_AXES,
    MeshConfig,
    batch_sharding,
    check_batch_size,
    logical_partition_specs,
    logical_to_mesh_spec,
    make_mesh,
    optimizer_state_shardings,
    param_partition_specs,
    param_shardings,
    shard_batch,
    standard_logical_axis_rules,
    top_k_per_shard,
    validate_rules,
    with_logical_constraint,
)

MESH_222 = AbstractMesh((2, 2, 2), MESH_AXES, axis_types=(AxisType.Auto,) * 3)
TINY = named_config("tiny", vocab_size=256, dtype="float32")


@pytest.fixture(scope="module")
def tiny_params() -> nnx.State:
    """The tiny T5's parameters as ShapeDtypeStructs (nothing allocated)."""
    return nnx.state(abstract_model(TINY), nnx.Param)


def _flat(tree) -> dict[str, object]:
    return {"/".join(map(str, k)): v for k, v in nnx.to_flat_state(tree)}


# MeshConfig and make_mesh ------------------------------------------------------------------------


def test_mesh_shape_takes_the_rest_for_data():
    assert MeshConfig(fsdp=2, tensor=2).shape(8) == (2, 2, 2)
    assert MeshConfig().shape(8) == (8, 1, 1)
    assert MeshConfig(data=1, fsdp=8).shape(8) == (1, 8, 1)


@pytest.mark.parametrize(
    ("config", "devices", "numbers"),
    [
        (MeshConfig(fsdp=3), 8, ["fsdp=3", "tensor=1", "= 3", "8 available devices"]),
        (MeshConfig(data=2, fsdp=2, tensor=3), 8, ["data=2", "fsdp=2", "tensor=3", "= 12 devices", "8 devices"]),
        (MeshConfig(data=2), 8, ["= 2 devices", "8 devices"]),
    ],
)
def test_mesh_that_does_not_match_the_device_count_names_the_numbers(config, devices, numbers):
    with pytest.raises(ValueError) as error:
        config.shape(devices)
    for number in numbers:
        assert number in str(error.value)


def test_make_mesh_fails_before_any_compile_on_this_host():
    with pytest.raises(ValueError, match=r"data=4 x fsdp=1 x tensor=1 = 4 devices, but 1 devices are available"):
        make_mesh(MeshConfig(data=4))


def test_make_mesh_on_one_device_has_auto_axes():
    mesh = make_mesh(MeshConfig())
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert dict(mesh.shape) == {"data": 1, "fsdp": 1, "tensor": 1}
    assert mesh.axis_types == (AxisType.Auto,) * 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fsdp": 0}, "MeshConfig.fsdp must be a positive integer, got 0"),
        ({"tensor": 1.5}, "MeshConfig.tensor must be a positive integer"),
        ({"data": -2}, "MeshConfig.data must be a positive integer or -1"),
        ({"data": 3, "num_slices": 2}, "data=3 must be a multiple of num_slices=2"),
        ({"num_slices": 0}, "MeshConfig.num_slices must be a positive integer"),
    ],
)
def test_mesh_config_is_validated(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MeshConfig(**kwargs)


def test_multislice_shapes_put_only_data_across_slices():
    config = MeshConfig(data=4, fsdp=2, tensor=2, num_slices=2)
    assert config.shape(16) == (4, 2, 2)
    assert config.ici_dcn_shapes(16) == ((2, 2, 2), (2, 1, 1))
    assert MeshConfig(fsdp=4, num_slices=4).ici_dcn_shapes(32) == ((2, 4, 1), (4, 1, 1))
    with pytest.raises(ValueError, match="data=2 is not a multiple of num_slices=4"):
        MeshConfig(fsdp=4, num_slices=4).shape(8)


def test_multislice_mesh_needs_that_many_slices_of_devices():
    message = r"num_slices=2 needs 2 groups of 1 devices .* by process_index: 1 group\(s\) of sizes \[2\]"
    with pytest.raises(ValueError, match=message):
        make_mesh(MeshConfig(data=2, num_slices=2), jax.devices() * 2)


# Rules ------------------------------------------------------------------------------------------


def test_default_rules_table():
    rules = dict(DEFAULT_RULES)
    assert rules["batch"] == ("data", "fsdp")
    assert rules["embed"] == "fsdp"
    assert rules["mlp"] == rules["heads"] == rules["vocab"] == "tensor"
    assert rules["kv"] is rules["length"] is rules["relpos_buckets"] is None


def test_rule_overrides_replace_in_place_and_append():
    rules = standard_logical_axis_rules([("vocab", None), ("experts", "fsdp"), ("batch", ["data"])])
    table = dict(rules)
    assert table["vocab"] is None and table["experts"] == "fsdp" and table["batch"] == ("data",)
    assert [name for name, _ in rules][: len(DEFAULT_RULES)] == [name for name, _ in DEFAULT_RULES]
    assert standard_logical_axis_rules({"embed": None}) == tuple(
        (name, None if name == "embed" else target) for name, target in DEFAULT_RULES
    )


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ((("embed", "fsdpp"),), "rule 'embed' -> 'fsdpp' names mesh axis 'fsdpp', which is not one of the mesh axes"),
        ((("batch", ("data", "model")),), "names mesh axis 'model'"),
        ((("embed", "fsdp"), ("embed", None)), "logical axis 'embed' has more than one rule"),
        ((("embed", ("fsdp", "fsdp")),), "names a mesh axis twice"),
        (("embed",), "a logical-axis rule is a (logical_axis, mesh_axes) pair"),
    ],
)
def test_bad_rules_are_refused(rules, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_rules(rules)


def test_gin_override_with_an_unknown_mesh_axis_fails_at_once():
    with pytest.raises(ValueError, match="names mesh axis 'model'"):
        standard_logical_axis_rules([("mlp", "model")])


def test_logical_to_mesh_spec():
    assert logical_to_mesh_spec(("embed", "mlp"), DEFAULT_RULES) == P("fsdp", "tensor")
    assert logical_to_mesh_spec(("batch", "length", None), DEFAULT_RULES) == P(("data", "fsdp"), None, None)
    with pytest.raises(ValueError, match=r"w has logical axis 'embd', which no rule maps; rules exist for \["):
        logical_to_mesh_spec(("embd", "mlp"), DEFAULT_RULES, name="w")
    with pytest.raises(ValueError, match="maps logical axes 'batch' and 'embed' both to mesh axis 'fsdp'"):
        logical_to_mesh_spec(("batch", "embed"), DEFAULT_RULES)


# Parameter shardings ----------------------------------------------------------------------------


def test_every_tiny_t5_param_is_annotated_and_sharded_by_the_rules(tiny_params):
    logical = _flat(logical_partition_specs(tiny_params))
    shardings = _flat(param_shardings(tiny_params, MESH_222, DEFAULT_RULES))
    shapes = {k: v.shape for k, v in _flat(tiny_params).items()}
    table = dict(DEFAULT_RULES)
    assert set(shardings) == set(shapes) and len(shapes) == 52
    for name, sharding in shardings.items():
        names = tuple(logical[name].get_value())
        assert len(names) == len(shapes[name]) and all(names), f"{name} lacks logical axes: {names}"
        assert isinstance(sharding.get_value(), NamedSharding)
        assert sharding.get_value().spec == P(*(table[n] for n in names)), name
    spec = {name: s.get_value().spec for name, s in shardings.items()}
    assert spec["encoder/layers/0/mlp/wi_0"] == P("fsdp", "tensor")  # (embed, mlp)
    assert spec["encoder/layers/0/mlp/wo"] == P("tensor", "fsdp")  # (mlp, embed)
    assert spec["token_embedder/embedding"] == P("tensor", "fsdp")  # (vocab, embed)
    assert spec["lm_head"] == P("fsdp", "tensor")  # (embed, vocab)
    assert spec["encoder/layers/0/attention/query"] == P("fsdp", "tensor", None)  # (embed, heads, kv)
    assert spec["encoder/layers/0/attention/out"] == P("tensor", None, "fsdp")  # (heads, kv, embed)
    assert spec["encoder/relpos_bias/rel_embedding"] == P("tensor", None)  # (heads, relpos_buckets)
    assert spec["encoder/encoder_norm/scale"] == P("fsdp")  # (embed,)


def test_specs_match_flax_logical_axis_rules(tiny_params):
    ours = jax.tree.leaves(param_partition_specs(tiny_params, DEFAULT_RULES))
    with nnx.logical_axis_rules(DEFAULT_RULES):
        flax_specs = jax.tree.leaves(nnx.get_partition_spec(tiny_params))
    assert ours == flax_specs


def test_param_rule_errors_name_the_parameter(tiny_params):
    rules = tuple(rule for rule in DEFAULT_RULES if rule[0] != "relpos_buckets")
    with pytest.raises(ValueError, match=r"parameter .*relpos_bias/rel_embedding has logical axis 'relpos_buckets'"):
        param_shardings(tiny_params, MESH_222, rules)


def test_indivisible_dimension_is_refused_before_compile():
    params = nnx.state(abstract_model(named_config("tiny", vocab_size=255)), nnx.Param)
    message = r"parameter lm_head has shape \(128, 255\): dimension 1 \(255, logical axis 'vocab'\) is split over mesh"
    with pytest.raises(ValueError, match=message + r" axes 'tensor' of size 2, which does not divide it"):
        param_shardings(params, MESH_222, DEFAULT_RULES)


def test_optimizer_moments_shard_like_their_params(tiny_params):
    shardings = param_shardings(tiny_params, MESH_222, DEFAULT_RULES)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    opt_state = jax.eval_shape(tx.init, tiny_params)
    opt_shardings = optimizer_state_shardings(opt_state, tiny_params, shardings, MESH_222)
    assert jax.tree.structure(opt_shardings) == jax.tree.structure(opt_state)
    adam = opt_shardings[1][0]
    want = [s.spec for s in jax.tree.leaves(shardings)]
    assert [s.spec for s in jax.tree.leaves(adam.mu)] == want
    assert [s.spec for s in jax.tree.leaves(adam.nu)] == want
    assert adam.count.spec == P()


def test_adafactor_factored_moments_drop_the_reduced_dimension(tiny_params):
    shardings = param_shardings(tiny_params, MESH_222, DEFAULT_RULES)
    tx = optax.adafactor(1e-3, min_dim_size_to_factor=32)
    opt_state = jax.eval_shape(tx.init, tiny_params)
    factored = optimizer_state_shardings(opt_state, tiny_params, shardings, MESH_222)[0]
    wi = {k: _flat(getattr(factored, k))["encoder/layers/0/mlp/wi_0"].get_value().spec for k in ("v_row", "v_col")}
    shapes = {
        k: _flat(getattr(opt_state[0], k))["encoder/layers/0/mlp/wi_0"].get_value().shape for k in ("v_row", "v_col")
    }
    assert shapes == {"v_row": (128,), "v_col": (256,)}  # wi_0 is (embed=128, mlp=256)
    assert wi == {"v_row": P("fsdp"), "v_col": P("tensor")}
    scale = _flat(factored.v)["encoder/encoder_norm/scale"].get_value().spec  # unfactored: full shape
    assert scale == P("fsdp")


# Batches ----------------------------------------------------------------------------------------


def test_batch_sharding_and_size_check():
    assert batch_sharding(make_mesh(MeshConfig())).spec == P(("data", "fsdp"))
    check_batch_size(8, MESH_222)
    check_batch_size(16, MESH_222, num_microbatches=4)
    with pytest.raises(
        ValueError, match=re.escape("batch size 6 is not divisible by the batch mesh axes (data=2 x fsdp=2) = 4")
    ):
        check_batch_size(6, MESH_222)
    with pytest.raises(ValueError, match=re.escape("(data=2 x fsdp=2) x num_microbatches=4 = 16")):
        check_batch_size(8, MESH_222, num_microbatches=4)


def test_shard_batch_on_one_process():
    mesh = make_mesh(MeshConfig())
    batch = {"a": np.arange(12, dtype=np.int32).reshape(4, 3), "b": np.ones((4,), np.float32)}
    out = shard_batch(batch, mesh)
    assert out["a"].sharding.spec == P(("data", "fsdp")) and out["a"].shape == (4, 3)
    np.testing.assert_array_equal(np.asarray(out["a"]), batch["a"])
    with pytest.raises(ValueError, match="different numbers of rows"):
        shard_batch({"a": np.zeros((4, 2)), "b": np.zeros((3, 2))}, mesh)


def test_with_logical_constraint_is_a_no_op_without_a_mesh_and_maps_names_inside():
    x = jnp.ones((4, 8))
    assert with_logical_constraint(x, ("activation_batch", "activation_embed")) is x
    mesh = make_mesh(MeshConfig())
    seen = {}

    def f(y):
        seen["out"] = with_logical_constraint(y, ("activation_batch", "activation_mlp"))
        return seen["out"]

    with jax.set_mesh(mesh), nnx.logical_axis_rules(DEFAULT_RULES):
        hlo = jax.jit(f).lower(x).as_text()
        with pytest.raises(ValueError, match="no rule maps"):
            jax.jit(lambda y: with_logical_constraint(y, ("activation_batch", "nope"))).lower(x)
    assert "sharding" in hlo


def test_top_k_per_shard_equals_top_k_with_ties_outside_and_inside_a_mesh():
    x = jnp.array([[0.5, 2.0, 2.0, -1.0, 3.0], [1.0, 1.0, 1.0, 0.0, -jnp.inf]])
    expected = ([[3.0, 2.0, 2.0], [1.0, 1.0, 1.0]], [[4, 1, 2], [0, 1, 2]])
    for values, indices in (top_k_per_shard(x, 3), _on_mesh(lambda y: top_k_per_shard(y, 3), x)):
        np.testing.assert_array_equal(np.asarray(values), expected[0])
        np.testing.assert_array_equal(np.asarray(indices), expected[1])
    # Over 4 devices (each on its own rows, no collective): tests/decode/test_sharded_decode.py.


def _on_mesh(fn, *args):
    with jax.set_mesh(make_mesh(MeshConfig())), nnx.logical_axis_rules(DEFAULT_RULES):
        return jax.jit(fn)(*args)


# gin ----------------------------------------------------------------------------------------------


@pytest.fixture
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def test_cpu_launch_gin_builds_a_one_host_mesh(clean_gin):
    parse_gin(
        [], ["gin/launch/cpu.gin"], ["MeshConfig.fsdp = 1", 'standard_logical_axis_rules.overrides = [("vocab", None)]']
    )
    config = configurables.ConfiguredMesh()
    assert config == MeshConfig(data=-1, fsdp=1, tensor=1)
    assert make_mesh(config).devices.size == jax.device_count()
    assert dict(configurables.configured_logical_axis_rules())["vocab"] is None


def test_bad_gin_bindings_fail_clearly(clean_gin):
    with pytest.raises(ValueError, match="Configurable 'MeshConfig' doesn't have a parameter named 'dat'"):
        parse_gin([], [], ["MeshConfig.dat = 2"])
    gin.clear_config()
    parse_gin([], [], ["MeshConfig.tensor = 0"])
    with pytest.raises(ValueError, match=re.escape("MeshConfig.tensor must be a positive integer, got 0")):
        configurables.ConfiguredMesh()
