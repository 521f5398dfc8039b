"""The jitted, sharded train and eval steps, with a pluggable loss and gradient accumulation.

``make_train_step`` returns ``jax.jit(step, in_shardings=(state, batch), out_shardings=(state,
replicated metrics), donate_argnums=state)``: the parameters and optimizer state keep the shardings
the logical-axis rules give them, the batch rows are split over ``("data", "fsdp")``, and XLA's
partitioner inserts the collectives (T5X's ``PjitPartitioner.partition``, with pjit now folded into
``jax.jit``).

Losses are *sums* with their normaliser (``LossOutput``), as T5X's losses are: a microbatched step
adds the per-microbatch sums and divides once by the total weight, so ``num_microbatches=k`` gives the
same gradients as one batch of ``k`` times the rows (up to float summation order). A loss function is
any callable ``loss_fn(model, batch, *, rng, deterministic) -> LossOutput``; later losses
(LR-ESD self-distillation, R-Drop, FGM, focal loss) plug in there and may read other batch features
(e.g. ``teacher_encoder_input_tokens``).

Non-finite guard: a step whose loss or any gradient is NaN or infinite applies no update (the
parameters and the whole optimizer state, its update count included, stay as they were, as with
``optax.apply_if_finite``), while ``state.step`` still advances: the step consumed its batch, so
the data position stays a function of the step, and the learning-rate schedule the optimizer
applies lags ``state.step`` by one step per skipped step. The metrics say so (``nonfinite``,
``nonfinite_loss``, ``first_nonfinite_grad``); the train loop applies the run's policy (stop or
count) and names the tensor with :func:`param_paths`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from onesearch_jax.models import partitioning
from onesearch_jax.train.ema import ema_update
from onesearch_jax.train.optimizers import Optimizer
from onesearch_jax.train.state import TrainState

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]

NONFINITE = "nonfinite"  # 1.0 when the loss or a gradient was NaN or infinite, else 0.0
NONFINITE_LOSS = "nonfinite_loss"  # 1.0 when the loss itself was NaN or infinite, else 0.0
FIRST_NONFINITE_GRAD = "first_nonfinite_grad"  # int32: index of the first bad gradient leaf, or -1


class LossOutput(NamedTuple):
    """A loss as weighted sums over the batch (a pytree, so it passes through ``jax.grad``'s aux).

    Attributes:
        loss_sum: the differentiated quantity: the weighted sum of per-token losses.
        weight_sum: the normaliser: the sum of the loss weights (real target tokens).
        metrics: further weighted sums (e.g. ``accuracy`` = weighted count of correct tokens); each is
            reported divided by the total ``weight_sum``.
    """

    loss_sum: jax.Array
    weight_sum: jax.Array
    metrics: dict[str, jax.Array]


class LossFn(Protocol):
    """``loss_fn(model, batch, *, rng, deterministic) -> LossOutput`` (T5X: ``BaseModel.loss_fn``).

    ``rng`` is a typed key for dropout (None when ``deterministic``). When the train state carries
    an EMA teacher, the train step also passes ``teacher=`` the model with the teacher's parameters
    (under ``stop_gradient``); only losses that read a teacher are used with such states.
    """

    def __call__(
        self, model: nnx.Module, batch: Batch, *, rng: jax.Array | None, deterministic: bool
    ) -> LossOutput: ...


def token_cross_entropy(
    logits: jax.Array, targets: jax.Array, weights: jax.Array, *, z_loss: float = 0.0
) -> LossOutput:
    """Weighted token cross-entropy ``sum_t w_t (logsumexp(z_t) - z_t[y_t])`` in float32.

    Args:
        logits: ``[..., vocab]``, cast to float32.
        targets: int ``[...]``.
        weights: ``[...]`` loss weights (``decoder_loss_weights``: 1 on real target tokens, 0 on padding).
        z_loss: T5X/PaLM's auxiliary ``z_loss * logsumexp(z_t)**2`` per token (0 disables it).

    Returns:
        ``LossOutput`` with metrics ``accuracy`` (weighted correct argmax count) and ``cross_entropy``.
    """
    log_z, cross_entropy = per_token_cross_entropy(logits, targets)
    per_token = cross_entropy + z_loss * jnp.square(log_z) if z_loss else cross_entropy
    return token_loss_output(per_token, cross_entropy, logits, targets, weights)


def per_token_cross_entropy(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(logsumexp(z_t), logsumexp(z_t) - z_t[y_t])`` per token, in float32, for logits ``[..., vocab]``."""
    logits = logits.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return log_z, log_z - target_logit


def token_loss_output(
    per_token: jax.Array, cross_entropy: jax.Array, logits: jax.Array, targets: jax.Array, weights: jax.Array
) -> LossOutput:
    """The weighted sums of a per-token loss, with the ``accuracy`` and ``cross_entropy`` metrics
    every token loss reports."""
    weights = weights.astype(jnp.float32)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return LossOutput(
        loss_sum=jnp.sum(per_token * weights),
        weight_sum=jnp.sum(weights),
        metrics={"accuracy": jnp.sum(correct * weights), "cross_entropy": jnp.sum(cross_entropy * weights)},
    )


def cross_entropy_loss(
    model: nnx.Module, batch: Batch, *, rng: jax.Array | None, deterministic: bool, z_loss: float = 0.0
) -> LossOutput:
    """The SFT loss: token cross-entropy of the decoder's next-token logits on seqio EncDec features.

    Reads ``encoder_input_tokens``, ``decoder_input_tokens``, ``decoder_target_tokens`` and
    ``decoder_loss_weights``. Bind ``z_loss`` with ``functools.partial``.
    """
    logits = model(
        batch["encoder_input_tokens"],
        batch["decoder_input_tokens"],
        decoder_target_tokens=batch["decoder_target_tokens"],
        deterministic=deterministic,
        rngs=rng,
    )
    return token_cross_entropy(logits, batch["decoder_target_tokens"], batch["decoder_loss_weights"], z_loss=z_loss)


def _split_microbatches(batch: Batch, k: int, mesh: Mesh, batch_axes: partitioning.MeshAxes) -> Batch:
    """``[B, ...] -> [k, B/k, ...]`` with microbatch ``i`` = rows ``i, i+k, i+2k, ...``.

    Strided rows keep every microbatch spread over all batch shards (each device's contiguous rows
    hold ``B/(k*shards)`` rows of every microbatch), so no data moves between devices.
    """
    sharding = NamedSharding(mesh, P(None, batch_axes))

    def split(x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0] // k, k, *x.shape[1:])).swapaxes(0, 1)
        return jax.lax.with_sharding_constraint(x, sharding)

    return jax.tree.map(split, batch)


def _batch_rows(batch: Mapping[str, Any]) -> int:
    rows = {name: int(np.shape(x)[0]) for name, x in batch.items()}
    if not rows:
        raise ValueError("the batch is empty")
    if len(set(rows.values())) > 1:
        raise ValueError(f"batch features have different numbers of rows: {rows}")
    return next(iter(rows.values()))


def param_paths(params: Any) -> list[str]:
    """The ``/``-joined path of each leaf of ``params``, in ``jax.tree.leaves`` order.

    The gradients have the parameters' structure, so ``param_paths(state.params)[i]`` names the
    gradient leaf ``first_nonfinite_grad == i``, e.g. ``decoder/layers/0/self_attention/query`` (the
    ``value`` attribute of each ``nnx.Variable`` is left out).
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    return ["/".join(_key_name(key) for key in path if not isinstance(key, jax.tree_util.GetAttrKey))
            for path, _ in flat]  # fmt: skip


def _key_name(key: Any) -> str:
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    return str(key)


def _first_nonfinite(grads: nnx.State) -> jax.Array:
    """int32 index of the first gradient leaf holding a NaN or an infinity, or -1 (one pass over the leaves)."""
    finite = jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)])
    return jnp.where(jnp.all(finite), -1, jnp.argmin(finite.astype(jnp.int32))).astype(jnp.int32)


def _mean_metrics(out: LossOutput) -> tuple[Metrics, jax.Array]:
    denom = jnp.where(out.weight_sum > 0, out.weight_sum, 1.0)
    metrics = {"loss": out.loss_sum / denom, "num_tokens": out.weight_sum}
    metrics.update({name: value / denom for name, value in out.metrics.items()})
    return metrics, denom


@dataclasses.dataclass(frozen=True)
class CompiledStep:
    """A jitted step plus the checks that must pass before it is traced or compiled.

    Calling it validates the batch's row count (``check_batch_size``) and runs ``jitted`` under the
    mesh and the logical-axis rules (so model code may use logical sharding constraints).
    ``jitted`` is the raw ``jax.jit`` function (``.lower(...)`` for AOT compilation, cost analysis).
    """

    jitted: Callable[..., Any]
    mesh: Mesh
    rules: partitioning.LogicalRules
    num_microbatches: int = 1

    def check_batch(self, batch: Mapping[str, Any]) -> None:
        """Raises ValueError when the batch rows do not split over microbatches and batch shards."""
        partitioning.check_batch_size(
            _batch_rows(batch), self.mesh, num_microbatches=self.num_microbatches, rules=self.rules
        )

    def __call__(self, *args: Any) -> Any:
        self.check_batch(args[-1])
        with jax.set_mesh(self.mesh), nnx.logical_axis_rules(self.rules):
            return self.jitted(*args)

    def lower(self, *args: Any) -> jax.stages.Lowered:
        """``jitted.lower(*args)`` under the mesh and rules (AOT compile, ``cost_analysis()`` for MFU)."""
        self.check_batch(args[-1])
        with jax.set_mesh(self.mesh), nnx.logical_axis_rules(self.rules):
            return self.jitted.lower(*args)


Update = Callable[[TrainState, Batch, jax.Array, jax.Array], tuple[TrainState, Metrics]]


def make_update(
    graphdef: nnx.GraphDef,
    optimizer: Optimizer,
    mesh: Mesh,
    rules: Sequence[tuple[str, partitioning.MeshAxes]],
    *,
    state_shardings: TrainState,
    loss_fn: LossFn = cross_entropy_loss,
    skip_nonfinite: bool = True,
    ema_decay: float | None = None,
) -> Update:
    """``update(state, batch, rng, schedule_step) -> (state, metrics)``: one optimizer update, not
    jitted and without advancing ``state.step`` (:func:`make_train_step` jits it and counts the
    step; GRPO's step applies several per rollout batch). Arguments and metrics as
    :func:`make_train_step`'s; ``rng`` is the key whose ``fold_in(rng, microbatch)`` drives dropout,
    and the ``learning_rate`` metric is the schedule at ``schedule_step``.
    """
    with_teacher = state_shardings.teacher is not None
    if with_teacher != (ema_decay is not None):
        raise ValueError(
            "the train step: ema_decay must be given exactly when the train state has an EMA teacher "
            f"(the state {'has' if with_teacher else 'has no'} teacher, ema_decay={ema_decay!r})"
        )
    rules = tuple(rules)
    partitioning.validate_rules(rules, mesh.axis_names)
    k = optimizer.num_microbatches
    batch_axes = partitioning.batch_axes(rules)
    grad_shardings = state_shardings.params

    def loss_and_grad(
        params: nnx.State, batch: Batch, rng: jax.Array, teacher: nnx.State | None
    ) -> tuple[LossOutput, nnx.State]:
        extra = {} if teacher is None else {"teacher": nnx.merge(graphdef, jax.lax.stop_gradient(teacher))}

        def loss(p: nnx.State) -> tuple[jax.Array, LossOutput]:
            out = loss_fn(nnx.merge(graphdef, p), batch, rng=rng, deterministic=False, **extra)
            return out.loss_sum, out

        (_, out), grads = jax.value_and_grad(loss, has_aux=True)(params)
        return out, jax.tree.map(lambda g: g.astype(jnp.float32), grads)

    def update(state: TrainState, batch: Batch, rng: jax.Array, schedule_step: jax.Array) -> tuple[TrainState, Metrics]:
        if k == 1:
            out, grads = loss_and_grad(state.params, batch, jax.random.fold_in(rng, 0), state.teacher)
        else:
            micro = _split_microbatches(batch, k, mesh, batch_axes)

            def body(carry, xs):
                acc_out, acc_grads = carry
                index, mb = xs
                out, grads = loss_and_grad(state.params, mb, jax.random.fold_in(rng, index), state.teacher)
                acc_grads = jax.lax.with_sharding_constraint(jax.tree.map(jnp.add, acc_grads, grads), grad_shardings)
                return (jax.tree.map(jnp.add, acc_out, out), acc_grads), None

            first = jax.tree.map(lambda x: x[0], micro)
            out_shape, grads_shape = jax.eval_shape(loss_and_grad, state.params, first, rng, state.teacher)
            zeros = (
                jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out_shape),
                jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), grads_shape),
            )
            (out, grads), _ = jax.lax.scan(body, zeros, (jnp.arange(k), micro))
        metrics, denom = _mean_metrics(out)
        grads = jax.tree.map(lambda g: g / denom, grads)
        metrics["grad_norm"] = optax.tree.norm(grads)
        metrics["learning_rate"] = jnp.asarray(optimizer.schedule(schedule_step), jnp.float32)
        loss_finite = jnp.isfinite(metrics["loss"])
        first_bad = _first_nonfinite(grads)
        finite = loss_finite & (first_bad < 0)
        metrics[NONFINITE] = jnp.where(finite, 0.0, 1.0)
        metrics[NONFINITE_LOSS] = jnp.where(loss_finite, 0.0, 1.0)
        metrics[FIRST_NONFINITE_GRAD] = first_bad
        updates, opt_state = optimizer.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        teacher = None if state.teacher is None else ema_update(state.teacher, params, ema_decay)
        if skip_nonfinite:
            keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
            params, opt_state = jax.tree.map(keep, params, state.params), jax.tree.map(keep, opt_state, state.opt_state)
            teacher = jax.tree.map(keep, teacher, state.teacher)
        return state.replace(params=params, opt_state=opt_state, teacher=teacher), metrics

    return update


def make_train_step(
    graphdef: nnx.GraphDef,
    optimizer: Optimizer,
    mesh: Mesh,
    rules: Sequence[tuple[str, partitioning.MeshAxes]],
    *,
    state_shardings: TrainState,
    loss_fn: LossFn = cross_entropy_loss,
    donate_state: bool = True,
    skip_nonfinite: bool = True,
    ema_decay: float | None = None,
) -> CompiledStep:
    """Builds ``step(state, batch) -> (state, metrics)``, jitted with explicit shardings.

    One step: split the batch into ``optimizer.num_microbatches`` microbatches and ``lax.scan`` over
    them, summing float32 gradients of ``loss_fn``'s ``loss_sum`` and its ``LossOutput`` sums; divide
    by the total weight; take the global gradient norm; apply ``optimizer.tx`` (clipping included),
    unless the loss or a gradient is not finite (see the module docstring). With an EMA teacher in
    the state, ``loss_fn`` also gets ``teacher=`` its model (no gradient reaches it), and after the
    update the teacher moves towards the new parameters (``ema.ema_update``; a skipped step leaves it
    too as it was).

    Args:
        graphdef: the model's static structure (``TrainState.create`` / ``init_train_state``).
        optimizer: ``make_optimizer(config)``: transformation, schedule and microbatch count.
        mesh: the device mesh.
        rules: logical-axis rules (the batch rows follow the ``batch`` rule).
        state_shardings: ``train_state_shardings(state, mesh, rules)``.
        loss_fn: see ``LossFn``; called with ``deterministic=False`` and a per-microbatch dropout key
            ``fold_in(fold_in(state.rng, state.step), microbatch)``.
        donate_state: donate the input state's buffers to the output (T5X does; the caller must
            not reuse the state passed in).
        skip_nonfinite: keep the parameters and optimizer state of a step whose loss or gradients
            are not finite. False applies every update as computed, NaNs included (the unguarded
            step, for comparisons); the metrics report non-finite steps either way.
        ema_decay: the EMA teacher's decay; required exactly when the state has a teacher
            (``state_shardings.teacher`` is not None).

    Returns:
        A ``CompiledStep``. Metrics (replicated scalars, float32 unless said): ``loss`` (per weighted
        token), ``accuracy``, ``cross_entropy`` and any other ``LossOutput.metrics`` (per weighted
        token), ``grad_norm`` (before clipping), ``learning_rate`` (the schedule at ``state.step``),
        ``num_tokens`` (sum of loss weights), ``nonfinite`` and ``nonfinite_loss`` (1.0 or 0.0) and
        ``first_nonfinite_grad`` (int32 leaf index into :func:`param_paths`, or -1).

    Raises:
        ValueError: ``ema_decay`` is given for a state without a teacher, or missing for one with a
            teacher.
    """
    update = make_update(graphdef, optimizer, mesh, rules, state_shardings=state_shardings, loss_fn=loss_fn,
                         skip_nonfinite=skip_nonfinite, ema_decay=ema_decay)  # fmt: skip

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        state, metrics = update(state, batch, jax.random.fold_in(state.rng, state.step), state.step)
        return state.replace(step=state.step + 1), metrics

    jitted = jax.jit(
        step,
        in_shardings=(state_shardings, partitioning.batch_sharding(mesh, rules)),
        out_shardings=(state_shardings, partitioning.replicated_sharding(mesh)),
        donate_argnums=(0,) if donate_state else (),
    )
    return CompiledStep(jitted=jitted, mesh=mesh, rules=rules, num_microbatches=optimizer.num_microbatches)


def make_eval_step(
    graphdef: nnx.GraphDef,
    mesh: Mesh,
    rules: Sequence[tuple[str, partitioning.MeshAxes]],
    *,
    params_shardings: nnx.State,
    loss_fn: LossFn = cross_entropy_loss,
) -> CompiledStep:
    """Builds ``eval_step(params, batch) -> metrics`` (no dropout, no update), jitted and sharded.

    Returns per-batch means (``loss``, ``accuracy``, ...) and the sums to aggregate over batches
    exactly: ``loss_sum``, ``weight_sum`` (= ``num_tokens``) and ``<metric>_sum`` for each
    ``LossOutput`` metric (divide the summed sums by the summed ``weight_sum``).
    """
    rules = tuple(rules)
    partitioning.validate_rules(rules, mesh.axis_names)

    def evaluate(params: nnx.State, batch: Batch) -> Metrics:
        out = loss_fn(nnx.merge(graphdef, params), batch, rng=None, deterministic=True)
        metrics, _ = _mean_metrics(out)
        metrics["loss_sum"] = out.loss_sum
        metrics["weight_sum"] = out.weight_sum
        metrics.update({f"{name}_sum": value for name, value in out.metrics.items()})
        return metrics

    jitted = jax.jit(
        evaluate,
        in_shardings=(params_shardings, partitioning.batch_sharding(mesh, rules)),
        out_shardings=partitioning.replicated_sharding(mesh),
    )
    return CompiledStep(jitted=jitted, mesh=mesh, rules=rules)
