"""Trie-constrained beam search: ours (one jitted program) against HF transformers' ``generate``
with ``prefix_allowed_tokens_fn``, on this CPU, same weights, same SID trie, in one run.

Model: the ``tiny`` T5 v1.1 size (``gin/models/tiny.gin``), vocabulary 2176 (ours padded to 128),
no dropout. HF ``T5ForConditionalGeneration`` is initialised at random (``torch.manual_seed``;
an output head of its own, as our untied model has) and our ``EncoderDecoder`` gets exactly its
weights (``onesearch_jax/models/convert.py``: ``output_layer``, ``config_from_hf``,
``params_from_hf``), float32 activations on both sides unless ``--dtype bfloat16``.

SIDs: the default world's codebook shape (``gin/sid/default.gin``): residual levels 32-16-8 then
OPQ 2 x 256 (8 bits), ids laid out as ``onesearch_jax/vocab.py`` does: SID tokens from id 3,
``<a_*>`` 32, ``<b_*>`` 16, ``<c_*>`` 8, then the OPQ tokens ``<d_0..511>`` (sub-code m of the
OPQ letter at ``m * 256``), so every position owns its own contiguous id range (ids 3..570). The
2,000 items' codes are synthetic (seeded): each residual code is drawn from a Dirichlet(2)
distribution of its parent prefix (clustered like k-means levels: the trie has about 400 / 1,200
nodes at depths 2 / 3, the demo world's real codebook 386 / 1,012), the OPQ codes uniformly.
``--codebook DIR`` uses a real ``SidCodebook`` directory instead (``demo_output/sids`` after
``make demo``). Queries: seeded random token ids, ``--input_length`` long, right-padded to a
random length in ``[length/2, length]`` ending in EOS.

Both searches rank by the same score: the sum of the SID tokens' full-vocabulary log-probabilities
(the trie masks candidates after the log-softmax and does not renormalise; HF's
``PrefixConstrainedLogitsProcessor`` also masks log-probabilities) plus log p(EOS) after the
last SID token. HF runs ``num_beams=W, num_return_sequences=10, max_new_tokens=L+1,
length_penalty=0.0, early_stopping=True, do_sample=False`` and its ``prefix_allowed_tokens_fn``
walks a nested-dict trie over token ids (the GENRE / TIGER recipe): the trie's children while
inside a SID, then only EOS. Every HF hypothesis therefore has length L+1, the length penalty
does nothing, and HF's top-10 are the 10 best of its W finished beams, as ours are
(``score_eos=True``); ``--no_score_eos`` drops the EOS step on both sides (HF ``max_new_tokens=L``).

Ours: ``make_beam_search`` on all ``--num_queries`` queries in one call, the queries sharded over
a ``data`` mesh of ``--cpu_devices`` CPU devices (default: one per usable core, through
``--xla_force_host_platform_device_count``), which is how the framework spreads decoding over the
cores it has: each device searches its own queries with no communication
(``tests/decode/test_sharded_decode.py``), and XLA runs the devices' programs side by side, so one
fills the other's gaps between small kernels. ``--cpu_devices 1`` is one device that XLA's own
thread pool spreads over the cores, as PyTorch spreads HF's. Its first call (tracing + compile + one
run) is reported apart and not timed. HF:
``torch.inference_mode()``, ``torch.set_num_threads`` = usable cores (``--torch_threads``), the
same queries in one ``generate`` call (``--hf_batch_size`` splits them) after a 2-query warm-up
call; ``--hf_queries`` gives HF only the first N queries (one N or one per beam width), which
shortens the run but flatters ours: HF's per-query rate falls with its batch (at beam 128 on 2
cores, about half as many queries/s with 16 queries per call as with 64). Rates are queries/s. The
timed rounds interleave ours and HF (slow drifts of a shared machine hit both), medians are
reported; each sample repeats back-to-back calls for at least ``--sample_seconds`` (1 s: one HF
call, 10 of ours at beam 20) and counts seconds per call, i.e. sustained throughput (see
``run_rounds``), with the share of the machine's CPU that other processes took meanwhile (a warning above
10%: on 2 cores a busy neighbour oversubscribes both thread pools and the ratios mean little).
Ours runs with the XLA flags the ``onesearch`` command sets (``onesearch_jax/xla_flags.py``;
``--noxla_defaults`` leaves them out).

Agreement, on the HF queries: the fraction whose top-1 SID is the same and the mean overlap of the
top-10 sets. Both top-1 SIDs of each query are then re-scored teacher-forced by both models: the
largest gap between the two libraries' log-probabilities of the same SID is printed (float32
noise), and for each query where the top-1 differs, the four scores, which tell a near-tie apart
from a difference between the searches.

    python bench/decode.py [--beams 20,128] [--num_queries 64] [--hf_queries 64]
        [--input_length 64] [--repeats 5] [--hf_repeats 2] [--sample_seconds 1] [--dtype float32|bfloat16]
        [--cpu_devices N]
        [--codebook DIR] [--json_out OUT.json] [--noxla_defaults]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from cpu_load import background_share, cpu_ticks  # bench/cpu_load.py (the script's folder is on sys.path)
from xla_option import add_xla_defaults_option, apply_xla_defaults_option  # bench/xla_option.py

VOCAB_SIZE = 2176  # our SentencePiece + SID vocabulary, padded to a multiple of 128
EOS_ID = 1
SID_FIRST_ID = 3  # <pad>, </s>, <unk>, then the SID tokens (onesearch_jax/vocab.py)
CODE_SIZES = (32, 16, 8, 256, 256)  # gin/sid/default.gin: levels 32-16-8, OPQ 2 x 2^8
NUM_LEVELS = 3
OPQ_BITS = 8
NUM_ITEMS = 2000
TOP_K = 10
TARGET_RATIO = 10.0


# --- the SIDs and the queries -----------------------------------------------------------------


def synthetic_codes(num_items: int, seed: int = 0) -> np.ndarray:
    """``[num_items, 5]`` codes: residual levels clustered under their parent prefix, OPQ uniform."""
    rng = np.random.default_rng(seed)
    codes = np.zeros((num_items, len(CODE_SIZES)), np.int64)
    prefix = np.zeros(num_items, np.int64)
    for t, size in enumerate(CODE_SIZES[:NUM_LEVELS]):
        parents, parent_of = np.unique(prefix, return_inverse=True)
        cumulative = rng.dirichlet(np.full(size, 2.0), len(parents)).cumsum(1)
        draw = rng.random(num_items)
        codes[:, t] = np.minimum((cumulative[parent_of] < draw[:, None]).sum(1), size - 1)
        prefix = prefix * size + codes[:, t]
    codes[:, NUM_LEVELS:] = rng.integers(
        0, np.asarray(CODE_SIZES[NUM_LEVELS:]), (num_items, len(CODE_SIZES) - NUM_LEVELS)
    )
    return codes


def sid_setup(codebook_dir: str | None, num_items: int) -> tuple[Any, tuple[int, ...], str]:
    """``(SidTrie, token id of code 0 at each position, description)``, ids as the vocabulary lays them out."""
    from onesearch_jax.sid.trie import SidTrie
    from onesearch_jax.vocab import sid_token_table

    if codebook_dir:
        from onesearch_jax.sid.codebook import SidCodebook

        codebook = SidCodebook.load(codebook_dir)
        trie, letters, offsets = codebook.trie(), codebook.letters(), codebook.token_offsets()
        source = f"codebook {codebook_dir} ({len(codebook.item_ids)} items)"
    else:
        trie = SidTrie.build(synthetic_codes(num_items), np.arange(num_items), CODE_SIZES)
        letters = tuple("abc") + ("d",) * (len(CODE_SIZES) - NUM_LEVELS)
        offsets = (0,) * NUM_LEVELS + tuple(m << OPQ_BITS for m in range(len(CODE_SIZES) - NUM_LEVELS))
        source = f"synthetic, {num_items} items"
    tokens, firsts = sid_token_table(trie.code_sizes, letters, offsets)
    if SID_FIRST_ID + len(tokens) > VOCAB_SIZE:
        raise ValueError(f"{len(tokens)} SID tokens do not fit a vocabulary of {VOCAB_SIZE}")
    return trie, tuple(SID_FIRST_ID + f for f in firsts), source


def make_queries(count: int, length: int, seed: int = 1) -> np.ndarray:
    """Seeded random input ids, right-padded to a random length per row, EOS last."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(2, VOCAB_SIZE, (count, length), dtype=np.int32)
    lengths = rng.integers(length // 2, length + 1, count)
    tokens[np.arange(length)[None, :] >= lengths[:, None]] = 0
    tokens[np.arange(count), lengths - 1] = EOS_ID
    return tokens


def dict_trie(trie: Any, token_offsets: Sequence[int]) -> dict[int, Any]:
    """Nested dicts over token ids, ``{token: {token: ... {}}}``, one path per SID."""
    root: dict[int, Any] = {}
    for sid in (trie.leaf_sids + np.asarray(token_offsets)).tolist():
        node = root
        for token in sid:
            node = node.setdefault(token, {})
    return root


def prefix_allowed_tokens(root: dict[int, Any]) -> Callable[[int, Any], list[int]]:
    """HF's ``prefix_allowed_tokens_fn``: the children of the generated prefix, EOS at a leaf."""

    def allowed(batch_id: int, sent: Any) -> list[int]:
        node = root
        for token in sent.tolist()[1:]:  # sent[0] is the decoder start token 0
            node = node.get(token)
            if node is None:  # a dead beam HF carries along (score -inf): let it end
                return [EOS_ID]
        return list(node) if node else [EOS_ID]

    return allowed


# --- the models -------------------------------------------------------------------------------


def build_models(dtype: str, seed: int = 0) -> tuple[Any, Any]:
    """``(HF T5ForConditionalGeneration in eval mode, our EncoderDecoder with the same weights)``."""
    import torch
    import transformers

    from onesearch_jax.models.configs import named_config
    from onesearch_jax.models.convert import config_from_hf, model_from_params, output_layer, params_from_hf

    sizes = named_config("tiny", vocab_size=VOCAB_SIZE)
    torch.manual_seed(seed)
    hf_config = transformers.T5Config(
        vocab_size=VOCAB_SIZE,
        d_model=sizes.d_model,
        d_kv=sizes.d_kv,
        d_ff=sizes.d_ff,
        num_heads=sizes.num_heads,
        num_layers=sizes.num_encoder_layers,
        num_decoder_layers=sizes.num_decoder_layers,
        relative_attention_num_buckets=sizes.relative_attention_num_buckets,
        relative_attention_max_distance=sizes.relative_attention_max_distance,
        dropout_rate=0.0,
        layer_norm_epsilon=sizes.layer_norm_epsilon,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=EOS_ID,
        decoder_start_token_id=0,
    )
    hf = transformers.T5ForConditionalGeneration(hf_config)
    # transformers 5 shares lm_head with the embedding whatever tie_word_embeddings says
    # (DESIGN.md, known pitfalls): give it its own weights, as our untied model has.
    hf.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB_SIZE, sizes.d_model) * sizes.d_model**-0.5)
    hf.eval()
    tensors = {name: t.detach().numpy() for name, t in hf.state_dict().items()}
    config_dict = hf.config.to_dict()
    tied, lm_head = output_layer(config_dict, tensors)
    config = config_from_hf(config_dict, tie_word_embeddings=tied, dtype=dtype, dropout_rate=0.0)
    ours = model_from_params(config, params_from_hf(tensors, config, lm_head=lm_head))
    return hf, ours


# --- timing -----------------------------------------------------------------------------------


def run_rounds(
    runners: dict[str, tuple[Callable[[], Any], int]], sample_seconds: float
) -> tuple[dict[str, list[float]], dict[str, list[int]], float | None]:
    """Takes ``repeats`` timed samples per runner, interleaved (round r samples every runner with
    r < its repeats). A sample calls ``fn`` back to back until ``sample_seconds`` have passed (at
    least once) and records the seconds per call: sustained throughput, which a single short call
    right after the other library's run understates (our thread pool wakes from idle: 109 ms per
    call back to back, 128-131 ms after 0.5 s of sleep or of PyTorch work, beam 20 on this machine).

    Returns:
        (seconds per call of each sample, calls in each sample, other processes' CPU share).
    """
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    calls: dict[str, list[int]] = {name: [] for name in runners}
    before, start_all = cpu_ticks(), time.perf_counter()
    for round_ in range(max(repeats for _, repeats in runners.values())):
        for name, (fn, repeats) in runners.items():
            if round_ < repeats:
                count, start = 0, time.perf_counter()
                while count == 0 or time.perf_counter() - start < sample_seconds:
                    fn()
                    count += 1
                seconds[name].append((time.perf_counter() - start) / count)
                calls[name].append(count)
    return seconds, calls, background_share(before, cpu_ticks(), time.perf_counter() - start_all)


# --- one beam width -----------------------------------------------------------------------------


def bench_beam(
    beam: int,
    hf_queries: int,
    ours: Any,
    hf: Any,
    trie: Any,
    device_trie: Any,
    queries: np.ndarray,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Times ours on all ``queries`` and HF on the first ``hf_queries`` at beam width ``beam``; checks agreement."""
    import jax
    import torch
    from flax import nnx

    from onesearch_jax.decode.beam_search import make_beam_search
    from onesearch_jax.models import partitioning
    from onesearch_jax.models.mesh_config import MeshConfig, standard_logical_axis_rules

    sid_length = trie.sid_length
    # ours: the queries over a data mesh of --cpu_devices devices, compiled by the first call
    mesh = partitioning.make_mesh(MeshConfig(data=args.cpu_devices), devices=jax.devices()[: args.cpu_devices])
    rules = standard_logical_axis_rules()
    graphdef, params = nnx.split(ours)
    with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
        shardings = partitioning.param_shardings(params, mesh, rules)
    params = jax.device_put(params, shardings)
    search = make_beam_search(graphdef, shardings, mesh, rules, beam_size=beam, top_k=TOP_K, score_eos=args.score_eos)
    on_device = jax.device_put(queries, partitioning.batch_sharding(mesh, rules))
    start = time.perf_counter()
    result = jax.block_until_ready(search(params, on_device, device_trie))
    first_call_s = time.perf_counter() - start
    ours_tokens = np.asarray(result.tokens)
    ours_scores = np.asarray(result.scores)

    def run_ours() -> None:
        jax.block_until_ready(search(params, on_device, device_trie))

    # HF: generate over the first hf_queries queries, in batches of hf_batch_size (default all at once)
    allowed = prefix_allowed_tokens(dict_trie(trie, device_trie.token_offsets))
    hf_inputs = torch.from_numpy(queries[:hf_queries]).long()
    batch_size = args.hf_batch_size or hf_queries
    batches = [
        (hf_inputs[i : i + batch_size], (hf_inputs[i : i + batch_size] != 0).long())
        for i in range(0, len(hf_inputs), batch_size)
    ]
    held: dict[str, Any] = {}

    def generate(input_ids: Any, attention_mask: Any) -> Any:
        with torch.inference_mode():
            return hf.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                num_beams=beam,
                num_return_sequences=TOP_K,
                max_new_tokens=sid_length + int(args.score_eos),
                min_new_tokens=0,
                prefix_allowed_tokens_fn=allowed,
                do_sample=False,
                length_penalty=0.0,
                early_stopping=True,
                decoder_start_token_id=0,
                eos_token_id=EOS_ID,
                pad_token_id=0,
            )

    def run_hf() -> None:
        held["sequences"] = [generate(ids, mask) for ids, mask in batches]

    generate(hf_inputs[:2], (hf_inputs[:2] != 0).long())  # warm-up (allocators, lazy initialisation)
    runners = {"ours": (run_ours, args.repeats), "hf": (run_hf, args.hf_repeats)}
    seconds, calls, background = run_rounds(runners, args.sample_seconds)

    # agreement on the HF queries: HF's sequences are [start, SID..., (EOS)], 10 per query
    n = len(hf_inputs)
    hf_sids = torch.cat(held["sequences"]).numpy().reshape(n, TOP_K, -1)[:, :, 1 : 1 + sid_length]
    top1_same = (hf_sids[:, 0] == ours_tokens[:n, 0]).all(-1)
    overlap = [len({tuple(s) for s in hf_sids[q]} & {tuple(s) for s in ours_tokens[q]}) / TOP_K for q in range(n)]
    # both top-1 SIDs of every query, scored teacher-forced by both models
    both_queries = np.concatenate([queries[:n], queries[:n]])
    both_sids = np.concatenate([ours_tokens[:n, 0], hf_sids[:, 0]])
    by_ours = teacher_forced_scores(ours, None, both_queries, both_sids, args.score_eos)
    by_hf = teacher_forced_scores(ours, hf, both_queries, both_sids, args.score_eos)
    ours_by_ours, hf_by_ours = by_ours[:n], by_ours[n:]
    ours_by_hf, hf_by_hf = by_hf[:n], by_hf[n:]
    differing = [
        {
            "query": int(q),
            "ours_top1": {
                "search_score": float(ours_scores[q, 0]),
                "ours": float(ours_by_ours[q]),
                "hf": float(ours_by_hf[q]),
            },
            "hf_top1": {"ours": float(hf_by_ours[q]), "hf": float(hf_by_hf[q])},
        }
        for q in np.flatnonzero(~top1_same)
    ]

    ours_median, hf_median = statistics.median(seconds["ours"]), statistics.median(seconds["hf"])
    ours_qps, hf_qps = len(queries) / ours_median, n / hf_median
    return {
        "beam": beam,
        "ours": {
            "queries": len(queries),
            "first_call_s": first_call_s,
            "seconds": seconds["ours"],
            "calls_per_sample": calls["ours"],
            "median_s": ours_median,
            "queries_per_s": ours_qps,
        },
        "hf": {
            "queries": n,
            "batch_size": batch_size,
            "seconds": seconds["hf"],
            "calls_per_sample": calls["hf"],
            "median_s": hf_median,
            "queries_per_s": hf_qps,
        },
        "ratio": ours_qps / hf_qps,
        "top1_agreement": float(top1_same.mean()),
        "top10_overlap": float(np.mean(overlap)),
        # our search's top-1 score against our model's teacher-forced one; both models' log-probabilities
        # of the same SIDs (both top-1s of every query)
        "max_search_score_error": float(np.abs(ours_by_ours - ours_scores[:n, 0]).max()),
        "max_library_gap": float(np.abs(by_ours - by_hf).max()),
        "top1_disagreements": differing,
        "background_cpu_share": background,
    }


def teacher_forced_scores(
    ours: Any, hf: Any | None, queries: np.ndarray, sid_tokens: np.ndarray, score_eos: bool
) -> np.ndarray:
    """``[B]`` log-probability of ``sid_tokens [B, L]`` (then EOS when ``score_eos``) for each query,
    under our model (``hf`` None) or under HF's, one teacher-forced forward pass."""
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx

    targets = sid_tokens
    if score_eos:
        targets = np.concatenate([targets, np.full((len(targets), 1), EOS_ID)], axis=1)
    decoder_inputs = np.pad(targets[:, :-1], ((0, 0), (1, 0))).astype(np.int32)
    if hf is None:
        logits = nnx.jit(lambda m, e, d: m(e, d))(ours, jnp.asarray(queries), jnp.asarray(decoder_inputs))
        logits = np.asarray(logits, np.float32)
    else:
        ids = torch.from_numpy(queries).long()
        with torch.inference_mode():
            logits = hf(
                input_ids=ids,
                attention_mask=(ids != 0).long(),
                decoder_input_ids=torch.from_numpy(decoder_inputs).long(),
            )
        logits = logits.logits.float().numpy()
    log_probs = np.asarray(jax.nn.log_softmax(jnp.asarray(logits), axis=-1))
    return np.take_along_axis(log_probs, targets[..., None].astype(np.int64), axis=-1)[..., 0].sum(1)


# --- report -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beams", default="20,128", help="beam widths, comma-separated")
    parser.add_argument("--num_queries", type=int, default=64, help="queries per call of ours")
    parser.add_argument(
        "--hf_queries", default="64", help="HF runs the first N queries (it is slow): one N, or one per beam width"
    )
    parser.add_argument("--hf_batch_size", type=int, default=None, help="HF queries per generate call (default all)")
    parser.add_argument("--input_length", type=int, default=64)
    parser.add_argument("--num_items", type=int, default=NUM_ITEMS, help="synthetic items (without --codebook)")
    parser.add_argument("--codebook", default=None, help="a SidCodebook directory to use instead of synthetic SIDs")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="our activations")
    parser.add_argument("--torch_threads", type=int, default=None, help="PyTorch threads (default: usable cores)")
    parser.add_argument(
        "--cpu_devices", type=int, default=None, help="CPU devices our queries are sharded over (default: usable cores)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed samples of ours per beam")
    parser.add_argument("--hf_repeats", type=int, default=2, help="timed samples of HF per beam")
    parser.add_argument(
        "--sample_seconds",
        type=float,
        default=1.0,
        help="a sample repeats back-to-back calls for at least this long (one HF call at beam 20 takes ~1.1 s)",
    )
    parser.add_argument("--no_score_eos", dest="score_eos", action="store_false", help="no EOS step on either side")
    parser.add_argument("--json_out", default=None, help="write every number to this file")
    add_xla_defaults_option(parser)
    args = parser.parse_args()
    beams = [int(b) for b in args.beams.split(",")]
    hf_queries = [min(int(n), args.num_queries) for n in args.hf_queries.split(",")]
    if len(hf_queries) == 1:
        hf_queries *= len(beams)
    if len(hf_queries) != len(beams):
        parser.error(f"--hf_queries gives {len(hf_queries)} counts for {len(beams)} beam widths")
    if min(beams) < TOP_K or min(hf_queries) < 1 or args.repeats < 1 or args.hf_repeats < 1:
        parser.error(f"beams must be >= top-k {TOP_K}; --hf_queries, --repeats and --hf_repeats >= 1")
    if args.sample_seconds < 0:
        parser.error("--sample_seconds must be >= 0")
    cores = len(os.sched_getaffinity(0))
    args.cpu_devices = args.cpu_devices or cores
    if args.cpu_devices < 1 or args.num_queries % args.cpu_devices:
        parser.error(f"--cpu_devices must be >= 1 and divide --num_queries {args.num_queries}, got {args.cpu_devices}")
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        parser.error("XLA_FLAGS sets --xla_force_host_platform_device_count: use --cpu_devices instead")
    if args.cpu_devices > 1:
        flag = f"--xla_force_host_platform_device_count={args.cpu_devices}"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    apply_xla_defaults_option(args)

    import jax
    import torch
    import transformers

    from onesearch_jax.decode.device_trie import DeviceTrie

    torch.set_num_threads(args.torch_threads or cores)
    trie, token_offsets, source = sid_setup(args.codebook, args.num_items)
    device_trie = DeviceTrie.from_trie(trie, token_offsets)
    queries = make_queries(args.num_queries, args.input_length)
    hf, ours = build_models(args.dtype)
    print(
        f"cpu cores: {os.cpu_count()} (usable {cores}); torch threads {torch.get_num_threads()}; "
        f"jax {jax.__version__} on {jax.devices()[0].device_kind} x{jax.device_count()}, "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )
    print(
        f"model tiny, vocab {VOCAB_SIZE}, ours {args.dtype} / HF float32; SIDs {source}: {trie.num_sids} SIDs, "
        f"code sizes {trie.code_sizes}, token ids from {token_offsets}, trie nodes per depth "
        f"{np.diff(trie.depth_offsets).tolist()}, max children {trie.max_children.tolist()}"
    )
    print(
        f"queries: {args.num_queries} (HF: the first {'/'.join(map(str, hf_queries))} at beam "
        f"{'/'.join(map(str, beams))}, batches of {args.hf_batch_size or 'all'}) x "
        f"{args.input_length} input ids ({np.mean(queries != 0):.0%} real); top-{TOP_K}, "
        f"{'SID + EOS' if args.score_eos else 'SID only'} scored; timed: ours {args.repeats}x, HF {args.hf_repeats}x, "
        f"samples of >= {args.sample_seconds:g} s"
    )

    rows = []
    for beam, hf_count in zip(beams, hf_queries, strict=True):
        row = bench_beam(beam, hf_count, ours, hf, trie, device_trie, queries, args)
        rows.append(row)
        print(
            f"  beam {beam}: ours first call {row['ours']['first_call_s']:.1f} s, median "
            f"{row['ours']['median_s']:.3f} s / {row['ours']['queries']} q "
            f"({row['ours']['calls_per_sample']} calls per sample); "
            f"HF median {row['hf']['median_s']:.2f} s / {row['hf']['queries']} q "
            f"({row['hf']['calls_per_sample']} calls per sample)"
        )

    print(f"\n{'beam':>5s} {'ours q/s':>10s} {'HF q/s':>9s} {'ratio':>8s} {'top-1 agree':>12s} {'top-10 overlap':>15s}")
    for row in rows:
        print(
            f"{row['beam']:5d} {row['ours']['queries_per_s']:10.1f} {row['hf']['queries_per_s']:9.2f} "
            f"{row['ratio']:7.1f}x {row['top1_agreement']:12.0%} {row['top10_overlap']:15.0%}"
        )
    for row in rows:
        print(
            f"beam {row['beam']}: top-1 SIDs re-scored teacher-forced: |our search's score - our model's| <= "
            f"{row['max_search_score_error']:.1e}; |our model's - HF model's log-prob| <= {row['max_library_gap']:.1e}"
        )
        for d in row["top1_disagreements"]:
            ours_top1, hf_top1 = d["ours_top1"], d["hf_top1"]
            print(
                f"  query {d['query']}: top-1 differs: our SID scores {ours_top1['ours']:.5f} (ours) / "
                f"{ours_top1['hf']:.5f} (HF model), HF's SID {hf_top1['ours']:.5f} / {hf_top1['hf']:.5f}"
            )
    shares = [row["background_cpu_share"] for row in rows if row["background_cpu_share"] is not None]
    if shares:
        print(
            f"other processes' CPU use during the timed rounds: up to {max(shares):.0%} of the machine"
            + (" -- WARNING: the machine was not quiet, times and ratios are unreliable" if max(shares) > 0.1 else "")
        )
    worst = min(row["ratio"] for row in rows)
    print(
        f"target >= {TARGET_RATIO:.0f}x queries/s: {'met' if worst >= TARGET_RATIO else 'not met'} (worst {worst:.1f}x)"
    )

    if args.json_out:
        out = {
            "args": vars(args),
            "vocab_size": VOCAB_SIZE,
            "top_k": TOP_K,
            "cpu_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "versions": {"jax": jax.__version__, "torch": torch.__version__, "transformers": transformers.__version__},
            "sids": {
                "source": source,
                "num_sids": trie.num_sids,
                "code_sizes": list(trie.code_sizes),
                "token_offsets": list(token_offsets),
                "nodes_per_depth": np.diff(trie.depth_offsets).tolist(),
                "max_children": trie.max_children.tolist(),
            },
            "results": rows,
            "target": {"ratio": TARGET_RATIO, "worst": worst, "met": worst >= TARGET_RATIO},
        }
        with open(args.json_out, "w") as f:
            json.dump(out, f, indent=2)
        print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
