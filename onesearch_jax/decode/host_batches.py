"""Feeding decoders from the host: tokenised inputs, global batches split over hosts, results gathered.

Every host holds all inputs; global batch b is rows ``b * batch_size ...`` (the last one padded
with all-zero rows), and host h feeds rows ``h * local ... (h + 1) * local`` of it to
``shard_batch``. Decoder outputs come back as numpy arrays of the whole global batch on every host.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import jax
import numpy as np

from onesearch_jax.models import partitioning
from onesearch_jax.vocab_config import EOS_ID


def encode_texts(vocab, texts: Sequence[str], length: int) -> tuple[np.ndarray, int]:
    """``([n, length]`` int32 token ids, number of truncated texts) as the seqio tasks encode inputs.

    A text keeps its first ``length - 1`` tokens and ends with EOS; the rest is zero padding
    (``check_lengths(truncate=...)`` and ``append_eos_after_trim`` in the tasks).
    """
    out = np.zeros((len(texts), length), np.int32)
    truncated = 0
    for row, text in enumerate(texts):
        ids = vocab.encode(text)
        truncated += len(ids) > length - 1
        ids = [*ids[: length - 1], EOS_ID]
        out[row, : len(ids)] = ids
    return out, truncated


def check_batch_split(batch_size: int, mesh, rules, owner: str) -> None:
    """Raises ValueError unless ``batch_size`` splits over the mesh's batch axes and the hosts."""
    partitioning.check_batch_size(batch_size, mesh, rules=rules)
    if batch_size % jax.process_count():
        raise ValueError(f"{owner}.batch_size {batch_size} does not split over {jax.process_count()} processes")


def global_batches(tokens: np.ndarray, batch_size: int, mesh, rules) -> Iterator[tuple[int, int, jax.Array]]:
    """``(start, rows, sharded [batch_size, S] tokens)`` per global batch; ``rows`` are real (the rest pad)."""
    hosts, host = jax.process_count(), jax.process_index()
    local = batch_size // hosts
    for start in range(0, len(tokens), batch_size):
        chunk = tokens[start : start + batch_size]
        padded = np.zeros((batch_size, tokens.shape[1]), tokens.dtype)
        padded[: len(chunk)] = chunk
        mine = padded[host * local : (host + 1) * local]
        yield start, len(chunk), partitioning.shard_batch({"tokens": mine}, mesh, rules)["tokens"]


def to_host(x: jax.Array) -> np.ndarray:
    """The whole (global) array on this host."""
    if jax.process_count() == 1:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
