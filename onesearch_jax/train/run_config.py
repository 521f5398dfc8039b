"""What a training run does, as plain Python (no jax), so gin registers it for every command.

A run is a curriculum of :class:`StageConfig` s trained one after another with one optimizer and one
global step counter (OneSearch's SFT is three stages: semantic alignment, co-occurrence
synchronisation, personalised generation). ``gin/runs/sft.gin`` binds them:

    TrainConfig.stages = [@stage1/StageConfig(), @stage2/StageConfig(), @stage3/StageConfig()]
    stage1/StageConfig.mixture_or_task = "onesearch_stage1"
    stage1/StageConfig.num_steps = 300

``onesearch_jax.train.run`` turns these into data streams, a model, a mesh and jitted steps.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
GRPO_CONVERTER = "grpo"
FEATURE_CONVERTERS = ("encdec", "encdec_teacher", GRPO_CONVERTER)
NONFINITE_POLICIES = ("stop", "skip")


def _positive_int(owner: str, name: str, value: object, *, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}.{name} must be an int >= {minimum}, got {value!r}")


def _seconds(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{owner}.{name} must be a number of seconds >= 0, got {value!r}")


def check_nonfinite_policy(owner: str, policy: object, max_steps: object) -> None:
    """Raises ValueError unless ``policy`` is one of ``NONFINITE_POLICIES`` and ``max_steps`` an int >= 0."""
    if policy not in NONFINITE_POLICIES:
        raise ValueError(f"{owner}.nonfinite_policy must be one of {NONFINITE_POLICIES}, got {policy!r}")
    _positive_int(owner, "max_nonfinite_steps", max_steps, minimum=0)


def _lengths(owner: str, lengths: Mapping[str, int]) -> None:
    if not isinstance(lengths, Mapping) or "inputs" not in lengths or "targets" not in lengths:
        raise ValueError(
            f"{owner}.task_feature_lengths must map at least 'inputs' and 'targets' to lengths, got {lengths!r}"
        )
    for name, value in lengths.items():
        _positive_int(owner, f"task_feature_lengths[{name!r}]", value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StageConfig:
    """One stage of the curriculum: a seqio Task or Mixture trained for ``num_steps`` steps.

    Attributes:
        name: the stage's name in logs and metrics (letters, digits, ``_.-``).
        mixture_or_task: a registered seqio Task or Mixture (``tasks/onesearch.py``).
        num_steps: optimizer steps spent in this stage (one global batch per step).
        task_feature_lengths: tokens per feature, e.g. ``{"inputs": 256, "targets": 8}``; longer
            inputs are truncated (marked), longer targets are an error.
        feature_converter: ``encdec`` (SFT), ``encdec_teacher`` (adds the teacher's encoder input,
            for LR-ESD) or ``grpo`` (adds the session's feedback; a TPMA-GRPO stage, trained by
            ``onesearch_jax.train.grpo``; every stage of such a run is one, and the run starts from
            ``TrainConfig.init_checkpoint``).
    """

    name: str
    mixture_or_task: str
    num_steps: int
    task_feature_lengths: Mapping[str, int]
    feature_converter: str = "encdec"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"StageConfig.name must be letters, digits or _.- only, got {self.name!r}")
        if not isinstance(self.mixture_or_task, str) or not self.mixture_or_task:
            raise ValueError(
                f"StageConfig.mixture_or_task must name a seqio Task or Mixture, got {self.mixture_or_task!r}"
            )
        _positive_int(f"StageConfig({self.name})", "num_steps", self.num_steps)
        _lengths(f"StageConfig({self.name})", self.task_feature_lengths)
        if self.feature_converter not in FEATURE_CONVERTERS:
            raise ValueError(
                f"StageConfig.feature_converter must be one of {FEATURE_CONVERTERS}, got {self.feature_converter!r}"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """A training run: where it reads and writes, its stages, batch, evaluation and logging cadence.

    Attributes:
        model_dir: the run's directory: ``checkpoints/``, ``metrics.jsonl``, ``tensorboard/``,
            ``config.gin``. A restart with the same ``model_dir`` resumes from its latest checkpoint.
        examples_dir: records from ``onesearch data build-examples``.
        vocab_dir: the vocabulary trained with them (``SIDS_DIR/vocab``).
        stages: the curriculum, trained in order.
        batch_size: the global batch (all hosts together); it must split over the ``data`` x ``fsdp``
            mesh axes and the optimizer's microbatches.
        eval_tasks: seqio Tasks evaluated (teacher-forced loss and token accuracy) on their
            validation split; metrics are named ``eval/<task>/<metric>``.
        eval_feature_lengths: feature lengths of the evaluation batches.
        eval_every_steps: evaluate every this many steps (and at the end); 0 = only at the end.
        eval_batch_size: rows per evaluation batch (default: ``batch_size``); the last partial batch
            is padded with zero-weight rows, so every example counts exactly once.
        eval_max_batches: stop each evaluation after this many batches (None = the whole split).
        log_every_steps: write train metrics (means over the interval) every this many steps.
        seed: parameter initialisation and dropout.
        data_seed: shuffling and mixture sampling (stage ``i`` uses ``data_seed + i``).
        input_shards: the training streams' shards K. Host h of H reads shards h K/H .. (h+1) K/H - 1,
            each giving ``batch_size / K`` rows of every batch, so the global batches, and with
            them the run, are the same on any number of hosts dividing K (a 2-host debug run
            reproduces the 1-host one; a restart may change the host count). None: one shard per
            host (each host reads 1/H of the data; the batches then depend on H).
        vocab_pad_multiple: the embedding has ``vocab_size`` rounded up to this (T5X pads 32100 to
            32128) so that the ``vocab`` axis splits over ``tensor``; padded ids are never targets.
        progress_bar: show a tqdm bar (step, loss, examples/s) on process 0.
        tensorboard: also write TensorBoard event files (``tensorboardX``) under ``model_dir``.
        nonfinite_policy: what a step whose loss or gradients are NaN or infinite does (its update
            is never applied): ``stop`` raises ``NonFiniteError`` naming the step, its batch and the
            tensor; ``skip`` logs a warning, counts it (``skipped_nonfinite_steps`` in the train
            metrics) and trains on.
        max_nonfinite_steps: with ``skip``, stop anyway at the non-finite step after this many
            skipped ones, over the whole run (0 = no limit); ignored by ``stop``.
        init_checkpoint: the ``checkpoints`` directory of another run whose parameters this run
            starts from (T5X's fine-tuning from ``INITIAL_CHECKPOINT_PATH``): the parameters only,
            with a fresh optimizer state at step 0 (None: random initialisation). Read only when
            ``model_dir`` has no checkpoint of its own (a restart resumes from those). A TPMA-GRPO
            run needs one: it is also its frozen reference policy, read again on every restart.
        init_checkpoint_step: the step of ``init_checkpoint`` to read (None: its latest intact one).
        preemption_deadline_seconds: after SIGTERM the run finishes its step, writes a checkpoint
            and exits 0; if that checkpoint has not landed this many seconds after the signal, the
            process logs the step it was writing and the step a restart resumes from, and exits
            with status 75 (0 = no deadline). Set it a few seconds under the scheduler's grace
            period so the process reports before it is killed. The default, 120, is not shorter
            than common grace periods (30 s: Kubernetes, GCE and TPU spot VMs, Slurm's KillWait;
            120 s: AWS spot), so it never cuts short a save that the scheduler would have let
            finish, and it still ends a hung save where no SIGKILL follows.
    """

    model_dir: str
    examples_dir: str
    vocab_dir: str
    stages: Sequence[StageConfig]
    batch_size: int = 32
    eval_tasks: Sequence[str] = ("onesearch_personalized_raw",)
    eval_feature_lengths: Mapping[str, int] = dataclasses.field(default_factory=lambda: {"inputs": 256, "targets": 8})
    eval_every_steps: int = 200
    eval_batch_size: int | None = None
    eval_max_batches: int | None = None
    log_every_steps: int = 10
    seed: int = 0
    data_seed: int = 0
    input_shards: int | None = None
    vocab_pad_multiple: int = 128
    progress_bar: bool = True
    tensorboard: bool = True
    nonfinite_policy: str = "stop"
    max_nonfinite_steps: int = 0
    init_checkpoint: str | None = None
    init_checkpoint_step: int | None = None
    preemption_deadline_seconds: float = 120.0

    def __post_init__(self) -> None:
        for name in ("model_dir", "examples_dir", "vocab_dir"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"TrainConfig.{name} must be a non-empty path, got {getattr(self, name)!r}")
        stages = tuple(self.stages)
        if not stages or not all(isinstance(s, StageConfig) for s in stages):
            raise ValueError(f"TrainConfig.stages must be a non-empty list of StageConfig, got {self.stages!r}")
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"TrainConfig.stages have repeated names: {names}")
        object.__setattr__(self, "stages", stages)
        object.__setattr__(self, "eval_tasks", tuple(self.eval_tasks))
        _positive_int("TrainConfig", "batch_size", self.batch_size)
        _positive_int("TrainConfig", "eval_every_steps", self.eval_every_steps, minimum=0)
        _positive_int("TrainConfig", "log_every_steps", self.log_every_steps)
        _positive_int("TrainConfig", "vocab_pad_multiple", self.vocab_pad_multiple)
        _positive_int("TrainConfig", "seed", self.seed, minimum=0)
        _positive_int("TrainConfig", "data_seed", self.data_seed, minimum=0)
        if self.input_shards is not None:
            _positive_int("TrainConfig", "input_shards", self.input_shards)
            if self.batch_size % self.input_shards:
                raise ValueError(f"TrainConfig.batch_size {self.batch_size} does not split over its "
                                 f"{self.input_shards} input_shards")  # fmt: skip
        if self.eval_batch_size is not None:
            _positive_int("TrainConfig", "eval_batch_size", self.eval_batch_size)
        if self.eval_max_batches is not None:
            _positive_int("TrainConfig", "eval_max_batches", self.eval_max_batches)
        if self.eval_tasks:
            _lengths("TrainConfig(eval)", self.eval_feature_lengths)
        if not all(isinstance(t, str) and t for t in self.eval_tasks):
            raise ValueError(f"TrainConfig.eval_tasks must be task names, got {self.eval_tasks!r}")
        check_nonfinite_policy("TrainConfig", self.nonfinite_policy, self.max_nonfinite_steps)
        if self.init_checkpoint is not None and (not isinstance(self.init_checkpoint, str) or not self.init_checkpoint):
            raise ValueError(
                f"TrainConfig.init_checkpoint must be a checkpoints directory or None, got {self.init_checkpoint!r}"
            )
        if self.init_checkpoint_step is not None:
            _positive_int("TrainConfig", "init_checkpoint_step", self.init_checkpoint_step, minimum=0)
        grpo = [s.name for s in stages if s.feature_converter == GRPO_CONVERTER]
        if grpo and len(grpo) != len(stages):
            raise ValueError(
                f"TrainConfig.stages mixes TPMA-GRPO stages {grpo} with others {names}: a GRPO run has only GRPO "
                "stages (start it from the other run's checkpoint, TrainConfig.init_checkpoint)"
            )
        if grpo and self.init_checkpoint is None:
            raise ValueError(
                f"TrainConfig.stages {grpo} are TPMA-GRPO stages, which start from a trained policy (and keep it as "
                "the reference): set TrainConfig.init_checkpoint to its checkpoints directory"
            )
        _seconds("TrainConfig", "preemption_deadline_seconds", self.preemption_deadline_seconds)

    @property
    def is_grpo(self) -> bool:
        """The run trains TPMA-GRPO stages (all its stages are)."""
        return self.stages[0].feature_converter == GRPO_CONVERTER

    @property
    def total_steps(self) -> int:
        """Steps of all stages together."""
        return sum(stage.num_steps for stage in self.stages)

    def stage_at(self, step: int) -> tuple[int, int]:
        """(stage index, steps already taken in that stage) for global ``step`` (0-based, < total)."""
        if not 0 <= step < self.total_steps:
            raise ValueError(f"step {step} is outside the run's {self.total_steps} steps")
        start = 0
        for index, stage in enumerate(self.stages):
            if step < start + stage.num_steps:
                return index, step - start
            start += stage.num_steps
        raise AssertionError("unreachable")

    def stage_start(self, index: int) -> int:
        """The global step at which stage ``index`` begins."""
        return sum(stage.num_steps for stage in self.stages[:index])

    @property
    def global_eval_batch_size(self) -> int:
        """``eval_batch_size`` or ``batch_size``."""
        return self.eval_batch_size or self.batch_size
