"""load_hf_t5 / export_hf_t5 on bad input: one readable UserError naming the problem.

These checkpoints are written by our own exporter and edited, so no
transformers import is needed here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stlm.errors import UserError
from stlm.interop import export_hf_t5, key_map, load_hf_t5
from stlm.models.t5 import T5Config, T5Model

GPT2_CONFIG = {
    "architectures": ["GPT2LMHeadModel"],
    "model_type": "gpt2",
    "n_embd": 768,
    "n_head": 12,
    "n_layer": 12,
    "vocab_size": 50257,
}


def tiny(**overrides) -> T5Config:
    settings = dict(vocab_size=48, d_model=16, d_head=4, n_heads=2, d_ff=32, n_layers=1, n_decoder_layers=2)
    settings.update(overrides)
    return T5Config(**settings)


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    torch.manual_seed(0)
    return export_hf_t5(T5Model(tiny()), tmp_path / "ckpt")


def edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def expect_error(directory: Path, *fragments: str) -> str:
    with pytest.raises(UserError) as err:
        load_hf_t5(directory)
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_round_trip_of_a_valid_checkpoint(checkpoint):
    model, cfg, spiece = load_hf_t5(checkpoint)
    assert cfg == tiny() and spiece is None and isinstance(model, T5Model)


def test_missing_directory(tmp_path):
    expect_error(tmp_path / "nowhere", "no checkpoint directory", "nowhere")


def test_directory_without_config(checkpoint):
    (checkpoint / "config.json").unlink()
    expect_error(checkpoint, "has no config.json")


def test_config_that_is_not_json(checkpoint):
    (checkpoint / "config.json").write_text("{not json")
    expect_error(checkpoint, "cannot read", "config.json")


def test_directory_without_weights(checkpoint):
    (checkpoint / "model.safetensors").unlink()
    expect_error(checkpoint, "has no weights", "model.safetensors", "pytorch_model.bin")


def test_gpt2_config_is_refused_by_name(checkpoint):
    (checkpoint / "config.json").write_text(json.dumps(GPT2_CONFIG))
    expect_error(checkpoint, "'gpt2'", "GPT2LMHeadModel", "not T5")


def test_t5_architecture_without_lm_head_is_refused(checkpoint):
    edit_config(checkpoint, architectures=["T5EncoderModel"])
    expect_error(checkpoint, "T5EncoderModel", "not a T5 encoder-decoder with an LM head")


def test_unsupported_feed_forward(checkpoint):
    edit_config(checkpoint, feed_forward_proj="gated-silu")
    expect_error(checkpoint, "'gated-silu'", "not supported")


def test_shape_mismatch_names_the_key_and_both_shapes(checkpoint):
    edit_config(checkpoint, d_ff=40)
    expect_error(checkpoint, "encoder.block.0.layer.1.DenseReluDense.wi.weight", "(32, 16)", "(40, 16)")


def test_fused_tensors_are_checked_piece_by_piece(checkpoint):
    edit_config(checkpoint, d_kv=6)
    expect_error(checkpoint, "encoder.block.0.layer.0.SelfAttention.q.weight", "(8, 16)", "(12, 16)")


def test_truncated_safetensors(checkpoint):
    path = checkpoint / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expect_error(checkpoint, "model.safetensors", "truncated or corrupt")


def test_truncated_pytorch_bin(checkpoint):
    model, _, _ = load_hf_t5(checkpoint)
    (checkpoint / "model.safetensors").unlink()
    path = checkpoint / "pytorch_model.bin"
    torch.save({"shared.weight": model.embed.weight.detach()}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expect_error(checkpoint, "pytorch_model.bin", "truncated")


def test_missing_tensor_is_named(checkpoint):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(checkpoint / "model.safetensors"))
    del tensors["decoder.block.1.layer.1.EncDecAttention.o.weight"]
    save_file(tensors, str(checkpoint / "model.safetensors"))
    expect_error(checkpoint, "missing decoder.block.1.layer.1.EncDecAttention.o.weight")


def test_more_layers_in_weights_than_in_config(checkpoint):
    edit_config(checkpoint, num_decoder_layers=1)
    expect_error(checkpoint, "does not use", "decoder.block.1.")


def test_tied_config_with_a_different_lm_head(checkpoint):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(checkpoint / "model.safetensors"))
    tensors["lm_head.weight"] = torch.randn_like(tensors["shared.weight"])
    save_file(tensors, str(checkpoint / "model.safetensors"))
    expect_error(checkpoint, "tie_word_embeddings", "lm_head.weight differs")


def test_old_checkpoint_aliases_and_unused_keys_are_accepted(checkpoint):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(checkpoint / "model.safetensors"))
    shared = tensors["shared.weight"]
    tensors.update(
        {
            "encoder.embed_tokens.weight": shared.clone(),
            "decoder.embed_tokens.weight": shared.clone(),
            "lm_head.weight": shared.clone(),
            "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight": torch.zeros(32, 2),
        }
    )
    save_file(tensors, str(checkpoint / "model.safetensors"))
    model, _, _ = load_hf_t5(checkpoint)
    assert torch.equal(model.embed.weight, shared)


def test_sharded_safetensors(checkpoint):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(checkpoint / "model.safetensors"))
    (checkpoint / "model.safetensors").unlink()
    names = sorted(tensors)
    half = len(names) // 2
    weight_map = {}
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for shard, part in shards.items():
        save_file({k: tensors[k] for k in part}, str(checkpoint / shard))
        weight_map.update({k: shard for k in part})
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    model, _, _ = load_hf_t5(checkpoint)
    assert torch.equal(model.embed.weight, tensors["shared.weight"])
    (checkpoint / "model-00002-of-00002.safetensors").unlink()
    expect_error(checkpoint, "model-00002-of-00002.safetensors", "missing")


def test_export_is_atomic_and_leaves_no_temporary_files(tmp_path):
    model = T5Model(tiny())
    out = export_hf_t5(model, tmp_path / "a" / "b")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    with pytest.raises(UserError, match="no SentencePiece model"):
        export_hf_t5(model, tmp_path / "c", spiece=tmp_path / "missing.model")


def test_key_map_covers_the_state_dict_exactly():
    for cfg in (tiny(), tiny(ff_kind="gated-gelu", tie_embeddings=False)):
        ours = [k for k, _ in key_map(cfg)]
        assert sorted(ours) == sorted(T5Model(cfg).state_dict())
        hf = [h for _, keys in key_map(cfg) for h in keys]
        assert len(hf) == len(set(hf))
        assert ("head.weight" in ours) == (not cfg.tie_embeddings)
