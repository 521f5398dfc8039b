"""Training throughput of our jitted train step against HF transformers' PyTorch T5, on this CPU.

Both sides train the same T5 v1.1 configuration (``--model``: ``tiny`` or ``small``; gated-GELU,
untied output head, dropout 0.1 in training mode) with AdamW (same learning rate, no weight decay,
global grad-norm clipping at 1.0) on the same synthetic batches (seeded random tokens; no dataset
needed): ``encoder_input_tokens [B, Lin]`` right-padded to a random length per row,
``decoder_target_tokens [B, Lout]``, ``decoder_input_tokens`` = targets shifted right with start
token 0, loss weights 1 on real tokens. The defaults are the personalised SFT stage's shapes (batch
64, inputs 256, targets 8, vocabulary 2176 = ours padded to 128).

Measured in one run, each with all cores of this machine:

* ours: ``make_train_step`` (jit, donated state, one CPU device) with float32 and with bfloat16
  activations (parameters float32 either way); compile time (lower + compile) is reported apart
  and the compiled executable is what is timed;
* PyTorch: ``T5ForConditionalGeneration`` forward with ``labels`` + backward + clip + AdamW step +
  zero_grad, as shipped and with ``torch.set_flush_denormal(True)`` (denormals slow PyTorch's
  training on CPU; XLA flushes them), each from the same initial weights.

Warm-up steps are excluded; every timed step is waited for (``jax.block_until_ready`` on the new
state and metrics). The timed steps are interleaved (each round runs one step of every
configuration, in a rotating order), so slow drifts of a shared machine hit all of them alike; the
share of the machine's CPU time that other processes took meanwhile is printed, with a warning
above 10% (on 2 cores another busy process oversubscribes both thread pools, PyTorch's OpenMP one
worst, and the numbers mean little). Ours runs with the XLA flags the ``onesearch`` command sets
(``onesearch_jax/xla_flags.py``; ``--noxla_defaults`` leaves them out) on top of ``XLA_FLAGS``
from the environment, and the flags in force are printed.
Reported per side: median and mean seconds/step, examples/s, target tokens/s
(``B*Lout``) and input tokens/s (``B*(Lin+Lout)``), then the ratio ours/PyTorch for each pairing
and whether the issue's target (ours >= 1.5x PyTorch's, best setting against best setting) is met.

Model FLOPs utilisation: the FLOPs of one step are XLA's count for our float32 step
(``step.lower(state, batch).compile().cost_analysis()['flops']``; an analytic count of the matmuls,
3x forward, is printed next to it for comparison). The same count is used for PyTorch's step (same
model, same batch). The peak is the best float32 matmul rate measured here in the same run
(``jnp.dot`` and ``torch.mm`` of 2048² and 4096² matrices, FLOP = 2n³, best of several); MFU =
(step FLOPs / median seconds per step) / peak.

    python bench/train_step.py [--model tiny|small] [--batch_size 64] [--input_length 256]
        [--target_length 8] [--steps 10] [--warmup_steps 2] [--dtype both|float32|bfloat16]
        [--json OUT.json] [--noxla_defaults]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from cpu_load import background_share, cpu_ticks  # bench/cpu_load.py (the script's folder is on sys.path)
from xla_option import add_xla_defaults_option, apply_xla_defaults_option  # bench/xla_option.py

VOCAB_SIZE = 2176  # our SentencePiece + SID vocabulary, padded to a multiple of 128
LEARNING_RATE = 1e-3
CLIP_GRAD_NORM = 1.0
DROPOUT_RATE = 0.1
NUM_BATCHES = 4  # distinct batches, cycled through (same ones for both sides)
TARGET_RATIO = 1.5


# --- the batches ------------------------------------------------------------------------------


def make_batches(
    count: int, batch_size: int, input_length: int, target_length: int, vocab_size: int, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """Seeded synthetic seqio EncDec features: inputs right-padded to a random length per row."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        enc = rng.integers(2, vocab_size, (batch_size, input_length), dtype=np.int32)
        lengths = rng.integers(input_length // 2, input_length + 1, batch_size)
        enc[np.arange(input_length)[None, :] >= lengths[:, None]] = 0
        enc[np.arange(batch_size), lengths - 1] = 1  # EOS
        targets = rng.integers(2, vocab_size, (batch_size, target_length), dtype=np.int32)
        targets[:, -1] = 1  # EOS
        dec = np.pad(targets[:, :-1], ((0, 0), (1, 0)))  # shifted right, start token 0
        batches.append(
            {
                "encoder_input_tokens": enc,
                "decoder_input_tokens": dec.astype(np.int32),
                "decoder_target_tokens": targets,
                "decoder_loss_weights": (targets != 0).astype(np.float32),
            }
        )
    return batches


# --- timing helpers ---------------------------------------------------------------------------


def summarise(seconds: list[float], batch_size: int, input_length: int, target_length: int) -> dict[str, Any]:
    median = statistics.median(seconds)
    return {
        "seconds": seconds,
        "median_s": median,
        "mean_s": statistics.fmean(seconds),
        "min_s": min(seconds),
        "examples_per_s": batch_size / median,
        "target_tokens_per_s": batch_size * target_length / median,
        "input_tokens_per_s": batch_size * (input_length + target_length) / median,
    }


def best_seconds(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up (compilation, allocation)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peaks(sizes: tuple[int, ...], repeats: int) -> dict[str, float]:
    """Best FLOP/s of square matmuls: jitted jnp.dot (float32, bfloat16) and torch.mm (float32)."""
    import jax
    import jax.numpy as jnp
    import torch

    peaks: dict[str, float] = {}
    rng = np.random.default_rng(0)
    dot = jax.jit(jnp.dot)
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        flops = 2.0 * n**3
        for dtype in ("float32", "bfloat16"):
            x, y = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
            seconds = best_seconds(lambda x=x, y=y: dot(x, y).block_until_ready(), repeats)
            peaks[f"jax_{dtype}_{n}"] = flops / seconds
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        peaks[f"torch_float32_{n}"] = flops / best_seconds(lambda ta=ta, tb=tb: torch.mm(ta, tb), repeats)
    return peaks


# --- model FLOPs ------------------------------------------------------------------------------


def analytic_step_flops(config: Any, batch_size: int, input_length: int, target_length: int) -> dict[str, float]:
    """Matmul FLOPs of one training step (3x forward: backward is two matmuls per forward one).

    Counts every matmul of the forward (projections, attention scores and mixing, MLPs, output
    layer), including the padded positions that both implementations compute; ignores norms,
    softmax, dropout, the loss and the optimizer update. ``six_n_d`` is the cruder
    ``6 * params * tokens`` (encoder params x input tokens, decoder + head params x target tokens).
    """
    d, hk, ff, v = config.d_model, config.num_heads * config.d_kv, config.d_ff, config.vocab_size
    s, t = input_length, target_length
    enc_layer = 2 * s * d * 4 * hk + 2 * 2 * s * s * hk + 2 * s * 3 * d * ff
    dec_layer = (
        2 * t * d * 4 * hk  # self-attention projections
        + 2 * 2 * t * t * hk  # self-attention scores and mixing
        + 2 * t * d * 2 * hk  # cross-attention query and output projections
        + 2 * s * d * 2 * hk  # cross-attention keys and values of the encoder output
        + 2 * 2 * t * s * hk  # cross-attention scores and mixing
        + 2 * t * 3 * d * ff  # MLP
    )
    forward = config.num_encoder_layers * enc_layer + config.num_decoder_layers * dec_layer + 2 * t * d * v
    enc_params = config.num_encoder_layers * (4 * d * hk + 3 * d * ff)
    dec_params = config.num_decoder_layers * (8 * d * hk + 3 * d * ff) + d * v
    six_n_d = 6 * (enc_params * s + dec_params * t)
    return {"matmul_3x_forward": 3.0 * forward * batch_size, "six_n_d": float(six_n_d * batch_size)}


def xla_flops(compiled: Any) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0]
    return float(cost["flops"])


# --- ours -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Runner:
    """One configuration under test: ``step()`` runs one training step to completion, returns its loss."""

    name: str
    step: Callable[[], float]
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    losses: list[float] = dataclasses.field(default_factory=list)
    seconds: list[float] = dataclasses.field(default_factory=list)


def ours_runner(model: str, dtype: str, batches: list[dict[str, np.ndarray]]) -> Runner:
    """Our ``make_train_step`` (one CPU device), compiled ahead of time; its executable is timed."""
    import jax

    from onesearch_jax.models.configs import named_config
    from onesearch_jax.models.encoder_decoder import EncoderDecoder, param_count
    from onesearch_jax.models.mesh_config import MeshConfig, standard_logical_axis_rules
    from onesearch_jax.models.partitioning import batch_sharding, make_mesh
    from onesearch_jax.train.optimizer_config import OptimizerConfig
    from onesearch_jax.train.optimizers import make_optimizer
    from onesearch_jax.train.state import init_train_state
    from onesearch_jax.train.step import make_train_step

    config = named_config(model, vocab_size=VOCAB_SIZE, dtype=dtype, dropout_rate=DROPOUT_RATE)
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    rules = standard_logical_axis_rules()
    optimizer = make_optimizer(
        OptimizerConfig(name="adamw", learning_rate=LEARNING_RATE, clip_grad_norm=CLIP_GRAD_NORM)
    )
    graphdef, state, shardings = init_train_state(
        lambda rngs: EncoderDecoder(config, rngs=rngs), optimizer, mesh, rules
    )
    step = make_train_step(graphdef, optimizer, mesh, rules, state_shardings=shardings)
    for batch in batches:
        step.check_batch(batch)
    on_device = [jax.device_put(b, batch_sharding(mesh, rules)) for b in batches]
    start = time.perf_counter()
    compiled = step.lower(state, on_device[0]).compile()
    compile_s = time.perf_counter() - start
    held = {"state": state, "i": 0}

    def one() -> float:
        batch = on_device[held["i"] % len(on_device)]
        held["state"], metrics = compiled(held["state"], batch)  # step(state, batch) without re-tracing
        jax.block_until_ready((held["state"], metrics))
        held["i"] += 1
        return float(metrics["loss"])

    info = {"config": config, "params": param_count(config), "compile_s": compile_s, "xla_flops": xla_flops(compiled)}
    return Runner(name=f"ours {dtype}", step=one, info=info)


# --- PyTorch ----------------------------------------------------------------------------------


def build_torch_model(config: Any, seed: int = 0) -> Any:
    """HF ``T5ForConditionalGeneration`` of ``config``'s sizes, with an output head of its own."""
    import torch
    import transformers

    torch.manual_seed(seed)
    hf_config = transformers.T5Config(
        vocab_size=config.vocab_size,
        d_model=config.d_model,
        d_kv=config.d_kv,
        d_ff=config.d_ff,
        num_heads=config.num_heads,
        num_layers=config.num_encoder_layers,
        num_decoder_layers=config.num_decoder_layers,
        relative_attention_num_buckets=config.relative_attention_num_buckets,
        relative_attention_max_distance=config.relative_attention_max_distance,
        dropout_rate=config.dropout_rate,
        layer_norm_epsilon=config.layer_norm_epsilon,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    model = transformers.T5ForConditionalGeneration(hf_config)
    # transformers 5 shares lm_head with the embedding whatever tie_word_embeddings says
    # (DESIGN.md, known pitfalls): give it its own weights, as our untied model has.
    model.lm_head.weight = torch.nn.Parameter(torch.randn(config.vocab_size, config.d_model) * config.d_model**-0.5)
    return model


def torch_runner(initial: Any, batches: list[dict[str, np.ndarray]], *, flush_denormal: bool) -> Runner:
    """HF T5 forward with labels + backward + clip + AdamW step + zero_grad, from ``initial``'s weights.

    ``flush_denormal`` switches ``torch.set_flush_denormal`` on for this runner's steps only.
    """
    import torch

    if flush_denormal and not torch.set_flush_denormal(True):
        raise RuntimeError("torch.set_flush_denormal(True) is not supported on this CPU")
    torch.set_flush_denormal(False)
    model = copy.deepcopy(initial).train()  # dropout on
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    tensors = []
    for b in batches:
        enc = torch.from_numpy(b["encoder_input_tokens"]).long()
        targets = torch.from_numpy(b["decoder_target_tokens"]).long()
        tensors.append(
            {
                "input_ids": enc,
                "attention_mask": (enc != 0).long(),
                "decoder_input_ids": torch.from_numpy(b["decoder_input_tokens"]).long(),
                "decoder_attention_mask": (targets != 0).long(),
                "labels": torch.where(targets != 0, targets, torch.full_like(targets, -100)),
            }
        )
    held = {"i": 0}

    def one() -> float:
        torch.set_flush_denormal(flush_denormal)
        try:
            loss = model(**tensors[held["i"] % len(tensors)]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_GRAD_NORM)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        finally:
            torch.set_flush_denormal(False)
        held["i"] += 1
        return float(loss.detach())

    return Runner(name="torch+flush_denormal" if flush_denormal else "torch", step=one)


def run_interleaved(runners: list[Runner], warmup_steps: int, steps: int) -> float | None:
    """Warms each runner up, then times ``steps`` rounds of one step per runner (rotating the order).

    Interleaving spreads slow drifts of the machine over all runners alike. Returns the share of
    the machine's CPU time that other processes took during the timed rounds (None if unknown):
    with 2 cores, another busy process oversubscribes both libraries' thread pools and the
    numbers (PyTorch's OpenMP ones especially) are not worth reporting.
    """
    for runner in runners:
        runner.losses.extend(runner.step() for _ in range(warmup_steps))
    before, start_all = cpu_ticks(), time.perf_counter()
    for round_ in range(steps):
        for k in range(len(runners)):
            runner = runners[(round_ + k) % len(runners)]
            start = time.perf_counter()
            runner.losses.append(runner.step())
            runner.seconds.append(time.perf_counter() - start)
    return background_share(before, cpu_ticks(), time.perf_counter() - start_all)


# --- report -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", choices=("tiny", "small"))
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--input_length", type=int, default=256)
    parser.add_argument("--target_length", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    parser.add_argument("--warmup_steps", type=int, default=2, help="untimed steps first (after compilation)")
    parser.add_argument("--dtype", default="both", choices=("both", "float32", "bfloat16"), help="our activations")
    parser.add_argument("--peak_sizes", default="2048,4096", help="square matmul sizes for the peak")
    parser.add_argument("--json", default=None, help="write every number to this file")
    add_xla_defaults_option(parser)
    args = parser.parse_args()
    if args.steps < 1 or args.warmup_steps < 0:
        parser.error("--steps must be >= 1 and --warmup_steps >= 0")
    apply_xla_defaults_option(args)

    import jax
    import torch
    import transformers

    b, lin, lout = args.batch_size, args.input_length, args.target_length
    batches = make_batches(NUM_BATCHES, b, lin, lout, VOCAB_SIZE)
    real_inputs = float(np.mean([np.mean(x["encoder_input_tokens"] != 0) for x in batches]))
    print(
        f"cpu cores: {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}); "
        f"torch threads {torch.get_num_threads()}; jax {jax.__version__} on {jax.devices()[0].device_kind} "
        f"x{jax.device_count()}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
        f"torch {torch.__version__}, transformers {transformers.__version__}"
    )
    print(
        f"model {args.model}, vocab {VOCAB_SIZE}, dropout {DROPOUT_RATE}; batch {b}, inputs {lin} "
        f"({real_inputs:.0%} real tokens), targets {lout}; AdamW lr {LEARNING_RATE}, clip {CLIP_GRAD_NORM}; "
        f"{args.warmup_steps} warm-up + {args.steps} timed steps each"
    )

    sizes = tuple(int(n) for n in args.peak_sizes.split(","))
    peaks = matmul_peaks(sizes, repeats=5)
    peak = max(v for k, v in peaks.items() if "float32" in k)
    print("matmul peak (best of 5, GFLOP/s): " + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in peaks.items()))
    print(f"float32 peak used for MFU: {peak / 1e9:.0f} GFLOP/s")

    dtypes = ("float32", "bfloat16") if args.dtype == "both" else (args.dtype,)
    ours = [ours_runner(args.model, dtype, batches) for dtype in dtypes]
    config = ours[0].info["config"]
    initial = build_torch_model(config)
    torch_params = sum(p.numel() for p in initial.parameters())
    attention = initial.config._attn_implementation
    theirs = [torch_runner(initial, batches, flush_denormal=flush) for flush in (False, True)]
    background = run_interleaved(ours + theirs, args.warmup_steps, args.steps)

    params = ours[0].info["params"]
    flops = next((r.info["xla_flops"] for r in ours if r.name == "ours float32"), ours[0].info["xla_flops"])
    analytic = analytic_step_flops(config, b, lin, lout)
    print(f"parameters: ours {params:,}, torch {torch_params:,} (torch attention: {attention!r})")
    print(
        "FLOPs per step: XLA cost analysis "
        + ", ".join(f"{r.name} {r.info['xla_flops'] / 1e9:.1f} G" for r in ours)
        + f"; analytic matmuls (3x forward) {analytic['matmul_3x_forward'] / 1e9:.1f} G, "
        f"6*params*tokens {analytic['six_n_d'] / 1e9:.1f} G. MFU uses XLA's count ({flops / 1e9:.1f} G) for all."
    )

    rows: dict[str, dict[str, Any]] = {}
    for runner in ours + theirs:
        rows[runner.name] = summarise(runner.seconds, b, lin, lout)
        rows[runner.name]["mfu"] = flops / rows[runner.name]["median_s"] / peak
        rows[runner.name]["losses"] = runner.losses
        if "compile_s" in runner.info:
            rows[runner.name]["compile_s"] = runner.info["compile_s"]
    print(f"{'':22s} {'median s':>9s} {'mean s':>8s} {'ex/s':>8s} {'tgt tok/s':>10s} {'in tok/s':>10s} {'MFU':>6s}")
    for name, row in rows.items():
        print(
            f"{name:22s} {row['median_s']:9.3f} {row['mean_s']:8.3f} {row['examples_per_s']:8.1f} "
            f"{row['target_tokens_per_s']:10.0f} {row['input_tokens_per_s']:10.0f} {row['mfu']:6.1%}"
            + (f"   (compile {row['compile_s']:.1f} s)" if "compile_s" in row else "")
        )
    print(
        "loss, first -> last step: "
        + "; ".join(f"{r.name} {r.losses[0]:.3f} -> {r.losses[-1]:.3f}" for r in ours + theirs)
    )

    if background is not None:
        print(
            f"other processes' CPU use during the timed steps: {background:.0%} of the machine"
            + (" -- WARNING: the machine was not quiet, times and ratios are unreliable" if background > 0.1 else "")
        )
    ratios = {f"{o.name} / {t.name}": rows[t.name]["median_s"] / rows[o.name]["median_s"] for o in ours for t in theirs}
    for pairing, ratio in ratios.items():
        print(f"speed ratio {pairing}: {ratio:.2f}x")
    best_ours = min((r.name for r in ours), key=lambda k: rows[k]["median_s"])
    best_theirs = min((r.name for r in theirs), key=lambda k: rows[k]["median_s"])
    best = rows[best_theirs]["median_s"] / rows[best_ours]["median_s"]
    print(
        f"target >= {TARGET_RATIO}x: {'met' if best >= TARGET_RATIO else 'not met'} (best of ours, {best_ours}, vs "
        f"best PyTorch, {best_theirs}: {best:.2f}x; worst pairing {min(ratios.values()):.2f}x)"
    )

    if args.json:
        out = {
            "args": vars(args),
            "vocab_size": VOCAB_SIZE,
            "cpu_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "versions": {"jax": jax.__version__, "torch": torch.__version__, "transformers": transformers.__version__},
            "params": {"ours": params, "torch": torch_params},
            "torch_attention": attention,
            "matmul_peaks_flops_per_s": peaks,
            "peak_flops_per_s": peak,
            "step_flops": {"xla": {r.name: r.info["xla_flops"] for r in ours}, **analytic, "used": flops},
            "results": rows,
            "background_cpu_share": background,
            "ratios": ratios,
            "target": {
                "ratio": TARGET_RATIO,
                "best": best,
                "pairing": [best_ours, best_theirs],
                "met": best >= TARGET_RATIO,
            },
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
