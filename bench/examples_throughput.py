"""Input-pipeline throughput of the personalised distill task (the LR-ESD stage's data).

Reads the records and vocabulary of ``make demo`` (or those named by the flags), runs the full
seqio pipeline (TFRecord parsing, SentencePiece tokenisation, SID checks, length checks, the
teacher-aware feature converter, batching) and reports examples/s on this machine. The peer,
measured in the same run, is the floor any such pipeline pays: reading and parsing the same
TFRecords without tokenising. Then it times the jitted train step of the ``tiny`` model on the
same batches (student features, one CPU device) and prints which share of a step the input
pipeline would take if it ran serially with it.

    python bench/examples_throughput.py [--examples demo_output/examples] [--vocab demo_output/sids/vocab]
"""

from __future__ import annotations

import argparse
import os
import time

import tensorflow as tf

from onesearch_jax.data.batches import BatchConfig, ResumableBatches
from onesearch_jax.xla_flags import apply_xla_defaults
from tasks.onesearch import register_onesearch_tasks

LENGTHS = {"inputs": 256, "teacher_inputs": 320, "targets": 8}


def pipeline_rate(batches: int, batch_size: int) -> tuple[float, float]:
    config = BatchConfig(
        mixture_or_task="onesearch_personalized_distill", task_feature_lengths=LENGTHS, batch_size=batch_size,
        feature_converter="encdec_teacher", seed=0,
    )  # fmt: skip
    stream = ResumableBatches(config)
    next(stream)  # graph building and the shuffle buffer's first fill are not throughput
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    seconds = time.perf_counter() - start
    return batches * batch_size / seconds, seconds / batches


def step_seconds(batches: int, batch_size: int, vocab_size: int) -> float:
    """Seconds per jitted train step of the tiny model on distill batches (after compilation)."""
    import jax

    from onesearch_jax.models.configs import named_config
    from onesearch_jax.models.encoder_decoder import EncoderDecoder
    from onesearch_jax.models.mesh_config import MeshConfig, standard_logical_axis_rules
    from onesearch_jax.models.partitioning import make_mesh
    from onesearch_jax.train.optimizer_config import OptimizerConfig
    from onesearch_jax.train.optimizers import make_optimizer
    from onesearch_jax.train.state import init_train_state
    from onesearch_jax.train.step import make_train_step

    config = named_config("tiny", vocab_size=vocab_size)
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    rules = standard_logical_axis_rules()
    optimizer = make_optimizer(OptimizerConfig(learning_rate=1e-3))
    graphdef, state, shardings = init_train_state(
        lambda rngs: EncoderDecoder(config, rngs=rngs), optimizer, mesh, rules
    )
    step = make_train_step(graphdef, optimizer, mesh, rules, state_shardings=shardings)
    stream = ResumableBatches(
        BatchConfig(mixture_or_task="onesearch_personalized_raw", batch_size=batch_size, seed=0,
                    task_feature_lengths={"inputs": LENGTHS["inputs"], "targets": LENGTHS["targets"]})
    )  # fmt: skip
    data = [next(stream) for _ in range(batches + 1)]
    state, metrics = step(state, data[0])  # compile
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for batch in data[1:]:
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / batches


def parse_rate(path: str, examples: int) -> float:
    spec = {k: tf.io.FixedLenFeature([], tf.string) for k in ("inputs", "teacher_inputs", "targets")}
    ds = tf.data.TFRecordDataset(path).repeat().map(lambda pb: tf.io.parse_single_example(pb, spec)).take(examples)
    start = time.perf_counter()
    for _ in ds.as_numpy_iterator():
        pass
    return examples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", default="demo_output/examples")
    parser.add_argument("--vocab", default="demo_output/sids/vocab")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--step_batches", type=int, default=10)
    args = parser.parse_args()
    apply_xla_defaults()  # the step runs as `onesearch train` runs it
    register_onesearch_tasks(args.examples, args.vocab)
    rate, per_batch = pipeline_rate(args.batches, args.batch_size)
    floor = parse_rate(os.path.join(args.examples, "personalized", "train.tfrecord"), args.batches * args.batch_size)
    print(f"cores: {os.cpu_count()}, lengths {LENGTHS}, batch {args.batch_size}")
    print(f"onesearch_personalized_distill: {rate:,.0f} examples/s ({per_batch * 1e3:.1f} ms per batch)")
    print(f"TFRecord parse only (peer):      {floor:,.0f} examples/s; pipeline / parse = {floor / rate:.1f}x slower")
    vocab = register_onesearch_tasks(args.examples, args.vocab)
    step = step_seconds(args.step_batches, args.batch_size, vocab.vocab_size)
    print(f"tiny model train step (1 CPU device, bf16 activations): {step * 1e3:.1f} ms per batch")
    print(f"input pipeline / train step = {per_batch / step:.1%} of a step per batch")


if __name__ == "__main__":
    main()
