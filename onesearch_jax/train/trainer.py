"""The train loop: steps over a curriculum of stages, periodic evaluation, logging, checkpoints, preemption.

T5X's ``train.py`` loop, without knowing the data format or the model: it is given

- ``stages``: :class:`Stage` s, each a number of steps and a function opening its batch stream at a
  position (or from a saved stream state); a stream yields host batches and has ``state()``;
- ``train_step(state, global_batch) -> (state, metrics)`` and ``shard(host_batch) -> global_batch``;
- ``evaluate(state) -> metrics`` (optional), a :class:`~onesearch_jax.train.checkpoints.Checkpointer`,
  a :class:`~onesearch_jax.train.metrics_writer.MetricsWriter` and a
  :class:`~onesearch_jax.train.preemption.PreemptionWatcher`.

One step consumes one batch of the current stage, so the data position is a function of the step;
the stream state saved with each checkpoint (``{"stage": name, "stream": stream.state(),
"skipped_nonfinite_steps": n}``) is checked against it on restore. Train metrics stay on device
between log steps (no host sync per step); at a log step their means over the interval are written
with ``examples_per_second`` and ``steps_per_second`` measured over the same interval.

Preemption: after the step in flight when the watcher's signal arrived, the loop logs, writes a
checkpoint with the data position and waits for it; an evaluation due at that step is skipped (a
restart does not redo it). The watcher's deadline names the step being written, and is cancelled
once it has landed.

Non-finite steps: the train step applies no update when its loss or gradients are NaN or infinite
(``make_train_step``), but the step counter and the data position advance. The loop reads the
steps' ``nonfinite`` flags where it syncs with the device anyway (log, evaluation, checkpoint,
preemption), keeping each step's stage and batch position meanwhile, so it names the exact first
bad step however late it looks. Policy ``stop`` raises :class:`NonFiniteError` there, before any
checkpoint of a later step is written; ``skip`` logs a warning and counts the step
(``skipped_nonfinite_steps``, kept in the checkpoints' data state so a resumed run counts on), up to
``max_nonfinite_steps``. Interval means leave skipped steps out.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import jax
import numpy as np
from absl import logging

from onesearch_jax.train.checkpoints import Checkpointer
from onesearch_jax.train.metrics_writer import MetricsWriter
from onesearch_jax.train.preemption import PreemptionWatcher
from onesearch_jax.train.run_config import check_nonfinite_policy
from onesearch_jax.train.step import FIRST_NONFINITE_GRAD, NONFINITE, NONFINITE_LOSS, param_paths

SKIPPED_NONFINITE = "skipped_nonfinite_steps"
_FLAGS = (NONFINITE, NONFINITE_LOSS, FIRST_NONFINITE_GRAD)  # per-step diagnostics, not averaged


class NonFiniteError(ValueError):
    """A step's loss or gradients were NaN or infinite and the policy says stop (the message names
    the step, its batch and the tensor)."""


class BatchStream(Protocol):
    """An iterator of host batches whose ``state()`` a checkpoint can store."""

    def __iter__(self) -> Iterator[Mapping[str, np.ndarray]]: ...

    def __next__(self) -> Mapping[str, np.ndarray]: ...

    def state(self) -> dict[str, Any]: ...


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of the curriculum as the loop sees it.

    Attributes:
        name: the stage name (metrics carry it as ``stage``).
        num_steps: steps in this stage.
        open: ``open(position, saved)`` returns the stream positioned after ``position`` batches;
            ``saved`` is the stream state stored with the checkpoint (None on a fresh start), which
            ``open`` must check against ``position`` and its own configuration.
        on_start: ``state -> state`` applied before the stage's first step (e.g. restarting the
            EMA teacher from the student), also when a run resumes exactly at the stage's start,
            never when it resumes inside the stage (the checkpoint already has its effect).
    """

    name: str
    num_steps: int
    open: Callable[[int, Mapping[str, Any] | None], BatchStream]
    on_start: Callable[[Any], Any] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """The loop's cadence.

    Attributes:
        global_batch_size: examples per step over all hosts (for examples/s).
        log_every_steps: write train metrics every this many steps.
        eval_every_steps: evaluate every this many steps (0 = only at the end).
        progress_bar: show tqdm on this process.
        nonfinite_policy: ``stop`` or ``skip`` a step whose loss or gradients are not finite
            (``TrainConfig.nonfinite_policy``).
        max_nonfinite_steps: with ``skip``, the most steps skipped over the run (0 = no limit).
    """

    global_batch_size: int
    log_every_steps: int = 10
    eval_every_steps: int = 0
    progress_bar: bool = True
    nonfinite_policy: str = "stop"
    max_nonfinite_steps: int = 0

    def __post_init__(self) -> None:
        check_nonfinite_policy("LoopConfig", self.nonfinite_policy, self.max_nonfinite_steps)


@dataclasses.dataclass(frozen=True)
class LoopResult:
    """What a call of :func:`train_loop` did.

    Attributes:
        state: the final train state.
        step: the step reached.
        start_step: the step it started from.
        preempted: it stopped early on a preemption signal (after saving).
        train_metrics: the last logged train metrics.
        eval_metrics: the last evaluation's metrics.
    """

    state: Any
    step: int
    start_step: int
    preempted: bool
    train_metrics: dict[str, float]
    eval_metrics: dict[str, float]


def _locate(stages: Sequence[Stage], step: int) -> tuple[int, int]:
    start = 0
    for index, stage in enumerate(stages):
        if step < start + stage.num_steps:
            return index, step - start
        start += stage.num_steps
    return len(stages), 0


@dataclasses.dataclass(frozen=True)
class _Source:
    """Where a step's batch came from: ``stages[stage].open(position, None)`` yields it first."""

    step: int  # the step the update leads to, as metrics.jsonl numbers steps
    stage: str
    position: int  # the batch's 0-based index in its stage's stream


class _NonFiniteGuard:
    """Applies the non-finite policy to steps' metrics fetched to the host, in step order.

    Args:
        config: the policy and its limit.
        skipped: steps skipped before this call of the loop (from the checkpoint's data state).
    """

    def __init__(self, config: LoopConfig, skipped: int):
        self.policy = config.nonfinite_policy
        self.limit = config.max_nonfinite_steps
        self.skipped = skipped

    def check(self, sources: Sequence[_Source], metrics: Sequence[Mapping[str, Any]], params: Any) -> None:
        """Counts (``skip``) or raises at (``stop``, or past the limit) each non-finite step.

        Raises:
            NonFiniteError: naming the first step that the policy does not skip.
        """
        for source, values in zip(sources, metrics, strict=True):
            if not values[NONFINITE]:
                continue
            what = _describe(source, values, params)
            if self.policy == "stop":
                raise NonFiniteError(f"{what}; no checkpoint of a later step was written (nonfinite_policy='stop')")
            if self.limit and self.skipped >= self.limit:
                raise NonFiniteError(f"{what}; {self.skipped} non-finite steps were skipped already, the most "
                                     f"max_nonfinite_steps={self.limit} allows")  # fmt: skip
            self.skipped += 1
            logging.warning("%s; skipped (%d non-finite steps skipped in this run)", what, self.skipped)


def _describe(source: _Source, values: Mapping[str, Any], params: Any) -> str:
    bad = []
    if values[NONFINITE_LOSS]:
        bad.append(f"the loss is {float(values['loss'])}")
    index = int(values[FIRST_NONFINITE_GRAD])
    if index >= 0:
        bad.append(f"the gradient of {param_paths(params)[index]} is the first non-finite one")
    return (f"non-finite training step {source.step}: {' and '.join(bad)}; its batch is number {source.position} "
            f"(from 0) of the stream of stage {source.stage!r} (the batches carry no example ids); the update was "
            "not applied")  # fmt: skip


def _mean(history: list[dict[str, jax.Array]]) -> dict[str, float]:
    """Means over the finite steps of the interval (over all of them when none is finite)."""
    host = jax.device_get(history)
    finite = [m for m in host if not m[NONFINITE]] or host
    return {name: float(np.mean([m[name] for m in finite])) for name in host[0] if name not in _FLAGS}


def train_loop(
    state: Any,
    *,
    stages: Sequence[Stage],
    train_step: Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]],
    shard: Callable[[Mapping[str, np.ndarray]], Any],
    config: LoopConfig,
    checkpointer: Checkpointer | None,
    writer: MetricsWriter,
    evaluate: Callable[[Any], dict[str, float]] | None = None,
    watcher: PreemptionWatcher | None = None,
    data_state: Mapping[str, Any] | None = None,
) -> LoopResult:
    """Trains from ``state.step`` to the end of the last stage (or until preempted).

    At each step: next batch of the current stage -> ``train_step``; every ``log_every_steps`` the
    interval's mean train metrics; every ``eval_every_steps`` (and at the end) ``evaluate``; a
    checkpoint whenever the checkpointer's interval says so (evaluated first when it keeps the best
    checkpoints, so the step competes) and at the end; on a preemption signal, no evaluation, a
    forced checkpoint, and once it has landed a clean return with ``preempted=True``.

    Args:
        state: the train state (its ``step`` says where to start).
        stages: the curriculum.
        train_step: the jitted step; it may donate ``state``. Its metrics carry the non-finite
            flags of ``make_train_step`` (``nonfinite``, ``nonfinite_loss``, ``first_nonfinite_grad``),
            and ``state.params`` is what its gradient leaves are indexed by.
        shard: host batch -> global device batch (``partitioning.shard_batch``).
        config: cadence and the non-finite policy.
        checkpointer: where to save (None: no checkpoints).
        writer: train and eval metrics.
        evaluate: ``state -> metrics``; its keys are written under split ``eval``.
        watcher: preemption signals and their deadline (None: not watched).
        data_state: the data state restored with ``state`` (None on a fresh start).

    Raises:
        ValueError: ``data_state`` names a stage that the step does not fall in.
        NonFiniteError: a non-finite step under ``stop``, or past ``max_nonfinite_steps`` under ``skip``.
    """
    total = sum(stage.num_steps for stage in stages)
    step = start_step = int(jax.device_get(state.step))
    train_metrics: dict[str, float] = {}
    eval_metrics: dict[str, float] = {}
    if step >= total:
        return LoopResult(state, step, start_step, False, train_metrics, eval_metrics)
    index, position = _locate(stages, step)
    saved = None
    if data_state is not None:
        if data_state.get("stage") != stages[index].name:
            raise ValueError(
                f"the checkpoint at step {step} was reading stage {data_state.get('stage')!r}, but step {step} "
                f"falls in stage {stages[index].name!r} of this run: the stages changed since it was written"
            )
        saved = data_state.get("stream")
    stream = stages[index].open(position, saved)
    if position == 0 and stages[index].on_start is not None:
        state = stages[index].on_start(state)
    guard = _NonFiniteGuard(config, int(data_state.get(SKIPPED_NONFINITE, 0)) if data_state is not None else 0)
    bar = _progress(config, total, step)
    history: list[dict[str, jax.Array]] = []
    sources: list[_Source] = []
    checked = 0  # history[:checked] passed the non-finite check
    interval_start = time.perf_counter()
    interval_steps = 0
    excluded = 0.0  # evaluation seconds inside the interval: not training throughput
    preempted = False
    if watcher is not None and checkpointer is not None:
        watcher.track(checkpointer.latest_committed_step)
    try:
        while step < total:
            if position == stages[index].num_steps:  # the next stage starts
                index, position = index + 1, 0
                stream = stages[index].open(0, None)
                if stages[index].on_start is not None:
                    state = stages[index].on_start(state)
            batch = next(stream)
            state, metrics = train_step(state, shard(batch))
            history.append(metrics)
            sources.append(_Source(step + 1, stages[index].name, position))
            step += 1
            position += 1
            interval_steps += 1
            if bar is not None:
                bar.update(1)
            last = step == total
            preempted = watcher is not None and not last and watcher.should_stop(step)
            log_now = step % config.log_every_steps == 0 or last or preempted
            save_now = checkpointer is not None and (last or step % checkpointer.config.save_every_steps == 0)
            eval_now = (  # not after a stop signal: an evaluation can take minutes
                evaluate is not None
                and not preempted
                and (
                    last
                    or (config.eval_every_steps and step % config.eval_every_steps == 0)
                    or (save_now and checkpointer.config.keep_best > 0)
                )
            )
            if log_now or save_now or eval_now:  # the host waits for the device here anyway
                guard.check(sources[checked:], jax.device_get(history[checked:]), state.params)
                checked = len(history)
            if log_now:
                train_metrics = _mean(history)
                seconds = time.perf_counter() - interval_start - excluded
                train_metrics["steps_per_second"] = interval_steps / seconds
                train_metrics["examples_per_second"] = interval_steps * config.global_batch_size / seconds
                train_metrics[SKIPPED_NONFINITE] = float(guard.skipped)
                writer.write(step, "train", {**train_metrics, "stage_index": index})
                if bar is not None:
                    bar.set_postfix(stage=stages[index].name, loss=f"{train_metrics['loss']:.4f}",
                                    ex_per_s=f"{train_metrics['examples_per_second']:.0f}")  # fmt: skip
                history, sources, checked = [], [], 0
                interval_steps, interval_start, excluded = 0, time.perf_counter(), 0.0
            if eval_now:
                eval_start = time.perf_counter()
                eval_metrics = evaluate(state)
                writer.write(step, "eval", eval_metrics)
                excluded += time.perf_counter() - eval_start
            if checkpointer is not None and (save_now or preempted):
                if position == stages[index].num_steps and not last:  # a restart opens the next stage
                    data = {"stage": stages[index + 1].name, "stream": None}
                else:
                    data = {"stage": stages[index].name, "stream": stream.state()}
                data[SKIPPED_NONFINITE] = guard.skipped
                if preempted:
                    watcher.writing(step)
                checkpointer.save(step, state, data, metrics=eval_metrics if eval_now else None, force=True)
            if preempted:
                break
    finally:
        if bar is not None:
            bar.close()
        if checkpointer is not None:
            checkpointer.wait()
        writer.flush()
    if preempted:
        watcher.landed()
    return LoopResult(state, step, start_step, preempted, train_metrics, eval_metrics)


def _progress(config: LoopConfig, total: int, step: int) -> Any:
    if not config.progress_bar or jax.process_index() != 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=step, unit="step", dynamic_ncols=True, desc="train")
