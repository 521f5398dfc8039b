"""``onesearch train --dry_run`` with the v5p-128 launch config on 128 simulated CPU devices: the mesh
is built, the state sharded without being allocated, each stage's step compiled, and the parameter
count and per-device memory printed; nothing is written."""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_main_train import COMPILE_LOG, onesearch

RUN = ["--gin_file=gin/runs/lr_esd.gin", "--gin_file=gin/models/tiny.gin", "--gin_file=gin/launch/v5p_128.gin"]


def _paths(records: Path, model_dir: Path) -> list[str]:
    return [f"--gin.MODEL_DIR='{model_dir}'", f"--gin.EXAMPLES_DIR='{records / 'out'}'",
            f"--gin.VOCAB_DIR='{records / 'vocab'}'", "--dry_run"]  # fmt: skip


def _mib(text: str) -> float:
    value, unit = text.split()
    return float(value) * (1024 if unit == "GiB" else 1)


def test_dry_run_of_the_v5p_128_config_on_128_simulated_devices(world_records, tmp_path):
    run = onesearch("train", *RUN, *_paths(world_records, tmp_path / "run"), devices=128)
    assert run.returncode == 0, run.stderr[-4000:]
    out = run.stdout
    assert "dry run: mesh data=8 x fsdp=16 x tensor=1 over 128 cpu devices (1 processes)" in out, out
    parameters = int(re.search(r"parameters: ([\d,]+)", out).group(1).replace(",", ""))
    assert 1_000_000 < parameters < 2_000_000  # the tiny T5 with the small world's vocabulary
    state = dict(re.findall(r"(params|optimizer) ([\d.]+ [MG]iB)", out.splitlines()[2]))
    # float32 parameters, most of them split 16 ways over fsdp ("embed"); AdamW keeps two moments
    total_mib = parameters * 4 / 1024**2
    assert total_mib / 16 <= _mib(state["params"]) <= total_mib / 8, (state, total_mib)
    assert abs(_mib(state["optimizer"]) - 2 * _mib(state["params"])) <= 0.15
    # SFT stages 1-2 share one program; stage 3 distils (teacher inputs): two compiled steps
    steps = re.findall(r"step of (.+): batch (.+)\n  per device: peak ([\d.]+ [MG]iB)", out)
    assert [s[0] for s in steps] == ["stage1_alignment, stage2_cooccurrence", "stage3_personalized"], out
    assert "encoder_input_tokens [2048, 64]" in steps[0][1]
    assert "teacher_encoder_input_tokens [2048, 320]" in steps[1][1]
    assert all(_mib(peak) > _mib(state["params"]) for *_, peak in steps)
    assert COMPILE_LOG in run.stderr
    assert not (tmp_path / "run").exists()  # nothing written


def test_dry_run_refuses_a_device_count_the_config_does_not_fit(world_records, tmp_path):
    run = onesearch("train", *RUN, *_paths(world_records, tmp_path / "run"), devices=24)
    assert run.returncode == 2
    assert "fsdp=16 x tensor=1 = 16 does not divide the 24 available devices" in run.stderr
    assert COMPILE_LOG not in run.stderr


def test_dry_run_is_a_train_flag(tmp_path):
    run = onesearch("eval", "--gin_file=gin/runs/sft.gin", "--dry_run")
    assert run.returncode == 2 and "error: --dry_run is a train flag; eval has none" in run.stderr
