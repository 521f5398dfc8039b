"""A training run from its configs: tasks, vocabulary, model, mesh, state, steps, streams, loop.

T5X's ``train.py`` / ``eval.py`` glue, in three calls the ``onesearch`` commands make:

    setup = prepare_run(train_config, model_config_fn=..., mesh_config=..., rules=...)
    result = train_run(setup, optimizer_config=..., checkpoint_config=...)          # onesearch train
    graphdef, params, step = restore_params(setup, checkpoint_config, step=None)     # onesearch eval

``prepare_run`` does every check that can fail on a bad configuration (tasks exist, the vocabulary
loads, the mesh fits the devices, batches split over the mesh and the hosts, parameters split over
the mesh) before anything is compiled or allocated. Multi-host: each host reads its own shard of
every stream (``shard_index = process_index``) and feeds its rows to ``shard_batch``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import seqio
from flax import nnx
from jax.sharding import Mesh

from onesearch_jax.data.batches import BatchConfig, ResumableBatches
from onesearch_jax.models import partitioning
from onesearch_jax.models.configs import T5Config
from onesearch_jax.models.encoder_decoder import EncoderDecoder, abstract_model
from onesearch_jax.models.mesh_config import LogicalRules, MeshConfig
from onesearch_jax.train.checkpoints import (
    CheckpointConfig,
    Checkpointer,
    abstract_train_state,
    check_writable,
    checkpoint_bytes,
)
from onesearch_jax.train.ema import EmaTeacher, make_teacher_restart
from onesearch_jax.train.grpo_config import GrpoConfig
from onesearch_jax.train.metrics_writer import MetricsWriter
from onesearch_jax.train.optimizer_config import OptimizerConfig
from onesearch_jax.train.optimizers import make_optimizer
from onesearch_jax.train.preemption import PreemptionWatcher
from onesearch_jax.train.run_config import StageConfig, TrainConfig
from onesearch_jax.train.state import abstract_init
from onesearch_jax.train.step import LossFn, cross_entropy_loss, make_eval_step, make_train_step
from onesearch_jax.train.trainer import LoopConfig, LoopResult, Stage, train_loop
from onesearch_jax.vocab import OneSearchVocabulary


@dataclasses.dataclass(frozen=True)
class RunSetup:
    """What ``prepare_run`` checked and built (nothing compiled yet).

    Attributes:
        config: the run config.
        vocab: the loaded vocabulary (the tasks are registered with it).
        model_config: the model, with ``vocab_size`` padded to ``config.vocab_pad_multiple``.
        mesh: the device mesh.
        rules: the logical-axis rules.
    """

    config: TrainConfig
    vocab: OneSearchVocabulary
    model_config: T5Config
    mesh: Mesh
    rules: LogicalRules

    def model_fn(self, rngs: nnx.Rngs) -> EncoderDecoder:
        """Builds the model (for ``abstract_init``)."""
        return EncoderDecoder(self.model_config, rngs=rngs)

    def meta(self) -> dict[str, Any]:
        """What every checkpoint records about the run, checked when it is read back."""
        return {"model": dataclasses.asdict(self.model_config), "vocab_size": self.vocab.vocab_size}


def padded_vocab_size(vocab_size: int, multiple: int) -> int:
    """``vocab_size`` rounded up to a multiple of ``multiple``."""
    return int(math.ceil(vocab_size / multiple) * multiple)


def _check_task(name: str, where: str) -> None:
    try:
        seqio.get_mixture_or_task(name)
    except ValueError as error:
        known = sorted(n for n in (*seqio.TaskRegistry.names(), *seqio.MixtureRegistry.names()) if "onesearch" in n)
        raise ValueError(f"{where}: no seqio Task or Mixture named {name!r}; the OneSearch ones are {known}") from error


def prepare_run(
    config: TrainConfig,
    *,
    model_config_fn: Callable[[int], T5Config],
    mesh_config: MeshConfig,
    rules: LogicalRules,
    num_microbatches: int = 1,
    devices: Sequence[jax.Device] | None = None,
) -> RunSetup:
    """Registers the tasks, loads the vocabulary and checks the whole configuration; compiles nothing.

    Args:
        config: the run.
        model_config_fn: ``vocab_size -> T5Config`` (gin's ``T5Config`` with the padded vocabulary).
        mesh_config: the mesh shape.
        rules: logical-axis rules.
        num_microbatches: the optimizer's gradient-accumulation microbatches (the batch must split).
        devices: the devices of the mesh (default: all).

    Raises:
        FileNotFoundError: the examples or vocabulary directory is missing.
        ValueError: an unknown task, a mesh that does not fit the devices, a batch that does not split
            over the data axes, microbatches or hosts, or parameters the mesh cannot divide; each
            message names the numbers involved.
    """
    from tasks.onesearch import register_onesearch_tasks  # TensorFlow: only jobs that read tasks load it

    for name in ("examples_dir", "vocab_dir"):
        if not Path(getattr(config, name)).is_dir():
            raise FileNotFoundError(f"TrainConfig.{name} {getattr(config, name)} is not a directory")
    vocab = register_onesearch_tasks(config.examples_dir, config.vocab_dir)
    for stage in config.stages:
        _check_task(stage.mixture_or_task, f"stage {stage.name}")
    for task in config.eval_tasks:
        _check_task(task, "TrainConfig.eval_tasks")
    model_config = model_config_fn(padded_vocab_size(vocab.vocab_size, config.vocab_pad_multiple))
    mesh = partitioning.make_mesh(mesh_config, devices)
    hosts = jax.process_count()
    for what, size, micro in (
        ("TrainConfig.batch_size", config.batch_size, num_microbatches),
        ("the evaluation batch size", config.global_eval_batch_size, 1),
    ):
        try:
            partitioning.check_batch_size(size, mesh, num_microbatches=micro, rules=rules)
        except ValueError as error:
            raise ValueError(f"{what}: {error}") from error
        if size % hosts:
            raise ValueError(f"{what} {size} does not split over the {hosts} processes (hosts)")
    if config.input_shards is not None and config.input_shards % hosts:
        raise ValueError(f"TrainConfig.input_shards {config.input_shards} does not split over the {hosts} processes")
    partitioning.param_shardings(nnx.state(abstract_model(model_config), nnx.Param), mesh, rules)
    return RunSetup(config=config, vocab=vocab, model_config=model_config, mesh=mesh, rules=tuple(rules))


def _check_meta(meta: Mapping[str, Any], setup: RunSetup, where: str) -> None:
    saved, now = meta.get("model"), dataclasses.asdict(setup.model_config)
    if saved is not None and saved != now:
        diff = {k: (saved.get(k), now.get(k)) for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)}
        raise ValueError(f"the checkpoint in {where} is of another model: (checkpoint, now) differ in {diff}")
    if meta.get("vocab_size") not in (None, setup.vocab.vocab_size):
        raise ValueError(
            f"the checkpoint in {where} was trained with a vocabulary of {meta['vocab_size']} ids, but "
            f"{setup.config.vocab_dir} has {setup.vocab.vocab_size}"
        )


def stream_config(setup: RunSetup, stage: StageConfig, index: int) -> BatchConfig:
    """This host's stream of stage ``index``: its ``input_shards / hosts`` shards (one by default)."""
    config = setup.config
    hosts = jax.process_count()
    shards = config.input_shards or hosts
    return BatchConfig(
        mixture_or_task=stage.mixture_or_task,
        task_feature_lengths=dict(stage.task_feature_lengths),
        batch_size=config.batch_size // hosts,
        split="train",
        shuffle=True,
        seed=config.data_seed + index,
        num_epochs=None,
        feature_converter=stage.feature_converter,
        shard_index=jax.process_index() * (shards // hosts),
        num_shards=shards,
        num_host_shards=shards // hosts,
    )


def stages_of(setup: RunSetup, on_start: Mapping[str, Callable[[Any], Any]] | None = None) -> list[Stage]:
    """The curriculum as the loop sees it: each stage opens its resumable stream at a position.

    Args:
        setup: the run.
        on_start: ``stage name -> (state -> state)`` run before that stage's first step.
    """
    on_start = dict(on_start or {})
    unknown = sorted(set(on_start) - {stage.name for stage in setup.config.stages})
    if unknown:
        raise ValueError(f"on_start names stages {unknown} that the run does not have")
    out = []
    for index, stage in enumerate(setup.config.stages):
        batch_config = stream_config(setup, stage, index)

        def open_stream(position: int, saved: Mapping[str, Any] | None, bc: BatchConfig = batch_config):
            if saved is None:
                return ResumableBatches(bc, position=position)
            stream = ResumableBatches.restore(saved, bc)
            if stream.position != position:
                raise ValueError(f"the checkpoint's data position {stream.position} of {bc.mixture_or_task} does "
                                 f"not match its step ({position} steps into the stage)")  # fmt: skip
            return stream

        hook = on_start.get(stage.name)
        out.append(Stage(name=stage.name, num_steps=stage.num_steps, open=open_stream, on_start=hook))
    return out


def eval_batches(setup: RunSetup, task: str) -> list[dict[str, np.ndarray]]:
    """This host's validation batches of ``task``, each padded to the host's share of the eval batch.

    Padding rows are all zeros (loss weight 0), so sums over batches count each example once. Every
    host returns the same number of batches (hosts with fewer add all-padding batches), as the
    sharded step needs.
    """
    config = setup.config
    rows = config.global_eval_batch_size // jax.process_count()
    stream = ResumableBatches(
        BatchConfig(
            mixture_or_task=task,
            task_feature_lengths=dict(config.eval_feature_lengths),
            batch_size=rows,
            split="validation",
            shuffle=False,
            num_epochs=1,
            shard_index=jax.process_index(),
            num_shards=jax.process_count(),
            drop_remainder=False,
        )
    )
    batches = []
    for batch in stream:
        batches.append({k: _pad_rows(v, rows) for k, v in batch.items()})
        if config.eval_max_batches is not None and len(batches) == config.eval_max_batches:
            break
    count = len(batches)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        count = int(np.max(multihost_utils.process_allgather(np.asarray(count))))
    if not batches and count == 0:
        raise ValueError(f"the validation split of {task} is empty")
    template = batches[0] if batches else None
    while len(batches) < count:
        if template is None:  # this host has no rows at all: shapes from the lengths
            raise ValueError(f"host {jax.process_index()} has no validation rows of {task} while others do")
        batches.append({k: np.zeros_like(v) for k, v in template.items()})
    return batches


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    if x.shape[0] == rows:
        return x
    return np.concatenate([x, np.zeros((rows - x.shape[0], *x.shape[1:]), x.dtype)])


def make_evaluator(setup: RunSetup, graphdef: Any, params_shardings: Any) -> Callable[[Any], dict[str, float]]:
    """``params -> {"eval/<task>/loss", "eval/<task>/accuracy", "eval/<task>/examples", ...}``:
    teacher-forced metrics of ``setup.config.eval_tasks``, with a jitted eval step for parameters
    sharded as ``params_shardings``.

    The validation batches are read once and kept (they are small); the metrics are exact
    token-weighted means over the whole split (or ``eval_max_batches``).
    """
    eval_step = make_eval_step(graphdef, setup.mesh, setup.rules, params_shardings=params_shardings)
    cached = {task: eval_batches(setup, task) for task in setup.config.eval_tasks}

    def evaluate(params: Any) -> dict[str, float]:
        out: dict[str, float] = {}
        for task, batches in cached.items():
            sums: dict[str, float] = {}
            examples = 0
            for batch in batches:
                metrics = jax.device_get(eval_step(params, partitioning.shard_batch(batch, setup.mesh, setup.rules)))
                for name, value in metrics.items():
                    if name.endswith("_sum"):
                        sums[name] = sums.get(name, 0.0) + float(value)
                examples += int(np.sum(np.any(batch["decoder_loss_weights"] > 0, axis=1)))
            weight = max(sums.get("weight_sum", 0.0), 1e-9)
            for name, value in sums.items():
                if name != "weight_sum":
                    out[f"eval/{task}/{name[: -len('_sum')]}"] = value / weight
            out[f"eval/{task}/tokens"] = sums.get("weight_sum", 0.0)
            out[f"eval/{task}/examples"] = float(examples * jax.process_count())
        return out

    return evaluate


def train_run(
    setup: RunSetup,
    *,
    optimizer_config: OptimizerConfig,
    checkpoint_config: CheckpointConfig,
    loss_fn: LossFn = cross_entropy_loss,
    ema_teacher: EmaTeacher | None = None,
    run_meta: Mapping[str, Any] | None = None,
    watcher: PreemptionWatcher | None = None,
    grpo: GrpoConfig | None = None,
) -> LoopResult:
    """Trains the run from scratch, or resumes it from the latest checkpoint in its directory.

    Args:
        setup: from :func:`prepare_run`.
        optimizer_config: the optimizer and schedule (the step counter spans all stages).
        checkpoint_config: where and how often to checkpoint (usually ``model_dir/checkpoints``).
        loss_fn: the train loss (``cross_entropy_loss``: SFT; ``distill.make_train_loss``: LR-ESD).
            Evaluation always reports the student's cross-entropy.
        ema_teacher: the EMA teacher of an LR-ESD ``ema`` run (``distill.make_ema_teacher``): the
            state carries it, the step updates it, and it restarts from the student at the start
            of each of its stages. A checkpoint written without one (e.g. an SFT run's, branched)
            is restored with the teacher set to its parameters, unless the step falls inside one
            of the teacher's stages, whose teacher is then lost.
        run_meta: extra fields stored with every checkpoint (e.g. the gin config).
        watcher: preemption signals (the loop saves and returns on one).
        grpo: the TPMA-GRPO config of a run whose stages are GRPO stages (``loss_fn`` is then
            unused: the step is ``grpo.make_grpo_step``'s, with ``config.init_checkpoint`` as the
            frozen reference).

    A run without a checkpoint of its own starts from ``config.init_checkpoint``'s parameters
    when set (a fresh optimizer state, step 0).

    Raises:
        PermissionError: the model directory is not writable (before anything is built).
        CheckpointWriteError: too little free space for the checkpoints the run keeps (before
            anything is allocated), or a checkpoint that could not be written.
        ValueError: the checkpoint there is of another model or another data curriculum, or has no
            EMA teacher while its step is inside a stage that reads one.
        NonFiniteError: a non-finite step that ``config.nonfinite_policy`` does not skip.
    """
    config = setup.config
    check_writable(config.model_dir)
    optimizer = make_optimizer(optimizer_config)
    partitioning.check_batch_size(config.batch_size, setup.mesh, num_microbatches=optimizer.num_microbatches,
                                  rules=setup.rules)  # fmt: skip
    checkpointer = Checkpointer(checkpoint_config, meta={**setup.meta(), **(run_meta or {})})
    with_teacher = ema_teacher is not None
    graphdef, abstract, shardings, init = abstract_init(setup.model_fn, optimizer, setup.mesh, setup.rules,
                                                        seed=config.seed, with_teacher=with_teacher)  # fmt: skip
    restart = make_teacher_restart(shardings) if with_teacher else None
    latest = checkpointer.latest_intact_step()  # a corrupt newer step is reported and set aside
    checkpointer.check_free_space(checkpoint_bytes(abstract))
    data_state = None
    # the init checkpoint: the fresh run's parameters and, in a GRPO run, the reference (read once)
    initial = None
    if config.init_checkpoint is not None and (latest is None or grpo is not None):
        initial = _init_params(setup)
    if latest is None:
        state = init()
        if initial is not None:  # a copy: the train step donates the state's buffers
            state = state.replace(params=jax.tree.map(jnp.copy, initial))
    else:
        _check_meta(checkpointer.restore_meta(latest), setup, checkpointer.directory)
        state, data_state = checkpointer.restore(latest, abstract_state=abstract_train_state(abstract, shardings))
        if with_teacher and state.teacher is None:
            _check_teacher_restart(config, latest, ema_teacher, checkpointer.directory)
            state = restart(state)
    if grpo is not None:
        from onesearch_jax.train.grpo import load_tables, make_grpo_step

        train_step = make_grpo_step(graphdef, optimizer, setup.mesh, setup.rules, state_shardings=shardings,
                                    config=grpo, tables=load_tables(config.examples_dir, setup.vocab, setup.mesh),
                                    reference=initial)  # fmt: skip
    else:
        ema_decay = ema_teacher.decay if with_teacher else None
        train_step = make_train_step(graphdef, optimizer, setup.mesh, setup.rules, state_shardings=shardings,
                                     loss_fn=loss_fn, ema_decay=ema_decay)  # fmt: skip
    evaluate = None
    if config.eval_tasks:
        evaluate_params = make_evaluator(setup, graphdef, shardings.params)
        evaluate = lambda state: evaluate_params(state.params)  # noqa: E731
    primary = jax.process_index() == 0
    writer = MetricsWriter(config.model_dir, enabled=primary, tensorboard=config.tensorboard,
                           start_step=0 if latest is None else latest)  # fmt: skip
    if primary:
        _write_run_files(setup, run_meta)
    loop = LoopConfig(global_batch_size=config.batch_size, log_every_steps=config.log_every_steps,
                      eval_every_steps=config.eval_every_steps, progress_bar=config.progress_bar,
                      nonfinite_policy=config.nonfinite_policy,
                      max_nonfinite_steps=config.max_nonfinite_steps)  # fmt: skip
    try:
        return train_loop(
            state, stages=stages_of(setup, {name: restart for name in ema_teacher.stages} if restart else None),
            train_step=train_step,
            shard=lambda batch: partitioning.shard_batch(batch, setup.mesh, setup.rules), config=loop,
            checkpointer=checkpointer, writer=writer, evaluate=evaluate, watcher=watcher, data_state=data_state,
        )  # fmt: skip
    finally:
        writer.close()
        checkpointer.close()


def _init_params(setup: RunSetup) -> Any:
    """The parameters of ``TrainConfig.init_checkpoint`` (at ``init_checkpoint_step``), sharded as
    the run's.

    Raises:
        FileNotFoundError: no checkpoint there (or not that step).
        ValueError: a checkpoint of another model or vocabulary.
    """
    config = setup.config
    directory = CheckpointConfig(directory=config.init_checkpoint)
    try:
        return restore_params(setup, directory, config.init_checkpoint_step)[1]
    except FileNotFoundError as error:
        raise FileNotFoundError(f"TrainConfig.init_checkpoint: {error}") from None


def _check_teacher_restart(config: TrainConfig, step: int, ema_teacher: EmaTeacher, directory: Any) -> None:
    """Raises ValueError when ``step`` is inside one of the EMA teacher's stages (past its first step)."""
    if step >= config.total_steps:
        return
    index, position = config.stage_at(step)
    stage = config.stages[index]
    if position > 0 and stage.name in ema_teacher.stages:
        start = config.stage_start(index)
        raise ValueError(
            f"the checkpoint at step {step} in {directory} has no EMA teacher, but step {step} is inside stage "
            f"{stage.name!r} (steps {start}-{start + stage.num_steps}), which distils from one: the teacher "
            "cannot be rebuilt there; resume from a checkpoint at or before the stage's start"
        )


def _write_run_files(setup: RunSetup, run_meta: Mapping[str, Any] | None) -> None:
    root = Path(setup.config.model_dir)
    gin_text = (run_meta or {}).get("gin_config")
    if gin_text:
        (root / "config.gin").write_text(gin_text, encoding="utf-8")
    summary = {"model": dataclasses.asdict(setup.model_config), "vocab_size": setup.vocab.vocab_size,
               "mesh": dict(setup.mesh.shape), "processes": jax.process_count(),
               "stages": [dataclasses.asdict(s) for s in setup.config.stages]}  # fmt: skip
    (root / "run.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")


def restore_params(
    setup: RunSetup, checkpoint_config: CheckpointConfig, step: int | None = None
) -> tuple[Any, Any, int]:
    """(graphdef, parameters sharded over the mesh, step) of a checkpoint, without optimizer state.

    Raises:
        FileNotFoundError: no checkpoint (or not ``step``) in the directory.
        ValueError: the checkpoint is of another model or vocabulary.
    """
    checkpointer = Checkpointer(checkpoint_config, read_only=True)
    try:
        step = checkpointer.latest_intact_step() if step is None else int(step)
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {checkpointer.directory}")
        _check_meta(checkpointer.restore_meta(step), setup, checkpointer.directory)
        model = abstract_model(setup.model_config)
        graphdef, abstract_params = nnx.split(model, nnx.Param)
        shardings = partitioning.param_shardings(abstract_params, setup.mesh, setup.rules)
        params = checkpointer.restore_params(step, abstract_params=abstract_train_state(abstract_params, shardings))
        return graphdef, params, step
    finally:
        checkpointer.close()
