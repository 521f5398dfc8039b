"""LR-ESD's EMA teacher (``DistillConfig.mode = "ema"``): the update, the loss reading it, the train step
moving it, its checkpoints and the stage-start restart, on the fast stand-in model. A real run branched from
an SFT checkpoint: test_run.py; the teacher on a sharded mesh: test_sharded_equality.py.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from onesearch_jax.models.partitioning import DEFAULT_RULES, MeshConfig, make_mesh, shard_batch
from onesearch_jax.train.checkpoint_integrity import verify_checksums
from onesearch_jax.train.checkpoints import CheckpointConfig, Checkpointer, abstract_train_state
from onesearch_jax.train.distill import DistillConfig, make_distill_loss, make_ema_teacher, make_train_loss
from onesearch_jax.train.ema import EmaTeacher, ema_update, make_teacher_restart
from onesearch_jax.train.losses import token_kl
from onesearch_jax.train.optimizers import OptimizerConfig, make_optimizer
from onesearch_jax.train.run_config import StageConfig
from onesearch_jax.train.state import TrainState, shard_train_state
from onesearch_jax.train.step import LossOutput, make_train_step, token_cross_entropy
from onesearch_jax.train.trainer import LoopConfig, Stage, train_loop
from tests.train.mini_model import MiniEncoderDecoder
from tests.train.sharded_equality import make_batch

VOCAB = 64
EMA = DistillConfig(mode="ema", alpha_kl=0.5, temperature=2.0, ema_decay=0.75)
MESH = make_mesh(MeshConfig(data=1), jax.devices()[:1])
OPTIMIZER = make_optimizer(OptimizerConfig(learning_rate=3e-2))


def _batch(rows: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    batch = make_batch(rng, rows=rows, enc_len=8, dec_len=6, vocab=VOCAB)
    teacher = make_batch(rng, rows=rows, enc_len=11, dec_len=6, vocab=VOCAB)["encoder_input_tokens"]
    return {**batch, "teacher_encoder_input_tokens": teacher}


def _leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


# the update and the configs -------------------------------------------------------------------------


def test_ema_update_is_the_weighted_average_in_the_teachers_dtype():
    teacher = {"w": jnp.array([1.0, 2.0]), "b": jnp.array([4.0], jnp.bfloat16)}
    params = {"w": jnp.array([3.0, 6.0]), "b": jnp.array([0.0], jnp.bfloat16)}
    out = ema_update(teacher, params, 0.75)
    np.testing.assert_array_equal(np.asarray(out["w"]), [1.5, 3.0])  # 0.75 * 1 + 0.25 * 3, 0.75 * 2 + 0.25 * 6
    assert out["b"].dtype == jnp.bfloat16 and float(out["b"][0]) == 3.0


def test_configs_are_validated():
    assert DistillConfig(mode="ema").ema_decay == 0.999
    with pytest.raises(ValueError, match=r"teacher_ce_weight must be 0, got 1\.0"):
        DistillConfig(mode="ema", teacher_ce_weight=1.0)
    with pytest.raises(ValueError, match="alpha_kl must be > 0"):
        DistillConfig(mode="ema", alpha_kl=0.0)
    for decay in (0.0, 1.0, float("nan"), True):
        with pytest.raises(ValueError, match="ema_decay must be in \\(0, 1\\)"):
            DistillConfig(ema_decay=decay)
    with pytest.raises(ValueError, match=r"EmaTeacher\.decay must be in \(0, 1\)"):
        EmaTeacher(decay=1.5, stages=["s"])
    with pytest.raises(ValueError, match="must name at least one stage"):
        EmaTeacher(decay=0.5, stages=[])
    lengths = {"inputs": 8, "targets": 6}
    stages = [StageConfig(name=n, mixture_or_task="t", num_steps=1, task_feature_lengths=lengths, feature_converter=c)
              for n, c in (("sft", "encdec"), ("distill", "encdec_teacher"))]  # fmt: skip
    assert make_ema_teacher(EMA, stages) == EmaTeacher(decay=0.75, stages=("distill",))
    assert make_ema_teacher(DistillConfig(), stages) is None and make_ema_teacher(None, stages) is None


# the loss ---------------------------------------------------------------------------------------------


def test_the_ema_loss_distils_from_the_teacher_model_without_dropout_and_without_its_gradient():
    student, teacher, batch = MiniEncoderDecoder(vocab=VOCAB, seed=0), MiniEncoderDecoder(vocab=VOCAB, seed=1), _batch()
    graphdef, params = nnx.split(student)
    teacher_model = nnx.merge(*nnx.split(teacher))
    targets, weights = batch["decoder_target_tokens"], batch["decoder_loss_weights"]
    loss_fn = make_distill_loss(EMA)

    def loss(p):
        return loss_fn(nnx.merge(graphdef, p), batch, rng=jax.random.key(0), deterministic=False, teacher=teacher_model)

    out = jax.device_get(loss(params))
    student_logits = student(batch["encoder_input_tokens"], batch["decoder_input_tokens"])
    teacher_logits = teacher(batch["teacher_encoder_input_tokens"], batch["decoder_input_tokens"])
    want_kl = float(token_kl(teacher_logits, student_logits, weights, temperature=2.0))
    want_ce = float(token_cross_entropy(student_logits, targets, weights).loss_sum)
    assert float(out.metrics["kl"]) == pytest.approx(want_kl, rel=1e-5)
    assert float(out.metrics["teacher_ce"]) == pytest.approx(
        float(token_cross_entropy(teacher_logits, targets, weights).loss_sum), rel=1e-5
    )
    assert float(out.loss_sum) == pytest.approx(want_ce + 0.5 * want_kl, rel=1e-5)  # no teacher CE in the loss
    constant = jnp.asarray(teacher_logits)

    def with_constant_teacher(p):
        logits = nnx.merge(graphdef, p)(batch["encoder_input_tokens"], batch["decoder_input_tokens"])
        ce = token_cross_entropy(logits, targets, weights).loss_sum
        return LossOutput(ce + 0.5 * token_kl(constant, logits, weights, temperature=2.0), jnp.sum(weights), {})

    got = jax.grad(lambda p: loss(p).loss_sum)(params)
    want = jax.grad(lambda p: with_constant_teacher(p).loss_sum)(params)
    for g, w in zip(_leaves(got), _leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)


def test_a_teacher_model_is_required_in_ema_mode_and_refused_in_joint_mode():
    model, batch = MiniEncoderDecoder(vocab=VOCAB), _batch()
    with pytest.raises(ValueError, match="mode='ema' needs teacher model"):
        make_distill_loss(EMA)(model, batch, rng=None, deterministic=True)
    with pytest.raises(ValueError, match="mode='joint' takes no teacher model"):
        make_distill_loss(DistillConfig())(model, batch, rng=None, deterministic=True, teacher=model)


# the train step ---------------------------------------------------------------------------------------


def _ema_state(decay: float = 0.75):
    graphdef, state = TrainState.create(MiniEncoderDecoder(vocab=VOCAB), OPTIMIZER, with_teacher=True)
    # a teacher apart from the student, so that the step's use of it shows
    state = state.replace(teacher=jax.tree.map(lambda x: x * 0.5 + 0.01, state.teacher))
    state, shardings = shard_train_state(state, MESH, DEFAULT_RULES)
    return graphdef, state, shardings


def test_the_step_moves_the_teacher_towards_the_updated_parameters():
    graphdef, state, shardings = _ema_state()
    loss_fn = make_train_loss(EMA, [StageConfig(name="d", mixture_or_task="t", num_steps=1,
                                                task_feature_lengths={"inputs": 8, "targets": 6},
                                                feature_converter="encdec_teacher")])  # fmt: skip
    step = make_train_step(graphdef, OPTIMIZER, MESH, DEFAULT_RULES, state_shardings=shardings, loss_fn=loss_fn,
                           ema_decay=0.75, donate_state=False)  # fmt: skip
    batch = _batch()
    old_teacher = jax.device_get(state.teacher)
    new, metrics = step(state, shard_batch(batch, MESH))
    want = ema_update(old_teacher, jax.device_get(new.params), 0.75)
    for got, expected in zip(_leaves(new.teacher), _leaves(want), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    # the step's KL is the one against the teacher it started from
    student = nnx.merge(graphdef, jax.device_get(state.params))
    teacher = nnx.merge(graphdef, old_teacher)
    kl = token_kl(teacher(batch["teacher_encoder_input_tokens"], batch["decoder_input_tokens"]),
                  student(batch["encoder_input_tokens"], batch["decoder_input_tokens"]),
                  batch["decoder_loss_weights"], temperature=2.0)  # fmt: skip
    assert float(metrics["kl"]) == pytest.approx(float(kl) / float(np.sum(batch["decoder_loss_weights"])), rel=1e-5)


def test_a_skipped_step_leaves_the_teacher_as_it_was():
    graphdef, state, shardings = _ema_state()

    def nan_loss(model, batch, *, rng, deterministic, teacher):
        out = make_distill_loss(EMA)(model, batch, rng=rng, deterministic=deterministic, teacher=teacher)
        return out._replace(loss_sum=out.loss_sum * jnp.nan)

    step = make_train_step(graphdef, OPTIMIZER, MESH, DEFAULT_RULES, state_shardings=shardings, loss_fn=nan_loss,
                           ema_decay=0.75, donate_state=False)  # fmt: skip
    new, metrics = step(state, shard_batch(_batch(), MESH))
    assert float(metrics["nonfinite"]) == 1.0
    for got, old in zip(_leaves(new.teacher), _leaves(state.teacher), strict=True):
        np.testing.assert_array_equal(got, old)


def test_ema_decay_must_match_the_states_teacher():
    graphdef, _, shardings = _ema_state()
    with pytest.raises(ValueError, match="the state has teacher, ema_decay=None"):
        make_train_step(graphdef, OPTIMIZER, MESH, DEFAULT_RULES, state_shardings=shardings)
    with pytest.raises(ValueError, match=r"the state has no teacher, ema_decay=0\.5"):
        make_train_step(graphdef, OPTIMIZER, MESH, DEFAULT_RULES,
                        state_shardings=shardings.replace(teacher=None), ema_decay=0.5)  # fmt: skip


# checkpoints and the stage-start restart --------------------------------------------------------------


def _checkpointer(path, **kwargs) -> Checkpointer:
    return Checkpointer(CheckpointConfig(directory=path, save_every_steps=1, async_save=False), **kwargs)


def test_checkpoints_carry_the_teacher_and_runs_without_one_still_read_them(tmp_path):
    _, state, shardings = _ema_state()
    plain = state.replace(teacher=None)
    with _checkpointer(tmp_path / "ema") as ckpt:
        ckpt.save(1, state, {"stage": "s"}, force=True)
    step_dir = tmp_path / "ema" / "1"
    assert (step_dir / "teacher").is_dir() and verify_checksums(step_dir) is None  # the checksums cover it
    target = abstract_train_state(state, shardings)
    with _checkpointer(tmp_path / "ema", read_only=True) as ckpt:
        restored, _ = ckpt.restore(1, abstract_state=target)
        without, _ = ckpt.restore(1, abstract_state=abstract_train_state(plain, shardings.replace(teacher=None)))
    for got, want in zip(_leaves(restored.teacher), _leaves(state.teacher), strict=True):
        np.testing.assert_array_equal(got, want)
    assert without.teacher is None
    for got, want in zip(_leaves(without.params), _leaves(state.params), strict=True):
        np.testing.assert_array_equal(got, want)
    with _checkpointer(tmp_path / "plain") as ckpt:  # a run without a teacher (SFT) writes none
        ckpt.save(1, plain, {"stage": "s"}, force=True)
    assert not (tmp_path / "plain" / "1" / "teacher").exists()
    with _checkpointer(tmp_path / "plain", read_only=True) as ckpt:
        assert ckpt.restore(1, abstract_state=target)[0].teacher is None  # the caller decides what to do


def test_the_teacher_restarts_from_the_student_at_its_stages_start_also_on_resume(tmp_path):
    graphdef, state, shardings = _ema_state()
    restart = make_teacher_restart(shardings)
    step = make_train_step(graphdef, OPTIMIZER, MESH, DEFAULT_RULES, state_shardings=shardings,
                           loss_fn=make_distill_loss(EMA), ema_decay=0.75)  # fmt: skip
    seen = []

    def stream(position, saved):
        return iter([_batch(seed=position + i) for i in range(4)])

    def on_start(state):
        seen.append(int(state.step))
        restarted = restart(state)
        for t, p in zip(_leaves(restarted.teacher), _leaves(restarted.params), strict=True):
            np.testing.assert_array_equal(t, p)
        return restarted

    stages = [Stage(name="a", num_steps=2, open=stream), Stage(name="b", num_steps=2, open=stream, on_start=on_start)]
    config = LoopConfig(global_batch_size=4, log_every_steps=1, progress_bar=False)

    class Writer:
        def write(self, *args): ...
        def flush(self): ...

    loop = dict(stages=stages, train_step=step, shard=lambda b: shard_batch(b, MESH), config=config,
                checkpointer=None, writer=Writer())  # fmt: skip
    result = train_loop(state, **loop)
    assert seen == [2] and result.step == 4
    for resume_at in (2, 3):  # at b's start, then inside b
        _, state, _ = _ema_state()
        train_loop(dataclasses.replace(state, step=jnp.asarray(resume_at, jnp.int32)), **loop)
    assert seen == [2, 2]
