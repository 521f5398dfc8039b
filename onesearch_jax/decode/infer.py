"""The inference job (``onesearch infer``): decode a task split or a file of inputs from a checkpoint.

Writes one JSON line per example, in input order:

    {"index": 0, "inputs": "...", "targets": "<a_3><b_1>...", "prediction": "<a_3><b_1>...",
     "sid": [3, 1, 0, 17, 201], "logprob": -0.42, "exact_match": true}

``sid`` is the SID the predicted tokens spell (null when they do not spell one: wrong length or a
token outside its position's range), ``logprob`` the sum of the chosen tokens' log-probabilities.
Every host reads all inputs and feeds its share of each batch; process 0 writes the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import seqio

from onesearch_jax.decode.greedy import make_greedy_decoder
from onesearch_jax.decode.host_batches import check_batch_split, encode_texts, global_batches, to_host
from onesearch_jax.decode.infer_config import InferConfig
from onesearch_jax.train.checkpoint_config import CheckpointConfig
from onesearch_jax.train.run import RunSetup, restore_params
from onesearch_jax.vocab_config import EOS_ID


@dataclasses.dataclass(frozen=True)
class InferSummary:
    """What the job wrote.

    Attributes:
        path: the JSON-lines file.
        step: the checkpoint step decoded with.
        examples: lines written.
        exact_match: the fraction whose prediction equals the target (None without targets).
        sid_rate: the fraction whose prediction spells a SID.
    """

    path: str
    step: int
    examples: int
    exact_match: float | None
    sid_rate: float


def read_inputs_file(path: str | os.PathLike[str]) -> list[str]:
    """The lines of ``path`` (UTF-8), one model input each.

    Raises:
        ValueError: a blank line or invalid UTF-8, naming the file and line.
    """
    out = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as error:
                raise ValueError(f"{path}:{number}: inputs: not UTF-8 ({error})") from error
            if not line.strip():
                raise ValueError(f"{path}:{number}: inputs: blank line (one model input per line)")
            out.append(line)
    if not out:
        raise ValueError(f"{path}: inputs: the file has no lines")
    return out


def _examples(setup: RunSetup, config: InferConfig) -> Iterator[dict[str, Any]]:
    if config.inputs_file:
        texts = read_inputs_file(config.inputs_file)
        for text, tokens in zip(texts, encode_texts(setup.vocab, texts, config.input_length)[0], strict=True):
            yield {"inputs": text, "targets": None, "tokens": tokens}
        return
    lengths = {"inputs": config.input_length, "targets": config.target_length}
    task = seqio.get_mixture_or_task(config.task)
    dataset = task.get_dataset(lengths, split=config.split, shuffle=False, num_epochs=1)
    for example in dataset.as_numpy_iterator():
        yield {
            "inputs": example["inputs_pretokenized"].decode("utf-8"),
            "targets": example["targets_pretokenized"].decode("utf-8"),
            "tokens": _padded(example["inputs"], config.input_length),
        }


def _padded(ids: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros(length, np.int32)
    out[: len(ids)] = ids
    return out


def _describe(setup: RunSetup, ids: np.ndarray) -> tuple[list[int], tuple[int, ...] | None]:
    ids = ids.tolist()
    if EOS_ID in ids:
        ids = ids[: ids.index(EOS_ID)]
    ids = [i for i in ids if i != 0]
    try:
        sid = setup.vocab.sid_from_token_ids(ids)
    except ValueError:
        sid = None
    return ids, sid


def run_infer(
    setup: RunSetup, checkpoint_config: CheckpointConfig, config: InferConfig, *, step: int | None = None
) -> InferSummary:
    """Decodes ``config``'s inputs greedily with the checkpoint ``step`` (None: latest) and writes them.

    Raises:
        FileNotFoundError: no checkpoint.
        ValueError: a batch size that does not split over the mesh and hosts, or an empty input.
    """
    check_batch_split(config.batch_size, setup.mesh, setup.rules, "InferConfig")
    graphdef, params, step = restore_params(setup, checkpoint_config, step)
    shardings = jax.tree.map(lambda x: x.sharding, params)
    decode = make_greedy_decoder(graphdef, shardings, setup.mesh, setup.rules, max_length=config.target_length)
    source = (config.inputs_file and Path(config.inputs_file).stem) or f"{config.task}_{config.split}"
    path = config.output or os.path.join(setup.config.model_dir, "infer", f"{source}_step_{step}.jsonl")
    examples = list(_examples(setup, config))[: config.max_examples]
    if not examples:
        raise ValueError(f"nothing to decode: {config.inputs_file or f'{config.task} {config.split}'} is empty")
    primary = jax.process_index() == 0
    if primary:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    tokens = np.stack([example["tokens"] for example in examples])
    matches = sids = 0
    with open(path, "w", encoding="utf-8") if primary else open(os.devnull, "w") as out:
        for start, rows, batch in global_batches(tokens, config.batch_size, setup.mesh, setup.rules):
            predicted, logprobs = (to_host(x) for x in decode(params, batch))
            for r, example in enumerate(examples[start : start + rows]):
                ids, sid = _describe(setup, predicted[r])
                text = setup.vocab.decode(ids)
                match = None if example["targets"] is None else text == example["targets"]
                matches += bool(match)
                sids += sid is not None
                record = {"index": start + r, "inputs": example["inputs"], "targets": example["targets"],
                          "prediction": text, "sid": None if sid is None else list(sid),
                          "logprob": round(float(logprobs[r].sum()), 6), "exact_match": match}  # fmt: skip
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
    has_targets = examples[0]["targets"] is not None
    return InferSummary(path=path, step=step, examples=len(examples),
                        exact_match=matches / len(examples) if has_targets else None,
                        sid_rate=sids / len(examples))  # fmt: skip
