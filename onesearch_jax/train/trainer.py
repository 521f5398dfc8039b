"""The train loop: steps over a curriculum of stages, periodic evaluation, logging, checkpoints, preemption.

T5X's ``train.py`` loop, without knowing the data format or the model: it is given

- ``stages``: :class:`Stage` s, each a number of steps and a function opening its batch stream at a
  position (or from a saved stream state); a stream yields host batches and has ``state()``;
- ``train_step(state, global_batch) -> (state, metrics)`` and ``shard(host_batch) -> global_batch``;
- ``evaluate(state) -> metrics`` (optional), a :class:`~onesearch_jax.train.checkpoints.Checkpointer`,
  a :class:`~onesearch_jax.train.metrics_writer.MetricsWriter` and a
  :class:`~onesearch_jax.train.preemption.PreemptionWatcher`.

One step consumes one batch of the current stage, so the data position is a function of the step;
the stream state saved with each checkpoint (``{"stage": name, "stream": stream.state()}``) is
checked against it on restore. Train metrics stay on device between log steps (no host sync per
step); at a log step their means over the interval are written with ``examples_per_second`` and
``steps_per_second`` measured over the same interval.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import jax
import numpy as np

from onesearch_jax.train.checkpoints import Checkpointer
from onesearch_jax.train.metrics_writer import MetricsWriter
from onesearch_jax.train.preemption import PreemptionWatcher


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
    """

    name: str
    num_steps: int
    open: Callable[[int, Mapping[str, Any] | None], BatchStream]


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """The loop's cadence.

    Attributes:
        global_batch_size: examples per step over all hosts (for examples/s).
        log_every_steps: write train metrics every this many steps.
        eval_every_steps: evaluate every this many steps (0 = only at the end).
        progress_bar: show tqdm on this process.
    """

    global_batch_size: int
    log_every_steps: int = 10
    eval_every_steps: int = 0
    progress_bar: bool = True


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


def _mean(history: list[dict[str, jax.Array]]) -> dict[str, float]:
    host = jax.device_get(history)
    return {name: float(np.mean([m[name] for m in host])) for name in host[0]}


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
    checkpoints, so the step competes) and at the end; on a preemption signal, a forced checkpoint and
    a clean return with ``preempted=True``.

    Args:
        state: the train state (its ``step`` says where to start).
        stages: the curriculum.
        train_step: the jitted step; it may donate ``state``.
        shard: host batch -> global device batch (``partitioning.shard_batch``).
        config: cadence.
        checkpointer: where to save (None: no checkpoints).
        writer: train and eval metrics.
        evaluate: ``state -> metrics``; its keys are written under split ``eval``.
        watcher: preemption signals (None: not watched).
        data_state: the data state restored with ``state`` (None on a fresh start).

    Raises:
        ValueError: ``data_state`` names a stage that the step does not fall in.
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
    bar = _progress(config, total, step)
    history: list[dict[str, jax.Array]] = []
    interval_start = time.perf_counter()
    interval_steps = 0
    excluded = 0.0  # evaluation seconds inside the interval: not training throughput
    preempted = False
    try:
        while step < total:
            if position == stages[index].num_steps:  # the next stage starts
                index, position = index + 1, 0
                stream = stages[index].open(0, None)
            batch = next(stream)
            state, metrics = train_step(state, shard(batch))
            history.append(metrics)
            step += 1
            position += 1
            interval_steps += 1
            if bar is not None:
                bar.update(1)
            last = step == total
            preempted = watcher is not None and not last and watcher.should_stop(step)
            if step % config.log_every_steps == 0 or last or preempted:
                train_metrics = _mean(history)
                seconds = time.perf_counter() - interval_start - excluded
                train_metrics["steps_per_second"] = interval_steps / seconds
                train_metrics["examples_per_second"] = interval_steps * config.global_batch_size / seconds
                writer.write(step, "train", {**train_metrics, "stage_index": index})
                if bar is not None:
                    bar.set_postfix(stage=stages[index].name, loss=f"{train_metrics['loss']:.4f}",
                                    ex_per_s=f"{train_metrics['examples_per_second']:.0f}")  # fmt: skip
                history, interval_steps, interval_start, excluded = [], 0, time.perf_counter(), 0.0
            save_now = checkpointer is not None and (last or step % checkpointer.config.save_every_steps == 0)
            eval_now = evaluate is not None and (
                last
                or (config.eval_every_steps and step % config.eval_every_steps == 0)
                or (save_now and checkpointer.config.keep_best > 0)
            )
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
                checkpointer.save(step, state, data, metrics=eval_metrics if eval_now else None, force=True)
            if preempted:
                break
    finally:
        if bar is not None:
            bar.close()
        if checkpointer is not None:
            checkpointer.wait()
        writer.flush()
    return LoopResult(state, step, start_step, preempted, train_metrics, eval_metrics)


def _progress(config: LoopConfig, total: int, step: int) -> Any:
    if not config.progress_bar or jax.process_index() != 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=step, unit="step", dynamic_ncols=True, desc="train")
