"""Tokenizer files for the byte vocabularies, so `AutoTokenizer` gives stlm's ids.

A byte model's vocabulary is 256 byte ids at a fixed offset, plus a few named
ids (PAD, BOS/EOS, sentinels). Written as a Hugging Face `tokenizers` file it
is a byte-level BPE with no merges: the pre-tokenizer writes every UTF-8 byte
as one of GPT-2's 256 stand-in symbols (`byte_symbols`), each symbol is one
token, so every string encodes to exactly its bytes' ids and decodes back.

    decoder family (ByteTokenizer)   byte b -> b,      <pad> 256, <s> 257, </s> 258,
                                     <extra_id_k> 263 - k; BOS prepended
    byte T5 (ByT5Tokenizer)          byte b -> b + 3,  <pad> 0, </s> 1, <unk> 2,
                                     <extra_id_k> vocab - 1 - k; EOS appended

Sentinels of a T5 vocabulary are split out of text with the whitespace around
them absorbed (lstrip/rstrip), as transformers' T5 tokenizers do and as
`stlm.tokenizers.sentinels.encode_marked` does for prompts. A decoder's named
ids are never read from text (`split_special_tokens`): stlm's byte tokenizer
reads "<s>" as three bytes, and so does the exported one.

`tokenizers` is imported only when a file is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stlm.tokenizers import BPETokenizer, ByT5Tokenizer, ByteTokenizer
from stlm.tokenizers.bpe import byte_symbols


def byte_tokenizer_files(tokenizer: ByteTokenizer | ByT5Tokenizer, max_len: int | None) -> dict[str, str]:
    """File name -> text of tokenizer.json, tokenizer_config.json and special_tokens_map.json."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    t5 = isinstance(tokenizer, ByT5Tokenizer)
    offset = 3 if t5 else 0
    vocab = {symbol: byte + offset for symbol, byte in byte_symbols().items()}
    names = (
        {"<pad>": tokenizer.pad_id, "</s>": tokenizer.eos_id, "<unk>": ByT5Tokenizer.unk_id}
        if t5
        else {"<pad>": tokenizer.pad_id, "<s>": tokenizer.bos_id, "</s>": tokenizer.eos_id}
    )
    n_sentinels = tokenizer.n_sentinels
    sentinels = {f"<extra_id_{k}>": tokenizer.sentinel_id(k) for k in range(n_sentinels)}
    vocab.update(names)
    vocab.update(sentinels)
    assert sorted(vocab.values()) == list(range(tokenizer.vocab_size)), "ids must be dense"

    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    # Ascending ids: the order `added_tokens` lists them in.
    added = sorted([*names.items(), *sentinels.items()], key=lambda item: item[1])
    tok.add_special_tokens(
        [
            AddedToken(
                name, special=True, normalized=False, lstrip=t5 and name in sentinels, rstrip=t5 and name in sentinels
            )
            for name, _ in added
        ]
    )
    if t5:  # T5 sources end with EOS
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tokenizer.eos_id)]
        )
    else:  # a decoder continues BOS + prompt
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tokenizer.bos_id)]
        )
    for name, token_id in names.items():
        assert tok.token_to_id(name) == token_id

    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "pad_token": "<pad>",
        "eos_token": "</s>",
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_len if max_len is not None else 1 << 30,
    }
    if t5:
        config.update(unk_token="<unk>", additional_special_tokens=list(sentinels))
    else:
        config.update(bos_token="<s>", split_special_tokens=True)
    special = {k: v for k, v in config.items() if k.endswith("_token") or k == "additional_special_tokens"}
    return {
        "tokenizer.json": tok.to_str(pretty=True) + "\n",
        "tokenizer_config.json": json.dumps(config, indent=2) + "\n",
        "special_tokens_map.json": json.dumps(special, indent=2) + "\n",
    }


def bpe_tokenizer_files(tokenizer: BPETokenizer, max_len: int | None) -> dict[str, str]:
    """The decoder-family files for a byte-level BPE run: its own tokenizer.json plus PAD/BOS/EOS.

    stlm keeps PAD/BOS/EOS outside the BPE (ids n_pieces, +1, +2); here they become special
    tokens with those ids, BOS is prepended, and `split_special_tokens` keeps their names in
    text as ordinary text, as stlm reads it.
    """
    from tokenizers import AddedToken, Tokenizer, processors

    tok = Tokenizer.from_str(tokenizer.json)
    vocab = tok.get_vocab()
    names = ["<pad>", "<s>", "</s>"]
    if any(name in vocab for name in names):  # a piece spelled like one: give the specials other names
        names = ["<|stlm_pad|>", "<|stlm_bos|>", "<|stlm_eos|>"]
    tok.add_special_tokens([AddedToken(name, special=True, normalized=False) for name in names])
    pad, bos, eos = names
    assert [tok.token_to_id(n) for n in names] == [tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.bos_id)]
    )
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "pad_token": pad,
        "bos_token": bos,
        "eos_token": eos,
        "split_special_tokens": True,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_len if max_len is not None else 1 << 30,
    }
    special = {k: v for k, v in config.items() if k.endswith("_token")}
    return {
        "tokenizer.json": tok.to_str(pretty=True) + "\n",
        "tokenizer_config.json": json.dumps(config, indent=2) + "\n",
        "special_tokens_map.json": json.dumps(special, indent=2) + "\n",
    }


def write_files(root: Path, files: dict[str, str]) -> None:
    """Write name -> text files into `root` (a fresh folder the caller renames into place)."""
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
