"""`T5Config`: the shape of a T5 v1.1 encoder-decoder, and the named sizes.

Kept free of jax and flax so gin can register it without importing them (every ``onesearch``
command parses gin first). The model reads the activation dtype by name (:data:`DTYPES`).

Named sizes (:data:`NAMED_SIZES`, :func:`named_config`) follow the T5 v1.1 checkpoints
(``google/t5-v1_1-{small,base,large}``; T5X ``t5_1_1/{small,base,large}.gin``), plus ``tiny``
for CPU debugging. The vocabulary size is not part of a named size: it comes from the trained
vocabulary at run time (see ``gin/models/*.gin``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

# Activation dtypes the model accepts, by name (parameters are always float32).
DTYPES = ("float32", "bfloat16", "float16")
PAD_ID = 0  # T5 / seqio: token id 0 is padding, and the decoder's start token.


@dataclasses.dataclass(frozen=True, kw_only=True)
class T5Config:
    """Hyper-parameters of a T5 v1.1 encoder-decoder (Raffel et al. 2020; T5X ``network.T5Config``).

    Attributes:
        vocab_size: rows of the shared token embedding (and columns of the logits). Set from the
            vocabulary at run time; seqio's ``vocab_size`` includes the pad/eos/unk ids.
        d_model: width of the residual stream (``embed`` axis).
        d_kv: width of one attention head (``kv`` axis); T5 does not tie it to ``d_model/num_heads``.
        d_ff: hidden width of the gated-GELU MLP (``mlp`` axis).
        num_heads: attention heads (``heads`` axis).
        num_encoder_layers: encoder blocks.
        num_decoder_layers: decoder blocks.
        relative_attention_num_buckets: relative position buckets (``relpos_buckets`` axis); half
            of them are exact offsets, the rest log-spaced up to ``relative_attention_max_distance``.
            The encoder's buckets are bidirectional (half per direction), the decoder's causal.
        relative_attention_max_distance: offsets at or beyond it share the last bucket.
        dropout_rate: dropout on embeddings, attention weights, sub-layer outputs, the MLP
            hidden layer and the final stack outputs (as HF T5); used only when the model is
            called with ``deterministic=False``. T5 v1.1 pre-trains with 0.0, fine-tunes with 0.1.
        tie_word_embeddings: the logits are ``(h * d_model**-0.5) @ embedding.T`` (original T5,
            HF ``tie_word_embeddings=True``); False gives the model its own output projection
            ``lm_head`` without the rescaling (T5 v1.1).
        dtype: activation dtype by name (one of :data:`DTYPES`): ``bfloat16`` for training,
            ``float32`` for exact comparisons. Parameters stay float32 and logits are float32.
        layer_norm_epsilon: added to the mean square in RMSNorm.
    """

    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_heads: int
    num_encoder_layers: int
    num_decoder_layers: int
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    tie_word_embeddings: bool = False
    dtype: str = "bfloat16"
    layer_norm_epsilon: float = 1e-6

    def __post_init__(self) -> None:
        positive = (
            "vocab_size",
            "d_model",
            "d_kv",
            "d_ff",
            "num_heads",
            "num_encoder_layers",
            "num_decoder_layers",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"T5Config.{name} must be a positive int, got {value!r}")
        buckets = self.relative_attention_num_buckets
        if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 4 or buckets % 2:
            raise ValueError(
                f"T5Config.relative_attention_num_buckets must be an even int >= 4 (half per direction in "
                f"the encoder, half of those exact offsets), got {buckets!r}"
            )
        distance = self.relative_attention_max_distance
        if isinstance(distance, bool) or not isinstance(distance, int) or distance <= buckets // 2:
            raise ValueError(
                "T5Config.relative_attention_max_distance must be an int above relative_attention_num_buckets // 2 "
                f"(= {buckets // 2}, the last exact offset of the causal buckets), got {distance!r}"
            )
        if not isinstance(self.dropout_rate, int | float) or not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"T5Config.dropout_rate must be in [0, 1), got {self.dropout_rate!r}")
        if not isinstance(self.tie_word_embeddings, bool):
            raise ValueError(f"T5Config.tie_word_embeddings must be a bool, got {self.tie_word_embeddings!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"T5Config.dtype must be one of {DTYPES}, got {self.dtype!r}")
        if not isinstance(self.layer_norm_epsilon, int | float) or not self.layer_norm_epsilon > 0:
            raise ValueError(f"T5Config.layer_norm_epsilon must be > 0, got {self.layer_norm_epsilon!r}")

    def replace(self, **changes: Any) -> T5Config:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


# T5 v1.1 sizes (https://github.com/google-research/text-to-text-transfer-transformer/blob/main/
# released_checkpoints.md#t511; T5X t5_1_1/*.gin), without vocab_size. `tiny` is for CPU debugging.
NAMED_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(d_model=128, d_kv=32, d_ff=256, num_heads=4, num_encoder_layers=2, num_decoder_layers=2),
    "small": dict(d_model=512, d_kv=64, d_ff=1024, num_heads=6, num_encoder_layers=8, num_decoder_layers=8),
    "base": dict(d_model=768, d_kv=64, d_ff=2048, num_heads=12, num_encoder_layers=12, num_decoder_layers=12),
    "large": dict(d_model=1024, d_kv=64, d_ff=2816, num_heads=16, num_encoder_layers=24, num_decoder_layers=24),
}


def named_config(name: str, *, vocab_size: int, **overrides: Any) -> T5Config:
    """The named size ``name`` (``tiny``, ``small``, ``base``, ``large``) with ``vocab_size``.

    Args:
        name: a key of :data:`NAMED_SIZES`.
        vocab_size: rows of the token embedding.
        **overrides: any other :class:`T5Config` field (e.g. ``dtype="float32"``).

    Raises:
        ValueError: for an unknown name.
    """
    if name not in NAMED_SIZES:
        raise ValueError(f"unknown model size {name!r}; named sizes are {sorted(NAMED_SIZES)}")
    return T5Config(vocab_size=vocab_size, **{**NAMED_SIZES[name], **overrides})
