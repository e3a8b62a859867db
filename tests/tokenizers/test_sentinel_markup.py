"""Sentinel markup in T5 prompts: `<extra_id_N>` is read as transformers' T5 tokenizers read it."""

from __future__ import annotations

import pytest

from stlm.families import T5Family
from stlm.tokenizers import ByT5Tokenizer, SentencePieceTokenizer, train_sentencepiece
from stlm.tokenizers.sentinels import encode_marked

TEXTS = [
    "The <extra_id_0> walks in <extra_id_1> park",
    "The<extra_id_0>walks",
    "<extra_id_0> park",
    "a  <extra_id_0>  b",
    "x <extra_id_99> y <extra_id_100> z",  # 100 sentinels: <extra_id_100> is plain text
    "in <extra_id_1>.",
    "<extra_id_0><extra_id_1>",
    "<extra_id_0>",
    "a\t<extra_id_3>\n\nb",
    "<extra_id_007> <extra_id_5 > <extra_id_>",  # not markup
    "x\x1c<extra_id_0>\x1cy",  # separators are not whitespace to transformers
    "é <extra_id_2>中文 🐍",
    " lead space",
    "",
    " ",
]


@pytest.fixture(scope="module")
def spiece(tmp_path_factory):
    root = tmp_path_factory.mktemp("spiece")
    texts = [
        "The cute dog walks in the green park. " * 3,
        "Hello world, a quick brown fox jumps over the lazy dog.",
        "park walks cute the a an in of",
    ] * 50
    model = train_sentencepiece(texts, root / "spiece", vocab_size=39)
    return SentencePieceTokenizer(model)


def test_sentinel_ids_and_plain_text():
    tok = ByT5Tokenizer()
    ids = encode_marked(tok, "The <extra_id_0> walks in <extra_id_1> park", eos=True)
    assert ids == [*tok.encode("The"), 383, *tok.encode("walks in"), 382, *tok.encode("park"), tok.eos_id]
    assert encode_marked(tok, "no markup here") == tok.encode("no markup here")
    assert encode_marked(tok, "<extra_id_125>") == tok.encode("<extra_id_125>")  # ByT5 has 125 sentinels
    assert T5Family().prompt_ids(tok, "a <extra_id_0>") == [*tok.encode("a"), 383, tok.eos_id]


def test_matches_transformers_t5_tokenizer(spiece):
    transformers = pytest.importorskip("transformers")
    hf = transformers.T5Tokenizer.from_pretrained(spiece.model_file.parent)
    fast = (
        transformers.T5TokenizerFast.from_pretrained(spiece.model_file.parent)
        if hasattr(transformers, "T5TokenizerFast")
        else hf
    )
    for text in TEXTS:
        ours = encode_marked(spiece, text, eos=True)
        assert hf(text).input_ids == ours, text
        assert fast(text).input_ids == ours, text
    assert hf.convert_tokens_to_ids("<extra_id_0>") == spiece.sentinel_id(0)


def test_matches_the_exported_byte_tokenizer(tmp_path):
    transformers = pytest.importorskip("transformers")
    from stlm.interop.hf_tokenizer import byte_tokenizer_files, write_files

    write_files(tmp_path, byte_tokenizer_files(ByT5Tokenizer(), None))
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS:
        assert hf(text).input_ids == encode_marked(ByT5Tokenizer(), text, eos=True), text
