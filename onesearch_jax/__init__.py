"""onesearch-jax: T5X-style JAX training and evaluation of OneSearch-V2 generative search models."""

__version__ = "0.1.0"
