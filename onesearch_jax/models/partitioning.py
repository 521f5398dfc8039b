"""Device mesh, logical-axis rules and the shardings of parameters, optimizer state and batches.

The T5X / MaxText recipe, on modern JAX (``jax.make_mesh``, ``NamedSharding``, ``jax.jit`` with
explicit ``in_shardings``/``out_shardings``):

1. Every parameter names its dimensions with *logical* axes (``embed``, ``mlp``, ``heads``, ``kv``,
   ``vocab``, ``relpos_buckets``), stored as the ``out_sharding`` metadata of its ``nnx.Param``.
2. A mesh has three *physical* axes, outermost first: ``data`` (pure data parallelism, the axis that
   spans slices / DCN), ``fsdp`` (data parallelism whose parameters and optimizer state are sharded,
   ZeRO-3 style) and ``tensor`` (Megatron-style model parallelism, innermost so that its collectives
   use the fastest links).
3. Rules map each logical axis to ``None`` (replicated), one mesh axis, or a tuple of mesh axes.

The default rules (``DEFAULT_RULES``; override them from gin with ``standard_logical_axis_rules``):

    logical axis     mesh axes            why
    batch            ("data", "fsdp")     every data-parallel replica and FSDP shard takes its own rows
    length           None                 sequences are short (prompts and 5-token SIDs)
    embed            "fsdp"               FSDP shards each weight along d_model (MaxText's ``embed``)
    mlp              "tensor"             Megatron: column-parallel wi, row-parallel wo
    heads            "tensor"             attention heads split across the tensor axis
    kv               None                 per-head dimension kept whole
    joined_kv        "tensor"             heads*kv fused into one dimension (T5X's name)
    vocab            "tensor"             embedding table / output head split over the vocabulary
    relpos_buckets   None                 the relative-position bias table is tiny
    layers           None                 the stacked-layer axis of scanned layers

    activation_batch   ("data", "fsdp")   activations' rows, like the batch
    activation_length  None
    activation_embed   None               the residual stream is whole on each device (not FSDP'd)
    activation_mlp     "tensor"           MLP hidden units, heads and logits follow their weights
    activation_heads   "tensor"
    activation_kv      None
    activation_vocab   "tensor"

Mesh axes are ``AxisType.Auto``: the partitioner (GSPMD/Shardy) propagates shardings from the
annotated inputs and outputs of the jitted step, as in T5X's pjit partitioner. (In jax 0.10
``jax.make_mesh`` defaults to ``Explicit`` axes, which would require sharding annotations on every
contraction inside the model.)

Every check here (mesh shape against the device count, rules against the mesh, parameter dimensions
against the mesh axis sizes, batch size against the data axes) runs in plain Python before anything
is traced or compiled, and its message names the numbers involved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from onesearch_jax.models.mesh_config import (
    DEFAULT_RULES,
    MESH_AXES,
    LogicalRules,
    MeshAxes,
    MeshConfig,
    standard_logical_axis_rules,
    validate_rules,
)

__all__ = [
    "DEFAULT_RULES",
    "MESH_AXES",
    "LogicalRules",
    "MeshAxes",
    "MeshConfig",
    "batch_axes",
    "batch_sharding",
    "check_batch_size",
    "logical_partition_specs",
    "logical_to_mesh_spec",
    "make_mesh",
    "mesh_axes_size",
    "optimizer_state_shardings",
    "param_partition_specs",
    "param_shardings",
    "replicated_sharding",
    "shard_batch",
    "standard_logical_axis_rules",
    "top_k_per_shard",
    "validate_rules",
    "with_logical_constraint",
]

# Mesh
# ------------------------------------------------------------------------------------------------


def _group_sizes(devices: Sequence[jax.Device], attr: str) -> list[int]:
    """Sizes of the groups of devices sharing ``attr`` (None counts as one group), by key."""
    sizes: dict[object, int] = {}
    for device in devices:
        key = getattr(device, attr, None)
        sizes[key] = sizes.get(key, 0) + 1
    return [sizes[k] for k in sorted(sizes, key=lambda k: (k is None, k if k is not None else 0))]


def make_mesh(config: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds the ("data", "fsdp", "tensor") mesh with ``AxisType.Auto`` axes.

    Args:
        config: the mesh shape.
        devices: the devices to lay out (default ``jax.devices()``, all processes' devices).

    Raises:
        ValueError: the shape does not match the device count, or the devices do not form
            ``num_slices`` equal slices. Raised before anything is compiled.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = config.shape(len(devices))
    axis_types = (AxisType.Auto,) * len(MESH_AXES)
    if config.num_slices == 1:
        if not config.allow_split_physical_axes:
            return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types, devices=devices)
        device_array = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
        return Mesh(device_array, MESH_AXES, axis_types=axis_types)

    ici, dcn = config.ici_dcn_shapes(len(devices))
    groups = {attr: _group_sizes(devices, attr) for attr in ("slice_index", "process_index")}
    want = [math.prod(ici)] * config.num_slices
    attr = next((a for a in ("slice_index", "process_index") if groups[a] == want), None)
    if attr is None:
        found = "; ".join(f"by {a}: {len(g)} group(s) of sizes {g}" for a, g in groups.items())
        raise ValueError(
            f"num_slices={config.num_slices} needs {config.num_slices} groups of {math.prod(ici)} devices "
            f"(ICI shape {ici}), but the devices form {found}"
        )
    device_array = mesh_utils.create_hybrid_device_mesh(
        ici,
        dcn,
        devices,
        process_is_granule=attr == "process_index",
        allow_split_physical_axes=config.allow_split_physical_axes,
    )
    return Mesh(device_array, MESH_AXES, axis_types=axis_types)


# Rules
# ------------------------------------------------------------------------------------------------


def _axis_names(axes: MeshAxes) -> tuple[str, ...]:
    """The mesh axis names of ``axes`` (None, one name or a sequence of names)."""
    return () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)


def logical_to_mesh_spec(
    logical_axes: Sequence[str | None],
    rules: Sequence[tuple[str, MeshAxes]],
    *,
    name: str = "an array",
) -> P:
    """Maps one array's logical axis names to a mesh ``PartitionSpec`` with ``rules``.

    Raises:
        ValueError: an axis name without a rule, or two dimensions mapped to the same mesh axis.
    """
    table = dict(rules)
    out: list[MeshAxes] = []
    used: dict[str, str] = {}
    for logical in logical_axes:
        if logical is None:
            out.append(None)
            continue
        if logical not in table:
            raise ValueError(
                f"{name} has logical axis {logical!r}, which no rule maps; rules exist for {sorted(table)} "
                "(add one with standard_logical_axis_rules.overrides)"
            )
        target = table[logical]
        for axis in _axis_names(target):
            if axis in used:
                raise ValueError(
                    f"{name} maps logical axes {used[axis]!r} and {logical!r} both to mesh axis {axis!r} "
                    f"(logical axes {tuple(logical_axes)})"
                )
            used[axis] = logical
        out.append(target if not isinstance(target, list) else tuple(target))
    return P(*out)


def mesh_axes_size(mesh: Mesh, axes: MeshAxes) -> int:
    """The number of shards that ``axes`` (None, one mesh axis or a tuple) makes on ``mesh``."""
    return math.prod(mesh.shape[a] for a in _axis_names(axes))


# Parameter and optimizer-state shardings
# ------------------------------------------------------------------------------------------------


def _path_name(path: tuple[Any, ...]) -> str:
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(p for p in parts if p not in ("value", "raw_value")) or "<root>"


def logical_partition_specs(tree: Any) -> Any:
    """The logical ``PartitionSpec`` of every ``nnx.Variable`` in ``tree`` (its ``out_sharding``).

    Variables without annotations get ``PartitionSpec()``. Any logical-axis rules in the context are
    ignored so that the result always holds logical names.
    """
    with nnx.logical_axis_rules(()):
        return nnx.get_partition_spec(tree)


def _check_divisible(name: str, shape: tuple[int, ...], spec: P, logical: P, mesh: Mesh) -> None:
    for dim, axes in enumerate(spec):
        size = mesh_axes_size(mesh, axes)
        if dim < len(shape) and shape[dim] % size:
            raise ValueError(
                f"{name} has shape {shape}: dimension {dim} ({shape[dim]}, logical axis {logical[dim]!r}) is "
                f"split over mesh axes {axes!r} of size {size}, which does not divide it; pad that dimension "
                "(T5X pads the vocabulary to a multiple of 128) or map the logical axis to None"
            )


def param_partition_specs(params: Any, rules: Sequence[tuple[str, MeshAxes]], mesh: Mesh | None = None) -> Any:
    """Mesh ``PartitionSpec`` per parameter (same tree as ``params``, Variables holding specs).

    Args:
        params: an ``nnx.State`` (or any tree of ``nnx.Variable``), concrete or abstract.
        rules: logical -> mesh axis rules.
        mesh: when given, every sharded dimension is checked to be divisible by its mesh axes.

    Raises:
        ValueError: unknown logical axis, a rule naming no mesh axis, a rank mismatch between the
            annotation and the array, or (with ``mesh``) an indivisible dimension.
    """
    validate_rules(rules, MESH_AXES if mesh is None else mesh.axis_names)
    logical = logical_partition_specs(params)

    def resolve(path, spec: P, value) -> P:
        name = f"parameter {_path_name(path)}"
        shape = tuple(value.shape)
        if len(spec) > len(shape):
            raise ValueError(f"{name} has shape {shape} but {len(spec)} logical axes {tuple(spec)}")
        mesh_spec = logical_to_mesh_spec(tuple(spec), rules, name=name)
        if mesh is not None:
            _check_divisible(name, shape, mesh_spec, spec, mesh)
        return mesh_spec

    return jax.tree_util.tree_map_with_path(resolve, logical, params)


def param_shardings(params: Any, mesh: Mesh, rules: Sequence[tuple[str, MeshAxes]]) -> Any:
    """``NamedSharding`` per parameter, following ``rules`` (the tree of ``params``).

    Raises:
        ValueError: see ``param_partition_specs``.
    """
    specs = param_partition_specs(params, rules, mesh)
    return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs)


def _mirror_spec(param_spec: P, param_shape: tuple[int, ...], leaf_shape: tuple[int, ...]) -> P:
    """The spec for an optimizer leaf that belongs to a parameter (same shape, or one axis reduced).

    Adam's moments have the parameter's shape and take its spec. Adafactor's factored second moments
    drop one dimension (``v_row``/``v_col``): they take the parameter's spec without that dimension
    when the dropped dimension is unambiguous; anything else (``(1,)`` placeholders) is replicated.
    """
    if leaf_shape == param_shape:
        return param_spec
    full = tuple(param_spec) + (None,) * (len(param_shape) - len(param_spec))
    if len(leaf_shape) == len(param_shape) - 1:
        candidates = {
            full[:i] + full[i + 1 :]
            for i in range(len(param_shape))
            if param_shape[:i] + param_shape[i + 1 :] == leaf_shape
        }
        if len(candidates) == 1:
            return P(*candidates.pop())
    return P()


def optimizer_state_shardings(opt_state: Any, params: Any, params_shardings: Any, mesh: Mesh) -> Any:
    """``NamedSharding`` per optimizer-state leaf: moments like their parameter, the rest replicated.

    Any subtree of ``opt_state`` with the structure of ``params`` (Adam's ``mu``/``nu``, Adafactor's
    ``v_row``/``v_col``/``v``, momentum) is matched leaf by leaf with its parameter (see
    ``_mirror_spec``); every other leaf (step counts, scalars) is replicated. This is what
    ``optax.tree_map_params`` does, done on shapes so that it also covers factored states.

    Args:
        opt_state: concrete or abstract (``jax.eval_shape(tx.init, params)``) optimizer state.
        params: the parameters ``opt_state`` was initialised from (concrete or abstract).
        params_shardings: ``param_shardings(params, mesh, rules)``.
        mesh: the mesh.
    """
    params_def = jax.tree.structure(params)
    param_leaves = jax.tree.leaves(params)
    sharding_leaves = jax.tree.leaves(params_shardings)
    replicated = NamedSharding(mesh, P())

    def is_params_like(node) -> bool:
        return not isinstance(node, jax.Array | np.ndarray | jax.ShapeDtypeStruct) and (
            jax.tree.structure(node) == params_def
        )

    def mirror(node):
        if not is_params_like(node):
            return replicated
        leaves = jax.tree.leaves(node)
        out = [
            NamedSharding(mesh, _mirror_spec(s.spec, tuple(p.shape), tuple(leaf.shape)))
            for leaf, p, s in zip(leaves, param_leaves, sharding_leaves, strict=True)
        ]
        return jax.tree.unflatten(params_def, out)

    return jax.tree.map(mirror, opt_state, is_leaf=is_params_like)


# Batches
# ------------------------------------------------------------------------------------------------


def batch_axes(rules: Sequence[tuple[str, MeshAxes]] = DEFAULT_RULES) -> MeshAxes:
    """The mesh axes the ``batch`` logical axis maps to."""
    table = dict(rules)
    if "batch" not in table:
        raise ValueError(f"the rules have no 'batch' rule (rules exist for {sorted(table)})")
    return table["batch"]


def batch_sharding(mesh: Mesh, rules: Sequence[tuple[str, MeshAxes]] = DEFAULT_RULES) -> NamedSharding:
    """Rows over the ``batch`` mesh axes (default ``("data", "fsdp")``), other dimensions whole."""
    return NamedSharding(mesh, P(batch_axes(rules)))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (scalars, metrics, RNG keys)."""
    return NamedSharding(mesh, P())


def check_batch_size(
    batch_size: int,
    mesh: Mesh,
    *,
    num_microbatches: int = 1,
    rules: Sequence[tuple[str, MeshAxes]] = DEFAULT_RULES,
) -> None:
    """Checks that the global batch splits evenly over microbatches and the batch mesh axes.

    Raises:
        ValueError: naming the batch size, microbatches and the data-axis sizes.
    """
    axes = batch_axes(rules)
    shards = mesh_axes_size(mesh, axes)
    names = () if axes is None else (axes,) if isinstance(axes, str) else axes
    detail = " x ".join(f"{a}={mesh.shape[a]}" for a in names) or "none"
    if batch_size < 1 or batch_size % (shards * num_microbatches):
        micro = f" x num_microbatches={num_microbatches}" if num_microbatches > 1 else ""
        raise ValueError(
            f"batch size {batch_size} is not divisible by the batch mesh axes ({detail}){micro} = "
            f"{shards * num_microbatches}"
        )


def shard_batch(
    batch: Mapping[str, np.ndarray],
    mesh: Mesh,
    rules: Sequence[tuple[str, MeshAxes]] = DEFAULT_RULES,
) -> dict[str, jax.Array]:
    """Turns each process's rows into global arrays sharded over the batch axes (multi-host safe).

    Each process passes *its own* rows (its share of the global batch, as a per-host data pipeline
    yields them); the global batch is the concatenation over processes in process order. With one
    process the local batch is the global batch. Uses ``jax.make_array_from_process_local_data``.

    Raises:
        ValueError: features disagree on the number of rows, or the local rows do not split over this
            process's batch shards.
    """
    sharding = batch_sharding(mesh, rules)
    axes = batch_axes(rules)
    names = () if axes is None else (axes,) if isinstance(axes, str) else axes
    total_shards = mesh_axes_size(mesh, axes)
    # Distinct batch shards held by this process's devices.
    index = {d: i for i, d in np.ndenumerate(mesh.devices)}
    positions = [
        tuple(i[mesh.axis_names.index(a)] for a in names)
        for d, i in index.items()
        if d.process_index == jax.process_index()
    ]
    local_shards = len(set(positions))
    sizes = {k: np.shape(v)[0] for k, v in batch.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"batch features have different numbers of rows: {sizes}")
    rows = next(iter(sizes.values()), 0)
    if rows % local_shards:
        raise ValueError(
            f"this process's {rows} rows do not split over its {local_shards} batch shard(s) "
            f"(global batch mesh axes {names} = {total_shards} shards)"
        )
    global_rows = rows // local_shards * total_shards
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v), (global_rows, *np.shape(v)[1:]))
        for k, v in batch.items()
    }


# Activations
# ------------------------------------------------------------------------------------------------


def _context_mesh_and_rules(
    rules: Sequence[tuple[str, MeshAxes]] | None = None,
) -> tuple[Any, Sequence[tuple[str, MeshAxes]]] | tuple[None, None]:
    """The mesh of ``jax.set_mesh`` and ``rules`` (default: those of ``nnx.logical_axis_rules``), or
    ``(None, None)`` outside a mesh or without rules."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return None, None
    if rules is None:
        from flax.core import spmd as flax_spmd

        rules = flax_spmd.get_logical_axis_rules()
    return (mesh, rules) if rules else (None, None)


def with_logical_constraint(
    x: jax.Array, logical_axes: Sequence[str | None], rules: Sequence[tuple[str, MeshAxes]] | None = None
) -> jax.Array:
    """Constrains an activation's sharding by logical axis names (Flax linen's / MaxText's helper).

    A no-op outside a mesh (``jax.set_mesh``) or without rules, so model code can call it
    unconditionally: on one device nothing changes. ``CompiledStep`` sets both the mesh and the
    rules around the jitted step. Activations use their own logical names (``activation_batch``,
    ``activation_embed``...) so that, e.g., the residual stream is not sharded over ``fsdp`` like
    the weights' ``embed`` dimension.

    Raises:
        ValueError: a logical axis without a rule.
    """
    mesh, rules = _context_mesh_and_rules(rules)
    if mesh is None:
        return x
    spec = logical_to_mesh_spec(tuple(logical_axes), rules, name=f"activation {tuple(x.shape)}")
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def top_k_per_shard(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """``jax.lax.top_k(x, k)`` over the last axis of ``x [B, ..., C]``, each device on its own rows.

    The leading axis is the batch, split over the ``batch`` logical axis's mesh axes. XLA's SPMD
    partitioner gathers a batch-sharded ``top_k`` operand onto every device first (jax 0.10: one
    all-gather per call, i.e. per step of a sharded beam search); a ``shard_map`` over the batch
    axes keeps each device on its own rows. Plain ``top_k`` outside a mesh (``jax.set_mesh``),
    without logical-axis rules, or with a single batch shard.
    """
    mesh, rules = _context_mesh_and_rules()
    if mesh is None or mesh_axes_size(mesh, batch_axes(rules)) == 1:
        return jax.lax.top_k(x, k)
    names = _axis_names(batch_axes(rules))
    spec = P(names)
    local = jax.shard_map(
        lambda rows: tuple(jax.lax.top_k(rows, k)),
        mesh=mesh,
        in_specs=spec,
        out_specs=(spec, spec),
        axis_names=set(names),
    )
    return local(x)
