"""`onesearch train / eval / infer` as users run them: gin run files, bad configs, resume.

Each command runs in a subprocess on the small world's records (the ``world_records`` fixture),
with ``JAX_LOG_COMPILES=1`` so that the bad-configuration tests can assert that nothing was compiled
before the error. SIGTERM is tested in ``tests/reliability/test_sigterm.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPILE_LOG = "Compiling "  # jax_log_compiles: one WARNING line per compiled computation


def base_args(records: Path, model_dir: Path, *extra: str) -> list[str]:
    return [
        "--gin_file=gin/runs/sft.gin", "--gin_file=gin/models/tiny.gin",
        f"--gin.MODEL_DIR='{model_dir}'", f"--gin.EXAMPLES_DIR='{records / 'out'}'",
        f"--gin.VOCAB_DIR='{records / 'vocab'}'", "--gin.BATCH_SIZE=8", "--gin.TrainConfig.progress_bar=False",
        "--gin.TrainConfig.eval_batch_size=8", "--gin.TrainConfig.eval_max_batches=2",
        "--gin.stage1/StageConfig.task_feature_lengths={'inputs': 64, 'targets': 64}",
        "--gin.stage2/StageConfig.task_feature_lengths={'inputs': 64, 'targets': 64}",
        "--gin.stage3/StageConfig.task_feature_lengths={'inputs': 64, 'targets': 64}",
        "--gin.TrainConfig.eval_feature_lengths={'inputs': 64, 'targets': 64}",
        *extra,
    ]  # fmt: skip


def command(*args: str, devices: int = 1) -> list[str]:
    return [sys.executable, "-m", "onesearch_jax.main", *args]


def environment(devices: int = 1) -> dict[str, str]:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_LOG_COMPILES": "1",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}  # fmt: skip


def onesearch(*args: str, devices: int = 1, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), cwd=ROOT, env=environment(devices), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


@pytest.mark.parametrize(
    "extra, devices, message",
    [
        (["--gin.TrainConfig.batch_sizee=8"], 1, "No configurable matching|doesn't have a parameter|batch_sizee"),
        (["--gin.NoSuchThing.value=1"], 1, "NoSuchThing"),
        (["--gin.MeshConfig.data=3"], 8, "mesh data=3 x fsdp=1 x tensor=1 = 3 devices, but 8 devices are available"),
        (["--gin.MeshConfig.fsdp=3"], 8, "fsdp=3 x tensor=1 = 3 does not divide the 8 available devices"),
        (
            ["--gin.BATCH_SIZE=12"],
            8,
            "TrainConfig.batch_size: batch size 12 is not divisible by the batch mesh axes "
            r"\(data=8 x fsdp=1\) = 8",
        ),
        (["--gin.OptimizerConfig.num_microbatches=3"], 1, "batch size 8 is not divisible .* num_microbatches=3 = 3"),
        (["--gin.TrainConfig.eval_batch_size=4"], 8, "the evaluation batch size: batch size 4 is not divisible"),
        (["--gin.stage1/StageConfig.num_steps=0"], 1, r"StageConfig\(stage1_alignment\).num_steps must be an int"),
    ],
)
def test_bad_config_fails_with_a_clear_message_before_any_compile(world_records, tmp_path, extra, devices, message):
    import re

    run = onesearch("train", *base_args(world_records, tmp_path / "run", *extra), devices=devices)
    assert run.returncode == 2, run.stderr[-3000:]
    error = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert error and re.search(message, error[0]), run.stderr[-3000:]
    assert COMPILE_LOG not in run.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow  # about 2 minutes: five processes; test_run.py checks the same wiring in-process
def test_train_resume_eval_and_infer_from_the_command_line(world_records, tmp_path):
    model_dir = tmp_path / "run"
    steps = ["--gin.stage1/StageConfig.num_steps=2", "--gin.stage2/StageConfig.num_steps=2",
             "--gin.CheckpointConfig.save_every_steps=2", "--gin.TrainConfig.log_every_steps=1",
             "--gin.OptimizerConfig.warmup_steps=1"]  # fmt: skip
    first = onesearch("train", *base_args(world_records, model_dir, *steps, "--gin.stage3/StageConfig.num_steps=1"))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "trained to step 5 (of 5, from 0)" in first.stdout
    second = onesearch("train", *base_args(world_records, model_dir, *steps, "--gin.stage3/StageConfig.num_steps=3"))
    assert second.returncode == 0, second.stderr[-3000:]
    assert "trained to step 7 (of 7, from 5)" in second.stdout
    again = onesearch("train", *base_args(world_records, model_dir, *steps, "--gin.stage3/StageConfig.num_steps=3"))
    assert "nothing to do: the run is complete at step 7" in again.stdout
    assert "BATCH_SIZE = 8" in (model_dir / "config.gin").read_text()  # the operative gin config
    records = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4, 5, 6, 7]

    evaluated = onesearch("eval", *base_args(world_records, model_dir), "--gin_file=gin/runs/eval.gin", "--all_steps",
                          "--gin.EvalConfig.max_queries=16", "--gin.EvalConfig.batch_size=8",
                          "--gin.EvalConfig.input_length=64")  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "Step 6, test split: 16 sessions" in evaluated.stdout and "Step 7, test split" in evaluated.stdout
    assert "| model | click |" in evaluated.stdout and "| bm25 | order |" in evaluated.stdout
    saved = json.loads((model_dir / "eval" / "step_7" / "metrics.json").read_text())
    at_seven = next(r for r in records if r["split"] == "eval" and r["step"] == 7)
    assert saved["teacher_forced"]["eval/onesearch_personalized_raw/loss"] == pytest.approx(
        at_seven["eval/onesearch_personalized_raw/loss"], rel=1e-6
    )
    both = onesearch("eval", *base_args(world_records, model_dir), "--all_steps", "--step=6")
    assert both.returncode != 0 and "at most one of --step, --all_steps and --watch" in both.stderr
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("[query] red dress\n[query] phone case\n", encoding="utf-8")
    inferred = onesearch("infer", *base_args(world_records, model_dir), "--gin_file=gin/runs/infer.gin",
                         f"--gin.InferConfig.inputs_file='{inputs}'", "--gin.InferConfig.batch_size=8",
                         "--gin.InferConfig.input_length=64")  # fmt: skip
    assert inferred.returncode == 0, inferred.stderr[-3000:]
    lines = (model_dir / "infer" / "inputs_step_7.jsonl").read_text().splitlines()
    assert [json.loads(line)["inputs"] for line in lines] == ["[query] red dress", "[query] phone case"]
    assert "decoded 2 examples with step 7" in inferred.stdout
