"""``launch/multihost_local.sh``: two processes of one ``onesearch train`` job (2 CPU devices each,
gloo collectives) train the run that one process on 4 devices trains.

With ``TrainConfig.input_shards=2`` each process reads its own shard of every stream and the global
batches are the one-process run's (``tests/tasks/test_onesearch_tasks.py`` pins the streams), so the
losses agree step by step. Process 0 alone writes the metrics; both write the checkpoint (orbax,
one OCDBT shard per process), which reads back equal to the one-process run's.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from tests.test_main_train import base_args, onesearch

ROOT = Path(__file__).resolve().parents[2]
STEPS = {"stage1": 2, "stage2": 1, "stage3": 1}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _args(records: Path, model_dir: Path) -> list[str]:
    return base_args(
        records, model_dir,
        *(f"--gin.{stage}/StageConfig.num_steps={steps}" for stage, steps in STEPS.items()),
        "--gin.TrainConfig.input_shards=2", "--gin.TrainConfig.log_every_steps=1",
        "--gin.TrainConfig.eval_every_steps=0", "--gin.OptimizerConfig.warmup_steps=1",
        "--gin.T5Config.dtype='float32'",  # bf16 activations would differ by reduction order
    )  # fmt: skip


def _train_losses(model_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    train = [row for row in rows if row.get("split") == "train"]
    steps = [row["step"] for row in train]
    assert len(steps) == len(set(steps)), f"a step logged twice (by two processes?): {steps}"
    return {row["step"]: row["loss"] for row in train}


def _state(model_dir: Path, step: int) -> dict:
    path = model_dir / "checkpoints" / str(step) / "state"
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(path).item_metadata.tree
    return checkpointer.restore(path, restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                                                                tree))  # fmt: skip


def test_two_local_processes_train_what_one_process_trains(world_records, tmp_path):
    total = sum(STEPS.values())
    env = {**os.environ, "ONESEARCH": f"{sys.executable} -m onesearch_jax.main"}
    env.pop("XLA_FLAGS", None)
    launch = subprocess.run(
        ["bash", str(ROOT / "launch" / "multihost_local.sh"), "-n", "2", "-d", "2", "-p", str(_free_port()), "-l",
         str(tmp_path / "logs"), "--", "train", *_args(world_records, tmp_path / "two")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert launch.returncode == 0, (launch.stdout + launch.stderr)[-4000:]
    for process in (0, 1):
        log = (tmp_path / "logs" / f"process_{process}.log").read_text()
        assert "mesh {'data': 4, 'fsdp': 1, 'tensor': 1}" in log and f"trained to step {total}" in log
    single = onesearch("train", *_args(world_records, tmp_path / "one"), devices=4)
    assert single.returncode == 0, single.stderr[-4000:]

    two, one = _train_losses(tmp_path / "two"), _train_losses(tmp_path / "one")
    assert sorted(two) == sorted(one) == list(range(1, total + 1))
    for step in one:
        assert abs(two[step] - one[step]) <= 1e-5, (step, two[step], one[step])
    assert len(set(one.values())) == total  # the steps trained on different batches

    written = tmp_path / "two" / "checkpoints" / str(total) / "state"
    assert {p.name for p in written.glob("ocdbt.process_*")} == {"ocdbt.process_0", "ocdbt.process_1"}
    state_two, state_one = _state(tmp_path / "two", total), _state(tmp_path / "one", total)
    assert int(state_two["step"]) == int(state_one["step"]) == total
    leaves = zip(jax.tree.leaves(state_two["params"]), jax.tree.leaves(state_one["params"]), strict=True)
    assert max(float(np.max(np.abs(a - b))) for a, b in leaves) <= 1e-5
