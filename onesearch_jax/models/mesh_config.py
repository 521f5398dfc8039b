"""Mesh shape and logical-axis rules as plain Python (no jax), so gin can register them cheaply.

Every ``onesearch`` command imports the gin registrations (``onesearch_jax.configurables``) before
parsing its flags; keeping these configs free of jax keeps the commands that never train fast, as
``models/configs.py`` does for ``T5Config``. ``onesearch_jax.models.partitioning`` re-exports all of
this and turns it into meshes and shardings.

The default rules map logical axes (named by the parameters) to the mesh axes ("data", "fsdp",
"tensor"); see ``partitioning`` for the table and the reasons.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TypeAlias

MESH_AXES: tuple[str, str, str] = ("data", "fsdp", "tensor")

MeshAxes: TypeAlias = str | tuple[str, ...] | None
LogicalRules: TypeAlias = tuple[tuple[str, MeshAxes], ...]

DEFAULT_RULES: LogicalRules = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("joined_kv", "tensor"),
    ("vocab", "tensor"),
    ("relpos_buckets", None),
    ("layers", None),
    # Activations (model code constrains them with partitioning.with_logical_constraint).
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_mlp", "tensor"),
    ("activation_heads", "tensor"),
    ("activation_kv", None),
    ("activation_vocab", "tensor"),
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshConfig:
    """The shape of the ("data", "fsdp", "tensor") device mesh.

    The product ``data * fsdp * tensor`` must equal the number of devices (T5X's ``num_partitions``
    and MaxText's ``ici_*_parallelism`` follow the same rule); ``data = -1`` takes the rest.

    Multi-slice (several TPU slices joined by the data-centre network, or several GPU/CPU hosts
    treated as slices): the ``data`` axis is the only one that crosses slices, so the mesh is the
    product of two meshes, as MaxText's ``dcn_data_parallelism`` builds it:

        DCN (between slices) shape = (num_slices, 1, 1)
        ICI (inside a slice) shape = (data // num_slices, fsdp, tensor)

    ``fsdp`` and ``tensor`` therefore stay inside a slice, where their all-gathers and reduce-scatters
    use the fast interconnect; only the data-parallel gradient all-reduce crosses DCN. Slices are the groups
    of devices sharing a ``slice_index`` (TPU) or, where that does not give ``num_slices`` equal groups
    (CPU and GPU hosts all report slice 0), sharing a ``process_index``: one host per slice.

    Attributes:
        data: data-parallel replicas; -1 = ``num_devices // (fsdp * tensor)``. Must be a multiple of
            ``num_slices``.
        fsdp: fully-sharded data parallelism: batch rows *and* parameter/optimizer shards (``embed``).
        tensor: tensor (model) parallelism over ``mlp``, ``heads`` and ``vocab``.
        num_slices: slices the data axis spans (1 = a single slice / host group).
        allow_split_physical_axes: let ``mesh_utils`` split a physical torus axis over two logical axes
            when no better fit exists (TPU only; harmless elsewhere).
    """

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    num_slices: int = 1
    allow_split_physical_axes: bool = False

    def __post_init__(self) -> None:
        for name in ("fsdp", "tensor", "num_slices"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MeshConfig.{name} must be a positive integer, got {value!r}")
        if isinstance(self.data, bool) or not isinstance(self.data, int) or (self.data < 1 and self.data != -1):
            raise ValueError(f"MeshConfig.data must be a positive integer or -1 (the rest), got {self.data!r}")
        if self.data != -1 and self.data % self.num_slices:
            raise ValueError(
                f"MeshConfig.data={self.data} must be a multiple of num_slices={self.num_slices}: "
                "the data axis is the one that spans slices"
            )

    def shape(self, num_devices: int) -> tuple[int, int, int]:
        """The (data, fsdp, tensor) shape for ``num_devices`` devices.

        Raises:
            ValueError: when the shape does not use exactly ``num_devices`` devices.
        """
        model = self.fsdp * self.tensor
        if self.data == -1:
            if num_devices % model:
                raise ValueError(
                    f"mesh fsdp={self.fsdp} x tensor={self.tensor} = {model} does not divide the "
                    f"{num_devices} available devices (data=-1 takes the rest)"
                )
            data = num_devices // model
        else:
            data = self.data
        if data * model != num_devices:
            raise ValueError(
                f"mesh data={data} x fsdp={self.fsdp} x tensor={self.tensor} = {data * model} devices, "
                f"but {num_devices} devices are available: the product must equal the device count"
            )
        if data % self.num_slices:
            raise ValueError(
                f"mesh data={data} is not a multiple of num_slices={self.num_slices}: "
                "the data axis is the one that spans slices"
            )
        return data, self.fsdp, self.tensor

    def ici_dcn_shapes(self, num_devices: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """(ICI shape per slice, DCN shape across slices); their elementwise product is ``shape()``."""
        data, fsdp, tensor = self.shape(num_devices)
        return (data // self.num_slices, fsdp, tensor), (self.num_slices, 1, 1)


def standard_logical_axis_rules(
    overrides: Sequence[tuple[str, MeshAxes]] | Mapping[str, MeshAxes] = (),
) -> LogicalRules:
    """``DEFAULT_RULES`` with ``overrides`` applied (the gin entry point, as T5X's function of that name).

    An override replaces the rule of the same logical axis in place, or is appended when new. In gin:

        standard_logical_axis_rules.overrides = [("embed", None), ("vocab", "fsdp")]

    Raises:
        ValueError: a malformed override.
    """
    items = list(overrides.items()) if isinstance(overrides, Mapping) else [tuple(o) for o in overrides]
    rules = dict(DEFAULT_RULES)
    for item in items:
        if len(item) != 2 or not isinstance(item[0], str):
            raise ValueError(f"a logical-axis rule is a (logical_axis, mesh_axes) pair, got {item!r}")
        name, target = item
        rules[name] = tuple(target) if isinstance(target, list) else target
    out = tuple(rules.items())
    validate_rules(out)
    return out


def validate_rules(rules: Sequence[tuple[str, MeshAxes]], mesh_axis_names: Sequence[str] = MESH_AXES) -> None:
    """Checks that every rule maps a logical axis (once) to None, a mesh axis, or a tuple of mesh axes.

    Raises:
        ValueError: naming the offending rule and the mesh axes that exist.
    """
    seen: set[str] = set()
    for rule in rules:
        if not (isinstance(rule, tuple | list) and len(rule) == 2 and isinstance(rule[0], str)):
            raise ValueError(f"a logical-axis rule is a (logical_axis, mesh_axes) pair, got {rule!r}")
        name, target = rule
        if name in seen:
            raise ValueError(f"logical axis {name!r} has more than one rule")
        seen.add(name)
        targets = () if target is None else (target,) if isinstance(target, str) else tuple(target)
        for axis in targets:
            if axis not in mesh_axis_names:
                raise ValueError(
                    f"rule {name!r} -> {target!r} names mesh axis {axis!r}, which is not one of the mesh axes "
                    f"{tuple(mesh_axis_names)}"
                )
        if len(set(targets)) != len(targets):
            raise ValueError(f"rule {name!r} -> {target!r} names a mesh axis twice")
