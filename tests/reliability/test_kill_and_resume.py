"""SIGKILL at a random step, restart: the same parameters (bitwise) and the same examples as an
uninterrupted run. ``onesearch train`` as users run it, on the small world's records, tiny model.

The kill lands at a random moment after the first checkpoint (the seed is printed, so a failure
can be replayed with ``KILL_SEED=...``). The restarted run redoes the steps after its latest
checkpoint; each step's training loss (a function of the batch it consumed and the parameters)
must equal the uninterrupted run's, float for float, and the final checkpoints must be equal
byte for byte, data position included.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import jax
import numpy as np

from onesearch_jax.train.checkpoints import CheckpointConfig, Checkpointer
from tests.test_main_train import ROOT, base_args, command, environment

STEPS = ["--gin.stage1/StageConfig.num_steps=4", "--gin.stage2/StageConfig.num_steps=4",
         "--gin.stage3/StageConfig.num_steps=4", "--gin.CheckpointConfig.save_every_steps=2",
         "--gin.CheckpointConfig.keep_last=20", "--gin.CheckpointConfig.keep_best=0",
         "--gin.TrainConfig.log_every_steps=1", "--gin.TrainConfig.eval_tasks=[]",
         "--gin.OptimizerConfig.warmup_steps=1"]  # fmt: skip


def _train(records: Path, model_dir: Path, *, kill_after: float | None = None) -> bool:
    """Runs ``onesearch train``; with ``kill_after``, SIGKILLs it that long after its first checkpoint.

    Returns whether it was killed (False: it finished first).
    """
    proc = subprocess.Popen(command("train", *base_args(records, model_dir, *STEPS)), cwd=ROOT, env=environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    if kill_after is None:
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        return False
    deadline = time.monotonic() + 300
    while not _complete_steps(model_dir):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    time.sleep(kill_after)
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    return True


def _complete_steps(model_dir: Path) -> list[int]:
    """Steps with a committed checkpoint directory (orbax writes ``<step>.orbax-checkpoint-tmp`` first)."""
    root = model_dir / "checkpoints"
    return sorted(int(p.name) for p in root.glob("*") if p.name.isdigit()) if root.is_dir() else []


def _losses(model_dir: Path) -> dict[int, float]:
    """step -> training loss, each step logged once (a restart sets aside what the killed run logged later)."""
    train = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in train if r["split"] == "train"]
    assert steps == sorted(set(steps)), f"train steps logged twice or out of order: {steps}"
    return {r["step"]: r["loss"] for r in train if r["split"] == "train"}


def _final(model_dir: Path) -> tuple[list[np.ndarray], dict]:
    config = CheckpointConfig(directory=model_dir / "checkpoints", save_every_steps=2)
    with Checkpointer(config, read_only=True) as checkpointer:
        step = checkpointer.latest_step()
        assert step == 12
        data = json.loads((Path(config.path) / str(step) / "data" / "metadata").read_text())
    import orbax.checkpoint as ocp

    path = str(Path(config.path) / str(step) / "state")
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(path).item_metadata.tree
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    state = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
    return [np.asarray(x) for x in jax.tree.leaves(state)], data


def test_sigkill_at_a_random_step_then_restart_equals_an_uninterrupted_run(world_records, tmp_path):
    seed = int(os.environ.get("KILL_SEED", random.randrange(1 << 30)))
    kill_after = random.Random(seed).uniform(0.0, 6.0)
    print(f"KILL_SEED={seed}: SIGKILL {kill_after:.2f} s after the first checkpoint")
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    _train(world_records, reference)
    killed = _train(world_records, resumed, kill_after=kill_after)
    steps_before = _complete_steps(resumed)
    _train(world_records, resumed)
    print(f"killed: {killed}; checkpoints at the kill: {steps_before}")
    assert _losses(resumed) == _losses(reference) and sorted(_losses(reference)) == list(range(1, 13))
    (a, data_a), (b, data_b) = _final(reference), _final(resumed)
    assert data_a == data_b
    assert len(a) == len(b) and all(
        x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(a, b, strict=True)
    )
