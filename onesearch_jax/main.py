"""The ``onesearch`` command: one entry point for every job, gin-configured like T5X.

Usage::

    onesearch world --output_dir=DIR [--gin_file=gin/world/default.gin] [--gin.WorldConfig.num_items=5000]
    onesearch data validate DIR [--skip_invalid] [--nocheck_references] [--report_json=FILE]
    onesearch data import-relevance TABLE.csv[.zip] OUT_DIR [--skip_invalid]
        [--gin.RelevanceTableConfig.click_tier=3]
    onesearch build-sids DATA_DIR OUT_DIR [--gin_file=gin/sid/default.gin] [--lexicon=TSV]
        [--previous_sids=DIR --keep_levels=2] [--compare]
    onesearch keywords DATA_DIR REPOSITORY.jsonl [--gin_file=gin/understanding/default.gin] [--lexicon=TSV]
        [--ontology=JSONL] [--external_keywords=JSONL] [--refresh_from=OLD.jsonl] [--report_json=FILE]
    onesearch data build-examples DATA_DIR OUT_DIR --sids=SIDS_DIR --keywords=REPOSITORY.jsonl
        [--gin_file=gin/examples/default.gin] [--skip_invalid]
    onesearch train --gin_file=gin/runs/sft.gin --gin_file=gin/models/tiny.gin [--gin.MODEL_DIR="'DIR'"]
        [--dry_run] [--multiprocess | --coordinator_address=HOST:PORT --num_processes=N --process_id=I]
    onesearch eval --gin_file=gin/runs/sft.gin --gin_file=gin/runs/eval.gin --gin_file=gin/models/tiny.gin
        [--step=N | --all_steps | --watch] [--gin.EvalConfig.beam_size=64]
    onesearch infer --gin_file=gin/runs/sft.gin --gin_file=gin/runs/infer.gin --gin_file=gin/models/tiny.gin
        [--step=N] [--gin.InferConfig.inputs_file="'inputs.txt'"]
    onesearch ablation --gin_file=gin/ablations/lr_esd.gin
    onesearch demo [--output_dir=demo_output] [--gin.DemoConfig.ablation_gin="'gin/demo/ablation.gin'"]

Multi-process jobs (TPU pods, GPU clusters, ``launch/multihost_local.sh``): every process runs the
same ``train`` / ``eval`` / ``infer`` command with ``--multiprocess`` (the job detected from Cloud
TPU, SLURM, Open MPI or Kubernetes) or ``--coordinator_address=HOST:PORT --num_processes=N
--process_id=I``; see ``onesearch_jax/distributed.py``.

Configuration: ``--gin_file`` (repeatable, looked up in ``--gin_search_paths`` and the project
root), then ``--gin.NAME=VALUE`` overrides (or ``--gin_bindings``). Bad input ends with one line
naming file, line and field, and exit status 2; an invalid dataset makes ``validate`` exit 1.
``train`` on SIGTERM writes a checkpoint and exits 0, or 75 when that checkpoint has not landed
within ``TrainConfig.preemption_deadline_seconds`` (a restart resumes from the previous one).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import gin
from absl import app, flags, logging

from onesearch_jax.configurables import (
    ConfiguredAblation,
    ConfiguredCheckpoint,
    ConfiguredDemo,
    ConfiguredEval,
    ConfiguredExamples,
    ConfiguredInfer,
    ConfiguredKeywordJob,
    ConfiguredMesh,
    ConfiguredOptimizer,
    ConfiguredSegments,
    ConfiguredT5,
    ConfiguredTable,
    ConfiguredTrain,
    ConfiguredWorld,
    configured_logical_axis_rules,
    configured_sid_build,
    configured_train_loss,
    configured_understanding,
    configured_vocab,
)
from onesearch_jax.data.example_io import vocabulary_corpus
from onesearch_jax.data.examples import build_examples
from onesearch_jax.data.prompts import PROMPT_MARKERS
from onesearch_jax.data.relevance_import import import_relevance_table
from onesearch_jax.data.schema import RecordError
from onesearch_jax.data.stats import format_summary
from onesearch_jax.data.validate import validate_dataset
from onesearch_jax.data.world import generate_world
from onesearch_jax.gin_utils import parse_gin, rewrite_gin_args
from onesearch_jax.sid.build import build_sids, resolve_data_dir
from onesearch_jax.sid.codebook import SidCodebook
from onesearch_jax.train.run_config import TrainConfig
from onesearch_jax.understanding.job import run_keywords_job, write_report_json
from onesearch_jax.xla_flags import apply_xla_defaults

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", [], "gin files to parse, in order (T5X style).")
flags.DEFINE_multi_string("gin_bindings", [], "gin bindings, applied after the files; --gin.NAME=VALUE is shorthand.")
flags.DEFINE_list("gin_search_paths", ["."], "directories searched for --gin_file and gin includes.")
flags.DEFINE_string(
    "output_dir", None, "world: directory to write the world into; demo: its outputs (default demo_output)."
)
flags.DEFINE_bool("skip_invalid", False, "count and report invalid records instead of failing.")
flags.DEFINE_bool("check_references", True, "validate: check ids across files (off for samples that do not join).")
flags.DEFINE_string("report_json", None, "validate, keywords: also write the report as JSON to this file.")
flags.DEFINE_string(
    "lexicon", None, "build-sids, keywords: attribute lexicon TSV (default: DATA_DIR/lexicon/attributes.tsv)."
)
flags.DEFINE_string("previous_sids", None, "build-sids: earlier codebook dir; its embedder and kept levels are reused.")
flags.DEFINE_integer("keep_levels", 0, "build-sids: residual levels kept from --previous_sids (incremental mode).")
flags.DEFINE_bool("compare", False, "build-sids: also build without keyword fusion and print both reports.")
flags.DEFINE_string("ontology", None, "keywords: intent ontology JSONL (default: DATA_DIR/lexicon/ontology.jsonl).")
flags.DEFINE_string("external_keywords", None, "keywords: JSONL of query -> keywords made elsewhere (e.g. an LLM).")
flags.DEFINE_string("refresh_from", None, "keywords: repository to refresh incrementally (adds new queries only).")
flags.DEFINE_string("sids", None, "build-examples: the SID codebook directory (onesearch build-sids).")
flags.DEFINE_string("keywords", None, "build-examples: the keyword repository (onesearch keywords).")
flags.DEFINE_integer("step", None, "eval, infer: the checkpoint step (default: the latest).")
flags.DEFINE_bool("all_steps", False, "eval: evaluate every checkpoint in the model directory, oldest first.")
flags.DEFINE_bool(
    "dry_run", False, "train: build the mesh, shard the state and compile each stage's step, then print the "
    "parameter count and per-device memory without training or writing anything (see train/dry_run.py)."
)  # fmt: skip
flags.DEFINE_bool(
    "multiprocess", False, "train, eval, infer: join a multi-process job (jax.distributed; detected on Cloud TPU, "
    "SLURM, Open MPI, Kubernetes, or given by the three flags below or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
    "JAX_PROCESS_ID)."
)  # fmt: skip
flags.DEFINE_string("coordinator_address", None, "multi-process: host:port of process 0's coordination service.")
flags.DEFINE_integer("num_processes", None, "multi-process: processes in the job.")
flags.DEFINE_integer("process_id", None, "multi-process: this process's index, 0 .. num_processes - 1.")
flags.DEFINE_bool("watch", False, "eval: evaluate each new checkpoint as training writes it, until the last step.")


def cmd_world(args: Sequence[str]) -> int:
    """Generates the synthetic world, validates it and prints its statistics."""
    _expect(args, 0, "world takes no positional arguments; set --output_dir")
    if not FLAGS.output_dir:
        raise app.UsageError("world needs --output_dir")
    config = ConfiguredWorld()
    logging.info("generating world %s", config)
    start = time.perf_counter()
    summary = generate_world(config, FLAGS.output_dir)
    seconds = time.perf_counter() - start
    rows = sum(summary.rows.values())
    report = validate_dataset(summary.kuaisearch_dir)
    print(report.format())
    print("statistics:")
    print(format_summary(report.stats))
    print("world (hidden truth, for tests):")
    print(format_summary(summary.figures))
    print(f"generated {rows} rows in {seconds:.1f} s ({rows / seconds:,.0f} rows/s) into {summary.out_dir}")
    return 0 if report.ok else 1


def cmd_validate(args: Sequence[str]) -> int:
    """Validates a KuaiSearch directory; exit 1 when invalid (unless --skip_invalid)."""
    (root,) = _expect(args, 1, "usage: onesearch data validate DIR")
    report = validate_dataset(root, skip_invalid=FLAGS.skip_invalid, check_references=FLAGS.check_references)
    print(report.format())
    print("statistics of the valid records:")
    print(format_summary(report.stats))
    if FLAGS.report_json:
        with open(FLAGS.report_json, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, indent=2, ensure_ascii=False)
    return 0 if report.ok else 1


def cmd_import_relevance(args: Sequence[str]) -> int:
    """Converts a query-product relevance CSV into a KuaiSearch directory."""
    table, out_dir = _expect(args, 2, "usage: onesearch data import-relevance TABLE.csv[.zip] OUT_DIR")
    summary = import_relevance_table(table, out_dir, ConfiguredTable(), skip_invalid=FLAGS.skip_invalid)
    print(
        f"imported {summary.rows} rows: {summary.items} items, {summary.sessions} sessions, "
        f"scale {summary.scale[0]:g}-{summary.scale[1]:g} -> tiers {summary.tiers}; {summary.skipped.summary()}"
    )
    for error in summary.skipped.errors[:20]:
        print(f"  skipped {error}")
    return 0


def cmd_build_sids(args: Sequence[str]) -> int:
    """Builds the SID codebook of a KuaiSearch directory (or a world directory) and reports its quality."""
    data_arg, out_dir = _expect(args, 2, "usage: onesearch build-sids DATA_DIR OUT_DIR")
    data_dir, lexicon = resolve_data_dir(data_arg, FLAGS.lexicon)
    config = configured_sid_build()
    print(f"building SIDs of {data_dir} (lexicon: {lexicon or 'none'}) into {out_dir}")
    result = build_sids(data_dir, out_dir, config, lexicon_path=lexicon, previous_dir=FLAGS.previous_sids,
                        keep_levels=FLAGS.keep_levels)  # fmt: skip
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    coverage = ", ".join(f"{k} {v:.1%}" for k, v in result.keyword_coverage.items())
    print(f"trained on {result.fit_vectors:,} vectors; keyword coverage: {coverage}; {timings}")
    print(result.report.format())
    book = result.codebook
    print(f"example: item {book.item_ids[0]} -> {book.tokens(book.item_codes[0])}")
    if FLAGS.compare:
        raw = build_sids(data_dir, None, dataclasses.replace(config, fuse_keywords=False), lexicon_path=None,
                         previous_dir=FLAGS.previous_sids, keep_levels=FLAGS.keep_levels).report  # fmt: skip
        fused = result.report
        print("comparison (same settings; keyword fusion on vs off):")
        print(f"  {'':24}{'fused':>10}{'raw':>10}")
        for name, a, b in (
            ("CUR(L1xL2)", fused.cur_l1xl2, raw.cur_l1xl2),
            ("CUR total", fused.cur_total, raw.cur_total),
            ("ICR residual levels", fused.icr_rq, raw.icr_rq),
            ("ICR with OPQ", fused.icr_raw, raw.icr_raw),
            ("ICR after collisions", fused.icr, raw.icr),
        ):
            print(f"  {name:24}{a:>10.2%}{b:>10.2%}")
    return 0


def cmd_keywords(args: Sequence[str]) -> int:
    """Builds (or with --refresh_from refreshes) the keyword repository and prints its report."""
    data_dir, output = _expect(args, 2, "usage: onesearch keywords DATA_DIR REPOSITORY.jsonl")
    report = run_keywords_job(
        data_dir, output, lexicon=FLAGS.lexicon, ontology=FLAGS.ontology, external=FLAGS.external_keywords,
        refresh_from=FLAGS.refresh_from, config=configured_understanding(), job=ConfiguredKeywordJob(),
        skip_invalid=FLAGS.skip_invalid,
    )  # fmt: skip
    print(report.format())
    if FLAGS.report_json:
        write_report_json(report, FLAGS.report_json)
    return 0


def cmd_build_examples(args: Sequence[str]) -> int:
    """Writes the training records of every stage (TFRecord + JSON lines) and prints their counts."""
    usage = "usage: onesearch data build-examples DATA_DIR OUT_DIR --sids=DIR --keywords=FILE"
    data_arg, out_dir = _expect(args, 2, usage)
    if not FLAGS.sids or not FLAGS.keywords:
        raise app.UsageError("build-examples needs --sids=SIDS_DIR and --keywords=REPOSITORY.jsonl")
    data_dir, _ = resolve_data_dir(data_arg, None)
    summary = build_examples(data_dir, out_dir, sids_dir=FLAGS.sids, keywords_path=FLAGS.keywords,
                             config=ConfiguredExamples(), skip_invalid=FLAGS.skip_invalid)  # fmt: skip
    print(summary.format())
    from onesearch_jax.vocab import train_vocabulary  # seqio and TensorFlow: only this command needs them

    start = time.perf_counter()
    vocab_dir = os.path.join(FLAGS.sids, "vocab")
    config = dataclasses.replace(configured_vocab(), extra_symbols=PROMPT_MARKERS)
    vocab = train_vocabulary(vocabulary_corpus(out_dir), SidCodebook.load(FLAGS.sids), vocab_dir, config)
    first, end = vocab.sid_first_id, vocab.sid_first_id + vocab.sid_num_ids
    print(f"vocabulary: {vocab.vocab_size} ids (SID tokens {first}..{end - 1}) trained on the train records "
          f"into {vocab_dir} in {time.perf_counter() - start:.1f} s")  # fmt: skip
    return 0


def _train_setup(config: TrainConfig | None = None, num_microbatches: int = 1):
    """``config`` (default: gin's TrainConfig) checked against vocabulary, devices and mesh; nothing compiled."""
    from onesearch_jax.train.run import prepare_run  # jax, seqio and TensorFlow: only training jobs load them

    config = config or ConfiguredTrain()
    setup = prepare_run(
        config, model_config_fn=lambda vocab_size: ConfiguredT5(vocab_size=vocab_size), mesh_config=ConfiguredMesh(),
        rules=configured_logical_axis_rules(), num_microbatches=num_microbatches,
    )  # fmt: skip
    return setup, ConfiguredCheckpoint(directory=os.path.join(config.model_dir, "checkpoints"))


def _configured_optimizer(total_steps: int):
    """OptimizerConfig from gin; a cosine without ``total_steps`` ends at the run's last step."""
    try:
        gin.query_parameter("OptimizerConfig.total_steps")
    except ValueError:  # not bound
        return ConfiguredOptimizer(total_steps=total_steps)
    return ConfiguredOptimizer()


def cmd_train(args: Sequence[str]) -> int:
    """Trains (or resumes) the run the gin files describe; SIGTERM: a checkpoint, exit 0 (75: past the deadline)."""
    _expect(args, 0, "train takes no positional arguments; configure it with --gin_file and --gin.NAME=VALUE")
    config = ConfiguredTrain()
    total = config.total_steps
    objective = configured_train_loss(config.stages)  # a bad Distill/GrpoConfig fails here, before anything is compiled
    # the optimizer's schedule counts updates: GRPO makes inner_updates of them per step
    optimizer = _configured_optimizer(total * (objective.grpo.inner_updates if objective.grpo else 1))
    setup, checkpoints = _train_setup(config, optimizer.num_microbatches)
    if FLAGS.dry_run:
        from onesearch_jax.train.dry_run import dry_run

        ema_decay = objective.ema_teacher.decay if objective.ema_teacher is not None else None
        report = dry_run(setup, optimizer_config=optimizer, loss_fn=objective.loss_fn, ema_decay=ema_decay,
                         grpo=objective.grpo)  # fmt: skip
        print(report.format())
        return 0
    from onesearch_jax.models.encoder_decoder import param_count
    from onesearch_jax.train.preemption import PreemptionWatcher
    from onesearch_jax.train.run import train_run

    stages = ", ".join(f"{s.name} {s.num_steps}" for s in config.stages)
    print(f"model: {param_count(setup.model_config):,} parameters, vocabulary {setup.vocab.vocab_size} ids "
          f"(embedding {setup.model_config.vocab_size}); mesh {dict(setup.mesh.shape)}; batch {config.batch_size}; "
          f"stages: {stages} steps; model dir {config.model_dir}")  # fmt: skip
    with PreemptionWatcher(deadline_seconds=config.preemption_deadline_seconds) as watcher:
        result = train_run(setup, optimizer_config=optimizer, checkpoint_config=checkpoints,
                           loss_fn=objective.loss_fn, ema_teacher=objective.ema_teacher, grpo=objective.grpo,
                           run_meta={"gin_config": gin.config_str()}, watcher=watcher)  # fmt: skip
    if result.step == result.start_step:
        print(f"nothing to do: the run is complete at step {result.step} (of {total}) in {config.model_dir}")
        return 0
    status = "preempted: checkpoint written at" if result.preempted else "trained to"
    loss = result.train_metrics.get("loss", float("nan"))
    evals = ", ".join(f"{k} {v:.4f}" for k, v in sorted(result.eval_metrics.items()) if not k.endswith("examples"))
    print(f"{status} step {result.step} (of {total}, from {result.start_step}); train loss {loss:.4f}; {evals}")
    print(f"checkpoints: {checkpoints.path}; metrics: {os.path.join(config.model_dir, 'metrics.jsonl')}")
    return 0


def cmd_infer(args: Sequence[str]) -> int:
    """Decodes a task split (or --gin.InferConfig.inputs_file) with a checkpoint; writes JSON lines."""
    _expect(args, 0, "infer takes no positional arguments; configure it with --gin_file and --gin.NAME=VALUE")
    config = ConfiguredInfer()
    setup, checkpoints = _train_setup()
    from onesearch_jax.decode.infer import run_infer

    summary = run_infer(setup, checkpoints, config, step=FLAGS.step)
    exact = "n/a (no targets)" if summary.exact_match is None else f"{summary.exact_match:.2%}"
    print(f"decoded {summary.examples} examples with step {summary.step} (greedy): exact match {exact}, "
          f"predictions that spell a SID {summary.sid_rate:.2%}; written to {summary.path}")  # fmt: skip
    return 0


def cmd_eval(args: Sequence[str]) -> int:
    """Retrieval metrics (clicks and orders, segments, BM25 beside) of checkpoints of the run the gin files describe."""
    _expect(args, 0, "eval takes no positional arguments; configure it with --gin_file and --gin.NAME=VALUE")
    if sum((FLAGS.step is not None, FLAGS.all_steps, FLAGS.watch)) > 1:
        raise app.UsageError("eval takes at most one of --step, --all_steps and --watch")
    config = ConfiguredEval()
    setup, checkpoints = _train_setup()
    from onesearch_jax.evaluate.job import EvalJob

    job = EvalJob.create(setup, checkpoints, config, ConfiguredSegments())
    counts = job.truth_counts()
    print(f"evaluating {len(job.queries)} sessions of {job.sources.records} ({counts['click']} with a click, "
          f"{counts['order']} with an order; {job.truncated} inputs truncated to {config.input_length} tokens); "
          f"beam {config.beam_size}, K {list(config.ks)}; BM25 {'on' if config.bm25 else 'off'}")  # fmt: skip

    def show(summary: dict) -> None:
        from onesearch_jax.evaluate.report import markdown

        print(markdown(summary, config.ks))
        where = job.output_dir / f"step_{summary['step']}"
        print(f"decoded at {summary['queries_per_second']:.1f} queries/s; files in {where}")

    if FLAGS.watch:
        steps = job.watch(final_step=setup.config.total_steps, on_result=show)
        print(f"watcher done: evaluated steps {steps}")
    elif FLAGS.all_steps:
        steps = job.checkpoint_steps()
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {checkpoints.path}")
        for step in steps:
            show(job.evaluate(step))
    else:
        show(job.evaluate(FLAGS.step))
    return 0


def cmd_demo(args: Sequence[str]) -> int:
    """Runs the end-to-end pipeline (world to evaluation), skipping up-to-date stages; prints the ablation table."""
    _expect(args, 0, "demo takes no positional arguments; set --output_dir (default demo_output)")
    from onesearch_jax.pipeline.demo import DemoPaths, demo_report, demo_stages
    from onesearch_jax.pipeline.stages import run_pipeline

    paths = DemoPaths(Path(FLAGS.output_dir or "demo_output"))
    start = time.monotonic()
    results = run_pipeline(demo_stages(ConfiguredDemo(), paths), paths.stamps)
    print(demo_report(paths, results, time.monotonic() - start), end="")
    return 0


def cmd_ablation(args: Sequence[str]) -> int:
    """Trains and evaluates every row x seed of an ablation not done yet, then writes its summary table."""
    _expect(args, 0, "ablation takes no positional arguments; configure it with --gin_file and --gin.NAME=VALUE")
    from onesearch_jax.evaluate.ablation import run_ablation, write_summary

    config = ConfiguredAblation()
    finished = run_ablation(config)
    path = write_summary(config)
    print(f"ablation: {len(finished)} runs finished now; summary in {path}")
    print(path.read_text())
    return 0


COMMANDS: dict[tuple[str, ...], Callable[[Sequence[str]], int]] = {
    ("world",): cmd_world,
    ("data", "validate"): cmd_validate,
    ("data", "import-relevance"): cmd_import_relevance,
    ("data", "build-examples"): cmd_build_examples,
    ("build-sids",): cmd_build_sids,
    ("keywords",): cmd_keywords,
    ("train",): cmd_train,
    ("eval",): cmd_eval,
    ("infer",): cmd_infer,
    ("ablation",): cmd_ablation,
    ("demo",): cmd_demo,
}


MULTIPROCESS_COMMANDS = (("train",), ("eval",), ("infer",))


def _join_job(words: tuple[str, ...]) -> None:
    """``jax.distributed.initialize`` when the flags or the environment describe a multi-process job."""
    from onesearch_jax.distributed import FIELDS, DistributedConfig, initialize  # the flags are named as FIELDS

    flagged = FLAGS.multiprocess or any(FLAGS[name].present for name in FIELDS)
    if words not in MULTIPROCESS_COMMANDS:
        if flagged:
            raise ValueError(f"{' '.join(words)} runs in one process: --multiprocess and "
                             f"--{', --'.join(FIELDS)} are for train, eval and infer")  # fmt: skip
        return
    environment = DistributedConfig.from_environment()
    config = DistributedConfig(**{name: FLAGS[name].value if FLAGS[name].present else getattr(environment, name)
                                  for name in FIELDS})  # fmt: skip
    if flagged or config != DistributedConfig():
        initialize(config)


def _expect(args: Sequence[str], n: int, usage: str) -> Sequence[str]:
    if len(args) != n:
        raise app.UsageError(f"{usage} (got {list(args)})")
    return args


def main(argv: Sequence[str]) -> int:
    if not FLAGS["verbosity"].present:  # orbax and seqio log every file at INFO (--verbosity=0 shows it)
        logging.set_verbosity(logging.WARNING)
    args = list(argv[1:])
    words = next((w for w in COMMANDS if tuple(args[: len(w)]) == w), None)
    if words is None:
        names = ", ".join(" ".join(w) for w in COMMANDS)
        raise app.UsageError(f"unknown command {' '.join(args) or '(none)'}; commands: {names}")
    try:
        if FLAGS.dry_run and words != ("train",):
            raise ValueError(f"--dry_run is a train flag; {' '.join(words)} has none")
        parse_gin(FLAGS.gin_search_paths, FLAGS.gin_file, FLAGS.gin_bindings)
        _join_job(words)
        return COMMANDS[words](args[len(words) :])
    except (RecordError, OSError, ValueError, SyntaxError) as e:  # gin: SyntaxError, ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:  # ablation, demo: a command they ran failed (its output is above)
        print(f"error: {' '.join(map(str, e.cmd))} exited with status {e.returncode}", file=sys.stderr)
        return 1


def _parse_flags(argv: list[str]) -> list[str]:
    FLAGS.set_gnu_getopt(True)  # flags may follow the subcommand and its arguments
    try:
        return FLAGS(rewrite_gin_args(argv))
    except (flags.Error, ValueError) as e:
        print(f"error: {e}\nPass --help for usage.", file=sys.stderr)
        sys.exit(2)


def run() -> None:
    """Console-script entry point."""
    apply_xla_defaults()
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
