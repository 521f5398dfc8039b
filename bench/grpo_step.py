"""One full TPMA-GRPO step (rollouts + rewards + advantages + loss + update): ours against the same
step built with HF transformers' ``generate`` and a PyTorch loss, same CPU, same run, as a ratio.

Model: the ``tiny`` T5 v1.1 size, vocabulary 2176, the same random weights on both sides
(``bench/decode.py``'s ``build_models``: HF ``T5ForConditionalGeneration`` with its own output
head, converted to our ``EncoderDecoder``), float32, no dropout. SIDs: ``bench/decode.py``'s
synthetic codebook of 2,000 items (residual levels 32-16-8, OPQ 2 x 256), ids as the vocabulary
lays them out. Prompts: ``--prompts`` seeded random inputs of ``--input_length`` tokens; each
prompt gets seeded feedback: 1-2 clicked SIDs, an ordered one for half of them, 6 relevance-labelled
SIDs with tiers 0-3, and every SID a CTR in [0, 0.3).

One step, on both sides, at G = ``--samples`` rollouts per prompt:

1. rollouts: G SIDs per prompt sampled at temperature 1 under the SID trie, with the sampling
   policy's full-vocabulary log-probabilities (ours: ``make_sampler``; HF: ``generate(do_sample=True,
   top_k=0, num_return_sequences=G, prefix_allowed_tokens_fn=<nested-dict trie>,
   output_logits=True)``, the log-probabilities from its logits);
2. rewards R_C&O + R_CTR + R_Rel per rollout, TPMA's advantages and gates (Eq. 13-17, position
   weights 2, 2, 2, 1, 1, w_item 1), and the frozen reference's log-probabilities of the rollouts
   (HF: a copy of the initial model under ``torch.no_grad``; the rewards and advantages in torch);
3. one update: the unclipped TPMA loss + 0.1 x the cross-entropy of each prompt's first clicked SID
   (+ EOS), the encoder run once per prompt (HF: its ``encoder_outputs`` repeated G times, so the
   decoder's gradient reaches it), gradient clipping at 1 and AdamW (lr 1e-4).

Ours is ``onesearch_jax.train.grpo.make_grpo_step`` (four jitted programs per step), its prompts
sharded over ``--cpu_devices`` CPU devices (default: one per usable core) as ``bench/decode.py``
does; HF uses ``torch.set_num_threads`` = usable cores. Timing: ``decode.run_rounds`` (interleaved
samples, each repeating back-to-back steps for at least ``--sample_seconds``; medians), after one
untimed warm-up step each (ours: tracing and compilation). Both sides keep training during the
timed steps. Rates are prompts/s.

    python bench/grpo_step.py [--prompts 32] [--samples 8] [--input_length 64] [--repeats 3]
        [--sample_seconds 2] [--cpu_devices N] [--json_out OUT.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from typing import Any

import numpy as np
from decode import (  # bench/decode.py (the script's folder is on sys.path)
    EOS_ID,
    build_models,
    dict_trie,
    make_queries,
    prefix_allowed_tokens,
    run_rounds,
    sid_setup,
)

POSITION_WEIGHTS = (2.0, 2.0, 2.0, 1.0, 1.0)
LEARNING_RATE = 1e-4
SFT_WEIGHT = 0.1
EPSILON = 1e-8


def make_feedback(num_prompts: int, num_sids: int, seed: int = 2) -> dict[str, np.ndarray]:
    """Per prompt: clicked [B, 2], ordered [B, 1], relevance leaves and tiers [B, 6] (-1 = none),
    and a CTR per SID."""
    rng = np.random.default_rng(seed)
    clicked = rng.integers(0, num_sids, (num_prompts, 2))
    clicked[rng.random(num_prompts) < 0.5, 1] = -1
    ordered = np.where(rng.random((num_prompts, 1)) < 0.5, clicked[:, :1], -1)
    relevance = rng.integers(0, num_sids, (num_prompts, 6))
    relevance[:, 0] = clicked[:, 0]
    tiers = rng.integers(0, 4, (num_prompts, 6))
    ctr = rng.uniform(0, 0.3, num_sids).astype(np.float32)
    return {"clicked": clicked, "ordered": ordered, "relevance": relevance, "tiers": tiers, "ctr": ctr}


# --- ours -----------------------------------------------------------------------------------------


def ours_step(ours: Any, trie: Any, first_ids: tuple[int, ...], queries: np.ndarray, feedback: dict, samples: int):
    """``run()``: one of our GRPO steps on the prompts (the state carried between calls)."""
    import jax
    import jax.numpy as jnp

    from onesearch_jax.decode.device_trie import DeviceTrie
    from onesearch_jax.models import partitioning
    from onesearch_jax.models.mesh_config import MeshConfig, standard_logical_axis_rules
    from onesearch_jax.train.grpo import SFT_FEATURES, GrpoTables, make_grpo_step
    from onesearch_jax.train.grpo_config import GrpoConfig
    from onesearch_jax.train.optimizer_config import OptimizerConfig
    from onesearch_jax.train.optimizers import make_optimizer
    from onesearch_jax.train.state import TrainState, shard_train_state

    rules = standard_logical_axis_rules()
    mesh = partitioning.make_mesh(MeshConfig(), jax.devices())
    optimizer = make_optimizer(OptimizerConfig(learning_rate=LEARNING_RATE, warmup_steps=0, decay="constant",
                                               weight_decay=0.0, clip_grad_norm=1.0))  # fmt: skip
    graphdef, state = TrainState.create(ours, optimizer, rng=0)
    state, shardings = shard_train_state(state, mesh, rules)
    reference = jax.tree.map(jnp.copy, state.params)
    leaf_tokens = (trie.leaf_sids + np.asarray(first_ids)).astype(np.int32)
    tables = jax.device_put(GrpoTables(trie=DeviceTrie.from_trie(trie, first_ids), ctr=jnp.asarray(feedback["ctr"]),
                                       leaf_tokens=jnp.asarray(leaf_tokens)),
                            partitioning.replicated_sharding(mesh))  # fmt: skip
    step = make_grpo_step(graphdef, optimizer, mesh, rules, state_shardings=shardings,
                          config=GrpoConfig(num_samples=samples), tables=tables, reference=reference)  # fmt: skip
    target = np.concatenate([leaf_tokens[feedback["clicked"][:, 0]], np.full((len(queries), 1), EOS_ID)], 1)
    width = 8

    def shifted(x: np.ndarray) -> np.ndarray:  # feedback leaves + 1, 0-padded (GrpoFeatureConverter's layout)
        out = np.zeros((len(x), width), np.int32)
        out[:, : x.shape[1]] = x + 1
        return out

    host = {
        "encoder_input_tokens": queries.astype(np.int32),
        "decoder_target_tokens": target.astype(np.int32),
        "decoder_input_tokens": np.concatenate([np.zeros((len(queries), 1)), target[:, :-1]], 1).astype(np.int32),
        "decoder_loss_weights": np.ones(target.shape, np.int32),
        "clicked_leaves": shifted(feedback["clicked"]),
        "ordered_leaves": shifted(feedback["ordered"]),
        "relevance_leaves": shifted(feedback["relevance"]),
        "relevance_tiers": np.pad(feedback["tiers"], ((0, 0), (0, width - 6))).astype(np.int32),
    }
    batch = partitioning.shard_batch(host, mesh, rules)
    holder = {"state": state}

    def run() -> dict[str, float]:
        holder["state"], metrics = step(holder["state"], batch)
        return jax.device_get(metrics)

    def split(repeats: int) -> dict[str, float]:
        """Median seconds of each of the step's programs run alone: sampling, scoring, update."""

        def timed(fn: Any) -> tuple[float, Any]:
            seconds = []
            for _ in range(repeats):
                start = time.perf_counter()
                out = jax.block_until_ready(fn())
                seconds.append(time.perf_counter() - start)
            return statistics.median(seconds), out

        key = step.rollout_key(holder["state"].rng, holder["state"].step)
        sample_s, samples = timed(lambda: step.rollout(holder["state"].params, batch["encoder_input_tokens"],
                                                       step.tables.trie, key))  # fmt: skip
        score_s, (features, _) = timed(lambda: step.score(step.reference, dict(batch), samples, step.tables))
        update_batch = {**{name: batch[name] for name in SFT_FEATURES}, **features}

        def update() -> Any:
            holder["state"], metrics = step.update(holder["state"], update_batch)
            return metrics

        update_s, _ = timed(update)
        return {"sampling": sample_s, "scoring": score_s, "update": update_s}

    run.split = split
    return run


# --- HF + PyTorch -----------------------------------------------------------------------------------


def hf_step(hf: Any, trie: Any, first_ids: tuple[int, ...], queries: np.ndarray, feedback: dict, samples: int):
    """``run()``: the same step with HF ``generate`` and a PyTorch TPMA loss (module docstring)."""
    import torch

    length = trie.sid_length
    leaf_tokens = (trie.leaf_sids + np.asarray(first_ids)).astype(np.int64)
    leaf_of = {tuple(row): i for i, row in enumerate(leaf_tokens.tolist())}
    allowed = prefix_allowed_tokens(dict_trie(trie, first_ids))
    reference = copy.deepcopy(hf).eval()
    policy = hf.train()  # dropout 0: train mode changes nothing but the autograd bookkeeping
    optimizer = torch.optim.AdamW(policy.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
    input_ids = torch.as_tensor(queries, dtype=torch.long)
    mask = (input_ids != 0).long()
    b, g = len(queries), samples
    clicked, ordered = torch.as_tensor(feedback["clicked"]), torch.as_tensor(feedback["ordered"])
    relevance, tiers = torch.as_tensor(feedback["relevance"]), torch.as_tensor(feedback["tiers"]).float()
    ctr = torch.as_tensor(feedback["ctr"])
    truth_leaves = torch.cat([clicked, ordered], 1)
    truths = torch.as_tensor(leaf_tokens)[truth_leaves.clamp(min=0)]  # [B, T, L]
    truth_mask = truth_leaves >= 0
    weights = torch.as_tensor(POSITION_WEIGHTS)
    target = torch.cat([torch.as_tensor(leaf_tokens)[clicked[:, 0]], torch.full((b, 1), EOS_ID)], 1)

    def groupnorm(x: Any) -> Any:
        return (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + EPSILON)

    def token_logprobs(model: Any, encoded: Any, tokens: Any) -> Any:
        decoder_inputs = torch.cat([torch.zeros_like(tokens[:, :1]), tokens[:, :-1]], 1)
        out = model(encoder_outputs=(encoded,), attention_mask=mask.repeat_interleave(g, 0),
                    decoder_input_ids=decoder_inputs)  # fmt: skip
        return torch.log_softmax(out.logits.float(), -1).gather(-1, tokens[..., None])[..., 0]

    def run() -> dict[str, float]:
        with torch.inference_mode():
            out = policy.generate(
                input_ids=input_ids, attention_mask=mask, do_sample=True, top_k=0, temperature=1.0,
                num_return_sequences=g, max_new_tokens=length, min_new_tokens=length,
                prefix_allowed_tokens_fn=allowed, output_logits=True, return_dict_in_generate=True,
            )  # fmt: skip
            tokens = out.sequences[:, 1 : length + 1]  # [B*G, L]
            old = torch.stack([torch.log_softmax(step.float(), -1) for step in out.logits], 1)
            old = old.gather(-1, tokens[..., None])[..., 0].reshape(b, g, length)
            leaves = torch.as_tensor([leaf_of.get(tuple(t), -1) for t in tokens.tolist()]).reshape(b, g)
            # rewards (Eq. 9-10)
            ordered_hit = ((leaves[:, :, None] == ordered[:, None, :]) & (ordered[:, None, :] >= 0)).any(-1)
            clicked_hit = ((leaves[:, :, None] == clicked[:, None, :]) & (clicked[:, None, :] >= 0)).any(-1)
            r_co = torch.where(ordered_hit, 4.0, torch.where(clicked_hit, 3.0, 0.0))
            r_ctr = torch.where(leaves >= 0, ctr[leaves.clamp(min=0)].clamp(0, 1), 0.0)
            labelled = leaves[:, :, None] == relevance[:, None, :]
            r_rel = torch.where(labelled, tiers[:, None, :], 0.0).amax(-1)
            item = r_co + r_ctr + r_rel
            # TPMA (Eq. 13-17)
            seq = tokens.reshape(b, g, length)
            hits = ((seq[:, :, None, :] == truths[:, None, :, :]) & truth_mask[:, None, :, None]).float()
            prefix = (hits * weights).cumsum(-1).amax(2)
            marginal = torch.diff(prefix, dim=-1, prepend=torch.zeros_like(prefix[..., :1]))
            counts = hits.cumsum(-1).amax(2)
            gates = torch.cat([torch.ones_like(counts[..., :1]),
                               (counts[..., :-1] / torch.arange(1, length)).clamp(0, 1)], -1)  # fmt: skip
            advantages = groupnorm(marginal) + groupnorm(item)[..., None]
            encoded_ref = reference.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
            ref = token_logprobs(reference, encoded_ref.repeat_interleave(g, 0), tokens).reshape(b, g, length)
        tokens, old, advantages, gates = tokens.clone(), old.clone(), advantages.clone(), gates.clone()
        optimizer.zero_grad(set_to_none=True)
        encoded = policy.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        logprobs = token_logprobs(policy, encoded.repeat_interleave(g, 0), tokens).reshape(b, g, length)
        ratio = torch.exp(logprobs - old)
        policy_loss = -(gates * ratio * advantages).mean()
        sft = policy(encoder_outputs=(encoded,), attention_mask=mask, labels=target)
        loss = policy_loss + SFT_WEIGHT * sft.loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        kl = torch.exp(ref - old) - (ref - old) - 1
        return {"loss": float(loss.detach()), "reward/item": float(item.mean()), "kl_to_reference": float(kl.mean())}

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--input_length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sample_seconds", type=float, default=2.0)
    parser.add_argument("--cpu_devices", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--torch_threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--json_out", default=None)
    parser.add_argument("--split", action="store_true", help="also time our step's programs one by one")
    args = parser.parse_args()
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        raise SystemExit("XLA_FLAGS already forces a device count: set it with --cpu_devices instead")
    if args.prompts % args.cpu_devices:
        raise SystemExit(f"--prompts {args.prompts} must split over --cpu_devices {args.cpu_devices}")
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.cpu_devices}"
    ).strip()
    from onesearch_jax.xla_flags import apply_xla_defaults

    apply_xla_defaults()
    import torch

    torch.set_num_threads(args.torch_threads)
    hf, ours = build_models("float32")
    trie, first_ids, source = sid_setup(None, 2000)
    queries = make_queries(args.prompts, args.input_length)
    feedback = make_feedback(args.prompts, trie.num_sids)
    run_ours = ours_step(ours, trie, first_ids, queries, feedback, args.samples)
    run_hf = hf_step(hf, trie, first_ids, queries, feedback, args.samples)
    first = {"ours": run_ours(), "hf": run_hf()}  # warm-up (ours: compile)
    seconds, calls, background = run_rounds({"ours": (run_ours, args.repeats), "hf": (run_hf, args.repeats)},
                                            args.sample_seconds)  # fmt: skip
    median = {name: statistics.median(values) for name, values in seconds.items()}
    rate = {name: args.prompts / value for name, value in median.items()}
    result = {
        "prompts": args.prompts, "samples": args.samples, "input_length": args.input_length, "sids": source,
        "cpu_devices": args.cpu_devices, "torch_threads": args.torch_threads,
        "seconds_per_step": seconds, "steps_per_sample": calls, "prompts_per_second": rate,
        "ratio": rate["ours"] / rate["hf"], "background_cpu_share": background,
        "first_step": {name: {k: float(v) for k, v in m.items() if k in ("loss", "reward/item")}
                       for name, m in first.items()},
    }  # fmt: skip
    print(f"GRPO step, {args.prompts} prompts x G={args.samples}, inputs {args.input_length} tokens, {source}:")
    for name in ("ours", "hf"):
        samples = ", ".join(f"{1000 * s:.0f}" for s in seconds[name])
        print(f"  {name:4}: {rate[name]:7.1f} prompts/s (median of {samples} ms per step)")
    print(f"  ratio ours / HF+PyTorch: {result['ratio']:.1f}x")
    if args.split:
        result["ours_programs_seconds"] = run_ours.split(args.repeats)
        parts = ", ".join(f"{name} {1000 * value:.0f} ms" for name, value in result["ours_programs_seconds"].items())
        print(f"  ours, each program alone (median of {args.repeats}): {parts}")
    if background is not None and background > 0.1:
        print(f"  warning: other processes took {background:.0%} of the CPU meanwhile")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
