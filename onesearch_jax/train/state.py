"""The train state: a plain pytree of arrays (step, parameters, optimizer state, RNG key).

Flax NNX's functional pattern: a model is split once into a static ``graphdef`` (its structure and
hyper-parameters, never traced) and its parameters (an ``nnx.State`` of ``nnx.Param``); the step
merges them back inside ``jax.jit``:

    graphdef, state = TrainState.create(model, optimizer.tx, rng=0)
    ...
    model = state.model(graphdef)          # nnx.merge(graphdef, state.params)

Everything in the state is an array, so it can be sharded (``train_state_shardings``), donated to
the jitted step, and saved by orbax as is. LR-ESD's EMA teacher (``onesearch_jax/train/ema.py``) is
another ``nnx.State`` of the same structure in ``TrainState.teacher``, sharded like the parameters
(None in runs without one, so their pytree and checkpoints are unchanged). ``init_train_state``
builds a state directly sharded over a mesh (T5X's ``Partitioner``-driven init), without
materialising it on one device first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from onesearch_jax.models import partitioning
from onesearch_jax.train.optimizers import Optimizer


def _tx(optimizer: Optimizer | optax.GradientTransformation) -> optax.GradientTransformation:
    return optimizer.tx if isinstance(optimizer, Optimizer) else optimizer


def _as_key(rng: int | jax.Array) -> jax.Array:
    if isinstance(rng, int):
        return jax.random.key(rng)
    if not jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        raise TypeError(f"rng must be an int seed or a typed key (jax.random.key), got dtype {rng.dtype}")
    return rng


def split_params(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State]:
    """``nnx.split(model, nnx.Param)``, refusing models that hold any other state.

    Raises:
        ValueError: the model has non-``nnx.Param`` variables (RNG streams, batch statistics...),
            which a train state of parameters alone would silently drop.
    """
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if jax.tree.leaves(rest):
        names = sorted("/".join(map(str, path)) for path, _ in nnx.to_flat_state(rest))
        raise ValueError(
            f"the model holds non-parameter state {names[:5]}{'...' if len(names) > 5 else ''}; "
            "TrainState carries nnx.Param only (pass dropout keys at call time instead of storing nnx.Rngs)"
        )
    return graphdef, params


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Step, parameters, optimizer state and base RNG key: every field is a pytree of arrays.

    Attributes:
        step: int32 scalar, the number of optimizer updates applied so far.
        params: ``nnx.State`` of the model's ``nnx.Param`` s (float32), with their logical-axis
            metadata.
        opt_state: the optax state of ``optimizer.tx`` for ``params``.
        rng: a typed PRNG key (``jax.random.key``); the step derives its dropout keys from
            ``fold_in(rng, step)``, so a restored state replays the same randomness.
        teacher: the EMA teacher's parameters (``params``' structure and shardings, float32), or
            None when the run has no EMA teacher.
    """

    step: jax.Array
    params: nnx.State
    opt_state: optax.OptState
    rng: jax.Array
    teacher: nnx.State | None = None

    @classmethod
    def create(
        cls,
        model: nnx.Module,
        optimizer: Optimizer | optax.GradientTransformation,
        *,
        rng: int | jax.Array = 0,
        with_teacher: bool = False,
    ) -> tuple[nnx.GraphDef, TrainState]:
        """Splits ``model`` into (graphdef, state at step 0), like ``nnx.split``.

        Args:
            model: the model (its parameters are copied into the state, not shared).
            optimizer: an ``Optimizer`` or an optax transformation.
            rng: seed or typed key for dropout.
            with_teacher: give the state an EMA teacher, a copy of the parameters.
        """
        graphdef, params = split_params(model)
        params = jax.tree.map(jnp.array, params)
        return graphdef, cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=_tx(optimizer).init(params),
            rng=_as_key(rng),
            teacher=jax.tree.map(jnp.array, params) if with_teacher else None,
        )

    def model(self, graphdef: nnx.GraphDef) -> nnx.Module:
        """``nnx.merge(graphdef, self.params)``: the model with this state's parameters."""
        return nnx.merge(graphdef, self.params)

    def replace(self, **changes: Any) -> TrainState:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)


def train_state_shardings(
    state: TrainState, mesh: Mesh, rules: Sequence[tuple[str, partitioning.MeshAxes]]
) -> TrainState:
    """A ``TrainState`` of ``NamedSharding`` s for ``state`` (concrete or ``jax.eval_shape``-abstract).

    Parameters and the teacher follow ``rules``; optimizer moments follow their parameter; step,
    counts and the RNG key are replicated.

    Raises:
        ValueError: unknown logical axes, bad rules, or parameter dimensions the mesh cannot divide.
    """
    params = partitioning.param_shardings(state.params, mesh, rules)
    replicated = partitioning.replicated_sharding(mesh)
    return TrainState(
        step=replicated,
        params=params,
        opt_state=partitioning.optimizer_state_shardings(state.opt_state, state.params, params, mesh),
        rng=replicated,
        teacher=None if state.teacher is None else params,
    )


def shard_train_state(
    state: TrainState, mesh: Mesh, rules: Sequence[tuple[str, partitioning.MeshAxes]]
) -> tuple[TrainState, TrainState]:
    """Places a host-built ``state`` on ``mesh``: returns (sharded state, its shardings).

    For single-process runs and tests; multi-host runs build the state sharded with
    ``init_train_state``.
    """
    shardings = train_state_shardings(state, mesh, rules)
    return jax.device_put(state, shardings), shardings


def abstract_init(
    model_fn: Callable[[nnx.Rngs], nnx.Module],
    optimizer: Optimizer | optax.GradientTransformation,
    mesh: Mesh,
    rules: Sequence[tuple[str, partitioning.MeshAxes]],
    *,
    seed: int = 0,
    with_teacher: bool = False,
) -> tuple[nnx.GraphDef, TrainState, TrainState, Callable[[], TrainState]]:
    """The state's structure without allocating it: (graphdef, abstract state, shardings, init).

    The state is traced abstractly (``jax.eval_shape``; nothing allocated) and its shardings derived
    from the parameters' logical axes. ``init()`` then writes each shard where it belongs with a
    jitted initialiser (``out_shardings``), as T5X's partitioned init does; a run that resumes from a
    checkpoint restores into the abstract state instead and never calls it. ``with_teacher`` adds an
    EMA teacher equal to the initial parameters.

    Raises:
        ValueError: from the shardings: unknown logical axes, or dimensions the mesh cannot divide
            (before anything is compiled).
    """
    tx = _tx(optimizer)
    captured: dict[str, nnx.GraphDef] = {}

    def state_only(seed_key: jax.Array) -> TrainState:
        params_key, dropout_key = jax.random.split(seed_key)
        with nnx.use_eager_sharding(False):
            model = model_fn(nnx.Rngs(params=params_key))
        graphdef, params = split_params(model)
        captured["graphdef"] = graphdef
        teacher = jax.tree.map(jnp.copy, params) if with_teacher else None
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=dropout_key,
                          teacher=teacher)  # fmt: skip

    key = jax.random.key(seed)
    abstract = jax.eval_shape(state_only, key)
    shardings = train_state_shardings(abstract, mesh, rules)

    def init() -> TrainState:
        with jax.set_mesh(mesh):
            return jax.jit(state_only, out_shardings=shardings)(key)

    return captured["graphdef"], abstract, shardings, init


def init_train_state(
    model_fn: Callable[[nnx.Rngs], nnx.Module],
    optimizer: Optimizer | optax.GradientTransformation,
    mesh: Mesh,
    rules: Sequence[tuple[str, partitioning.MeshAxes]],
    *,
    seed: int = 0,
    with_teacher: bool = False,
) -> tuple[nnx.GraphDef, TrainState, TrainState]:
    """Initialises the model and optimizer directly sharded over ``mesh`` (works multi-host).

    ``abstract_init`` then its ``init()``: nothing is materialised on one device first.

    Args:
        model_fn: builds the model from an ``nnx.Rngs``, e.g. ``lambda r: EncoderDecoder(cfg, rngs=r)``.
        optimizer: an ``Optimizer`` or an optax transformation.
        mesh: the device mesh.
        rules: logical-axis rules.
        seed: parameter seed; the dropout key is derived from it.
        with_teacher: add an EMA teacher (a copy of the initial parameters).

    Returns:
        (graphdef, state, state shardings).
    """
    graphdef, _, shardings, init = abstract_init(model_fn, optimizer, mesh, rules, seed=seed, with_teacher=with_teacher)
    return graphdef, init(), shardings
