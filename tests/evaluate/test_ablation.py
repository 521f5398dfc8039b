"""The ablation driver: its gin file, command lines, branching, resumption and summary arithmetic.

The runner is injected: here it writes what ``onesearch train`` and ``onesearch eval`` would (a
checkpoint directory, ``eval/step_<N>/metrics.json``), so that the orchestration is tested without
training; the real runs are the ablation itself (README, "LR-ESD ablation").
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import gin
import pytest

from onesearch_jax import configurables
from onesearch_jax.evaluate.ablation import (
    DONE_FILE,
    AblationConfig,
    AblationProbe,
    AblationRow,
    branch,
    eval_command,
    probe_command,
    run_ablation,
    summarise_ablation,
    summary_markdown,
    train_command,
    train_teacher_gap,
)
from onesearch_jax.gin_utils import parse_gin

ROWS = (
    AblationRow(name="base", gin_files=["gin/runs/sft.gin"]),
    AblationRow(name="plus", gin_files=["gin/runs/lr_esd.gin"], bindings=["DistillConfig.rdrop_alpha=0.5"]),
)


PROBE = AblationProbe(name="teacher", rows=["plus"], bindings=["EvalConfig.input_field='teacher_inputs'"])


def _metrics(hr: float, mrr: float, ambiguous: float, ce: float = 1.5, bm25: float = 0.25) -> dict:
    def block(value: float, rank: float) -> dict:
        return {"click": {"hr@10": value, "mrr@10": rank, "queries": 40},
                "order": {"hr@10": value / 2, "mrr@10": rank / 2, "queries": 12}}  # fmt: skip

    return {
        "overall": {"model": block(hr, mrr), "bm25": block(bm25, 0.1)},
        "segments": {"query_type": {"ambiguous": {"sessions": 50, "model": block(ambiguous, 0.0)}}},
        "teacher_forced": {"eval/raw/cross_entropy": ce, "eval/raw/accuracy": 0.5},
    }


class FakeRunner:
    """Writes a checkpoint per 200 steps (train) and the metrics of ``values[(seed, row)]`` (eval).

    A probe (an eval with ``EvalConfig.output_dir``) writes ``probe_values[(seed, row)]`` there.
    """

    def __init__(
        self,
        values: dict[tuple[int, str], tuple[float, float, float]],
        fail_on: str | None = None,
        stop_at: dict[str, int] | None = None,
        probe_values: dict[tuple[int, str], tuple[float, ...]] | None = None,
    ):
        self.values, self.fail_on, self.stop_at, self.commands = values, fail_on, stop_at or {}, []
        self.probe_values = probe_values or {}

    def __call__(self, command: list[str]) -> None:
        self.commands.append(command)
        model_dir = Path(next(a for a in command if a.startswith("--gin.MODEL_DIR=")).split("=", 1)[1].strip("'"))
        seed, row = int(model_dir.parent.name.removeprefix("seed")), model_dir.name
        if command[1] == "train":
            if self.fail_on == row:
                raise RuntimeError(f"training {row} was interrupted")
            model_dir.mkdir(parents=True, exist_ok=True)
            (model_dir / "run.json").write_text(json.dumps({"stages": [{"num_steps": 400}, {"num_steps": 200}]}))
            for step in (200, 400, 600):
                if step > self.stop_at.get(row, 600):
                    break  # a SIGTERM: the checkpoint at the stop lands and train exits 0
                (model_dir / "checkpoints" / str(step)).mkdir(parents=True, exist_ok=True)
                (model_dir / "checkpoints" / str(step) / "checksums.json").write_text(f'{{"step": {step}}}')
        else:
            output_dir = [
                a.split("=", 1)[1].strip("'") for a in command if a.startswith("--gin.EvalConfig.output_dir=")
            ]
            out = Path(output_dir[0] if output_dir else model_dir / "eval") / "step_600"
            out.mkdir(parents=True, exist_ok=True)
            values = self.probe_values if output_dir else self.values
            (out / "metrics.json").write_text(json.dumps(_metrics(*values[(seed, row)])))


def test_commands_name_the_run_its_seeds_and_bindings(tmp_path):
    config = AblationConfig(root=str(tmp_path), rows=ROWS, seeds=(3,), branch_step=600)
    base, plus = (train_command(config, 3, row) for row in ROWS)
    assert base[:4] == ["onesearch", "train", "--gin_file=gin/runs/sft.gin", "--gin_file=gin/models/tiny.gin"]
    assert f"--gin.MODEL_DIR='{tmp_path}/seed3/base'" in base
    assert {"--gin.TrainConfig.seed=3", "--gin.TrainConfig.data_seed=3"} <= set(base) & set(plus)
    assert "--gin.CheckpointConfig.keep_last=1000" in base and "--gin.CheckpointConfig.keep_last=1000" not in plus
    assert plus[-1] == "--gin.DistillConfig.rdrop_alpha=0.5"
    assert eval_command(config, 3, ROWS[1])[:5] == [
        "onesearch", "eval", "--gin_file=gin/runs/lr_esd.gin", "--gin_file=gin/runs/eval.gin",
        "--gin_file=gin/models/tiny.gin",
    ]  # fmt: skip


def test_rows_branch_from_the_baseline_checkpoint_and_finished_runs_are_skipped(tmp_path):
    values = {(s, r): (0.1 * (s + 1), 0.05, 0.2) for s in (0, 1) for r in ("base", "plus")}
    config = AblationConfig(root=str(tmp_path), rows=ROWS, seeds=(0, 1), branch_step=400)
    runner = FakeRunner(values, fail_on="plus")
    with pytest.raises(RuntimeError, match="plus was interrupted"):
        run_ablation(config, runner=runner)
    # the baseline of seed 0 is done; the branch step was copied, checksums included, before "plus" trained
    assert (tmp_path / "seed0" / "base" / DONE_FILE).is_file()
    copied = tmp_path / "seed0" / "plus" / "checkpoints" / "400" / "checksums.json"
    assert copied.read_text() == '{"step": 400}'
    runner = FakeRunner(values)
    finished = run_ablation(config, runner=runner)  # resumes: seed 0's baseline is not run again
    assert [p.relative_to(tmp_path).as_posix() for p in finished] == ["seed0/plus", "seed1/base", "seed1/plus"]
    assert [c[1] for c in runner.commands].count("train") == 3
    assert run_ablation(config, runner=FakeRunner(values)) == []
    done = json.loads((tmp_path / "seed1" / "plus" / DONE_FILE).read_text())
    assert done["eval_step"] == 600 and done["seed"] == 1


def test_a_row_with_init_from_starts_from_that_rows_last_checkpoint_and_does_not_branch(tmp_path):
    rl = AblationRow(name="rl", gin_files=["gin/runs/grpo.gin"], init_from="plus")
    config = AblationConfig(root=str(tmp_path), rows=(*ROWS, rl), seeds=(0,), branch_step=400,
                            common_bindings=["EXAMPLES_DIR='/data/examples'"], progress_bar=True)  # fmt: skip
    command = train_command(config, 0, rl)
    assert f"--gin.TrainConfig.init_checkpoint='{tmp_path}/seed0/plus/checkpoints'" in command
    assert not any("init_checkpoint" in arg for arg in train_command(config, 0, ROWS[1]))
    # common bindings come first (a row's own bindings override them), in train and eval alike
    assert command[command.index("--gin_file=gin/models/tiny.gin") + 1] == "--gin.EXAMPLES_DIR='/data/examples'"
    assert "--gin.EXAMPLES_DIR='/data/examples'" in eval_command(config, 0, rl)
    assert "--gin.TrainConfig.progress_bar=True" in command
    values = {(0, r): (0.3, 0.1, 0.2) for r in ("base", "plus", "rl")}
    runner = FakeRunner(values)
    run_ablation(config, runner=runner)
    assert [(c[1], c[3]) for c in runner.commands] == [
        ("train", "--gin_file=gin/models/tiny.gin"), ("eval", "--gin_file=gin/runs/eval.gin"),
        ("train", "--gin_file=gin/models/tiny.gin"), ("eval", "--gin_file=gin/runs/eval.gin"),
        ("train", "--gin_file=gin/models/tiny.gin"), ("eval", "--gin_file=gin/runs/eval.gin"),
    ]  # fmt: skip
    assert config.branches(ROWS[1]) and not config.branches(rl) and not config.branches(ROWS[0])
    assert branch(config, 0, rl) is None


def test_a_one_seed_summary_shows_values_without_a_spread_and_the_valid_sid_rate(tmp_path):
    values = {(0, "base"): (0.30, 0.15, 0.2), (0, "plus"): (0.40, 0.20, 0.2)}

    class WithValidRate(FakeRunner):
        def __call__(self, command: list[str]) -> None:
            super().__call__(command)
            if command[1] == "eval":
                for path in tmp_path.glob("seed0/*/eval/step_600/metrics.json"):
                    metrics = json.loads(path.read_text())
                    metrics["valid_sid_rate"] = {"top1": 0.75 if path.parts[-4] == "plus" else 1.0, "all": 0.5}
                    path.write_text(json.dumps(metrics))

    described = (ROWS[0], AblationRow(name="plus", gin_files=["gin/runs/lr_esd.gin"], description="+ the KL term"))
    config = AblationConfig(root=str(tmp_path), rows=described, seeds=(0,))
    run_ablation(config, runner=WithValidRate(values))
    summary = summarise_ablation(config)
    assert summary["rows"]["plus"]["valid_sid_top1"]["mean"] == pytest.approx(0.75)
    table = summary_markdown(summary)
    assert table.startswith("One seed per row;")
    assert "\nRows:\n- plus: + the KL term\n" in table and "- base:" not in table
    assert "| valid-SID top-1 |" in table.splitlines()[2]
    assert "| plus | 1 | 0.4000 | 0.2000 | 0.2000 | 0.1000 | +0.1000 | +0.0500 | 1.5000 | 0.7500 |" in table


def test_a_run_stopped_short_of_its_last_step_is_not_evaluated(tmp_path):
    values = {(0, r): (0.1, 0.05, 0.2) for r in ("base", "plus")}
    config = AblationConfig(root=str(tmp_path), rows=ROWS, seeds=(0,), branch_step=400)
    runner = FakeRunner(values, stop_at={"plus": 400})
    with pytest.raises(RuntimeError, match=r"seed0/plus: training stopped at step 400 of 600"):
        run_ablation(config, runner=runner)
    assert [c[1] for c in runner.commands] == ["train", "eval", "train"]
    assert not (tmp_path / "seed0" / "plus" / DONE_FILE).exists()
    runner = FakeRunner(values)
    assert [p.name for p in run_ablation(config, runner=runner)] == ["plus"]  # resumed, then evaluated
    assert [c[1] for c in runner.commands] == ["train", "eval"]


def test_a_missing_branch_checkpoint_is_an_error_naming_it(tmp_path):
    config = AblationConfig(root=str(tmp_path), rows=ROWS, seeds=(0,), branch_step=500)
    with pytest.raises(FileNotFoundError, match=r"seed0/base/checkpoints/500: the baseline row 'base' of seed 0"):
        run_ablation(config, runner=FakeRunner({(0, "base"): (0.1, 0.1, 0.1)}))


def test_summary_is_the_mean_and_sample_std_over_seeds(tmp_path):
    values = {
        (0, "base"): (0.30, 0.15, 0.20), (1, "base"): (0.34, 0.17, 0.30), (2, "base"): (0.32, 0.16, 0.25),
        (0, "plus"): (0.40, 0.20, 0.50), (1, "plus"): (0.44, 0.22, 0.40), (2, "plus"): (0.42, 0.21, 0.45),
    }  # fmt: skip
    config = AblationConfig(root=str(tmp_path), rows=ROWS, seeds=(0, 1, 2))
    run_ablation(config, runner=FakeRunner(values))
    summary = summarise_ablation(config)
    base = summary["rows"]["base"]
    assert base["seeds"] == 3
    assert base["overall"]["click"]["hr"]["mean"] == pytest.approx(0.32)
    assert base["overall"]["click"]["hr"]["std"] == pytest.approx(statistics.stdev([0.30, 0.34, 0.32]))
    assert base["overall"]["order"]["mrr"]["mean"] == pytest.approx(0.08)
    ambiguous = summary["rows"]["plus"]["segments"]["query_type"]["ambiguous"]["click"]
    assert ambiguous["mean"] == pytest.approx(0.45) and ambiguous["std"] == pytest.approx(0.05)
    table = summary_markdown(summary)
    assert "| plus | 3 | 0.4200 ± 0.0200 | 0.2100 ± 0.0100 | 0.2100 ± 0.0100 | 0.1050 ± 0.0050 |" in table
    assert "HR@10 by query type" in table
    assert summary["rows"]["base"]["segments"]["query_type"]["ambiguous"]["counts"] == {
        "sessions": 50, "click": 40, "order": 12,
    }  # fmt: skip
    assert "| (sessions) | 50: 40 / 12 |" in table


def test_a_probe_evaluates_the_runs_it_names_once_and_can_be_added_to_a_finished_ablation(tmp_path):
    values = {(s, r): (0.3, 0.1, 0.2) for s in (0, 1) for r in ("base", "plus")}
    probe_values = {(s, "plus"): (0.35, 0.1, 0.2) for s in (0, 1)}
    config = AblationConfig(root=str(tmp_path), rows=ROWS, seeds=(0, 1))
    run_ablation(config, runner=FakeRunner(values))
    probed = AblationConfig(root=str(tmp_path), rows=ROWS, seeds=(0, 1), probes=(PROBE,))
    command = probe_command(probed, 1, ROWS[1], PROBE, 600)
    assert command[: len(eval_command(probed, 1, ROWS[1]))] == eval_command(probed, 1, ROWS[1])
    assert command[-3:] == [
        "--gin.EvalConfig.input_field='teacher_inputs'",
        f"--gin.EvalConfig.output_dir='{tmp_path}/seed1/plus/eval_teacher'",
        "--step=600",
    ]  # fmt: skip
    runner = FakeRunner(values, probe_values=probe_values)
    finished = run_ablation(probed, runner=runner)  # only the probes run: nothing is trained again
    assert [p.relative_to(tmp_path).as_posix() for p in finished] == [
        "seed0/plus/eval_teacher",
        "seed1/plus/eval_teacher",
    ]
    assert [c[1] for c in runner.commands] == ["eval", "eval"]
    assert run_ablation(probed, runner=FakeRunner(values, probe_values=probe_values)) == []
    rows = summarise_ablation(probed)["probes"]["teacher"]["rows"]
    assert list(rows) == ["plus"] and rows["plus"]["seeds"] == 2
    assert rows["plus"]["delta"]["click"]["hr"]["mean"] == pytest.approx(0.05)


def test_a_probe_that_evaluates_another_step_is_an_error(tmp_path):
    values = {(0, r): (0.3, 0.1, 0.2) for r in ("base", "plus")}

    class WrongStep(FakeRunner):
        def __call__(self, command: list[str]) -> None:
            super().__call__(command)
            if any(a.startswith("--gin.EvalConfig.output_dir=") for a in command):
                (tmp_path / "seed0" / "plus" / "eval_teacher" / "step_600").rename(
                    tmp_path / "seed0" / "plus" / "eval_teacher" / "step_800"
                )

    config = AblationConfig(root=str(tmp_path), rows=ROWS, seeds=(0,), probes=(PROBE,))
    runner = WrongStep(values, probe_values={(0, "plus"): (0.3, 0.1, 0.2)})
    with pytest.raises(
        RuntimeError, match=r"eval_teacher: the probe evaluated step 800, not the run's evaluated step 600"
    ):
        run_ablation(config, runner=runner)


def test_summary_pairs_each_row_with_the_baseline_and_each_probe_with_its_run_by_seed(tmp_path):
    values = {
        (0, "base"): (0.30, 0.15, 0.2, 1.40), (1, "base"): (0.20, 0.10, 0.2, 1.60),
        (0, "plus"): (0.34, 0.15, 0.2, 1.30), (1, "plus"): (0.21, 0.10, 0.2, 1.50),
    }  # fmt: skip
    probe_values = {(0, "plus"): (0.33, 0.15, 0.6, 1.28, 0.5), (1, "plus"): (0.23, 0.10, 0.4, 1.46, 0.5)}
    config = AblationConfig(root=str(tmp_path), rows=ROWS, seeds=(0, 1), probes=(PROBE,))
    run_ablation(config, runner=FakeRunner(values, probe_values=probe_values))
    summary = summarise_ablation(config)
    plus = summary["rows"]["plus"]
    # paired: +0.04 and +0.01, where the unpaired means differ by the same 0.025 with a std of 0.09
    assert plus["delta"]["seeds"] == 2
    assert plus["delta"]["click"]["hr"]["mean"] == pytest.approx(0.025)
    assert plus["delta"]["click"]["hr"]["std"] == pytest.approx(statistics.stdev([0.04, 0.01]))
    assert plus["delta"]["order"]["hr"]["mean"] == pytest.approx(0.0125)
    assert "delta" not in summary["rows"]["base"]
    assert plus["validation_ce"]["raw"]["mean"] == pytest.approx(1.40)
    teacher = summary["probes"]["teacher"]["rows"]["plus"]
    assert teacher["delta"]["click"]["hr"]["mean"] == pytest.approx(0.005)
    assert teacher["delta"]["click"]["hr"]["std"] == pytest.approx(statistics.stdev([-0.01, 0.02]))
    assert teacher["validation_ce"]["raw"]["mean"] == pytest.approx(1.37)
    table = summary_markdown(summary)
    assert "| plus | 2 | 0.2750 ± 0.0919 |" in table
    assert "| +0.0250 ± 0.0212 | +0.0125 ± 0.0106 | 1.4000 ± 0.1414 |" in table
    assert "Probe `teacher` (EvalConfig.input_field='teacher_inputs')" in table
    assert (
        "| plus | 2 | 0.2800 ± 0.0707 | 0.1400 ± 0.0354 | +0.0050 ± 0.0212 | +0.0025 ± 0.0106 | 1.3700 ± 0.1273 |"
        in table
    )


def test_the_train_teacher_gap_is_the_mean_over_logged_steps_with_both_cross_entropies(tmp_path):
    values = {(s, r): (0.3, 0.1, 0.2) for s in (0, 1) for r in ("base", "plus")}
    config = AblationConfig(root=str(tmp_path), rows=ROWS, seeds=(0, 1))
    run_ablation(config, runner=FakeRunner(values))
    logs = {
        0: [(10, 1.5, 1.4), (20, 1.2, 1.3), (20, 1.0, 1.3)],  # step 20 logged twice: its last record counts
        1: [(10, 1.0, 1.1), (20, 1.0, 1.1)],
    }
    for seed, records in logs.items():
        with open(tmp_path / f"seed{seed}" / "plus" / "metrics.jsonl", "w") as f:
            f.write(json.dumps({"step": 5, "split": "train", "loss": 2.0}) + "\n")  # no teacher: not counted
            for step, student, teacher in records:
                f.write(
                    json.dumps({"step": step, "split": "train", "student_ce": student, "teacher_ce": teacher}) + "\n"
                )
            f.write(json.dumps({"step": 20, "split": "eval", "student_ce": 9.0, "teacher_ce": 0.0}) + "\n")
    assert train_teacher_gap(tmp_path / "seed0" / "plus") == pytest.approx((-0.1 + 0.3) / 2)
    assert train_teacher_gap(tmp_path / "seed1" / "plus") == pytest.approx(0.1)
    assert train_teacher_gap(tmp_path / "seed0" / "base") is None  # no metrics.jsonl
    summary = summarise_ablation(config)
    assert summary["rows"]["plus"]["train_teacher_gap"]["mean"] == pytest.approx(0.1)
    assert summary["rows"]["plus"]["train_teacher_gap"]["std"] == pytest.approx(0.0, abs=1e-12)
    assert "train_teacher_gap" not in summary["rows"]["base"]
    table = summary_markdown(summary)
    assert "| teacher_ce - student_ce (train) |" in table and "| +0.1000 ± 0.0000 |" in table


def test_config_is_validated():
    with pytest.raises(ValueError, match="repeated names"):
        AblationConfig(root="x", rows=(ROWS[0], ROWS[0]))
    with pytest.raises(ValueError, match="seeds must be distinct ints"):
        AblationConfig(root="x", rows=ROWS, seeds=(1, 1))
    with pytest.raises(ValueError, match=r"AblationRow\.name"):
        AblationRow(name="a/b", gin_files=["x.gin"])
    with pytest.raises(ValueError, match=r"AblationProbe 'teacher' names rows that are not in the ablation: \['sft'\]"):
        AblationConfig(root="x", rows=ROWS, probes=(AblationProbe(name="teacher", bindings=["a=1"], rows=["sft"]),))
    with pytest.raises(ValueError, match="repeated names"):
        AblationConfig(root="x", rows=ROWS, probes=(PROBE, PROBE))
    with pytest.raises(ValueError, match="output_dir is set by the driver"):
        AblationProbe(name="p", bindings=["EvalConfig.output_dir='/tmp/x'"])
    with pytest.raises(ValueError, match="needs at least one binding"):
        AblationProbe(name="p", bindings=[])
    with pytest.raises(ValueError, match=r"AblationRow 'base': init_from 'plus' is not an earlier row"):
        AblationConfig(root="x", rows=(AblationRow(name="base", gin_files=["a.gin"], init_from="plus"), ROWS[1]))
    with pytest.raises(ValueError, match="init_from names the row itself"):
        AblationRow(name="a", gin_files=["a.gin"], init_from="a")


def test_lr_esd_ablation_gin_has_the_papers_rows(clean_gin):
    parse_gin([], ["gin/ablations/lr_esd.gin"], [])
    config = configurables.ConfiguredAblation()
    assert [r.name for r in config.rows] == ["sft", "self_distillation", "rdrop", "fgm", "focal"]
    assert config.seeds == (0, 1, 2) and config.branch_step == 600
    (probe,) = config.probes
    assert probe.name == "teacher_input" and probe.rows == ("sft", "self_distillation")
    assert "EvalConfig.input_field='teacher_inputs'" in probe.bindings
    assert config.rows[4].bindings == (
        "DistillConfig.rdrop_alpha=0.5", "DistillConfig.fgm_epsilon=0.6", "DistillConfig.focal_gamma=2.0",
    )  # fmt: skip
    # the branch step is the end of SFT's stage 2, and a saved step
    gin.clear_config()
    parse_gin([], ["gin/runs/sft.gin"], [])
    train = configurables.ConfiguredTrain()
    assert sum(stage.num_steps for stage in train.stages[:2]) == 600
    assert 600 % gin.query_parameter("CheckpointConfig.save_every_steps") == 0


def test_grpo_ablation_gin_starts_both_rl_rows_from_the_lr_esd_policy(clean_gin):
    parse_gin([], ["gin/ablations/grpo.gin"], [])
    config = configurables.ConfiguredAblation()
    assert [(r.name, r.init_from) for r in config.rows] == [
        ("lr_esd", ""), ("plain_grpo", "lr_esd"), ("tpma_grpo", "lr_esd"),
    ]  # fmt: skip
    assert not any(config.branches(row) for row in config.rows)


def test_a_metric_an_evaluation_could_not_compute_is_n_a_in_the_summary(tmp_path):
    """A segment without an order has order HR@K None in metrics.json: the summary says n/a, and goes on."""
    values = {(s, r): (0.3 + 0.1 * s, 0.1, 0.2) for s in (0, 1) for r in ("base", "plus")}

    class NoOrders(FakeRunner):
        def __call__(self, command: list[str]) -> None:
            super().__call__(command)
            for path in tmp_path.glob("seed*/*/eval/step_600/metrics.json"):
                metrics = json.loads(path.read_text())
                metrics["segments"]["query_type"]["ambiguous"]["model"]["order"]["hr@10"] = None
                path.write_text(json.dumps(metrics))

    config = AblationConfig(root=str(tmp_path), rows=ROWS, seeds=(0, 1))
    run_ablation(config, runner=NoOrders(values))
    ambiguous = summarise_ablation(config)["rows"]["base"]["segments"]["query_type"]["ambiguous"]
    assert ambiguous["click"]["mean"] == pytest.approx(0.2) and ambiguous["order"]["n"] == 0
    assert "| base | 0.2000 ± 0.0000 / n/a |" in summary_markdown(summarise_ablation(config))
