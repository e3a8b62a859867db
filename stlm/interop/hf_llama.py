"""An stlm decoder as a Hugging Face `LlamaForCausalLM` directory, through one key map.

The decoder family is Llama's architecture: pre-norm RMSNorm blocks, rotary
positions in the half-split layout (dim i pairs with i + Dh/2, as HF's
`rotate_half`), SwiGLU, no biases, a tied or untied head. Only the packing
differs: our fused q/k/v and gate/up matrices are split into HF's separate
projections along dim 0, in the order `_LAYER` lists them. No permutation is
needed (GGUF needs one: see `gguf.py`).

Written: config.json, model.safetensors, and the tokenizer files
(`hf_tokenizer.py`, byte or byte-level BPE) that make `AutoTokenizer` give stlm's ids.
transformers is not imported here.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from stlm.errors import UserError
from stlm.interop.hf_tokenizer import bpe_tokenizer_files, byte_tokenizer_files, write_files
from stlm.models.decoder import DecoderConfig, DecoderLM
from stlm.tokenizers import BPETokenizer, ByteTokenizer, Tokenizer

# Our key under blocks.{i} -> the HF keys under model.layers.{i} it is stacked from (dim 0).
_LAYER: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("attn_norm.weight", ("input_layernorm.weight",)),
    ("attn.qkv.weight", ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight")),
    ("attn.out.weight", ("self_attn.o_proj.weight",)),
    ("mlp_norm.weight", ("post_attention_layernorm.weight",)),
    ("mlp.gate_up.weight", ("mlp.gate_proj.weight", "mlp.up_proj.weight")),
    ("mlp.down.weight", ("mlp.down_proj.weight",)),
)


def key_map(cfg: DecoderConfig) -> list[tuple[str, tuple[str, ...]]]:
    """Every tensor of `DecoderLM(cfg).state_dict()` (the tied head once) with the HF keys it is stacked from."""
    entries = [("embed.weight", ("model.embed_tokens.weight",)), ("norm.weight", ("model.norm.weight",))]
    if not cfg.tie_embeddings:
        entries.append(("head.weight", ("lm_head.weight",)))
    for i in range(cfg.n_layers):
        entries += [(f"blocks.{i}.{ours}", tuple(f"model.layers.{i}.{h}" for h in hf)) for ours, hf in _LAYER]
    return entries


def hf_tensors(model: DecoderLM, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """HF key -> tensor (contiguous, CPU, `dtype`)."""
    state = model.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for ours, theirs in key_map(model.config):
        for key, part in zip(theirs, state[ours].detach().chunk(len(theirs), dim=0)):
            tensors[key] = part.to(dtype).contiguous().cpu()
    return tensors


def hf_config(cfg: DecoderConfig, tokenizer: Tokenizer, dtype: str = "float32") -> dict:
    """config.json for `LlamaForCausalLM` (rope theta under both transformers 4 and 5 spellings)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_heads,
        "head_dim": cfg.d_head,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": tokenizer.eos_id,
        "pad_token_id": tokenizer.pad_id,
        "torch_dtype": dtype,
        "dtype": dtype,
    }


DTYPES = {"f32": torch.float32, "f16": torch.float16}


def export_hf_llama(model: DecoderLM, tokenizer: Tokenizer, root: Path, dtype: str = "f32") -> None:
    """Write config.json, model.safetensors and (byte vocabulary) tokenizer files into the folder `root`."""
    from safetensors.torch import save_file

    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype} is not one the hf format writes for decoders: {', '.join(DTYPES)}")
    if isinstance(tokenizer, ByteTokenizer):
        files = byte_tokenizer_files(tokenizer, model.config.max_seq_len)
    elif isinstance(tokenizer, BPETokenizer):
        files = bpe_tokenizer_files(tokenizer, model.config.max_seq_len)
    else:
        raise UserError(f"hf export of a decoder writes byte or BPE tokenizer files; this run uses {tokenizer.name}")
    torch_dtype = DTYPES[dtype]
    config = hf_config(model.config, tokenizer, str(torch_dtype).removeprefix("torch."))
    (root / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    save_file(hf_tensors(model, torch_dtype), str(root / "model.safetensors"), metadata={"format": "pt"})
    write_files(root, files)
