"""An stlm decoder as a GGUF file that llama.cpp runs (architecture "llama").

Weights (one key map; our fused matrices split along dim 0):

    embed.weight              token_embd.weight       (the tied head: no output.weight, llama.cpp reuses it)
    blocks.i.attn_norm        blk.i.attn_norm.weight
    blocks.i.attn.qkv         blk.i.attn_q / attn_k / attn_v.weight   q and k rows permuted, see below
    blocks.i.attn.out         blk.i.attn_output.weight
    blocks.i.mlp_norm         blk.i.ffn_norm.weight
    blocks.i.mlp.gate_up      blk.i.ffn_gate / ffn_up.weight
    blocks.i.mlp.down         blk.i.ffn_down.weight
    norm.weight               output_norm.weight
    head.weight (untied)      output.weight

Rotary layout: stlm rotates dim i of a head with dim i + Dh/2 (half-split,
`layers.RotaryEmbedding`); llama.cpp's "llama" rope rotates adjacent pairs
(2j, 2j+1). Rows of q and k are permuted per head so that our pair
(j, j + Dh/2) lands on llama.cpp's (2j, 2j+1) - the permutation
convert_hf_to_gguf.py applies to HF Llama checkpoints. Attention scores are
invariant to a permutation applied to both q and k, so v and everything
else stay as they are.

Vocabulary: llama.cpp's SentencePiece ("llama") tokenizer, no space prefix.
The 256 byte ids are byte tokens `<0xNN>`, except that the space (id 32) is the
normal token "▁": llama.cpp writes every space of the input as "▁" (U+2581)
before it looks tokens up, so a `<0x20>` token would never be matched and a
space would become the three bytes of "▁". The cost: a literal "▁" in the
text also becomes id 32. PAD/BOS/EOS and the sentinels are control tokens
(never read from text). BOS is added, EOS is not, as stlm's prompts are built.

File types: f32; f16 (matrices f16, norms f32, as llama.cpp's own converter);
q8_0 (matrices in 32-value blocks of int8 with one f16 scale; norms f32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from stlm.errors import UserError
from stlm.interop.hf_llama import hf_tensors
from stlm.models.decoder import DecoderLM
from stlm.tokenizers import ByteTokenizer, Tokenizer

DTYPES = ("f32", "f16", "q8_0")
SPACE = "\u2581"  # what llama.cpp's SentencePiece tokenizer writes for " "

# HF Llama key (under model.layers.{i}.) -> GGUF key (under blk.{i}.).
_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def gguf_name(hf_key: str) -> str:
    """The GGUF tensor name of an HF Llama key."""
    if hf_key in _GLOBAL:
        return _GLOBAL[hf_key]
    _, _, i, rest = hf_key.split(".", 3)  # model.layers.{i}.{rest}
    return f"blk.{i}.{_LAYER[rest]}"


def interleave_rotary(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """q or k projection rows (H*Dh, D) from the half-split rotary layout to the interleaved one.

    Within each head, row j (j < Dh/2) moves to 2j and row j + Dh/2 to 2j + 1.
    """
    rows, d = weight.shape
    d_head = rows // n_heads
    return (
        weight.reshape(n_heads, 2, d_head // 2, d)  # (H, half, Dh/2, D): the two halves of each head
        .transpose(1, 2)  # (H, Dh/2, 2, D): pair j = (row j, row j + Dh/2)
        .reshape(rows, d)
    )


def byte_vocab(tokenizer: ByteTokenizer) -> tuple[list[str], list[int]]:
    """Token texts and types (gguf.TokenType values) of the byte vocabulary, by id."""
    import gguf

    tokens, types = [], []
    for i in range(256):
        if i == ord(" "):
            tokens.append(SPACE)
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"<0x{i:02X}>")
            types.append(gguf.TokenType.BYTE)
    names = {tokenizer.pad_id: "<pad>", tokenizer.bos_id: "<s>", tokenizer.eos_id: "</s>"}
    names.update({tokenizer.sentinel_id(k): f"<extra_id_{k}>" for k in range(tokenizer.n_sentinels)})
    for i in range(256, tokenizer.vocab_size):
        tokens.append(names[i])
        types.append(gguf.TokenType.CONTROL)
    return tokens, [int(t) for t in types]


def export_gguf(model: DecoderLM, tokenizer: Tokenizer, path: Path, dtype: str = "f32", name: str = "stlm") -> None:
    """Write the decoder as one GGUF file at `path` (the caller renames it into place)."""
    import gguf

    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype} is not a GGUF type stlm writes: {', '.join(DTYPES)}")
    if not isinstance(tokenizer, ByteTokenizer):
        raise UserError(f"gguf export writes the byte vocabulary; this run's tokenizer is {tokenizer.name}")
    cfg = model.config
    if dtype == "q8_0" and (cfg.d_model % 32 or cfg.d_ff % 32):
        raise UserError(
            f"q8_0 packs rows in blocks of 32 values; d_model {cfg.d_model} and d_ff {cfg.d_ff} must be multiples of 32"
        )
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[dtype]

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(cfg.max_seq_len)
    writer.add_embedding_length(cfg.d_model)
    writer.add_block_count(cfg.n_layers)
    writer.add_feed_forward_length(cfg.d_ff)
    writer.add_head_count(cfg.n_heads)
    writer.add_head_count_kv(cfg.n_heads)
    writer.add_rope_dimension_count(cfg.d_head)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(file_type)

    tokens, types = byte_vocab(tokenizer)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types(types)
    writer.add_bos_token_id(tokenizer.bos_id)
    writer.add_eos_token_id(tokenizer.eos_id)
    writer.add_pad_token_id(tokenizer.pad_id)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)

    for key, tensor in hf_tensors(model).items():
        if key.endswith(("q_proj.weight", "k_proj.weight")):
            tensor = interleave_rotary(tensor, cfg.n_heads)
        data = tensor.numpy()
        if data.ndim == 1 or dtype == "f32":  # norm gains stay f32 in every file type
            writer.add_tensor(gguf_name(key), data.astype(np.float32))
        elif dtype == "f16":
            writer.add_tensor(gguf_name(key), data.astype(np.float16))
        else:
            quantized = gguf.quants.quantize(data.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(gguf_name(key), quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
