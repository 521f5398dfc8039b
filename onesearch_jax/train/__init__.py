"""Training: train state, optimizers and schedules, the jitted sharded train/eval steps.

Kept import-free: ``optimizer_config`` must load without jax (gin registers it for every command).
"""
