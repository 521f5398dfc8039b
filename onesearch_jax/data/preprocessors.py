"""Small composable seqio preprocessors for OneSearch records (one job each).

Order in a task: ``select_inputs`` (which text is the encoder input) -> seqio ``tokenize`` ->
``check_sid_targets`` (every target is a whole valid SID) -> ``check_lengths`` (over-long
features: an error, or a truncation the example records) -> seqio ``append_eos_after_trim``.
GRPO's task first turns the session's SID lists into trie leaves (``sid_lists_to_leaves``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import seqio
import tensorflow as tf

TRUNCATED = "truncated"


def select_inputs(dataset: tf.data.Dataset, source: str) -> tf.data.Dataset:
    """Uses the record's ``source`` text (``inputs`` or ``teacher_inputs``) as ``inputs``."""

    def fn(ex: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        out = dict(ex)
        out["inputs"] = ex[source]
        if source != "inputs":
            out.pop(source)
        return out

    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def keep_features(dataset: tf.data.Dataset, names: Sequence[str]) -> tf.data.Dataset:
    """Drops every feature not in ``names`` (ids and reward fields stay in the records)."""
    return dataset.map(lambda ex: {k: ex[k] for k in names}, num_parallel_calls=tf.data.AUTOTUNE)


@seqio.map_over_dataset
def check_sid_targets(ex: Mapping[str, tf.Tensor], *, position_ranges: Sequence[tuple[int, int]]):
    """Fails (InvalidArgumentError naming the record) unless ``targets`` is exactly one SID.

    ``position_ranges[t]`` is the ``[first, end)`` range of token ids allowed at SID position t
    (``OneSearchVocabulary.position_id_ranges()``), so a valid SID token at the wrong position is
    caught too. Alignment tasks whose targets are text (SID -> title, ...) skip this check.
    """
    targets = ex["targets"]
    lo = tf.constant([r[0] for r in position_ranges], tf.int32)
    hi = tf.constant([r[1] for r in position_ranges], tf.int32)
    length = len(position_ranges)
    padded = tf.pad(targets[:length], [[0, tf.maximum(length - tf.size(targets), 0)]], constant_values=-1)
    in_range = tf.logical_and(padded >= lo, padded < hi)
    ok = tf.logical_and(tf.size(targets) == length, tf.reduce_all(in_range))
    with tf.control_dependencies(
        [
            tf.debugging.Assert(
                ok,
                [
                    "targets are not one SID of",
                    length,
                    "tokens:",
                    targets,
                    "inputs:",
                    ex.get("inputs_pretokenized", ""),
                ],
            )
        ]
    ):
        return {k: tf.identity(v) for k, v in ex.items()}


def check_lengths(
    dataset: tf.data.Dataset,
    output_features: Mapping[str, seqio.Feature],
    sequence_length: Mapping[str, int] | None,
    *,
    truncate: Sequence[str] = (),
) -> tf.data.Dataset:
    """Over-long token features: an error, or (features in ``truncate``) a recorded truncation.

    Lengths count the EOS that ``append_eos_after_trim`` adds. A truncated example keeps its
    first tokens (the query and profile come first in the layout; the oldest history is cut) and
    gets ``truncated = 1``, so a data report or the trainer's metrics can count it; nothing is cut
    silently. Without ``sequence_length`` (e.g. caching) the check is skipped.
    """
    if sequence_length is None:
        return dataset

    def fn(ex: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        out = dict(ex)
        cut = tf.constant(0, tf.int32)
        checks = []
        for name, feature in output_features.items():
            if name not in ex or sequence_length.get(name) is None:
                continue
            limit = sequence_length[name] - int(feature.add_eos)
            size = tf.size(ex[name])
            if name in truncate:
                cut = tf.maximum(cut, tf.cast(size > limit, tf.int32))
                out[name] = ex[name][:limit]
            else:
                checks.append(tf.debugging.Assert(size <= limit, [
                    f"feature {name} has more tokens than its length {sequence_length[name]} allows:", size,
                    "inputs:", ex.get("inputs_pretokenized", ""),
                ]))  # fmt: skip
        out[TRUNCATED] = cut
        with tf.control_dependencies(checks):
            return {k: tf.identity(v) for k, v in out.items()}

    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def sid_lists_to_leaves(
    dataset: tf.data.Dataset,
    *,
    leaf_table: Callable[[], tuple[Sequence[str], Sequence[int]]],
    fields: Mapping[str, str],
    cast: Mapping[str, str] | None = None,
) -> tf.data.Dataset:
    """Turns each list of SIDs ``fields[src]`` into ``dst``: their trie leaves plus one, int32.

    The shift keeps 0 free for the padding the feature converter adds (the trainer subtracts one,
    so padding reads as leaf -1). ``leaf_table()`` gives the codebook's SID tokens and their leaf
    (row of ``SidTrie.leaf_sids``); it is called when the dataset is built, not when the task is
    registered. A SID the codebook does not have fails the pipeline (InvalidArgumentError naming
    the record's session, the field and the SID): nothing is dropped. ``cast`` copies other list
    features as int32 (``relevance_tiers``). Sparse (``VarLenFeature``) lists are made dense.
    """
    sids, leaves = leaf_table()
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(list(sids), tf.string), tf.constant(list(leaves), tf.int32)),
        default_value=-1,
    )

    def dense(x: tf.Tensor | tf.SparseTensor, default: Any) -> tf.Tensor:
        return tf.sparse.to_dense(x, default_value=default) if isinstance(x, tf.SparseTensor) else x

    def fn(ex: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        out = dict(ex)
        checks = []
        for src, dst in fields.items():
            sids_of = dense(ex[src], "")
            found = table.lookup(sids_of)
            checks.append(tf.debugging.Assert(tf.reduce_all(found >= 0), [
                "the record of session", ex.get("session_id", -1), f"has a SID in {src} that the codebook lacks:",
                tf.boolean_mask(sids_of, found < 0),
            ]))  # fmt: skip
            out.pop(src)
            out[dst] = found + 1
        for src, dst in (cast or {}).items():
            out.pop(src)
            out[dst] = tf.cast(dense(ex[src], 0), tf.int32)
        with tf.control_dependencies(checks):
            return {k: tf.identity(v) for k, v in out.items()}

    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)
