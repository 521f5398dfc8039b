"""Deterministic, resumable streams of model batches from a seqio Task or Mixture.

The trainer saves :meth:`ResumableBatches.state` with every checkpoint; restoring it yields
exactly the batches an uninterrupted run would have seen next. The stream is a pure function of
(task, split, lengths, batch size, seed, shard): seqio shuffles with ``seed`` and mixtures sample
with it, so replaying ``position`` batches from the start reproduces the state (``skip`` on the
batched dataset, which for our record sizes costs seconds; tf.data iterator checkpoints would avoid
the replay for very long runs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import seqio

from onesearch_jax.data.feature_converters import EncDecTeacherFeatureConverter, GrpoFeatureConverter

FEATURE_CONVERTERS = {
    "encdec": seqio.EncDecFeatureConverter,
    "encdec_teacher": EncDecTeacherFeatureConverter,
    "grpo": GrpoFeatureConverter,
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatchConfig:
    """What stream to read.

    Attributes:
        mixture_or_task: a registered seqio Task or Mixture name.
        task_feature_lengths: tokens per task feature (``inputs``, ``targets``, ``teacher_inputs``).
        batch_size: examples per batch (per host when sharded).
        split: seqio split (``train``, ``validation``, ``test``).
        shuffle: shuffle examples (seeded).
        seed: the only source of randomness of the stream.
        num_epochs: passes over the data; None repeats forever (training).
        feature_converter: ``encdec``, ``encdec_teacher`` (adds the teacher's encoder input) or
            ``grpo`` (adds the session's feedback as trie leaves).
        shard_index / num_shards: this host's (first) shard of the data, of ``num_shards``
            (multi-host input pipelines).
        num_host_shards: shards this host reads, ``shard_index .. shard_index + num_host_shards - 1``;
            each gives ``batch_size / num_host_shards`` rows of every batch, in shard order. With a
            fixed ``num_shards``, the batches that H hosts read together are the same for any H
            dividing it (``TrainConfig.input_shards``).
        drop_remainder: drop a last partial batch.
    """

    mixture_or_task: str
    task_feature_lengths: Mapping[str, int]
    batch_size: int
    split: str = "train"
    shuffle: bool = True
    seed: int = 0
    num_epochs: int | None = None
    feature_converter: str = "encdec"
    shard_index: int = 0
    num_shards: int = 1
    num_host_shards: int = 1
    drop_remainder: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"BatchConfig.batch_size must be positive, got {self.batch_size}")
        if self.feature_converter not in FEATURE_CONVERTERS:
            raise ValueError(f"BatchConfig.feature_converter must be one of {sorted(FEATURE_CONVERTERS)}")
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"BatchConfig.shard_index {self.shard_index} outside 0..{self.num_shards - 1}")
        if self.num_host_shards < 1 or self.shard_index + self.num_host_shards > self.num_shards:
            raise ValueError(f"BatchConfig.num_host_shards {self.num_host_shards} from shard {self.shard_index} "
                             f"goes past the {self.num_shards} shards")  # fmt: skip
        if self.batch_size % self.num_host_shards:
            raise ValueError(f"BatchConfig.batch_size {self.batch_size} does not split over its "
                             f"{self.num_host_shards} shards")  # fmt: skip
        if self.num_host_shards > 1 and not self.drop_remainder:
            raise ValueError("BatchConfig: several shards per host need drop_remainder (whole batches per shard)")
        if self.num_epochs is not None and self.num_epochs < 1:
            raise ValueError("BatchConfig.num_epochs must be positive or None (repeat)")


class ResumableBatches(Iterator[dict[str, np.ndarray]]):
    """Numpy batches of model features; ``position`` counts the batches handed out."""

    def __init__(self, config: BatchConfig, *, position: int = 0):
        if position < 0:
            raise ValueError(f"position must be >= 0, got {position}")
        self.config = config
        self.position = position
        rows = config.batch_size // config.num_host_shards
        self._iterators = []
        for shard in range(config.shard_index, config.shard_index + config.num_host_shards):
            ds = seqio.get_dataset(
                config.mixture_or_task,
                task_feature_lengths=dict(config.task_feature_lengths),
                dataset_split=config.split,
                shuffle=config.shuffle,
                num_epochs=config.num_epochs,
                feature_converter=FEATURE_CONVERTERS[config.feature_converter](pack=False),
                shard_info=seqio.ShardInfo(index=shard, num_shards=config.num_shards),
                seed=config.seed,
                verbose=False,
            )
            ds = ds.batch(rows, drop_remainder=config.drop_remainder).skip(position)
            self._iterators.append(ds.as_numpy_iterator())

    def __next__(self) -> dict[str, np.ndarray]:
        parts = [next(iterator) for iterator in self._iterators]
        self.position += 1
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def state(self) -> dict[str, Any]:
        """What to save with a checkpoint (JSON-serialisable)."""
        return {"position": self.position, "config": _jsonable(dataclasses.asdict(self.config))}

    @classmethod
    def restore(cls, state: Mapping[str, Any], config: BatchConfig) -> ResumableBatches:
        """Continues a stream from :meth:`state`; the config must be the saved one."""
        # fields added since the checkpoint was written count as their defaults
        defaults = {f.name: f.default for f in dataclasses.fields(BatchConfig) if f.default is not dataclasses.MISSING}
        saved = {**_jsonable({k: v for k, v in defaults.items() if k not in state["config"]}), **state["config"]}
        if saved != _jsonable(dataclasses.asdict(config)):
            raise ValueError(
                f"the data stream changed since the checkpoint: saved {saved}, now {dataclasses.asdict(config)}"
            )
        return cls(config, position=int(state["position"]))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
