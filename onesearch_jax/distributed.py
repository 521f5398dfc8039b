"""Joining a multi-process (multi-host) job: ``jax.distributed.initialize`` before jax is used.

Every process of a job runs the same ``onesearch`` command with the same gin files (T5X's
``--multiprocess_gpu`` / TPU pod model). Where the job comes from:

- a Cloud TPU VM slice, a SLURM allocation, Open MPI or Kubernetes: jax detects the coordinator,
  the process count and this process's index (``--multiprocess`` alone);
- anywhere else, e.g. several processes on one machine (``launch/multihost_local.sh``): the
  coordinator's ``host:port``, the process count and this process's index, given as flags or as
  ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``.

CPU processes exchange collectives through gloo (``jax_cpu_collectives_implementation``), which
has to be chosen before the backend starts; it does not affect TPU or GPU devices.
"""

from __future__ import annotations

import dataclasses
import os
import re

ENV_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[\w.-]+):\d{1,5}$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistributedConfig:
    """How this process joins its job (every field None: detected from the cluster).

    Attributes:
        coordinator_address: ``host:port`` of process 0's coordination service.
        num_processes: processes in the job.
        process_id: this process's index, ``0 .. num_processes - 1``.
    """

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    def __post_init__(self) -> None:
        address = self.coordinator_address
        if address is not None and not _ADDRESS.match(address):
            raise ValueError(f"coordinator_address must be host:port, got {address!r}")
        count, index = self.num_processes, self.process_id
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ValueError(f"num_processes must be an int >= 1, got {count!r}")
        if index is not None and (not isinstance(index, int) or index < 0):
            raise ValueError(f"process_id must be an int >= 0, got {index!r}")
        if count is not None and index is not None and index >= count:
            raise ValueError(f"process_id {index} is not below num_processes {count}")
        given = [name for name in FIELDS if getattr(self, name) is not None]
        if given and len(given) != len(FIELDS):
            missing = [name for name in FIELDS if name not in given]
            raise ValueError(f"{', '.join(given)} given without {', '.join(missing)}: give all three or none "
                             "(none: detected on Cloud TPU, SLURM, Open MPI and Kubernetes)")  # fmt: skip

    @classmethod
    def from_environment(cls, environ: os._Environ[str] | dict[str, str] | None = None) -> DistributedConfig:
        """The config that ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` give."""
        environ = os.environ if environ is None else environ
        values = {name: environ.get(name) for name in ENV_VARIABLES}
        for name in ENV_VARIABLES[1:]:
            if values[name] is not None and not values[name].strip().isdigit():
                raise ValueError(f"{name} must be a non-negative integer, got {values[name]!r}")
        return cls(
            coordinator_address=values["JAX_COORDINATOR_ADDRESS"],
            num_processes=None if values["JAX_NUM_PROCESSES"] is None else int(values["JAX_NUM_PROCESSES"]),
            process_id=None if values["JAX_PROCESS_ID"] is None else int(values["JAX_PROCESS_ID"]),
        )


FIELDS = tuple(field.name for field in dataclasses.fields(DistributedConfig))


def initialize(config: DistributedConfig) -> None:
    """Joins the job (blocks until every process has); then ``jax.devices()`` lists all of them."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=config.coordinator_address,
        num_processes=config.num_processes,
        process_id=config.process_id,
    )
