"""One process of a 2-process CPU run: a (data=2, fsdp=2, tensor=2) mesh over 2 hosts of 4 devices.

Started by ``test_multihost.py`` as two processes (``--process_id 0`` and ``1``), each with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``. The data axis spans the two processes as two
"slices" (``MeshConfig(num_slices=2)``, grouped by process index on CPU); each process feeds only
its own rows through ``shard_batch``. Process 0 also trains the same model on one of its devices
with the whole batch and prints JSON with both loss curves and the largest parameter difference.
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--process_id", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{args.port}", num_processes=2, process_id=args.process_id)

    from jax.experimental import multihost_utils

    from onesearch_jax.models.partitioning import DEFAULT_RULES, MeshConfig, make_mesh, shard_batch
    from onesearch_jax.train.optimizers import make_optimizer
    from onesearch_jax.train.state import init_train_state
    from onesearch_jax.train.step import make_train_step
    from tests.train.mini_model import MiniEncoderDecoder
    from tests.train.sharded_equality import OPTIMIZER, VOCAB, make_batch

    assert jax.process_count() == 2 and jax.device_count() == 8 and jax.local_device_count() == 4
    optimizer = make_optimizer(OPTIMIZER)

    def train(mesh, rows_of_this_process):
        graphdef, state, shardings = init_train_state(
            lambda rngs: MiniEncoderDecoder(vocab=VOCAB, seed=0), optimizer, mesh, DEFAULT_RULES
        )
        step = make_train_step(graphdef, optimizer, mesh, DEFAULT_RULES, state_shardings=shardings)
        data = np.random.default_rng(0)
        losses = []
        for _ in range(args.steps):
            batch = make_batch(data)  # the global batch of 8 rows, the same on every process
            state, metrics = step(state, shard_batch({k: v[rows_of_this_process] for k, v in batch.items()}, mesh))
            losses.append(float(metrics["loss"]))
        return losses, state

    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2, num_slices=2))
    assert {d.process_index for d in mesh.devices[0].flat} == {0}  # the data axis splits the processes
    mine = slice(4 * jax.process_index(), 4 * jax.process_index() + 4)
    losses, state = train(mesh, mine)
    params = multihost_utils.process_allgather(state.params, tiled=True)
    if jax.process_index() == 0:
        local = make_mesh(MeshConfig(data=1), jax.local_devices()[:1])
        ref_losses, ref_state = train(local, slice(None))
        diff = max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_state.params), strict=True)
        )
        print(json.dumps({"losses": losses, "reference_losses": ref_losses, "param_diff": diff}))
    multihost_utils.sync_global_devices("done")


if __name__ == "__main__":
    main()
