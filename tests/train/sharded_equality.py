"""Runs a few AdamW steps on one device and on a (data, fsdp, tensor) mesh, then prints JSON diffs.

Run in a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the device count is
fixed when jax initialises, so a test process that already imported jax cannot switch)::

    python -m tests.train.sharded_equality --model tiny --mesh 2,2,2 --steps 3

Both runs start from the same parameters and see the same batches (placed with ``shard_batch``);
the output holds both loss curves and the largest absolute differences of losses, parameters and
Adam first moments (``mu`` = the gradients' moving average, i.e. the gradients themselves scaled).
``--ema_decay D`` trains LR-ESD's ``ema`` mode instead (a teacher input in every batch, the EMA
teacher in the state) and adds the teacher's difference and whether it is sharded like the
parameters.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

from onesearch_jax.models import named_config
from onesearch_jax.models.encoder_decoder import EncoderDecoder
from onesearch_jax.models.partitioning import DEFAULT_RULES, MeshConfig, make_mesh, shard_batch
from onesearch_jax.train.distill import DistillConfig, make_distill_loss
from onesearch_jax.train.optimizers import OptimizerConfig, make_optimizer
from onesearch_jax.train.state import TrainState, shard_train_state
from onesearch_jax.train.step import make_train_step
from tests.train.mini_model import MiniEncoderDecoder

VOCAB = 256
# Adam's first update is lr * g / (|g| + eps): entries whose true gradient is ~0 turn float
# reduction-order noise (~1e-10, different on 1 and 8 devices) into parameter differences of about
# lr * noise / eps. eps = 1e-6 (RoBERTa's) and lr = 1e-3 keep that below 1e-5; optax's default
# eps = 1e-8 gives ~4e-5 at lr = 1e-3 with the gradients still equal to ~1e-9.
OPTIMIZER = OptimizerConfig(name="adamw", learning_rate=1e-3, eps=1e-6, weight_decay=0.01, clip_grad_norm=1.0)


def make_batch(rng: np.random.Generator, rows: int = 8, enc_len: int = 16, dec_len: int = 8, vocab: int = VOCAB):
    """seqio EncDec features with right padding (id 0) and loss weights 0 on padding."""
    enc = rng.integers(1, vocab, size=(rows, enc_len), dtype=np.int32)
    enc[np.arange(enc_len)[None, :] >= rng.integers(4, enc_len + 1, size=rows)[:, None]] = 0
    targets = rng.integers(1, vocab, size=(rows, dec_len), dtype=np.int32)
    targets[np.arange(dec_len)[None, :] >= rng.integers(2, dec_len + 1, size=rows)[:, None]] = 0
    inputs = np.concatenate([np.zeros((rows, 1), np.int32), targets[:, :-1]], axis=1)
    return {
        "encoder_input_tokens": enc,
        "decoder_input_tokens": inputs,
        "decoder_target_tokens": targets,
        "decoder_loss_weights": (targets > 0).astype(np.float32),
    }


def build_model(kind: str, dropout: float, seed: int = 0) -> nnx.Module:
    """The real tiny T5 (float32 activations) or the fast stand-in."""
    if kind == "tiny":
        config = named_config("tiny", vocab_size=VOCAB, dtype="float32", dropout_rate=dropout)
        return EncoderDecoder(config, rngs=nnx.Rngs(seed))
    return MiniEncoderDecoder(vocab=VOCAB, seed=seed)


def _flat(state: nnx.State) -> dict[str, np.ndarray]:
    return {"/".join(map(str, k)): np.asarray(v) for k, v in state.flat_state()}


def run(
    kind: str,
    mesh_config: MeshConfig,
    devices: Sequence[jax.Device],
    *,
    steps: int,
    dropout: float,
    ema_decay: float | None = None,
):
    """(losses, grad norms, params, Adam mu, teacher or None, teacher sharded like params) after ``steps`` steps."""
    optimizer = make_optimizer(OPTIMIZER)
    mesh = make_mesh(mesh_config, devices)
    ema = ema_decay is not None
    graphdef, state = TrainState.create(build_model(kind, dropout), optimizer, rng=0, with_teacher=ema)
    state, shardings = shard_train_state(state, mesh, DEFAULT_RULES)
    loss = {}
    if ema:
        loss = {"loss_fn": make_distill_loss(DistillConfig(mode="ema", alpha_kl=0.5, ema_decay=ema_decay))}
    step = make_train_step(graphdef, optimizer, mesh, DEFAULT_RULES, state_shardings=shardings, ema_decay=ema_decay,
                           **loss)  # fmt: skip
    data = np.random.default_rng(0)
    losses, norms = [], []
    for _ in range(steps):
        batch = make_batch(data)
        if ema:
            batch["teacher_encoder_input_tokens"] = make_batch(data, enc_len=24)["encoder_input_tokens"]
        state, metrics = step(state, shard_batch(batch, mesh))
        losses.append(float(metrics["loss"]))
        norms.append(float(metrics["grad_norm"]))
    mu = state.opt_state[1][0].mu  # chain(clip, adamw=chain(scale_by_adam, ...)) -> ScaleByAdamState
    if not ema:
        return losses, norms, _flat(state.params), _flat(mu), None, None
    pairs = zip(jax.tree.leaves(state.teacher), jax.tree.leaves(state.params), strict=True)
    placed_alike = all(t.sharding == p.sharding for t, p in pairs)
    return losses, norms, _flat(state.params), _flat(mu), _flat(state.teacher), placed_alike


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=("tiny", "mini"), default="tiny")
    parser.add_argument("--mesh", default="2,2,2", help="data,fsdp,tensor")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--ema_decay", type=float, default=None, help="train LR-ESD's ema mode with this decay")
    args = parser.parse_args()
    data, fsdp, tensor = (int(x) for x in args.mesh.split(","))
    devices = jax.devices()
    options = {"steps": args.steps, "dropout": args.dropout, "ema_decay": args.ema_decay}
    single = run(args.model, MeshConfig(data=1), devices[:1], **options)
    sharded = run(args.model, MeshConfig(data=data, fsdp=fsdp, tensor=tensor), devices[: data * fsdp * tensor],
                  **options)  # fmt: skip
    params_a, params_b, mu_a, mu_b = single[2], sharded[2], single[3], sharded[3]
    result = {
        "devices": len(devices),
        "single_losses": single[0],
        "mesh_losses": sharded[0],
        "single_grad_norms": single[1],
        "mesh_grad_norms": sharded[1],
        "loss_diff": max(abs(a - b) for a, b in zip(single[0], sharded[0], strict=True)),
        "param_diff": max(float(np.max(np.abs(params_a[k] - params_b[k]))) for k in params_a),
        "mu_diff": max(float(np.max(np.abs(mu_a[k] - mu_b[k]))) for k in mu_a),
        "mu_max": max(float(np.max(np.abs(mu_a[k]))) for k in mu_a),
        "num_params": len(params_a),
    }
    if args.ema_decay is not None:
        teacher_a, teacher_b = single[4], sharded[4]
        result["teacher_diff"] = max(float(np.max(np.abs(teacher_a[k] - teacher_b[k]))) for k in teacher_a)
        result["teacher_moved"] = max(float(np.max(np.abs(teacher_a[k] - params_a[k]))) for k in teacher_a)
        result["teacher_sharded_like_params"] = sharded[5]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
