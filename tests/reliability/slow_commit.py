"""Checkpoints that never land: orbax's commit of a step hangs, as on a stalled file system.

``python -m tests.reliability.slow_commit train ARGS...`` is ``onesearch train ARGS...`` whose
checkpoints are all written to ``<step>.orbax-checkpoint-tmp`` and never renamed to ``<step>``
(nothing here starts a jax backend, so ``onesearch`` still sets its XLA defaults).
"""

from __future__ import annotations

import asyncio
from typing import Any


def never_commit(step: int | None = None) -> None:
    """Makes orbax's commit (the rename of ``<step>.orbax-checkpoint-tmp``) of ``step`` (None: of
    every step) hang for an hour."""
    from orbax.checkpoint._src.path import atomicity

    commit = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self: Any) -> None:
        if step is None or self.get_final().name == str(step):
            await asyncio.sleep(3600)
        await commit(self)

    atomicity.AtomicRenameTemporaryPath.finalize = finalize


if __name__ == "__main__":
    never_commit()
    from onesearch_jax.main import run

    run()
