"""Serving cost of LR-ESD (issue #8): the distilled student decodes at the SFT baseline's speed, on
the raw input alone.

    python bench/serving_cost.py [--sft_dir demo_output/ablations/lr_esd/seed0/sft]
        [--distilled_dir demo_output/ablations/lr_esd/seed0/self_distillation]
        [--num_queries 256] [--rounds 5] [--json_out OUT.json] [--noxla_defaults]

Both model directories are runs of the same gin files (``gin/runs/lr_esd.gin`` + ``gin/models/tiny.gin``
by default; ``--gin_file`` replaces them), e.g. rows 1 and 2 of the LR-ESD ablation
(``onesearch ablation --gin_file=gin/ablations/lr_esd.gin``). Each run's latest checkpoint is
restored (parameters only, as ``onesearch eval`` does). The queries are the first ``--num_queries``
sessions of the test split, encoded as ``onesearch eval`` encodes them (``EvalConfig``: 256 tokens,
beam 20, top-10, batches of 32).

What it measures and checks, in one process:

* **Same program.** One ``ModelRanker`` (the evaluation job's trie-constrained beam search) is built
  for the SFT checkpoint's parameter shardings and serves both checkpoints. The parameter trees
  must match (paths, shapes, dtypes), and the distilled checkpoint's calls must trigger no XLA
  compilation (counted with ``jax.monitoring``): it runs the very executable the SFT model runs.
* **Same speed.** Timed rounds alternate the two checkpoints (the order flips every round, so a
  drift of a shared machine hits both); each sample decodes all queries; medians are reported with
  the ratio distilled / SFT, which the target puts at 1 (within the machine's noise).
* **No teacher input at serving.** The program's only data input is ``encoder_input_tokens``
  (``[batch, 256]``) of the student prompt (``EvalConfig.input_field = "inputs"``). The bench counts
  the ``[keywords]`` marker piece in those tokens (it must be 0) and in the teacher prompts of the
  same sessions (``teacher_inputs``), and their real (non-padding) token counts: the keyword chain
  of thought the teacher reads is what serving no longer has to produce or encode.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from cpu_load import background_share, cpu_ticks  # bench/cpu_load.py (the script's folder is on sys.path)
from xla_option import add_xla_defaults_option, apply_xla_defaults_option  # bench/xla_option.py

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GIN = ("gin/runs/lr_esd.gin", "gin/runs/eval.gin", "gin/models/tiny.gin")


def _setup(gin_files: list[str], model_dir: str):
    """(RunSetup, CheckpointConfig, EvalConfig, SegmentConfig) of ``model_dir``, as ``onesearch eval`` builds them."""
    import gin

    from onesearch_jax import configurables as c
    from onesearch_jax.gin_utils import parse_gin
    from onesearch_jax.train.run import prepare_run

    gin.clear_config()
    parse_gin(
        [], gin_files, [f"MODEL_DIR = '{model_dir}'", "EvalConfig.bm25 = False", "EvalConfig.valid_sid_rate = False"]
    )
    config = c.ConfiguredTrain()
    setup = prepare_run(config, model_config_fn=lambda v: c.ConfiguredT5(vocab_size=v), mesh_config=c.ConfiguredMesh(),
                        rules=c.configured_logical_axis_rules())  # fmt: skip
    checkpoints = c.ConfiguredCheckpoint(directory=os.path.join(config.model_dir, "checkpoints"))
    return setup, checkpoints, c.ConfiguredEval(), c.ConfiguredSegments()


def _signature(params: Any) -> list[tuple[str, tuple[int, ...], str]]:
    import jax

    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    return [(jax.tree_util.keystr(path), tuple(x.shape), str(x.dtype)) for path, x in flat]


def _prompt_stats(tokens: np.ndarray, marker_id: int) -> dict[str, float]:
    real = tokens != 0
    return {
        "rows": len(tokens),
        "rows_with_keywords_marker": int(np.sum(np.any(tokens == marker_id, axis=1))),
        "mean_tokens": float(real.sum(axis=1).mean()),
        "max_tokens": int(real.sum(axis=1).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft_dir", default="demo_output/ablations/lr_esd/seed0/sft")
    parser.add_argument("--distilled_dir", default="demo_output/ablations/lr_esd/seed0/self_distillation")
    parser.add_argument("--gin_file", action="append", default=None, help=f"gin files (default {list(DEFAULT_GIN)})")
    parser.add_argument("--num_queries", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json_out", default=None)
    add_xla_defaults_option(parser)
    args = parser.parse_args()
    if args.num_queries < 1 or args.rounds < 1:
        parser.error("--num_queries and --rounds must be >= 1")
    os.chdir(ROOT)  # the gin files' paths (demo_output/...) are relative to the project
    for name in ("sft_dir", "distilled_dir"):
        if not (Path(getattr(args, name)) / "checkpoints").is_dir():
            sys.exit(f"--{name} {getattr(args, name)} has no checkpoints/: train it first (see the module docstring)")
    apply_xla_defaults_option(args)
    import dataclasses

    import jax

    from onesearch_jax.data.prompts import MARKER_KEYWORDS
    from onesearch_jax.evaluate.job import EvalJob
    from onesearch_jax.evaluate.ranking import ModelRanker
    from onesearch_jax.train.run import restore_params

    gin_files = args.gin_file or list(DEFAULT_GIN)
    models: dict[str, dict[str, Any]] = {}
    for name, model_dir in (("sft", args.sft_dir), ("distilled", args.distilled_dir)):
        setup, checkpoints, eval_config, segments = _setup(gin_files, model_dir)
        graphdef, params, step = restore_params(setup, checkpoints)
        models[name] = {"dir": model_dir, "step": step, "graphdef": graphdef, "params": params}
    if _signature(models["sft"]["params"]) != _signature(models["distilled"]["params"]):
        sys.exit("the two checkpoints are of different architectures: this bench compares one architecture")
    eval_config = dataclasses.replace(eval_config, max_queries=args.num_queries)
    student = EvalJob.create(setup, checkpoints, eval_config, segments)
    teacher = EvalJob.create(setup, checkpoints, dataclasses.replace(eval_config, input_field="teacher_inputs"),
                             segments)  # fmt: skip
    marker_ids = setup.vocab.encode(MARKER_KEYWORDS)
    if len(marker_ids) != 1:
        sys.exit(f"{MARKER_KEYWORDS!r} is not one vocabulary piece ({marker_ids}): the marker count would be wrong")
    prompts = {"student (served)": _prompt_stats(student.tokens, marker_ids[0]),
               "teacher (training only)": _prompt_stats(teacher.tokens, marker_ids[0])}  # fmt: skip
    if prompts["student (served)"]["rows_with_keywords_marker"]:
        sys.exit("the served student inputs contain the [keywords] marker: the test split's inputs are not raw")

    sft = models["sft"]
    shardings = jax.tree.map(lambda x: x.sharding, sft["params"])
    ranker = ModelRanker(sft["graphdef"], shardings, setup.mesh, setup.rules, trie=student.codebook.trie(),
                         position_first_ids=setup.vocab.position_first_ids, config=eval_config)  # fmt: skip
    compiles = {"count": 0}

    def on_event(event: str, duration: float, **kwargs: Any) -> None:
        if "backend_compile" in event:
            compiles["count"] += 1

    jax.monitoring.register_event_duration_secs_listener(on_event)
    first = {}
    for name in ("sft", "distilled"):  # first calls: SFT compiles, the distilled checkpoint must not
        before = compiles["count"]
        first[name] = ranker.rank(models[name]["params"], student.tokens)
        models[name]["compiles_on_first_call"] = compiles["count"] - before
    if models["distilled"]["compiles_on_first_call"]:
        sys.exit(f"the distilled checkpoint compiled {models['distilled']['compiles_on_first_call']} programs: "
                 "it does not run the SFT model's executable")  # fmt: skip
    seconds: dict[str, list[float]] = {"sft": [], "distilled": []}
    background = []
    for round_index in range(args.rounds):
        order = ("sft", "distilled") if round_index % 2 == 0 else ("distilled", "sft")
        for name in order:
            ticks, start = cpu_ticks(), time.perf_counter()
            seconds[name].append(ranker.rank(models[name]["params"], student.tokens).seconds)
            share = background_share(ticks, cpu_ticks(), time.perf_counter() - start)
            if share is not None:
                background.append(share)
    n = len(student.tokens)
    rates = {name: n / statistics.median(s) for name, s in seconds.items()}
    ratio = rates["distilled"] / rates["sft"]
    top1 = np.mean(first["sft"].leaves[:, 0] == first["distilled"].leaves[:, 0])
    import jaxlib

    result = {
        "queries": n,
        "beam": eval_config.beam_size,
        "top_k": eval_config.top_k,
        "input_length": eval_config.input_length,
        "checkpoints": {name: {"dir": m["dir"], "step": m["step"]} for name, m in models.items()},
        "parameters": sum(int(np.prod(shape)) for _, shape, _ in _signature(sft["params"])),
        "compiles_on_first_call": {name: m["compiles_on_first_call"] for name, m in models.items()},
        "seconds": seconds,
        "queries_per_second": rates,
        "ratio_distilled_over_sft": ratio,
        "top1_sid_agreement": float(top1),
        "prompts": prompts,
        "background_cpu_share_max": max(background) if background else None,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    print(f"serving cost: {n} test queries, beam {eval_config.beam_size}, top-{eval_config.top_k}, "
          f"{eval_config.input_length}-token inputs, {result['parameters']:,} parameters")  # fmt: skip
    print(f"  one ranker: the SFT checkpoint's first call compiled {models['sft']['compiles_on_first_call']} "
          f"programs, the distilled checkpoint's {models['distilled']['compiles_on_first_call']}")  # fmt: skip
    for name in ("sft", "distilled"):
        m = models[name]
        print(f"  {name:9s} step {m['step']:5d} ({m['dir']}): {rates[name]:7.1f} queries/s "
              f"(median of {args.rounds}; samples {', '.join(f'{s:.2f}' for s in seconds[name])} s)")  # fmt: skip
    print(f"  ratio distilled / SFT: {ratio:.3f}  (top-1 SID agreement between them: {top1:.3f})")
    for name, stats in prompts.items():
        print(f"  {name:24s} prompts: [keywords] marker in {stats['rows_with_keywords_marker']} of {stats['rows']} "
              f"rows, {stats['mean_tokens']:.1f} real tokens on average (max {stats['max_tokens']})")  # fmt: skip
    if background and max(background) > 0.10:
        print(f"  warning: other processes took up to {max(background):.0%} of the CPU during a sample")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
