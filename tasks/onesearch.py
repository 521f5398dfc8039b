"""The OneSearch seqio Tasks and Mixtures, registered by name as T5X users expect.

Tasks (records from ``onesearch data build-examples``; splits train / validation / test, the
last two read from the ``valid`` and ``test`` record files):

* ``onesearch_stage1_alignment``: query <-> SID, title <-> SID, SID -> category, query ->
  keywords, query SID -> keyword SIDs;
* ``onesearch_stage2_cooccurrence``: query (or query SID) -> clicked item SID;
* ``onesearch_personalized_raw``: student inputs -> target SID;
* ``onesearch_personalized_keyword``: teacher inputs (with the keyword CoT) -> target SID;
* ``onesearch_personalized_distill``: ``inputs``, ``teacher_inputs`` and ``targets`` together,
  for LR-ESD (use ``EncDecTeacherFeatureConverter``);
* ``onesearch_personalized_grpo``: student inputs -> target SID, with the session's feedback
  (clicked, ordered and relevance-labelled SIDs as trie leaves of the records' codebook, and the
  relevance tiers), for TPMA-GRPO (use ``GrpoFeatureConverter``; the four feedback lists need
  lengths in ``task_feature_lengths``, and a longer list is an error, not a truncation).

Mixtures, one per training stage: ``onesearch_stage1`` (alignment), ``onesearch_stage2``
(co-occurrence with alignment replayed at rate 0.2), ``onesearch_stage3`` (personalised student
and teacher examples, 1:1).

Over-long inputs are truncated at the end (the oldest history) and marked ``truncated = 1``;
over-long targets are an error, and so is a personalised target that is not exactly one SID.
"""

from __future__ import annotations

import functools
import os

import seqio
import tensorflow as tf

from onesearch_jax.data import preprocessors as prep
from onesearch_jax.data.examples import examples_sids_dir
from onesearch_jax.sid.codebook import SidCodebook
from onesearch_jax.vocab import OneSearchVocabulary

STAGE_FILES = {"train": "train", "validation": "valid", "test": "test"}
TASKS = (
    "onesearch_stage1_alignment",
    "onesearch_stage2_cooccurrence",
    "onesearch_personalized_raw",
    "onesearch_personalized_keyword",
    "onesearch_personalized_distill",
    "onesearch_personalized_grpo",
)
MIXTURES = ("onesearch_stage1", "onesearch_stage2", "onesearch_stage3")
_TEXT = tf.io.FixedLenFeature([], tf.string)
_ID = tf.io.FixedLenFeature([], tf.int64)
# the session's feedback (GRPO): SID lists -> trie leaves + 1, and the relevance tiers
FEEDBACK_SIDS = {"clicked_sids": "clicked_leaves", "ordered_sids": "ordered_leaves",
                 "relevance_sids": "relevance_leaves"}  # fmt: skip
FEEDBACK_INTS = {"relevance_tiers": "relevance_tiers"}


def _source(examples_dir: str, stage: str, personalised: bool, feedback: bool = False) -> seqio.TFExampleDataSource:
    features = {"inputs": _TEXT, "targets": _TEXT, "task": _TEXT}
    if personalised:
        features = {"inputs": _TEXT, "teacher_inputs": _TEXT, "targets": _TEXT,
                    "session_id": _ID, "item_id": _ID}  # fmt: skip
    if feedback:
        features.update({name: tf.io.VarLenFeature(tf.string) for name in FEEDBACK_SIDS})
        features.update({name: tf.io.VarLenFeature(tf.int64) for name in FEEDBACK_INTS})
    return seqio.TFExampleDataSource(
        {split: os.path.join(examples_dir, stage, f"{name}.tfrecord") for split, name in STAGE_FILES.items()},
        feature_description=features,
    )


def register_onesearch_tasks(examples_dir: str, vocab_dir: str) -> OneSearchVocabulary:
    """(Re-)registers every OneSearch Task and Mixture over ``examples_dir`` with the vocabulary in ``vocab_dir``."""
    vocab = OneSearchVocabulary.load(vocab_dir)
    feature = functools.partial(seqio.Feature, vocabulary=vocab, add_eos=True)
    text_features = {"inputs": feature(), "targets": feature()}
    sid_check = functools.partial(prep.check_sid_targets, position_ranges=tuple(vocab.position_id_ranges()))

    def register(name: str, stage: str, *, personalised: bool, source_text: str = "inputs", teacher: bool = False,
                 feedback: bool = False):  # fmt: skip
        keep = ["inputs", "targets"] + (["teacher_inputs"] if teacher else [])
        features = dict(text_features, **({"teacher_inputs": feature()} if teacher else {}))
        steps = [functools.partial(prep.select_inputs, source=source_text)]
        if feedback:
            lists = [*FEEDBACK_SIDS.values(), *FEEDBACK_INTS.values()]
            keep += lists
            features.update({n: seqio.Feature(seqio.PassThroughVocabulary(0), add_eos=False, dtype=tf.int32)
                             for n in lists})  # fmt: skip
            leaf_table = functools.partial(_leaf_table, examples_dir)
            steps.append(functools.partial(prep.sid_lists_to_leaves, leaf_table=leaf_table, fields=FEEDBACK_SIDS,
                                           cast=FEEDBACK_INTS))  # fmt: skip
        steps += [
            functools.partial(prep.keep_features, names=keep),
            seqio.preprocessors.tokenize,
        ]
        if personalised:
            steps.append(sid_check)
        steps += [
            functools.partial(prep.check_lengths, truncate=("inputs", "teacher_inputs")),
            seqio.preprocessors.append_eos_after_trim,
        ]
        seqio.TaskRegistry.remove(name)
        seqio.TaskRegistry.add(
            name, source=_source(examples_dir, stage, personalised, feedback), preprocessors=steps,
            output_features=features,
        )  # fmt: skip

    register("onesearch_stage1_alignment", "stage1_alignment", personalised=False)
    register("onesearch_stage2_cooccurrence", "stage2_cooccurrence", personalised=False)
    register("onesearch_personalized_raw", "personalized", personalised=True)
    register("onesearch_personalized_keyword", "personalized", personalised=True, source_text="teacher_inputs")
    register("onesearch_personalized_distill", "personalized", personalised=True, teacher=True)
    register("onesearch_personalized_grpo", "personalized", personalised=True, feedback=True)
    for name, tasks in (
        ("onesearch_stage1", [("onesearch_stage1_alignment", 1.0)]),
        ("onesearch_stage2", [("onesearch_stage2_cooccurrence", 1.0), ("onesearch_stage1_alignment", 0.2)]),
        ("onesearch_stage3", [("onesearch_personalized_raw", 1.0), ("onesearch_personalized_keyword", 1.0)]),
    ):
        seqio.MixtureRegistry.remove(name)
        seqio.MixtureRegistry.add(name, tasks)
    return vocab


def _leaf_table(examples_dir: str) -> tuple[list[str], list[int]]:
    """(SID tokens, trie leaf) of every SID of the codebook the records were built with."""
    book = SidCodebook.load(examples_sids_dir(examples_dir))
    trie = book.trie()
    return [book.tokens(sid) for sid in trie.leaf_sids], list(range(trie.num_sids))
