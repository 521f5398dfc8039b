"""One GRPO step on a (data=4) mesh against one device; prints one JSON line.

Run in a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (by
``test_grpo.py``): the rollouts (the key is per call, the draws per row), the scoring and the update
must not depend on how the prompts are split over devices.
"""

from __future__ import annotations

import json

import jax
import numpy as np

from onesearch_jax.models import partitioning
from onesearch_jax.models.mesh_config import MeshConfig
from onesearch_jax.train.grpo_config import GrpoConfig
from onesearch_jax.train.tpma_config import AdvantageConfig
from tests.train.test_grpo import RULES, _model_and_batch, _step

METRICS = ("reward/item", "loss", "tpma/gate/pos2")


def main() -> None:
    results = []
    for devices in (jax.devices()[:1], jax.devices()[:4]):
        model, batch, _ = _model_and_batch()
        mesh = partitioning.make_mesh(MeshConfig(), devices)
        config = GrpoConfig(num_samples=4, advantage=AdvantageConfig(position_weights=(2.0, 2.0, 1.0)))
        _, state, step = _step(model, config, 1e-2, mesh)
        state, metrics = step(state, partitioning.shard_batch({k: np.asarray(v) for k, v in batch.items()}, mesh,
                                                              RULES))  # fmt: skip
        results.append((jax.device_get(state.params), {name: float(metrics[name]) for name in METRICS}))
    (p1, m1), (p4, m4) = results
    diffs = [
        np.abs(np.asarray(a) - np.asarray(b)) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4), strict=True)
    ]
    print(json.dumps({
        "devices": len(jax.devices()),
        "single": m1,
        "mesh": m4,
        "param_diff_max": max(float(d.max()) for d in diffs),
        # Elements further apart than 1e-5 (Adam's first step is ~lr * sign(g): where g ~ 0 the
        # summation order can move one by a fraction of lr).
        "param_diff_count": int(sum((d > 1e-5).sum() for d in diffs)),
        "param_count": int(sum(d.size for d in diffs)),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
