"""A small NNX encoder-decoder stand-in with logical axis names, for tests that must compile fast.

Same call signature as ``EncoderDecoder`` (token ids in, float32 logits ``[B, T, vocab]`` out; optional
``encoder_input_embeddings`` from ``embed_inputs``, for FGM) and the same logical axes
(``vocab``/``embed``/``mlp``/``heads``/``kv``), but no attention stacks: the encoder is a masked mean of
MLP-transformed embeddings, the decoder adds it to its own embeddings.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def _param(rng: np.random.Generator, shape: tuple[int, ...], names: tuple[str, ...], scale: float = 0.5) -> nnx.Param:
    # numpy initialisation: jax.random would compile one program per shape (seconds on a busy CPU).
    value = (rng.standard_normal(shape) * scale / max(1, shape[0]) ** 0.5).astype(np.float32)
    return nnx.Param(jnp.asarray(value), out_sharding=names, eager_sharding=False)


class MiniEncoderDecoder(nnx.Module):
    """Embedding (vocab, embed) -> MLP (embed, mlp) -> heads (embed, heads, kv) -> output (embed, vocab)."""

    def __init__(self, vocab: int = 64, embed: int = 16, mlp: int = 32, heads: int = 2, kv: int = 8, *, seed: int = 0):
        rngs = np.random.default_rng(seed)
        self.embedding = _param(rngs, (vocab, embed), ("vocab", "embed"), scale=1.0)
        self.wi = _param(rngs, (embed, mlp), ("embed", "mlp"))
        self.wo = _param(rngs, (mlp, embed), ("mlp", "embed"))
        self.q = _param(rngs, (embed, heads, kv), ("embed", "heads", "kv"))
        self.o = _param(rngs, (heads, kv, embed), ("heads", "kv", "embed"))
        self.scale = nnx.Param(jnp.ones((embed,)), out_sharding=("embed",), eager_sharding=False)
        self.lm_head = _param(rngs, (embed, vocab), ("embed", "vocab"))
        self.dropout = nnx.Dropout(0.0)

    def embed_inputs(self, tokens: jax.Array) -> jax.Array:
        """Encoder input embeddings ``[B, S, embed]`` (what FGM perturbs)."""
        return self.embedding[...][tokens]

    def __call__(
        self,
        encoder_input_tokens: jax.Array,
        decoder_input_tokens: jax.Array,
        *,
        decoder_target_tokens: jax.Array | None = None,
        encoder_input_embeddings: jax.Array | None = None,
        deterministic: bool = True,
        rngs: jax.Array | None = None,
    ) -> jax.Array:
        del decoder_target_tokens
        table = self.embedding[...]
        x = self.embed_inputs(encoder_input_tokens) if encoder_input_embeddings is None else encoder_input_embeddings
        x = x + jax.nn.gelu(x @ self.wi[...]) @ self.wo[...]
        mask = (encoder_input_tokens > 0)[..., None].astype(jnp.float32)
        pooled = jnp.sum(x * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)
        y = table[decoder_input_tokens] + pooled[:, None, :]
        y = y + jnp.einsum("btd,dhk,hke->bte", jnp.tanh(y), self.q[...], self.o[...])
        y = y * self.scale[...]
        return (y @ self.lm_head[...]).astype(jnp.float32)
