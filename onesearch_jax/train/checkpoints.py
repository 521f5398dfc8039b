"""Orbax checkpoints of the train state, saved with the data position: async, keep-last-K and best-by-metric.

One :class:`Checkpointer` wraps one ``ocp.CheckpointManager`` whose step directories hold three or
four items:

- ``state``: the :class:`~onesearch_jax.train.state.TrainState`'s step, parameters, optimizer state
  and RNG key (a dict of them), written sharded (each host writes its shards) and restored onto the
  target shardings (each host reads only its shards);
- ``teacher``: the state's EMA teacher parameters, when it has them (LR-ESD ``ema`` mode), sharded
  like ``state``. An item of its own keeps ``state`` the same whether or not a run has a teacher:
  any run restores another's parameters and optimizer state, and a run with a teacher that restores
  a checkpoint written without one gets ``teacher=None`` and decides (``train_run``);
- ``data``: JSON, the data iterator state (``ResumableBatches.state()``), so a restart resumes the
  stream where the checkpointed step left it;
- ``meta``: JSON, the library versions, the RNG key implementation and caller-given fields.

Retention: orbax's own ``max_to_keep`` + ``best_fn`` keeps the K *best* checkpoints only, so a
run could lose its latest one. We set ``preservation_policy`` instead (orbax >= 0.11) to
``AnyPreservationPolicy([LatestN(keep_last), BestN(keep_best)])``: a step survives if it is among
the last ``keep_last`` **or** the best ``keep_best`` by ``best_metric``. ``best_fn`` is still set
(when ``keep_best > 0``) because orbax writes a step's metrics only when it tracks a best metric;
``BestN`` runs with ``keep_checkpoints_without_metrics=False`` so steps saved without metrics age out
through ``LatestN`` like any other.

Integrity: once a step is complete, process 0 writes ``checksums.json`` into its directory
(:mod:`~onesearch_jax.train.checkpoint_integrity`). Restoring the latest step verifies it first;
a step whose files no longer match (truncated, overwritten) is reported, renamed to
``<step>.corrupt-<time>`` (read-only jobs just skip it) and the previous intact step is used. A
step asked for by number that does not verify is an error naming the file.

Disk space: :meth:`Checkpointer.check_free_space` refuses to start a run whose file system cannot
hold the checkpoints it keeps (sized by :func:`checkpoint_bytes` from the abstract state). A save
that fails (a full disk: tensorstore's ``RESOURCE_EXHAUSTED``, or an ``OSError``) raises
:class:`CheckpointWriteError` naming the step and the directory; orbax writes a step under
``<step>.orbax-checkpoint-tmp`` and renames it only once every item is written, so a step that
failed there is never listed, and one whose ``checksums.json`` could not be written is moved to
``<step>.incomplete-<time>``: neither is ever restored.

The typed PRNG key is stored as its raw ``key_data`` (orbax serialises plain arrays) and re-wrapped
on restore with the implementation recorded in ``meta``.

    ckpt = Checkpointer(CheckpointConfig(directory=workdir / "checkpoints", save_every_steps=1000))
    ckpt.save(step, state, batches.state(), metrics={"eval/loss": 1.7})
    state, data_state = ckpt.restore(abstract_state=abstract_train_state(state, shardings))
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from orbax.checkpoint import checkpoint_managers as ocp_managers

from onesearch_jax.train import checkpoint_integrity as integrity
from onesearch_jax.train.checkpoint_config import CheckpointConfig
from onesearch_jax.train.state import TrainState

__all__ = [
    "CheckpointConfig",
    "CheckpointWriteError",
    "Checkpointer",
    "abstract_train_state",
    "check_writable",
    "checkpoint_bytes",
]

FORMAT_VERSION = 1
_ITEMS = ("state", "data", "meta", "teacher")
_CORE_FIELDS = ("step", "params", "opt_state", "rng")  # the ``state`` item: TrainState without its teacher


class CheckpointWriteError(OSError):
    """A checkpoint cannot be written: too little free space for the run, or a save that failed."""


def checkpoint_bytes(state: TrainState) -> int:
    """An upper estimate of one checkpoint of ``state`` (concrete or abstract) on disk, in bytes.

    The parameters, optimizer state and teacher at their dtypes' sizes plus 10% (orbax compresses them with
    zstd; trained float32 values barely shrink), and 2 KiB per array for orbax's metadata (measured:
    0.9 to 1.1 KiB per array).
    """
    leaves = jax.tree.leaves((state.params, state.opt_state, state.teacher))
    raw = sum(math.prod(x.shape) * x.dtype.itemsize for x in leaves)
    return int(raw * 1.1) + 2048 * len(leaves)


def check_writable(directory: str | os.PathLike[str]) -> None:
    """Creates ``directory`` if needed and writes, then deletes, a temporary file in it.

    Call before training so an unwritable model dir fails at once, not at the first checkpoint.

    Raises:
        PermissionError: the directory cannot be created or written, with its path in the message.
    """
    text = os.fspath(directory)
    if "://" in text:  # remote file systems: orbax reports write errors itself
        return
    path = Path(text).absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_check_") as probe:
            probe.write(b"ok")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        raise PermissionError(f"checkpoint directory {path} is not writable: {error}") from error


def abstract_train_state(state: TrainState, shardings: TrainState | None = None) -> TrainState:
    """A ``TrainState`` of ``jax.ShapeDtypeStruct`` (with ``shardings`` if given) to restore into.

    ``state`` may be concrete or ``jax.eval_shape``-abstract; without ``shardings`` the leaves keep
    their own shardings (concrete arrays) or none (restored onto the default device).
    """
    if shardings is None:
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), state
        )
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)


def _core(state: TrainState) -> dict[str, Any]:
    """The ``state`` item: the state's fields other than its teacher, as a dict (the layout a
    ``TrainState`` without a teacher field had on disk, so older checkpoints restore unchanged)."""
    return {name: getattr(state, name) for name in _CORE_FIELDS}


def _versions() -> dict[str, str]:
    out = {}
    for name in ("jax", "flax", "optax", "orbax-checkpoint"):
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


class Checkpointer:
    """Saves and restores (TrainState, data state) with one ``ocp.CheckpointManager``.

    Args:
        config: the :class:`CheckpointConfig`.
        meta: extra JSON-serialisable fields stored with every checkpoint (e.g. the run's gin config).
        read_only: only read (evaluation, inference): the directory must exist and is never written.

    Raises:
        PermissionError: ``config.directory`` is not writable (checked before anything is built).
        FileNotFoundError: ``read_only`` and the directory does not exist.
    """

    def __init__(self, config: CheckpointConfig, *, meta: Mapping[str, Any] | None = None, read_only: bool = False):
        self.config = config
        self.directory = config.path
        if read_only:
            if not os.path.isdir(self.directory):
                raise FileNotFoundError(f"checkpoint directory {self.directory} does not exist")
        else:
            check_writable(self.directory)
        self._meta = dict(meta or {})
        self._read_only = read_only
        self._unsummed: list[int] = []  # saved steps whose checksums are not written yet
        self._intact: set[int] = set()  # steps verified by this checkpointer (read each file once)
        policies: list[Any] = [ocp_managers.LatestN(n=config.keep_last)]
        best_fn = None
        if config.keep_best:
            metric = config.best_metric
            best_fn = lambda metrics: float(metrics[metric])  # noqa: E731
            policies.append(
                ocp_managers.BestN(
                    get_metric_fn=best_fn,
                    # BestN keeps the *last* n after sorting; descending order puts the lowest last.
                    reverse=config.best_mode == "min",
                    n=config.keep_best,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            # Only multiples of the interval (orbax's default policy also saves the first step seen).
            save_decision_policy=ocp_managers.FixedIntervalPolicy(config.save_every_steps),
            best_fn=best_fn,
            best_mode=config.best_mode,
            preservation_policy=ocp_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=config.async_save,
            create=not read_only,
            read_only=read_only,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=_ITEMS)

    def save(
        self,
        step: int,
        state: TrainState,
        data_state: Mapping[str, Any],
        metrics: Mapping[str, float] | None = None,
        *,
        force: bool = False,
    ) -> bool:
        """Saves ``state`` and ``data_state`` as ``step`` if it is a multiple of ``save_every_steps``.

        Steps at or below the latest saved one are skipped (returns False), forced or not.

        Args:
            step: the step number (usually ``int(state.step)``).
            state: the train state (sharded or not).
            data_state: the JSON-serialisable data iterator state.
            metrics: scalar metrics; required to contain ``best_metric`` when ``keep_best > 0`` for
                this step to compete for best (a step without metrics only counts as recent).
            force: save even off the interval (final save, SIGTERM).

        Returns:
            Whether a checkpoint was started (with ``async_save``, call :meth:`wait` to know it landed).

        Raises:
            ValueError: ``metrics`` lack ``best_metric`` while ``keep_best > 0``.
            CheckpointWriteError: writing this step (or an earlier async one) failed.
        """
        step = int(step)
        if metrics is not None:
            metrics = {str(k): float(v) for k, v in metrics.items()}
            if self.config.keep_best and self.config.best_metric not in metrics:
                raise ValueError(
                    f"metrics for step {step} lack the best metric {self.config.best_metric!r}: {sorted(metrics)}"
                )
        latest = self._manager.latest_step()
        if latest is not None and step <= latest:  # e.g. a forced final save right after a periodic one
            return False
        if not force and not self._manager.should_save(step):
            return False
        impl = str(jax.random.key_impl(state.rng))
        stored = _core(state.replace(rng=jax.random.key_data(state.rng)))
        meta = {**self._meta, "format": FORMAT_VERSION, "step": step, "rng_impl": impl, "versions": _versions()}
        items = {
            "state": ocp.args.StandardSave(stored),
            "data": ocp.args.JsonSave(dict(data_state)),
            "meta": ocp.args.JsonSave(meta),
        }
        if state.teacher is not None:
            items["teacher"] = ocp.args.StandardSave(state.teacher)
        args = ocp.args.Composite(**items)
        try:
            started = self._manager.save(
                step, args=args, metrics=metrics if self.config.keep_best else None, force=True
            )
        except (OSError, ValueError) as error:  # a full disk: tensorstore raises ValueError(RESOURCE_EXHAUSTED)
            raise self._save_failed([*self._unsummed, step], error) from error
        if started:
            self._unsummed.append(step)
            if not self.config.async_save:
                self._write_checksums()
        return bool(started)

    def wait(self) -> None:
        """Blocks until pending async saves are written (and old checkpoints pruned), then writes
        their checksums.

        Raises:
            CheckpointWriteError: a pending save failed.
        """
        try:
            self._manager.wait_until_finished()
        except (OSError, ValueError) as error:
            raise self._save_failed(list(self._unsummed), error) from error
        self._write_checksums()

    def check_free_space(self, checkpoint_size: int, *, disk_usage: Callable[[str], Any] | None = None) -> None:
        """Refuses a run whose file system cannot hold the checkpoints it keeps.

        The run keeps ``keep_last + keep_best`` checkpoints and writes the next one before the
        oldest is deleted; the steps already in the directory hold their space already. Remote
        directories are not checked.

        Args:
            checkpoint_size: bytes of one checkpoint (:func:`checkpoint_bytes` of the abstract state).
            disk_usage: ``shutil.disk_usage`` (the default) or a stand-in returning ``.free`` bytes.

        Raises:
            CheckpointWriteError: too little free space, naming the directory and both byte counts.
        """
        if not integrity.is_local(self.directory):
            return
        kept = self.config.keep_last + self.config.keep_best
        existing = len(self.all_steps())
        missing = max(1, kept + 1 - existing)
        needed = missing * checkpoint_size
        free = (disk_usage or shutil.disk_usage)(self.directory).free
        if free < needed:
            raise CheckpointWriteError(
                f"not enough free space for checkpoints in {self.directory}: {needed:,} bytes needed, {free:,} free "
                f"({missing} more checkpoints of about {checkpoint_size:,} bytes: keep_last + keep_best = {kept} "
                f"kept and one being written, {existing} there already)"
            )

    def _step_dir(self, step: int) -> epath.Path:
        """The step's directory (an ``epath.Path``: a local path or a ``gs://`` one alike)."""
        return epath.Path(self.directory) / str(step)

    def _save_failed(self, steps: Sequence[int], error: Exception) -> CheckpointWriteError:
        """Checksums the steps orbax finished; the error naming those it did not (they stay
        ``<step>.orbax-checkpoint-tmp`` directories, which orbax never lists)."""
        self._manager.reload()
        complete = set(self._manager.all_steps())
        failed = [step for step in steps if step not in complete]
        self._unsummed = [step for step in steps if step in complete]
        self._write_checksums()
        if not failed:
            return CheckpointWriteError(f"checkpointing in {self.directory} failed after steps {list(steps)} were "
                                        f"complete: {error}")  # fmt: skip
        return CheckpointWriteError(
            f"writing checkpoint step {', '.join(map(str, failed))} in {self.directory} failed: {error}; it is not "
            f"a checkpoint and is never restored (the latest complete step is {self._manager.latest_step()})"
        )

    def _write_checksums(self) -> None:
        """``checksums.json`` of every complete step this checkpointer saved (process 0, local paths).

        Raises:
            CheckpointWriteError: a manifest could not be written; its step is moved aside first.
        """
        pending, self._unsummed = self._unsummed, []
        if jax.process_index() != 0 or not integrity.is_local(self.directory):
            return
        for step in pending:
            if step in self._manager.all_steps() and self._step_dir(step).is_dir():
                try:
                    integrity.write_checksums(self._step_dir(step))
                except OSError as error:
                    moved = integrity.quarantine(self._step_dir(step), "incomplete")
                    self._manager.reload()
                    raise CheckpointWriteError(
                        f"writing the checksums of checkpoint step {step} in {self.directory} failed: {error}; "
                        f"the step is not a checkpoint and is never restored (moved to {moved})"
                    ) from error

    def latest_intact_step(self) -> int | None:
        """The newest step whose files match their checksums (None: no checkpoint at all).

        Newer steps that do not match are logged and renamed ``<step>.corrupt-<time>`` (a
        read-only checkpointer only skips them).

        Raises:
            FileNotFoundError: there are checkpoints, but none is intact (each problem named).
        """
        self.wait()
        steps = self.all_steps()
        problems = []
        for step in reversed(steps):
            problem = self.verify(step)
            if problem is None:
                return step
            problems.append(f"step {step}: {problem}")
            if self._read_only:
                logging.warning("checkpoint step %d is corrupt, skipped: %s", step, problem)
            else:
                moved = integrity.quarantine(self._step_dir(step))
                logging.warning("checkpoint step %d is corrupt (%s); moved to %s", step, problem, moved)
                self._manager.reload()
        if problems:
            raise FileNotFoundError(f"no intact checkpoint in {self.directory}: " + "; ".join(problems))
        return None

    def verify(self, step: int) -> str | None:
        """None when ``step``'s files match their checksums (or it has none); else what is wrong."""
        if not integrity.is_local(self.directory) or int(step) in self._intact:
            return None
        problem = integrity.verify_checksums(self._step_dir(int(step)))
        if problem is None:
            self._intact.add(int(step))
        return problem

    def _verified(self, step: int | None) -> int:
        """``step``, or the latest intact one when None; a numbered step that fails verification raises.

        Raises:
            FileNotFoundError: no checkpoint, or not ``step`` (naming the steps that exist).
            ValueError: ``step`` does not match its checksums (naming the file).
        """
        if step is None:
            latest = self.latest_intact_step()
            if latest is None:
                raise FileNotFoundError(f"no checkpoint to restore in {self.directory}")
            return latest
        self.wait()
        steps = self.all_steps()
        if int(step) not in steps:
            raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}; steps there: {steps}")
        problem = self.verify(int(step))
        if problem is not None:
            raise ValueError(f"checkpoint step {step} in {self.directory} is corrupt: {problem}")
        return int(step)

    def latest_step(self) -> int | None:
        """The newest complete step, or None if there is none."""
        return self._manager.latest_step()

    def latest_committed_step(self) -> int | None:
        """The newest step orbax has committed, read from storage (None if there is none).

        Unlike :meth:`latest_step` (the manager's list names a step as soon as its async save
        starts) this lists the directory; it is safe to call from another thread during a save.
        """
        return max(ocp.path.step.checkpoint_steps(self.directory), default=None)

    def all_steps(self) -> list[int]:
        """All complete steps on disk, ascending."""
        return sorted(self._manager.all_steps())

    def best_step(self) -> int | None:
        """The best step by ``best_metric`` (None when ``keep_best == 0`` or no step has metrics)."""
        return self._manager.best_step() if self.config.keep_best else None

    def restore(self, step: int | None = None, *, abstract_state: TrainState) -> tuple[TrainState, dict[str, Any]]:
        """Restores (state, data state) of ``step`` (None: the latest).

        Args:
            step: the step to restore, or None for the latest.
            abstract_state: the target: a ``TrainState`` of ``jax.ShapeDtypeStruct`` with shardings
                (:func:`abstract_train_state`), or a concrete state whose shapes, dtypes and
                shardings are used. Each host reads only the shards these shardings give it.

        Returns:
            ``(state, data state)``. The state has a teacher when ``abstract_state`` has one and the
            checkpoint holds one; otherwise ``teacher`` is None (a teacher on disk that the target
            lacks is not read).

        Raises:
            FileNotFoundError: no (intact) checkpoint in the directory, or not ``step`` (naming what exists).
            ValueError: ``step`` does not match its checksums (the file is named).
        """
        step = self._verified(step)
        target = abstract_train_state(abstract_state)
        rng_target = jax.eval_shape(jax.random.key_data, target.rng)
        rng_target = jax.ShapeDtypeStruct(rng_target.shape, rng_target.dtype, sharding=target.rng.sharding)
        items = {
            "state": ocp.args.StandardRestore(_core(target.replace(rng=rng_target))),
            "data": ocp.args.JsonRestore(),
            "meta": ocp.args.JsonRestore(),
        }
        with_teacher = target.teacher is not None and (self._step_dir(step) / "teacher").is_dir()
        if with_teacher:
            items["teacher"] = ocp.args.StandardRestore(target.teacher)
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        meta = restored["meta"]
        core = dict(restored["state"])
        core["rng"] = jax.random.wrap_key_data(core["rng"], impl=meta["rng_impl"])
        state = TrainState(**core, teacher=restored["teacher"] if with_teacher else None)
        return state, dict(restored["data"])

    def restore_params(self, step: int | None = None, *, abstract_params: Any) -> Any:
        """Restores only the parameters of ``step`` (None: the latest), for evaluation and inference.

        The optimizer state is not read (orbax partial restore), so a job that never trains needs no
        optimizer configuration and reads a third of the bytes of an AdamW checkpoint.

        Args:
            step: the step, or None for the latest.
            abstract_params: the target ``nnx.State`` of ``jax.ShapeDtypeStruct`` with shardings (or
                concrete arrays whose shapes, dtypes and shardings are used).

        Raises:
            FileNotFoundError: no such (intact) checkpoint (naming the steps that exist).
            ValueError: the checkpoint's parameters do not have the target's shapes (another model),
                or ``step`` does not match its checksums.
        """
        step = self._verified(step)
        target = {"params": abstract_train_state(abstract_params)}
        restore_args = jax.tree.map(
            lambda s: ocp.ArrayRestoreArgs(global_shape=s.shape, dtype=s.dtype, sharding=s.sharding), target
        )
        path = str(self._step_dir(step) / "state")
        try:
            restored = ocp.PyTreeCheckpointer().restore(
                path, args=ocp.args.PyTreeRestore(target, restore_args=restore_args, partial_restore=True)
            )
        except ValueError as error:
            raise ValueError(f"the parameters in {path} do not fit this model: {error}") from error
        return restored["params"]

    def restore_meta(self, step: int | None = None) -> dict[str, Any]:
        """The ``meta`` item of ``step`` (None: the latest intact one)."""
        step = self._verified(step)
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def close(self) -> None:
        """Waits for pending saves, writes their checksums and releases the manager."""
        self.wait()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
