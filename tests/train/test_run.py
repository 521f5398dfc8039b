"""run.py: a real run on records of the small world: train, resume, evaluate a checkpoint, decode.

The tiny T5 with one feature-length set for every stage (one compiled train step), a few steps per
stage: the point is the wiring (tasks -> streams -> steps -> checkpoints -> restore), which the
loop's own tests (test_trainer.py) check in depth on the stand-in model.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import jax
import numpy as np
import pytest

from onesearch_jax.decode.infer import read_inputs_file, run_infer
from onesearch_jax.decode.infer_config import InferConfig
from onesearch_jax.models.configs import named_config
from onesearch_jax.models.mesh_config import MeshConfig, standard_logical_axis_rules
from onesearch_jax.train.checkpoints import CheckpointConfig, Checkpointer, abstract_train_state
from onesearch_jax.train.distill import DistillConfig, make_ema_teacher, make_train_loss
from onesearch_jax.train.metrics_writer import read_metrics
from onesearch_jax.train.optimizer_config import OptimizerConfig
from onesearch_jax.train.optimizers import make_optimizer
from onesearch_jax.train.run import (
    _check_teacher_restart,
    make_evaluator,
    padded_vocab_size,
    prepare_run,
    restore_params,
    train_run,
)
from onesearch_jax.train.run_config import StageConfig, TrainConfig
from onesearch_jax.train.state import abstract_init

LENGTHS = {"inputs": 96, "targets": 64}
RULES = standard_logical_axis_rules()


def train_config(records, model_dir, steps=(2, 2, 3)) -> TrainConfig:
    names = [("stage1", "onesearch_stage1"), ("stage2", "onesearch_stage2"), ("stage3", "onesearch_stage3")]
    return TrainConfig(
        model_dir=str(model_dir), examples_dir=str(records / "out"), vocab_dir=str(records / "vocab"),
        stages=[StageConfig(name=n, mixture_or_task=t, num_steps=k, task_feature_lengths=LENGTHS)
                for (n, t), k in zip(names, steps, strict=True)],
        batch_size=8, eval_feature_lengths=LENGTHS, eval_every_steps=0, eval_max_batches=2, log_every_steps=1,
        progress_bar=False,
    )  # fmt: skip


def setup_for(config, **kwargs):
    model = lambda v: named_config("tiny", vocab_size=v, dtype="float32")  # noqa: E731
    return prepare_run(config, model_config_fn=model, mesh_config=MeshConfig(), rules=RULES, **kwargs)


def checkpoints(model_dir) -> CheckpointConfig:
    return CheckpointConfig(directory=model_dir / "checkpoints", save_every_steps=2, keep_last=5, async_save=False)


@pytest.fixture(scope="module")
def trained(world_records, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("run")
    setup = setup_for(train_config(world_records, model_dir, steps=(2, 2, 1)))
    optimizer = OptimizerConfig(learning_rate=3e-3)
    first = train_run(setup, optimizer_config=optimizer, checkpoint_config=checkpoints(model_dir))
    setup = setup_for(train_config(world_records, model_dir))  # stage 3 gets 2 more steps: resume
    second = train_run(setup, optimizer_config=optimizer, checkpoint_config=checkpoints(model_dir))
    return setup, model_dir, first, second


def test_trains_every_stage_then_resumes_from_the_latest_checkpoint(trained):
    setup, model_dir, first, second = trained
    assert (first.start_step, first.step) == (0, 5)
    assert (second.start_step, second.step) == (5, 7)
    assert setup.model_config.vocab_size == padded_vocab_size(setup.vocab.vocab_size, 128)
    with Checkpointer(checkpoints(model_dir), read_only=True) as checkpointer:
        assert checkpointer.all_steps() == [2, 4, 5, 6, 7]
        meta = checkpointer.restore_meta()
    assert meta["vocab_size"] == setup.vocab.vocab_size and meta["model"]["d_model"] == 128
    train = read_metrics(model_dir / "metrics.jsonl", "train")
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6, 7]
    assert [r["stage_index"] for r in train] == [0, 0, 1, 1, 2, 2, 2]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in train)
    evals = read_metrics(model_dir / "metrics.jsonl", "eval")
    assert [r["step"] for r in evals] == [5, 7]  # the end of each call
    assert evals[-1]["eval/onesearch_personalized_raw/examples"] == 16  # 2 batches of 8
    run = json.loads((model_dir / "run.json").read_text())
    assert [s["num_steps"] for s in run["stages"]] == [2, 2, 3]


def test_evaluating_a_checkpoint_reproduces_the_training_time_evaluation(trained):
    setup, model_dir, _, second = trained
    graphdef, params, step = restore_params(setup, checkpoints(model_dir))
    assert step == 7
    metrics = make_evaluator(setup, graphdef, jax.tree.map(lambda x: x.sharding, params))(params)
    for name, value in second.eval_metrics.items():
        assert metrics[name] == pytest.approx(value, rel=1e-6), name


def test_restored_parameters_equal_the_trained_ones(trained):
    setup, model_dir, _, second = trained
    _, params, step = restore_params(setup, checkpoints(model_dir))
    assert step == 7
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(second.state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_an_ema_run_branches_from_an_sft_checkpoint_at_its_distillation_stage(trained, tmp_path):
    """LR-ESD ``ema`` from the SFT run's step-4 checkpoint (no teacher; the ablation's branch point): the
    teacher restarts from those parameters, then follows theta_T <- d theta_T + (1 - d) theta_S per step."""
    setup, model_dir, _, _ = trained
    distill = StageConfig(
        name="stage3",
        mixture_or_task="onesearch_personalized_distill",
        num_steps=2,
        task_feature_lengths={**LENGTHS, "teacher_inputs": 128},
        feature_converter="encdec_teacher",
    )
    config = dataclasses.replace(setup.config, model_dir=str(tmp_path), stages=(*setup.config.stages[:2], distill),
                                 eval_tasks=())  # fmt: skip
    (tmp_path / "checkpoints").mkdir()
    shutil.copytree(model_dir / "checkpoints" / "4", tmp_path / "checkpoints" / "4")
    distill_config = DistillConfig(mode="ema", ema_decay=0.5)
    ema_teacher = make_ema_teacher(distill_config, config.stages)
    ema_setup = setup_for(config)
    every_step = dataclasses.replace(checkpoints(tmp_path), save_every_steps=1)
    optimizer = OptimizerConfig(learning_rate=3e-3)
    result = train_run(ema_setup, optimizer_config=optimizer, checkpoint_config=every_step,
                       loss_fn=make_train_loss(distill_config, config.stages), ema_teacher=ema_teacher)  # fmt: skip
    assert (result.start_step, result.step) == (4, 6) and result.train_metrics["kl"] > 0
    _, abstract, shardings, _ = abstract_init(ema_setup.model_fn, make_optimizer(optimizer), ema_setup.mesh,
                                              ema_setup.rules, with_teacher=True)  # fmt: skip
    with Checkpointer(every_step, read_only=True) as checkpointer:
        states = {
            s: checkpointer.restore(s, abstract_state=abstract_train_state(abstract, shardings))[0] for s in (5, 6)
        }
    params = {4: restore_params(setup, checkpoints(model_dir), 4)[1], 5: states[5].params, 6: states[6].params}
    leaves = {s: [np.asarray(x) for x in jax.tree.leaves(p)] for s, p in params.items()}
    teacher = {s: [np.asarray(x) for x in jax.tree.leaves(states[s].teacher)] for s in (5, 6)}
    for i, (p4, p5, p6) in enumerate(zip(leaves[4], leaves[5], leaves[6], strict=True)):
        np.testing.assert_allclose(teacher[5][i], 0.5 * p4 + 0.5 * p5, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(teacher[6][i], 0.5 * teacher[5][i] + 0.5 * p6, rtol=1e-6, atol=1e-7)
    assert any(not np.array_equal(a, b) for a, b in zip(leaves[4], leaves[6], strict=True))  # it trained
    with pytest.raises(ValueError, match=r"step 5 is inside stage 'stage3' \(steps 4-6\), which distils"):
        _check_teacher_restart(config, 5, ema_teacher, tmp_path)  # a teacherless checkpoint there
    _check_teacher_restart(config, 4, ema_teacher, tmp_path)  # at the stage's start: restarted


def test_infer_writes_one_line_per_example_and_its_sid(trained, tmp_path):
    setup, model_dir, _, _ = trained
    config = InferConfig(split="validation", max_examples=10, batch_size=8, input_length=96, target_length=8,
                         output=str(tmp_path / "preds.jsonl"))  # fmt: skip
    summary = run_infer(setup, checkpoints(model_dir), config)
    lines = [json.loads(line) for line in (tmp_path / "preds.jsonl").read_text().splitlines()]
    assert summary.examples == len(lines) == 10 and summary.step == 7
    assert [r["index"] for r in lines] == list(range(10))
    for record in lines:
        assert record["targets"].startswith("<a_")
        assert record["exact_match"] == (record["prediction"] == record["targets"])
        if record["sid"] is not None:  # the predicted tokens spell it
            assert record["prediction"] == setup.vocab.decode(setup.vocab.sid_token_ids(record["sid"]))
        assert record["logprob"] <= 0
    assert summary.sid_rate == sum(r["sid"] is not None for r in lines) / 10


def test_infer_inputs_file_errors_name_the_line(tmp_path):
    path = tmp_path / "inputs.txt"
    path.write_text("[query] red dress\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"inputs.txt:2: inputs: blank line"):
        read_inputs_file(path)
    path.write_bytes(b"ok\n\xff\n")
    with pytest.raises(ValueError, match=r"inputs.txt:2: inputs: not UTF-8"):
        read_inputs_file(path)


def test_checkpoint_of_another_model_is_refused_with_the_differences(trained):
    setup, model_dir, _, _ = trained
    other = dataclasses.replace(setup, model_config=setup.model_config.replace(d_ff=512))
    with pytest.raises(ValueError, match=r"another model.*'d_ff': \(256, 512\)"):
        restore_params(other, checkpoints(model_dir))


def test_bad_configurations_fail_before_anything_is_built(world_records, tmp_path):
    config = train_config(world_records, tmp_path)
    with pytest.raises(ValueError, match="2 devices, but 1 devices are available"):
        prepare_run(config, model_config_fn=lambda v: named_config("tiny", vocab_size=v),
                    mesh_config=MeshConfig(data=2), rules=RULES)  # fmt: skip
    with pytest.raises(ValueError, match=r"TrainConfig.batch_size: batch size 8 is not divisible .* = 3"):
        setup_for(config, num_microbatches=3)
    bad_stage = dataclasses.replace(config.stages[0], mixture_or_task="onesearch_stage9")
    with pytest.raises(ValueError, match=r"stage stage1: no seqio Task or Mixture named 'onesearch_stage9'"):
        setup_for(dataclasses.replace(config, stages=[bad_stage]))
    with pytest.raises(FileNotFoundError, match=r"vocab_dir .* is not a directory"):
        setup_for(dataclasses.replace(config, vocab_dir=str(tmp_path / "missing")))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"stages": []}, "non-empty list of StageConfig"),
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"eval_tasks": [""]}, "eval_tasks must be task names"),
        ({"model_dir": ""}, "model_dir must be a non-empty path"),
        ({"input_shards": 0}, "input_shards must be an int >= 1"),
        ({"input_shards": 3}, "batch_size 8 does not split over its 3 input_shards"),
    ],
)
def test_train_config_is_validated(world_records, tmp_path, change, message):
    fields = dataclasses.asdict(train_config(world_records, tmp_path))
    fields["stages"] = train_config(world_records, tmp_path).stages
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{**fields, **change})


def test_stage_config_is_validated():
    with pytest.raises(ValueError, match="name must be letters"):
        StageConfig(name="a b", mixture_or_task="t", num_steps=1, task_feature_lengths=LENGTHS)
    with pytest.raises(ValueError, match="must map at least 'inputs' and 'targets'"):
        StageConfig(name="a", mixture_or_task="t", num_steps=1, task_feature_lengths={"inputs": 4})
    with pytest.raises(ValueError, match="feature_converter must be one of"):
        StageConfig(name="a", mixture_or_task="t", num_steps=1, task_feature_lengths=LENGTHS, feature_converter="x")


def test_stage_at_maps_global_steps_to_stages(world_records, tmp_path):
    config = train_config(world_records, tmp_path, steps=(2, 3, 1))
    assert config.total_steps == 6
    assert [config.stage_at(s) for s in range(6)] == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 0)]
    assert config.stage_start(2) == 5
    with pytest.raises(ValueError, match="outside the run's 6 steps"):
        config.stage_at(6)


def test_a_grpo_run_starts_from_another_runs_checkpoint_and_keeps_it_as_reference(trained, tmp_path):
    """The TPMA-GRPO stage on the small world's records: it starts from the SFT run's last
    parameters (TrainConfig.init_checkpoint), whose policy is the reference, so the first step's
    rollouts have KL 0 to it; it trains, and a restart resumes and reads the reference again."""
    from onesearch_jax.train.grpo_config import GrpoConfig

    setup, model_dir, _, _ = trained
    lengths = {"inputs": 96, "targets": 8, "clicked_leaves": 8, "ordered_leaves": 8, "relevance_leaves": 32,
               "relevance_tiers": 32}  # fmt: skip
    stage = StageConfig(name="grpo", mixture_or_task="onesearch_personalized_grpo", num_steps=2,
                        task_feature_lengths=lengths, feature_converter="grpo")  # fmt: skip
    config = dataclasses.replace(setup.config, model_dir=str(tmp_path), stages=(stage,), eval_tasks=(),
                                 init_checkpoint=str(model_dir / "checkpoints"))  # fmt: skip
    grpo = GrpoConfig(num_samples=4)
    optimizer = OptimizerConfig(learning_rate=1e-3, warmup_steps=0, decay="constant")
    first = train_run(setup_for(config), optimizer_config=optimizer, checkpoint_config=checkpoints(tmp_path),
                      grpo=grpo)  # fmt: skip
    assert (first.start_step, first.step) == (0, 2)
    logged = read_metrics(tmp_path / "metrics.jsonl", "train")
    assert logged[0]["rollout/kl_to_reference"] < 1e-6  # step 1 samples with the reference's parameters
    assert logged[0]["rollout/valid_sid_rate"] == 1.0 and logged[0]["ratio"] == pytest.approx(1.0, abs=1e-5)
    assert {"reward/click_order", "reward/ctr", "reward/relevance", "tpma/gate/pos5", "tpma/advantage_std/pos1",
            "sft_ce"} <= set(logged[0])  # fmt: skip
    assert logged[1]["rollout/kl_to_reference"] > 0
    init = restore_params(setup, checkpoints(model_dir))[1]
    trained_params = restore_params(setup, checkpoints(tmp_path), 2)[1]
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(init), jax.tree.leaves(trained_params),
                                                        strict=True))  # fmt: skip
    longer = dataclasses.replace(config, stages=(dataclasses.replace(stage, num_steps=3),))
    second = train_run(setup_for(longer), optimizer_config=optimizer, checkpoint_config=checkpoints(tmp_path),
                       grpo=grpo)  # fmt: skip
    assert (second.start_step, second.step) == (2, 3)
    with pytest.raises(ValueError, match=r"set TrainConfig\.init_checkpoint"):
        dataclasses.replace(config, init_checkpoint=None)
    with pytest.raises(ValueError, match="mixes TPMA-GRPO stages"):
        dataclasses.replace(config, stages=(stage, setup.config.stages[0]))
