"""Search logs: KuaiSearch records, their reader/writer and validator, importers, the synthetic world.

Data code never imports jax.
"""
