"""Tests of onesearch_jax.train: optimizers, train state, the sharded train/eval steps."""
