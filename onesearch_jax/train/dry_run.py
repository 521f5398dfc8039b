"""``onesearch train --dry_run``: the run's mesh, sharded state and compiled steps, without training.

Checks a pod configuration before paying for the pod. On a laptop,
``XLA_FLAGS=--xla_force_host_platform_device_count=64`` makes the CPU show 64 devices (a v5p-128
slice's chips): the mesh of ``gin/launch/*.gin`` is built over them, the train state is traced
abstractly and sharded (nothing is allocated), and each stage's train step is compiled for that
mesh. Reported per device: the parameters, optimizer state (and EMA teacher) bytes that the
shardings place there, exact; and XLA's memory analysis of each compiled step (arguments, outputs,
temporaries). The temporaries are XLA:CPU's buffer assignment, which differs from the TPU's or
GPU's (other fusions, no native bfloat16 matmuls): a guide to the order of magnitude, not a
promise. Nothing is written to the model directory.

The batches' shapes come from one real example of each stage's task (the feature converter decides
them), so the records and vocabulary must be there, as for training. A TPMA-GRPO stage
compiles its update program (the largest: forward and backward over B x G rollouts), not its
sampler.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from onesearch_jax.data.batches import ResumableBatches
from onesearch_jax.models import partitioning
from onesearch_jax.train.checkpoints import abstract_train_state
from onesearch_jax.train.grpo_config import GrpoConfig
from onesearch_jax.train.optimizer_config import OptimizerConfig
from onesearch_jax.train.optimizers import make_optimizer
from onesearch_jax.train.state import abstract_init
from onesearch_jax.train.step import make_train_step

GIB = 1024**3


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepMemory:
    """One compiled step's memory on one device (XLA's ``memory_analysis``), in bytes.

    Attributes:
        stages: the stages that run this program (same loss and batch shapes).
        batch_shapes: the global batch, feature -> shape.
        arguments / outputs / temporaries / aliased: XLA's buffer sizes; outputs aliased with
            (donated) arguments are counted once.
        flops: XLA's cost analysis of one device's program, or None when not reported.
    """

    stages: tuple[str, ...]
    batch_shapes: Mapping[str, tuple[int, ...]]
    arguments: int
    outputs: int
    temporaries: int
    aliased: int
    flops: float | None

    @property
    def peak(self) -> int:
        """Arguments + outputs + temporaries - aliased: what the device holds while the step runs."""
        return self.arguments + self.outputs + self.temporaries - self.aliased


@dataclasses.dataclass(frozen=True, kw_only=True)
class DryRunReport:
    """What ``--dry_run`` prints.

    Attributes:
        mesh: axis name -> size.
        devices / processes: what the mesh spans.
        device_kind: e.g. ``cpu``, ``TPU v5p``.
        parameters: trainable parameters of the model.
        state_bytes: per device, ``params``, ``optimizer``, ``teacher`` (EMA), as the shardings place
            them (the largest shard over devices).
        steps: the compiled steps.
    """

    mesh: Mapping[str, int]
    devices: int
    processes: int
    device_kind: str
    parameters: int
    state_bytes: Mapping[str, int]
    steps: tuple[StepMemory, ...]

    def format(self) -> str:
        """The report as the command prints it."""
        mesh = " x ".join(f"{name}={size}" for name, size in self.mesh.items())
        lines = [
            f"dry run: mesh {mesh} over {self.devices} {self.device_kind} devices ({self.processes} processes)",
            f"parameters: {self.parameters:,}",
            "state per device: " + ", ".join(f"{name} {_gib(size)}" for name, size in self.state_bytes.items()),
        ]
        for step in self.steps:
            shapes = ", ".join(f"{name} {list(shape)}" for name, shape in sorted(step.batch_shapes.items()))
            flops = "" if step.flops is None else f"; {step.flops / 1e12:.3g} TFLOP per device per step"
            lines.append(f"step of {', '.join(step.stages)}: batch {shapes}")
            lines.append(
                f"  per device: peak {_gib(step.peak)} = arguments {_gib(step.arguments)} + outputs "
                f"{_gib(step.outputs)} + temporaries {_gib(step.temporaries)} - aliased {_gib(step.aliased)}{flops}"
            )
        return "\n".join(lines)


def _gib(size: int) -> str:
    """``size`` bytes in GiB, or MiB below 1 GiB."""
    return f"{size / GIB:.2f} GiB" if size >= GIB else f"{size / 1024**2:.1f} MiB"


def _largest_shard_bytes(tree: Any) -> int:
    """Bytes of the largest shard of each leaf (a ``ShapeDtypeStruct`` with a sharding), summed."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
    return total


def _memory(compiled: Any, stages: tuple[str, ...], batch: Mapping[str, Any]) -> StepMemory:
    analysis = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) and cost else cost
    flops = float(cost["flops"]) if isinstance(cost, Mapping) and "flops" in cost else None
    return StepMemory(
        stages=stages,
        batch_shapes={name: tuple(x.shape) for name, x in batch.items()},
        arguments=int(analysis.argument_size_in_bytes),
        outputs=int(analysis.output_size_in_bytes),
        temporaries=int(analysis.temp_size_in_bytes),
        aliased=int(analysis.alias_size_in_bytes),
        flops=flops,
    )


def dry_run(
    setup: Any,
    *,
    optimizer_config: OptimizerConfig,
    loss_fn: Callable[..., Any],
    ema_decay: float | None = None,
    grpo: GrpoConfig | None = None,
) -> DryRunReport:
    """Builds and compiles the run's steps for its mesh without allocating the state (module docstring).

    Args:
        setup: ``run.prepare_run``'s (the mesh over the devices this process sees).
        optimizer_config: the run's optimizer.
        loss_fn: the train loss (unused by GRPO stages).
        ema_decay: the EMA teacher's decay of an LR-ESD ``ema`` run (the state then carries it).
        grpo: the GRPO config of a GRPO run.

    Raises:
        ValueError: a configuration that does not fit the mesh (batch, microbatches, parameter
            dimensions), before anything is compiled.
    """
    from onesearch_jax.train.run import stream_config

    config, mesh, rules = setup.config, setup.mesh, setup.rules
    optimizer = make_optimizer(optimizer_config)
    partitioning.check_batch_size(config.batch_size, mesh, num_microbatches=optimizer.num_microbatches,
                                  rules=rules)  # fmt: skip
    graphdef, abstract, shardings, _ = abstract_init(setup.model_fn, optimizer, mesh, rules, seed=config.seed,
                                                     with_teacher=ema_decay is not None)  # fmt: skip
    state = abstract_train_state(abstract, shardings)
    state_bytes = {"params": _largest_shard_bytes(state.params), "optimizer": _largest_shard_bytes(state.opt_state)}
    if state.teacher is not None:
        state_bytes["teacher"] = _largest_shard_bytes(state.teacher)
    batch_sharding = partitioning.batch_sharding(mesh, rules)

    if grpo is not None:
        from onesearch_jax.train.grpo import ROLLOUT_FEATURES, SFT_FEATURES, load_tables, make_grpo_step

        tables = load_tables(config.examples_dir, setup.vocab, mesh)
        step = make_grpo_step(graphdef, optimizer, mesh, rules, state_shardings=shardings, config=grpo,
                              tables=tables, reference=state.params).update  # fmt: skip
    else:
        step = make_train_step(graphdef, optimizer, mesh, rules, state_shardings=shardings, loss_fn=loss_fn,
                               ema_decay=ema_decay)  # fmt: skip

    programs: dict[tuple, tuple[list[str], dict[str, jax.ShapeDtypeStruct]]] = {}
    for index, stage in enumerate(config.stages):
        # one example fixes the features' lengths (the converter pads to the stage's lengths)
        probe = dataclasses.replace(stream_config(setup, stage, index), batch_size=1, shuffle=False, shard_index=0,
                                    num_shards=1, num_host_shards=1)  # fmt: skip
        example = next(ResumableBatches(probe))
        features = {name: ((config.batch_size, *np.shape(x)[1:]), np.asarray(x).dtype) for name, x in example.items()}
        if grpo is not None:  # the update program's batch: the SFT features and the scored rollouts
            rollout = (config.batch_size, grpo.num_samples, tables.leaf_tokens.shape[1])
            features = {name: features[name] for name in SFT_FEATURES}
            features.update({name: (rollout, np.int32 if name == "rollout_tokens" else np.float32)
                             for name in ROLLOUT_FEATURES})  # fmt: skip
        abstract_batch = {name: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding)
                          for name, (shape, dtype) in features.items()}  # fmt: skip
        key = tuple(sorted((name, x.shape, str(x.dtype)) for name, x in abstract_batch.items()))
        programs.setdefault(key, ([], abstract_batch))[0].append(stage.name)
    steps = []
    for stages, abstract_batch in programs.values():
        compiled = step.lower(state, abstract_batch).compile()
        steps.append(_memory(compiled, tuple(stages), abstract_batch))
    device = mesh.devices.flat[0]
    return DryRunReport(
        mesh=dict(mesh.shape), devices=mesh.devices.size, processes=jax.process_count(),
        device_kind=str(getattr(device, "device_kind", device.platform)),
        parameters=sum(int(math.prod(x.shape)) for x in jax.tree.leaves(state.params)),
        state_bytes=state_bytes, steps=tuple(steps),
    )  # fmt: skip
