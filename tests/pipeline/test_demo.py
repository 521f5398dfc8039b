"""``onesearch demo``: its stages, its gin files, its closing report, and (slow) the whole run on a small world."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gin
import pytest

from onesearch_jax import configurables
from onesearch_jax.evaluate.ablation import AblationConfig, AblationRow, run_ablation, write_summary
from onesearch_jax.gin_utils import parse_gin
from onesearch_jax.pipeline.demo import DemoConfig, DemoPaths, demo_report, demo_stages
from onesearch_jax.pipeline.stages import StageResult
from tests.evaluate.test_ablation import FakeRunner

ROOT = Path(__file__).resolve().parents[2]


def test_the_stages_follow_the_data_flow_and_the_runs_read_the_demos_records(tmp_path, clean_gin):
    paths = DemoPaths(tmp_path / "demo")
    stages = demo_stages(DemoConfig(), paths)
    assert [s.name for s in stages] == ["world", "keywords", "sids", "examples", "ablation"]
    assert [s.resumable for s in stages] == [False, False, False, False, True]
    examples = stages[3].command
    assert examples[:5] == ("onesearch", "data", "build-examples", str(paths.world), str(paths.examples))
    assert f"--sids={paths.sids}" in examples and f"--keywords={paths.keywords}" in examples
    assert set(stages[3].outputs) == {str(paths.examples), str(paths.vocab)}
    # every run is an output of the ablation stage: a changed configuration removes them all, or the
    # ablation driver would skip its finished (stale) runs
    assert stages[4].outputs == (str(paths.runs), str(paths.runs / "summary.json"))
    # the ablation command's bindings parse, and point every run at the demo's records
    ablation = stages[4].command
    files = [a.removeprefix("--gin_file=") for a in ablation if a.startswith("--gin_file=")]
    bindings = [a.removeprefix("--gin.") for a in ablation if a.startswith("--gin.")]
    parse_gin([], files, bindings)
    config = configurables.ConfiguredAblation()
    assert config.root == str(paths.runs)
    assert config.common_bindings == (f"EXAMPLES_DIR='{paths.examples}'", f"VOCAB_DIR='{paths.vocab}'")
    assert [(r.name, r.init_from, config.branches(r)) for r in config.rows] == [
        ("sft", "", False), ("lr_esd", "", True), ("tpma_grpo", "lr_esd", False),
    ]  # fmt: skip
    assert config.seeds == (0,)


def test_the_demo_runs_branch_at_the_end_of_sft_stage_2_at_a_saved_step(clean_gin):
    gin.parse_config_files_and_bindings(["gin/demo/ablation.gin"], [], finalize_config=False)
    ablation = configurables.ConfiguredAblation()
    gin.clear_config()
    parse_gin([], ["gin/runs/sft.gin", *ablation.common_gin_files], [])
    train = configurables.ConfiguredTrain()
    assert sum(stage.num_steps for stage in train.stages[:2]) == ablation.branch_step
    assert ablation.branch_step % gin.query_parameter("CheckpointConfig.save_every_steps") == 0
    assert [stage.num_steps for stage in train.stages] == [100, 100, 120]


def test_the_report_shows_the_table_and_where_the_checkpoints_reports_and_plots_are(tmp_path):
    paths = DemoPaths(tmp_path)
    rows = (AblationRow(name="sft", gin_files=["gin/runs/sft.gin"]),
            AblationRow(name="lr_esd", gin_files=["gin/runs/lr_esd.gin"]))  # fmt: skip
    config = AblationConfig(root=str(paths.runs), rows=rows, seeds=(0,))
    run_ablation(config, runner=FakeRunner({(0, "sft"): (0.30, 0.15, 0.2), (0, "lr_esd"): (0.35, 0.16, 0.2)}))
    (paths.runs / "seed0" / "sft" / "eval" / "step_600" / "hr_at_k.png").write_bytes(b"png")
    write_summary(config)
    results = [StageResult(name="world", ran=False, seconds=0.0), StageResult(name="ablation", ran=True, seconds=61)]
    report = demo_report(paths, results, 75.0)
    assert report.startswith("onesearch demo: finished in 1 min 15 s (ran: ablation; up to date: world)")
    assert "| lr_esd | 1 | 0.3500 | 0.1600 | 0.1750 | 0.0800 | +0.0500 | +0.0250 | 1.5000 |" in report
    assert "HR@10 by" not in report  # the segment tables stay in summary.md
    assert "seed0/sft checkpoints" in report and str(paths.runs / "seed0" / "sft" / "checkpoints") in report
    assert f"{paths.runs / 'seed0' / 'sft' / 'eval' / 'step_600'} (metrics.md, hr_at_k.png)" in report
    assert f"{paths.runs / 'seed0' / 'lr_esd' / 'eval' / 'step_600'} (metrics.md)" in report
    assert f"tensorboard --logdir {paths.runs}" in report
    assert report.index("seed0/sft checkpoints") < report.index("seed0/lr_esd checkpoints")  # the rows' order


def test_a_missing_gin_file_stops_the_demo_with_one_error_line_before_any_stage_runs(tmp_path):
    command = [sys.executable, "-m", "onesearch_jax.main", "demo", f"--output_dir={tmp_path / 'demo'}",
               "--gin.DemoConfig.sid_gin='no/such.gin'"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: gin file 'no/such.gin': not found")
    assert "[1/5]" not in result.stdout and not (tmp_path / "demo" / "world").exists()


def test_demo_config_is_validated():
    with pytest.raises(ValueError, match=r"DemoConfig.ablation_gin must be a \.gin file"):
        DemoConfig(ablation_gin="gin/demo/ablation")


@pytest.mark.slow
def test_the_demo_runs_end_to_end_on_a_small_world_and_a_rerun_skips_every_stage(tmp_path):
    """The real commands, shortened: a small world, a 3-level codebook, 8 + 8 + 8 SFT steps, 4 GRPO steps."""
    gin_dir = tmp_path / "gin"
    gin_dir.mkdir()
    (gin_dir / "world.gin").write_text(
        "include 'gin/world/default.gin'\nWorldConfig.num_items = 300\nWorldConfig.num_users = 60\n"
        "WorldConfig.num_sessions = 1500\nWorldConfig.query_pool_size = 200\nWorldConfig.relevance_pairs = 300\n"
    )
    (gin_dir / "sid.gin").write_text(
        "include 'gin/sid/default.gin'\nTfidfSvdConfig.dim = 32\nQuantizerConfig.level_sizes = (8, 4, 4)\n"
        "QuantizerConfig.niter = 10\n"
    )
    (gin_dir / "examples.gin").write_text("include 'gin/examples/default.gin'\nVocabConfig.vocab_size = 3000\n")
    (gin_dir / "runs.gin").write_text(
        "stage1/StageConfig.num_steps = 8\nstage2/StageConfig.num_steps = 8\nstage3/StageConfig.num_steps = 8\n"
        "grpo/StageConfig.num_steps = 4\nTrainConfig.batch_size = 8\nTrainConfig.eval_max_batches = 2\n"
        "TrainConfig.eval_batch_size = 8\nCheckpointConfig.save_every_steps = 8\nEvalConfig.max_queries = 24\n"
        "EvalConfig.plots = False\nGrpoConfig.num_samples = 4\nOptimizerConfig.warmup_steps = 2\n"
        "stage1/StageConfig.task_feature_lengths = {'inputs': 64, 'targets': 64}\n"
        "stage2/StageConfig.task_feature_lengths = {'inputs': 64, 'targets': 64}\n"
    )
    (gin_dir / "ablation.gin").write_text(
        "include 'gin/demo/ablation.gin'\nAblationConfig.branch_step = 16\nAblationConfig.progress_bar = False\n"
        f"AblationConfig.common_gin_files = ['gin/models/tiny.gin', '{gin_dir / 'runs.gin'}']\n"
    )
    out = tmp_path / "demo"
    command = [
        sys.executable, "-m", "onesearch_jax.main", "demo", f"--output_dir={out}",
        *(f"--gin.DemoConfig.{name}_gin='{gin_dir / name}.gin'" for name in ("world", "sid", "examples", "ablation")),
    ]  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for number, name in enumerate(["world", "keywords", "sids", "examples", "ablation"], 1):
        assert f"[{number}/5] {name}: done in " in first.stdout
    assert "ablation run 2/3, seed 0, row 2/3 'lr_esd': training into" in first.stdout
    summary = json.loads((out / "runs" / "summary.json").read_text())
    assert list(summary["rows"]) == ["sft", "lr_esd", "tpma_grpo"]
    for row in ("lr_esd", "tpma_grpo"):
        assert set(summary["rows"][row]["delta"]) == {"seeds", "click", "order"}
    # lr_esd continued from SFT's step 16; tpma_grpo started from lr_esd's parameters
    assert sorted(p.name for p in (out / "runs" / "seed0" / "lr_esd" / "checkpoints").iterdir())[0] == "16"
    grpo_done = json.loads((out / "runs" / "seed0" / "tpma_grpo" / "ablation.json").read_text())
    assert f"--gin.TrainConfig.init_checkpoint='{out}/runs/seed0/lr_esd/checkpoints'" in grpo_done["train"]
    assert "| tpma_grpo | 1 |" in first.stdout.split("onesearch demo: finished in")[1]
    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("up to date, skipped") == 5
    assert "ran: nothing" in second.stdout
