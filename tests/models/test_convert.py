"""convert.py: HF T5 v1.1 safetensors checkpoints into EncoderDecoder.

The numpy-only tests write checkpoints by hand (no torch needed); the acceptance tests build a
random ``transformers`` T5 in PyTorch and compare logits (skipped when torch is not installed).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from onesearch_jax.models.configs import T5Config
from onesearch_jax.models.convert import (
    CheckpointError,
    config_from_hf,
    load_hf_t5,
    name_map,
    output_layer,
)
from onesearch_jax.models.encoder_decoder import EncoderDecoder, abstract_model
from onesearch_jax.models.layers import relative_position_bucket

HF_CONFIG = {
    "model_type": "t5",
    "architectures": ["T5ForConditionalGeneration"],
    "vocab_size": 50,
    "d_model": 16,
    "d_kv": 4,
    "d_ff": 24,
    "num_heads": 2,
    "num_layers": 1,
    "num_decoder_layers": 2,
    "relative_attention_num_buckets": 8,
    "relative_attention_max_distance": 20,
    "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "gated-gelu",
    "tie_word_embeddings": True,
    "scale_decoder_outputs": False,
}
forward = nnx.jit(EncoderDecoder.__call__, static_argnames=("deterministic",))


def to_hf_layout(ours: np.ndarray, hf_name: str) -> np.ndarray:
    """Inverse of convert's transforms: our ``[in, ...]`` kernels back to HF ``[out, in]``."""
    if hf_name.endswith(("q.weight", "k.weight", "v.weight")):
        return ours.reshape(ours.shape[0], -1).T
    if hf_name.endswith("o.weight"):
        return ours.reshape(-1, ours.shape[-1]).T
    if ours.ndim == 2 and "shared" not in hf_name:
        return ours.T
    return ours


def hf_tensors(config: T5Config, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[tuple, np.ndarray]]:
    """Random HF-named tensors for ``config`` and the parameters (by our path) they should become."""
    rng = np.random.default_rng(seed)
    shapes = {path: var.get_value().shape for path, var in nnx.to_flat_state(nnx.state(abstract_model(config)))}
    ours = {path: rng.standard_normal(shape).astype(np.float32) for path, shape in shapes.items()}
    tensors = {hf: to_hf_layout(ours[path], hf) for path, (hf, _) in name_map(config).items()}
    if ("lm_head",) in ours:
        tensors["lm_head.weight"] = ours[("lm_head",)].T.copy()
    return tensors, ours


def write_checkpoint(directory: Path, hf_config: dict, tensors: dict[str, np.ndarray]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(hf_config))
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(directory / "model.safetensors"))
    return directory


def untied_config() -> T5Config:
    return config_from_hf(HF_CONFIG, tie_word_embeddings=False)


def loaded_params(model: EncoderDecoder) -> dict[tuple, np.ndarray]:
    return {path: np.asarray(v.get_value()) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_config_from_hf():
    config = untied_config()
    assert (config.vocab_size, config.d_model, config.d_kv, config.d_ff, config.num_heads) == (50, 16, 4, 24, 2)
    assert (config.num_encoder_layers, config.num_decoder_layers) == (1, 2)
    assert (config.relative_attention_num_buckets, config.relative_attention_max_distance) == (8, 20)
    assert (config.dtype, config.dropout_rate) == ("float32", 0.1)
    assert config_from_hf({**HF_CONFIG, "num_decoder_layers": None}, tie_word_embeddings=True).num_decoder_layers == 1
    assert config_from_hf(HF_CONFIG, tie_word_embeddings=True, dtype="bfloat16").dtype == "bfloat16"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"feed_forward_proj": "relu"}, "only T5 v1.1's 'gated-gelu'"),
        ({"feed_forward_proj": "gated-silu"}, "feed_forward_proj is 'gated-silu'"),
        ({"model_type": "umt5"}, "model_type is 'umt5'"),
        ({"d_kv": None}, "d_kv must be a positive int"),
    ],
)
def test_config_from_hf_refuses_other_architectures(change, message):
    with pytest.raises((CheckpointError, ValueError), match=message):
        config_from_hf({**HF_CONFIG, **change}, tie_word_embeddings=False)


def test_config_from_hf_only_overrides_dtype_and_dropout():
    with pytest.raises(ValueError, match="may be overridden"):
        config_from_hf(HF_CONFIG, tie_word_embeddings=False, d_model=32)


def test_output_layer_cases():
    shared = np.arange(6, dtype=np.float32).reshape(3, 2)
    other = shared + 1
    d = {"d_model": 4}
    # transformers 5, tied: scaled, no head in the file
    assert output_layer({**d, "scale_decoder_outputs": True}, {"shared.weight": shared}) == (True, None)
    # transformers 5, tie_word_embeddings=False but no head of its own: the embedding, unscaled
    tied, head = output_layer({**d, "scale_decoder_outputs": False}, {"shared.weight": shared})
    assert not tied and np.array_equal(head, shared)
    # transformers 4 / google/t5-v1_1-*: tie_word_embeddings false means unscaled with own head
    tied, head = output_layer({**d, "tie_word_embeddings": False}, {"shared.weight": shared, "lm_head.weight": other})
    assert not tied and np.array_equal(head, other)
    # a head equal to the embedding with scaling is the tied layout
    assert output_layer({**d, "tie_word_embeddings": True}, {"shared.weight": shared, "lm_head.weight": shared})[0]
    # scaled with a different head: untied, the scale folded into the head
    tied, head = output_layer({**d, "scale_decoder_outputs": True}, {"shared.weight": shared, "lm_head.weight": other})
    assert not tied and np.allclose(head, other * 0.5)


@pytest.mark.parametrize("tie", [False, True])
def test_round_trip_of_every_tensor(tmp_path, tie):
    config = config_from_hf(HF_CONFIG, tie_word_embeddings=tie)
    tensors, ours = hf_tensors(config)
    hf_config = {**HF_CONFIG, "scale_decoder_outputs": tie}
    tensors["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"] = np.zeros((8, 2), np.float32)
    tensors["encoder.embed_tokens.weight"] = tensors["shared.weight"]
    model = load_hf_t5(write_checkpoint(tmp_path, hf_config, tensors))
    assert model.config == config
    got = loaded_params(model)
    assert got.keys() == ours.keys()
    for path, value in ours.items():
        np.testing.assert_array_equal(got[path], value, err_msg=str(path))
    assert got[("encoder", "layers", 0, "attention", "query")].shape == (16, 2, 4)
    assert got[("decoder", "layers", 1, "encoder_decoder_attention", "out")].shape == (2, 4, 16)


def test_bf16_checkpoint_loads_as_float32(tmp_path):
    import ml_dtypes

    tensors, ours = hf_tensors(untied_config())
    bf16 = {k: v.astype(ml_dtypes.bfloat16) for k, v in tensors.items()}
    model = load_hf_t5(write_checkpoint(tmp_path, HF_CONFIG, bf16))
    embedding = loaded_params(model)[("token_embedder", "embedding")]
    assert embedding.dtype == np.float32
    np.testing.assert_allclose(embedding, ours[("token_embedder", "embedding")], rtol=1e-2)


def test_missing_and_unexpected_tensors_are_named(tmp_path):
    tensors, _ = hf_tensors(untied_config())
    del tensors["decoder.block.1.layer.2.DenseReluDense.wo.weight"]
    tensors["decoder.block.2.layer.0.SelfAttention.q.weight"] = np.zeros((8, 16), np.float32)
    with pytest.raises(CheckpointError) as error:
        load_hf_t5(write_checkpoint(tmp_path, HF_CONFIG, tensors))
    assert "missing tensors ['decoder.block.1.layer.2.DenseReluDense.wo.weight']" in str(error.value)
    assert "unexpected tensors ['decoder.block.2.layer.0.SelfAttention.q.weight']" in str(error.value)


def test_shape_mismatch_is_named(tmp_path):
    tensors, _ = hf_tensors(untied_config())
    tensors["encoder.block.0.layer.1.DenseReluDense.wi_1.weight"] = np.zeros((25, 16), np.float32)
    with pytest.raises(CheckpointError, match=r"wi_1.weight has shape \(25, 16\).*encoder/layers/0/mlp/wi_1"):
        load_hf_t5(write_checkpoint(tmp_path, HF_CONFIG, tensors))
    tensors, _ = hf_tensors(untied_config())
    tensors["encoder.block.0.layer.0.SelfAttention.k.weight"] = np.zeros((7, 16), np.float32)
    with pytest.raises(CheckpointError, match=r"k.weight has shape \(7, 16\).*attention/key"):
        load_hf_t5(write_checkpoint(tmp_path / "k", HF_CONFIG, tensors))


def test_embedding_copies_must_match(tmp_path):
    tensors, _ = hf_tensors(untied_config())
    tensors["decoder.embed_tokens.weight"] = tensors["shared.weight"] + 1
    with pytest.raises(CheckpointError, match=r"decoder\.embed_tokens\.weight differs from shared\.weight"):
        load_hf_t5(write_checkpoint(tmp_path, HF_CONFIG, tensors))


def test_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match=r"config\.json not found"):
        load_hf_t5(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(HF_CONFIG))
    with pytest.raises(CheckpointError, match=r"no model\.safetensors"):
        load_hf_t5(tmp_path)


# --- the acceptance test: logits equal HF transformers' PyTorch T5 ---------------------------------


def hf_reference(tmp_path: Path, *, tie: bool, own_head: bool):
    """A random HF T5 v1.1 in eval mode, saved with safetensors into ``tmp_path``."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_config = transformers.T5Config(
        vocab_size=101,
        d_model=32,
        d_kv=8,
        d_ff=48,
        num_heads=4,
        num_layers=2,
        num_decoder_layers=3,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=20,
        dropout_rate=0.1,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=tie,
    )
    reference = transformers.T5ForConditionalGeneration(hf_config).eval()
    if own_head:
        # transformers 5 shares lm_head with the embedding whatever tie_word_embeddings says
        # (DESIGN.md, known pitfalls): give the untied reference a head of its own.
        reference.lm_head.weight = torch.nn.Parameter(torch.randn(101, 32))
    reference.save_pretrained(tmp_path, safe_serialization=True)
    return torch, reference


@pytest.mark.parametrize(
    ("tie", "own_head"),
    [(True, False), (False, True), (False, False)],
    ids=["tied", "untied", "untied-flag-shared-head"],
)
def test_logits_equal_pytorch(tmp_path, tie, own_head):
    torch, reference = hf_reference(tmp_path, tie=tie, own_head=own_head)
    model = load_hf_t5(tmp_path)
    assert model.config.tie_word_embeddings == tie
    rng = np.random.default_rng(0)
    # padded batch: 26 encoder tokens (beyond max_distance 20, so log buckets and clipping are used)
    enc = rng.integers(2, 101, (3, 26))
    enc[1, 11:] = 0
    enc[2, 3:] = 0
    targets = rng.integers(2, 101, (3, 9))
    targets[1, 6:] = 0
    targets[2, 2:] = 0
    dec = np.pad(targets[:, :-1], ((0, 0), (1, 0)))  # shifted right, start token 0
    with torch.no_grad():
        want = reference(
            input_ids=torch.tensor(enc),
            attention_mask=torch.tensor(enc != 0, dtype=torch.long),
            decoder_input_ids=torch.tensor(dec),
            decoder_attention_mask=torch.tensor(targets != 0, dtype=torch.long),
        ).logits.numpy()
    got = np.asarray(forward(model, jnp.asarray(enc), jnp.asarray(dec), decoder_target_tokens=jnp.asarray(targets)))
    real = targets != 0
    assert np.abs(got[real] - want[real]).max() < 1e-4
    assert np.abs(want).max() > 1.0  # the comparison is not between near-zero logits


def test_relative_position_buckets_equal_pytorch():
    torch = pytest.importorskip("torch")
    modeling_t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    offsets = np.arange(-3000, 3001)
    for num_buckets, max_distance in [(32, 128), (8, 20), (64, 256), (16, 64)]:
        for bidirectional in (True, False):
            want = modeling_t5.T5Attention._relative_position_bucket(
                torch.tensor(offsets), bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
            ).numpy()
            got = relative_position_bucket(
                offsets, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
            )
            np.testing.assert_array_equal(got, want, err_msg=f"{num_buckets=} {max_distance=} {bidirectional=}")


def test_jax_default_backend_is_cpu():
    # the tolerance above is for float32 matmuls; on TPU they default to bf16 passes
    assert jax.default_backend() == "cpu"
