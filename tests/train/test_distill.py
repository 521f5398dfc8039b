"""The LR-ESD loss (Eq. 4-7): its composition by hand, the teacher path's zero gradient, R-Drop and FGM passes,
the train step with every term on, the run-level loss selection and gin/runs/lr_esd.gin.

Models are the fast ``MiniEncoderDecoder`` and, where dropout matters, the same with dropout on its logits.
"""

from __future__ import annotations

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from onesearch_jax import configurables
from onesearch_jax.gin_utils import parse_gin
from onesearch_jax.models.dropout import dropout
from onesearch_jax.models.partitioning import DEFAULT_RULES, MeshConfig, make_mesh, shard_batch
from onesearch_jax.train.distill import DISTILL_METRICS, DistillConfig, make_distill_loss, make_train_loss
from onesearch_jax.train.ema import EmaTeacher
from onesearch_jax.train.losses import token_kl
from onesearch_jax.train.optimizers import OptimizerConfig, make_optimizer
from onesearch_jax.train.run_config import StageConfig
from onesearch_jax.train.state import TrainState, shard_train_state
from onesearch_jax.train.step import LossOutput, cross_entropy_loss, make_train_step, token_cross_entropy
from tests.train.mini_model import MiniEncoderDecoder
from tests.train.sharded_equality import make_batch

VOCAB = 64
KEY = jax.random.key(42)
ALL_ON = DistillConfig(alpha_kl=0.1, temperature=2.0, teacher_ce_weight=0.3, rdrop_alpha=0.5, fgm_epsilon=0.6,
                       focal_gamma=2.0)  # fmt: skip
EXTRAS_OFF = DistillConfig(alpha_kl=0.0)


class DropoutLogits(nnx.Module):
    """``MiniEncoderDecoder`` with dropout (rate 0.3) on its logits: passes with different keys differ."""

    def __init__(self):
        self.inner = MiniEncoderDecoder(vocab=VOCAB)

    def embed_inputs(self, tokens: jax.Array) -> jax.Array:
        return self.inner.embed_inputs(tokens)

    def __call__(self, *args, deterministic: bool = True, rngs: jax.Array | None = None, **kwargs) -> jax.Array:
        logits = self.inner(*args, **kwargs)
        return logits if deterministic else dropout(logits, rngs, 0.3)


def _batch(rows: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """EncDec features plus a longer teacher input; every row's first target (the first SID token) has weight 1."""
    rng = np.random.default_rng(seed)
    batch = make_batch(rng, rows=rows, enc_len=8, dec_len=6, vocab=VOCAB)
    teacher = make_batch(rng, rows=rows, enc_len=11, dec_len=6, vocab=VOCAB)["encoder_input_tokens"]
    return {**batch, "teacher_encoder_input_tokens": teacher}


def _evaluate(loss_fn, model: nnx.Module, batch, *, deterministic: bool = False) -> LossOutput:
    graphdef, params = nnx.split(model)
    run = jax.jit(lambda p, b: loss_fn(nnx.merge(graphdef, p), b, rng=KEY, deterministic=deterministic))
    return jax.device_get(run(params, batch))


def _grads(loss_fn, model: nnx.Module, batch) -> dict[str, np.ndarray]:
    graphdef, params = nnx.split(model)
    grads = jax.jit(jax.grad(lambda p: loss_fn(nnx.merge(graphdef, p), batch, rng=KEY, deterministic=False)[0]))
    return {"/".join(map(str, k)): np.asarray(v) for k, v in nnx.to_flat_state(grads(params))}


def _logits(model: nnx.Module, batch, encoder_feature: str) -> np.ndarray:
    return np.asarray(model(jnp.asarray(batch[encoder_feature]), jnp.asarray(batch["decoder_input_tokens"])))


def _numpy_ce(logits: np.ndarray, batch) -> float:
    z = logits.astype(np.float64)
    log_z = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    nll = log_z - np.take_along_axis(z, batch["decoder_target_tokens"][..., None], -1)[..., 0]
    return float(np.sum(nll * batch["decoder_loss_weights"]))


def _numpy_kl(teacher: np.ndarray, student: np.ndarray, weights: np.ndarray, tau: float) -> float:
    def log_softmax(z):
        z = z.astype(np.float64) / tau
        return z - z.max(-1, keepdims=True) - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))

    log_p, log_q = log_softmax(teacher), log_softmax(student)
    return float(tau**2 * np.sum(np.sum(np.exp(log_p) * (log_p - log_q), -1) * weights))


# config ---------------------------------------------------------------------------------------------


def test_config_defaults_and_validation():
    config = DistillConfig()
    assert (config.mode, config.alpha_kl, config.temperature) == ("joint", 0.1, 1.0)
    assert (config.teacher_ce_weight, config.rdrop_alpha, config.fgm_epsilon, config.focal_gamma) == (0, 0, 0, 0)
    assert config.uses_teacher and DistillConfig(alpha_kl=0, teacher_ce_weight=1).uses_teacher
    assert not EXTRAS_OFF.uses_teacher
    with pytest.raises(ValueError, match=r"mode must be one of \('joint', 'ema'\), got 'mean_teacher'"):
        DistillConfig(mode="mean_teacher")
    for field, value in (("alpha_kl", -0.1), ("rdrop_alpha", float("nan")), ("fgm_epsilon", True),
                         ("focal_gamma", float("inf")), ("teacher_ce_weight", "1")):  # fmt: skip
        with pytest.raises(ValueError, match=f"DistillConfig.{field} must be a finite number >= 0"):
            DistillConfig(**{field: value})
    with pytest.raises(ValueError, match="temperature must be > 0"):
        DistillConfig(temperature=0)
    with pytest.raises(TypeError):
        DistillConfig("joint")  # keyword-only


# the loss -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_cls", [MiniEncoderDecoder, DropoutLogits])
@pytest.mark.parametrize("deterministic", [False, True])
def test_with_every_extra_off_the_loss_is_cross_entropy_loss(model_cls, deterministic):
    model, batch = model_cls(), _batch()
    out = _evaluate(make_distill_loss(EXTRAS_OFF), model, batch, deterministic=deterministic)
    want = _evaluate(cross_entropy_loss, model, batch, deterministic=deterministic)
    assert float(out.loss_sum) == float(want.loss_sum)  # dropout masks included: the student pass uses rng
    assert float(out.weight_sum) == float(want.weight_sum)
    for name in ("accuracy", "cross_entropy"):
        assert float(out.metrics[name]) == float(want.metrics[name])
    assert float(out.metrics["student_ce"]) == float(want.metrics["cross_entropy"])
    assert all(float(out.metrics[name]) == 0.0 for name in ("teacher_ce", "kl", "rdrop", "adversarial"))
    without_teacher = {k: v for k, v in batch.items() if k != "teacher_encoder_input_tokens"}
    no_teacher = _evaluate(make_distill_loss(EXTRAS_OFF), model, without_teacher, deterministic=deterministic)
    assert float(no_teacher.loss_sum) == float(out.loss_sum)


def test_loss_and_metrics_equal_a_hand_computation():
    config = DistillConfig(alpha_kl=0.1, temperature=2.0, teacher_ce_weight=0.3)
    model, batch = MiniEncoderDecoder(vocab=VOCAB), _batch()
    student = _logits(model, batch, "encoder_input_tokens")
    teacher = _logits(model, batch, "teacher_encoder_input_tokens")
    weights = batch["decoder_loss_weights"]
    student_ce, teacher_ce = _numpy_ce(student, batch), _numpy_ce(teacher, batch)
    kl = _numpy_kl(teacher, student, weights, tau=2.0)
    out = _evaluate(make_distill_loss(config), model, batch)
    assert float(out.loss_sum) == pytest.approx(student_ce + 0.1 * kl + 0.3 * teacher_ce, rel=1e-5)
    assert float(out.weight_sum) == weights.sum()
    assert float(out.metrics["student_ce"]) == pytest.approx(student_ce, rel=1e-5)
    assert float(out.metrics["cross_entropy"]) == pytest.approx(student_ce, rel=1e-5)
    assert float(out.metrics["teacher_ce"]) == pytest.approx(teacher_ce, rel=1e-5)
    assert float(out.metrics["kl"]) == pytest.approx(kl, rel=1e-4)
    assert kl > 0 and float(out.metrics["rdrop"]) == float(out.metrics["adversarial"]) == 0.0
    # The first target position (the first SID token) counts: dropping its weight lowers the KL.
    first_dropped = weights.copy()
    first_dropped[:, 0] = 0.0
    assert _numpy_kl(teacher, student, first_dropped, tau=2.0) < kl


def test_the_teacher_path_gets_no_gradient_from_the_kl():
    """The full loss's gradient equals that of the same loss with the teacher logits replaced by constants."""
    model, batch = MiniEncoderDecoder(vocab=VOCAB), _batch()
    teacher = jnp.asarray(_logits(model, batch, "teacher_encoder_input_tokens"))

    def with_constant_teacher(teacher_ce_weight: float):
        def loss_fn(m, b, *, rng, deterministic):
            student = m(b["encoder_input_tokens"], b["decoder_input_tokens"])
            targets, weights = b["decoder_target_tokens"], b["decoder_loss_weights"]
            loss = token_cross_entropy(student, targets, weights).loss_sum + 0.5 * token_kl(
                teacher, student, weights, temperature=2.0
            )
            if teacher_ce_weight:
                live_teacher = m(b["teacher_encoder_input_tokens"], b["decoder_input_tokens"])
                loss = loss + teacher_ce_weight * token_cross_entropy(live_teacher, targets, weights).loss_sum
            return LossOutput(loss, jnp.sum(weights), {})

        return loss_fn

    for teacher_ce_weight in (0.0, 0.3):  # the teacher input is trained by its own CE only
        config = DistillConfig(alpha_kl=0.5, temperature=2.0, teacher_ce_weight=teacher_ce_weight)
        got = _grads(make_distill_loss(config), model, batch)
        want = _grads(with_constant_teacher(teacher_ce_weight), model, batch)
        assert got.keys() == want.keys()
        for name in got:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_rdrop_second_pass_has_its_own_dropout_and_adds_alpha_times_the_symmetric_kl():
    config = DistillConfig(alpha_kl=0.0, rdrop_alpha=0.5)
    model, batch = DropoutLogits(), _batch()
    out = _evaluate(make_distill_loss(config), model, batch)
    sft = _evaluate(cross_entropy_loss, model, batch)
    rdrop = float(out.metrics["rdrop"])
    assert rdrop > 0
    assert float(out.metrics["student_ce"]) == float(sft.metrics["cross_entropy"])  # pass 1 is SFT's pass
    assert float(out.loss_sum) == pytest.approx(float(sft.loss_sum) + 0.5 * rdrop, rel=1e-6)
    assert float(_evaluate(make_distill_loss(config), model, batch, deterministic=True).metrics["rdrop"]) == 0.0


def test_fgm_adversarial_loss_equals_a_hand_computation_per_example():
    config = DistillConfig(alpha_kl=0.1, fgm_epsilon=0.6)
    model, batch = MiniEncoderDecoder(vocab=VOCAB), _batch()
    encoder, decoder = jnp.asarray(batch["encoder_input_tokens"]), jnp.asarray(batch["decoder_input_tokens"])
    targets, weights = jnp.asarray(batch["decoder_target_tokens"]), jnp.asarray(batch["decoder_loss_weights"])
    teacher = jnp.asarray(_logits(model, batch, "teacher_encoder_input_tokens"))

    @jax.jit
    def base(embeddings):
        logits = model(encoder, decoder, encoder_input_embeddings=embeddings)
        return token_cross_entropy(logits, targets, weights).loss_sum + 0.1 * token_kl(teacher, logits, weights)

    embeddings = model.embed_inputs(encoder)
    g = np.asarray(jax.grad(base)(embeddings), np.float64)
    r_adv = 0.6 * g / np.sqrt(np.sum(g**2, axis=(1, 2), keepdims=True))
    adversarial = float(base(embeddings + jnp.asarray(r_adv, jnp.float32)))
    out = _evaluate(make_distill_loss(config), model, batch)
    assert float(out.metrics["adversarial"]) == pytest.approx(adversarial, rel=1e-5)
    assert float(out.loss_sum) == pytest.approx(float(base(embeddings)) + adversarial, rel=1e-5)
    # One norm per example: the batch's adversarial sum is the sum over any split of its rows.
    halves = [_evaluate(make_distill_loss(config), model, {k: v[i::2] for k, v in batch.items()}) for i in (0, 1)]
    assert sum(float(h.metrics["adversarial"]) for h in halves) == pytest.approx(adversarial, rel=1e-5)


def test_focal_loss_replaces_the_student_cross_entropy():
    model, batch = MiniEncoderDecoder(vocab=VOCAB), _batch()
    out = _evaluate(make_distill_loss(DistillConfig(alpha_kl=0.0, focal_gamma=2.0)), model, batch)
    student_ce = _numpy_ce(_logits(model, batch, "encoder_input_tokens"), batch)
    assert float(out.metrics["student_ce"]) == pytest.approx(student_ce, rel=1e-5)
    assert 0 < float(out.loss_sum) < student_ce


def test_a_batch_without_teacher_inputs_names_the_feature_converter():
    model, batch = MiniEncoderDecoder(vocab=VOCAB), _batch()
    del batch["teacher_encoder_input_tokens"]
    for config in (DistillConfig(), DistillConfig(alpha_kl=0.0, teacher_ce_weight=1.0)):
        with pytest.raises(ValueError, match=r"lacks .*feature_converter = 'encdec_teacher'"):
            _evaluate(make_distill_loss(config), model, batch)
    rdrop_only = DistillConfig(alpha_kl=0.0, rdrop_alpha=0.5)  # no teacher pass: no teacher input needed
    assert np.isfinite(float(_evaluate(make_distill_loss(rdrop_only), model, batch).loss_sum))


# the train step -------------------------------------------------------------------------------------


def _train_step(loss_fn, num_microbatches: int):
    optimizer = make_optimizer(OptimizerConfig(name="sgd", learning_rate=0.5, num_microbatches=num_microbatches))
    mesh = make_mesh(MeshConfig())
    graphdef, state = TrainState.create(MiniEncoderDecoder(vocab=VOCAB), optimizer)
    state, shardings = shard_train_state(state, mesh, DEFAULT_RULES)
    step = make_train_step(graphdef, optimizer, mesh, DEFAULT_RULES, state_shardings=shardings, loss_fn=loss_fn)
    return step, state, mesh


def test_train_step_with_every_term_reports_finite_metrics_and_accumulates_exactly():
    batch = _batch(rows=8)
    results = []
    for k in (1, 2):
        step, state, mesh = _train_step(make_distill_loss(ALL_ON), k)
        new_state, metrics = step(state, shard_batch(batch, mesh))
        results.append((jax.device_get(new_state.params), {name: float(v) for name, v in metrics.items()}))
    (params_1, metrics_1), (params_2, metrics_2) = results
    assert {"loss", "accuracy", "cross_entropy", "grad_norm", *DISTILL_METRICS} <= metrics_1.keys()
    assert all(np.isfinite(v) for v in metrics_1.values()), metrics_1
    assert metrics_1["kl"] > 0 and metrics_1["teacher_ce"] > 0 and metrics_1["adversarial"] > 0
    first = _evaluate(make_distill_loss(ALL_ON), MiniEncoderDecoder(vocab=VOCAB), batch)  # the step's starting point
    assert metrics_1["loss"] == pytest.approx(float(first.loss_sum / first.weight_sum), rel=1e-5)
    for name, value in metrics_1.items():  # FGM's per-example norm keeps microbatching exact
        assert metrics_2[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    for one, two in zip(jax.tree.leaves(params_1), jax.tree.leaves(params_2), strict=True):
        np.testing.assert_allclose(np.asarray(two), np.asarray(one), atol=1e-6)


# run-level selection and gin ------------------------------------------------------------------------


def _stage(name: str, converter: str) -> StageConfig:
    return StageConfig(name=name, mixture_or_task="t", num_steps=1, task_feature_lengths={"inputs": 8, "targets": 6},
                       feature_converter=converter)  # fmt: skip


def test_run_loss_is_lr_esd_on_teacher_stages_and_cross_entropy_elsewhere():
    stages = [_stage("sft", "encdec"), _stage("lr_esd", "encdec_teacher")]
    assert make_train_loss(None, stages) is cross_entropy_loss
    with pytest.raises(ValueError, match="feature_converter = 'encdec_teacher'"):
        make_train_loss(DistillConfig(), stages[:1])
    loss_fn = make_train_loss(DistillConfig(), stages)
    model, batch = MiniEncoderDecoder(vocab=VOCAB), _batch()
    sft_batch = {k: v for k, v in batch.items() if k != "teacher_encoder_input_tokens"}
    on_sft = _evaluate(loss_fn, model, sft_batch)
    want = _evaluate(cross_entropy_loss, model, sft_batch)
    assert float(on_sft.loss_sum) == float(want.loss_sum)
    on_teacher = _evaluate(loss_fn, model, batch)
    assert on_sft.metrics.keys() == on_teacher.metrics.keys()  # one set of keys in the logs
    assert float(on_sft.metrics["kl"]) == 0.0 and float(on_teacher.metrics["kl"]) > 0
    assert float(on_teacher.loss_sum) == float(_evaluate(make_distill_loss(DistillConfig()), model, batch).loss_sum)


@pytest.fixture
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def test_lr_esd_gin_parses_and_selects_the_distillation_loss(clean_gin):
    parse_gin([], ["gin/runs/lr_esd.gin", "gin/models/tiny.gin"], [])
    config = configurables.ConfiguredTrain()
    assert [s.feature_converter for s in config.stages] == ["encdec", "encdec", "encdec_teacher"]
    assert config.stages[2].mixture_or_task == "onesearch_personalized_distill"
    assert config.eval_tasks == ("onesearch_personalized_raw",)  # evaluation stays on the student input
    assert configurables.ConfiguredDistill() == DistillConfig(alpha_kl=0.1, temperature=1.0, teacher_ce_weight=1.0)
    objective = configurables.configured_train_loss(config.stages)
    assert objective.loss_fn is not cross_entropy_loss and objective.ema_teacher is None
    gin.clear_config()
    ablation_row_5 = ["DistillConfig.rdrop_alpha = 0.5", "DistillConfig.fgm_epsilon = 0.6",
                      "DistillConfig.focal_gamma = 2.0"]  # fmt: skip
    parse_gin([], ["gin/runs/lr_esd.gin"], ablation_row_5)
    assert configurables.ConfiguredDistill() == DistillConfig(
        teacher_ce_weight=1.0, rdrop_alpha=0.5, fgm_epsilon=0.6, focal_gamma=2.0
    )
    gin.clear_config()
    parse_gin([], ["gin/runs/lr_esd_ema.gin"], [])
    objective = configurables.configured_train_loss(configurables.ConfiguredTrain().stages)
    assert objective.ema_teacher == EmaTeacher(decay=0.99, stages=("stage3_personalized",))
    assert configurables.ConfiguredDistill() == DistillConfig(mode="ema", ema_decay=0.99)
    gin.clear_config()
    parse_gin([], ["gin/runs/sft.gin"], [])
    assert configurables.configured_train_loss(configurables.ConfiguredTrain().stages).loss_fn is cross_entropy_loss


@pytest.mark.slow
def test_real_tiny_t5_trains_with_every_term():
    """bf16 activations, dropout 0.1, 2 microbatches: finite metrics, R-Drop sees dropout, the loss falls."""
    from onesearch_jax.models import named_config
    from onesearch_jax.models.encoder_decoder import EncoderDecoder
    from onesearch_jax.train.state import init_train_state

    config = named_config("tiny", vocab_size=VOCAB, dropout_rate=0.1)  # dtype bfloat16
    optimizer = make_optimizer(OptimizerConfig(learning_rate=3e-3, num_microbatches=2))
    mesh = make_mesh(MeshConfig())
    graphdef, state, shardings = init_train_state(
        lambda rngs: EncoderDecoder(config, rngs=rngs), optimizer, mesh, DEFAULT_RULES
    )
    step = make_train_step(graphdef, optimizer, mesh, DEFAULT_RULES, state_shardings=shardings,
                           loss_fn=make_distill_loss(ALL_ON))  # fmt: skip
    batch = shard_batch(_batch(rows=8), mesh)
    losses = []
    for _ in range(4):
        state, metrics = step(state, batch)
        metrics = {name: float(value) for name, value in metrics.items()}
        assert all(np.isfinite(v) for v in metrics.values()), metrics
        assert min(metrics[name] for name in DISTILL_METRICS) > 0, metrics
        losses.append(metrics["loss"])
    assert losses[-1] < losses[0] - 0.5, losses
