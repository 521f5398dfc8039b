"""SIGTERM (a preemption notice): a checkpoint with the data position and exit 0, within a deadline.

The loop finishes its step, skips an evaluation due at that step, writes a checkpoint and waits for
it. Past ``deadline_seconds`` after the signal a watchdog logs one line and ends the process with
status 75; the half-written step stays ``<step>.orbax-checkpoint-tmp`` and a restart resumes from
the previous complete step. The loop runs the fast stand-in model; ``onesearch train`` runs in a
subprocess on the small world's records (the ``world_records`` fixture).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from onesearch_jax.models.partitioning import shard_batch
from onesearch_jax.train import preemption
from onesearch_jax.train.checkpoints import CheckpointConfig, Checkpointer, abstract_train_state
from onesearch_jax.train.metrics_writer import MetricsWriter
from onesearch_jax.train.preemption import DEADLINE_EXIT_STATUS, PreemptionWatcher
from onesearch_jax.train.run_config import StageConfig, TrainConfig
from onesearch_jax.train.trainer import LoopConfig, LoopResult, train_loop
from tests.reliability.slow_commit import never_commit
from tests.test_main_train import ROOT, base_args, command, environment
from tests.train.test_trainer import ABSTRACT, INIT, MESH, SHARDINGS, STEP, StopAt, assert_bitwise, stages

DEADLINE = 5.0  # seconds: the subprocess's stop checkpoint never lands (its step-2 save lands long before)


def train(
    model_dir: Path,
    *,
    watcher: PreemptionWatcher | None = None,
    signal_after: int | None = None,
    evaluate: Callable[[Any], dict[str, float]] | None = None,
    eval_every_steps: int = 0,
    keep_best: int = 0,
) -> LoopResult:
    """Trains the stand-in model 3 + 4 steps from the latest intact checkpoint, saving every 2 steps
    (async, as ``onesearch train`` does); with ``signal_after``, this process sends itself SIGTERM
    during that step of this call."""
    config = CheckpointConfig(directory=model_dir / "ckpt", save_every_steps=2, keep_last=5, keep_best=keep_best)
    checkpointer = Checkpointer(config)
    state, data_state = INIT(), None
    latest = checkpointer.latest_intact_step()
    if latest is not None:
        state, data_state = checkpointer.restore(latest, abstract_state=abstract_train_state(ABSTRACT, SHARDINGS))
    writer = MetricsWriter(model_dir, tensorboard=False, start_step=latest or 0)
    calls = itertools.count(1)

    def train_step(state: Any, batch: Any) -> Any:
        out = STEP(state, batch)
        if next(calls) == signal_after:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    try:
        return train_loop(
            state, stages=stages([]), train_step=train_step, shard=lambda b: shard_batch(b, MESH),
            config=LoopConfig(global_batch_size=8, log_every_steps=1, eval_every_steps=eval_every_steps,
                              progress_bar=False),
            checkpointer=checkpointer, writer=writer, evaluate=evaluate, watcher=watcher, data_state=data_state,
        )  # fmt: skip
    finally:
        writer.close()
        checkpointer.close()


def child(model_dir: str) -> None:
    """The subprocess of the deadline test: SIGTERM during step 3, whose checkpoint never lands."""
    never_commit(3)
    with PreemptionWatcher(deadline_seconds=DEADLINE) as watcher:
        train(Path(model_dir), watcher=watcher, signal_after=3)
    raise AssertionError("unreachable: the deadline ends the process")


@pytest.fixture
def exits(monkeypatch) -> list[int]:
    """The statuses the watchdog exits with; recorded instead (its thread then ends, pytest goes on)."""
    statuses: list[int] = []
    monkeypatch.setattr(preemption.os, "_exit", statuses.append)
    return statuses


def watchdog_ends(within: float) -> bool:
    """Whether no deadline watchdog thread runs, waiting up to ``within`` seconds for it to end."""
    end = time.monotonic() + within
    while "preemption-deadline" in [thread.name for thread in threading.enumerate()]:
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def sigterm_during_training(program: list[str], model_dir: Path) -> tuple[int, str, str]:
    """Starts ``program`` (an ``onesearch train``), sends SIGTERM once 3 steps are logged; (status, stdout, stderr)."""
    proc = subprocess.Popen(program, cwd=ROOT, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    metrics = model_dir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):  # training is under way
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout, stderr


def cli_args(records: Path, model_dir: Path, deadline: float) -> list[str]:
    """A first stage longer than the test, no periodic checkpoint, no evaluation."""
    return base_args(records, model_dir, "--gin.stage1/StageConfig.num_steps=100000",
                     "--gin.TrainConfig.log_every_steps=1", "--gin.CheckpointConfig.save_every_steps=100000",
                     "--gin.TrainConfig.eval_tasks=[]",
                     f"--gin.TrainConfig.preemption_deadline_seconds={deadline}")  # fmt: skip


def test_preemption_watcher_turns_sigterm_into_a_flag_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionWatcher() as watcher:
        assert not watcher.should_stop(1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert watcher.requested and watcher.should_stop(1)
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_during_a_slow_save_exits_75_at_the_deadline_and_a_restart_resumes_from_the_previous_step(tmp_path):
    model_dir = tmp_path / "run"
    code = ("from onesearch_jax.xla_flags import apply_xla_defaults; apply_xla_defaults(); "
            f"from tests.reliability.test_sigterm import child; child({str(model_dir)!r})")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment(), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == DEADLINE_EXIT_STATUS == 75, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if "preemption deadline" in line]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].endswith(
        "preemption deadline: 5 s after SIGTERM the checkpoint of step 3 had not landed; a restart resumes from "
        "step 2, the newest complete checkpoint; exiting with status 75"
    )
    assert sorted(p.name for p in (model_dir / "ckpt").iterdir()) == ["2", "3.orbax-checkpoint-tmp"]  # never committed

    resumed = train(model_dir)
    assert (resumed.start_step, resumed.step) == (2, 7)
    assert_bitwise(resumed.state, train(tmp_path / "straight").state)  # nothing of step 3 was restored


def test_the_deadline_is_cancelled_once_the_stop_checkpoint_has_landed(tmp_path, exits):
    with PreemptionWatcher(deadline_seconds=60) as watcher:
        result = train(tmp_path, watcher=watcher, signal_after=3)
        assert result.preempted and result.step == 3
        assert watchdog_ends(within=5.0)  # before the watcher's exit: the loop cancelled it
    assert exits == []
    with Checkpointer(CheckpointConfig(directory=tmp_path / "ckpt"), read_only=True) as checkpointer:
        assert checkpointer.all_steps() == [2, 3]
        _, data = checkpointer.restore(3, abstract_state=abstract_train_state(ABSTRACT, SHARDINGS))
    assert data == {"stage": "s1", "stream": None, "skipped_nonfinite_steps": 0}  # the data position


def test_the_deadline_names_the_step_a_restart_resumes_from_and_exits_75(caplog, exits):
    with PreemptionWatcher(deadline_seconds=0.2) as watcher:
        watcher.track(lambda: 4)
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not exits and time.monotonic() < deadline:
            time.sleep(0.05)
    assert exits == [75]
    assert ("preemption deadline: 0.2 s after SIGTERM the loop had not started its stop checkpoint; a restart "
            "resumes from step 4, the newest complete checkpoint; exiting with status 75") in caplog.text  # fmt: skip


def test_without_a_deadline_no_watchdog_runs():
    with PreemptionWatcher(deadline_seconds=0):
        assert watchdog_ends(within=0)
    with PreemptionWatcher(deadline_seconds=1):
        assert not watchdog_ends(within=0)
    assert watchdog_ends(within=0)  # joined on exit


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), True, "30"])
def test_the_deadline_is_validated(value):
    stage = StageConfig(name="s", mixture_or_task="t", num_steps=1, task_feature_lengths={"inputs": 4, "targets": 4})
    fields = dict(model_dir="m", examples_dir="e", vocab_dir="v", stages=[stage])
    assert TrainConfig(**fields).preemption_deadline_seconds == 120
    with pytest.raises(ValueError, match=r"TrainConfig.preemption_deadline_seconds must be a number of seconds >= 0"):
        TrainConfig(**fields, preemption_deadline_seconds=value)
    if not isinstance(value, bool | str):
        with pytest.raises(ValueError, match="deadline_seconds must be a number >= 0"):
            PreemptionWatcher(deadline_seconds=value)


def test_hosts_agree_at_sync_steps_and_one_without_the_signal_starts_its_deadline(monkeypatch, caplog, exits):
    import jax
    from jax.experimental import multihost_utils

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    gathered = []
    monkeypatch.setattr(multihost_utils, "process_allgather",
                        lambda x: gathered.append(int(x)) or np.asarray([int(x), 1]))  # fmt: skip
    with PreemptionWatcher(sync_every_steps=2, deadline_seconds=0.2) as watcher:
        assert not watcher.should_stop(3) and gathered == []  # only at multiples of sync_every_steps
        time.sleep(0.5)
        assert exits == []  # no deadline before this host knows of a stop
        assert watcher.should_stop(4) and gathered == [0]  # the other host got the signal
        deadline = time.monotonic() + 10
        while not exits and time.monotonic() < deadline:
            time.sleep(0.05)
    assert exits == [75] and "0.2 s after another process's stop signal" in caplog.text


@pytest.mark.parametrize(
    "eval_every_steps, keep_best, stop, evaluated",
    [
        (3, 0, 3, [6, 7]),  # an evaluation every 3 steps
        (0, 1, 4, [2, 6, 7]),  # an evaluation at every checkpoint (keep_best)
    ],
)
def test_an_evaluation_due_at_the_preempted_step_is_skipped(tmp_path, eval_every_steps, keep_best, stop, evaluated):
    seen: list[int] = []

    def evaluate(state: Any) -> dict[str, float]:
        seen.append(int(state.step))
        return {"eval/loss": float(state.step)}

    kwargs = dict(evaluate=evaluate, eval_every_steps=eval_every_steps, keep_best=keep_best)
    first = train(tmp_path, watcher=StopAt(stop), **kwargs)
    assert first.preempted and first.step == stop and first.eval_metrics == ({"eval/loss": 2.0} if keep_best else {})
    with Checkpointer(CheckpointConfig(directory=tmp_path / "ckpt"), read_only=True) as checkpointer:
        assert checkpointer.latest_step() == stop  # written all the same
    second = train(tmp_path, **kwargs)
    assert second.start_step == stop and second.step == 7
    assert seen == evaluated  # the restart does not redo the skipped one


def test_sigterm_saves_a_checkpoint_and_exits_0(world_records, tmp_path):
    model_dir = tmp_path / "run"
    status, stdout, stderr = sigterm_during_training(command("train", *cli_args(world_records, model_dir, 60)),
                                                     model_dir)  # fmt: skip
    assert status == 0, stderr[-3000:]
    assert "preempted: checkpoint written at step" in stdout and "preemption deadline" not in stderr
    step = int(stdout.split("checkpoint written at step ")[1].split()[0])
    assert step >= 3
    assert (model_dir / "checkpoints" / str(step)).is_dir()
    data = json.loads((model_dir / "checkpoints" / str(step) / "data" / "metadata").read_text())
    assert data["stage"] == "stage1_alignment" and data["stream"]["position"] == step


@pytest.mark.slow  # about 50 s: `onesearch train` compiling the tiny T5; the loop tests above cover the rest
def test_onesearch_train_exits_75_when_its_stop_checkpoint_misses_the_deadline(world_records, tmp_path):
    model_dir = tmp_path / "run"
    program = [sys.executable, "-m", "tests.reliability.slow_commit", "train", *cli_args(world_records, model_dir, 3)]
    status, stdout, stderr = sigterm_during_training(program, model_dir)
    assert status == 75, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if "preemption deadline" in line]
    assert len(lines) == 1, stderr[-3000:]
    found = re.search(r"preemption deadline: 3 s after SIGTERM the checkpoint of step (\d+) had not landed; a restart "
                      r"starts from scratch \(no complete checkpoint\); exiting with status 75$", lines[0])  # fmt: skip
    assert found and int(found[1]) >= 3, lines[0]
    assert sorted(p.name for p in (model_dir / "checkpoints").iterdir()) == [f"{found[1]}.orbax-checkpoint-tmp"]
    assert "preempted" not in stdout
