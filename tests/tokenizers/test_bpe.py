"""Byte-level BPE: exact vocabulary, lossless round trips, byte lengths, specs and checkpoint records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stlm.errors import UserError
from stlm.tokenizers import BPETokenizer, load_tokenizer, tokenizer_from_record, train_bpe
from stlm.tokenizers.bpe import byte_symbols

TEXTS = [
    "",
    "plain ascii text",
    "naïve café — ünïcödé ✓ 中文 🐍 text\nwith lines\r\n\ttabs",
    "\x00\x01 control \x7f bytes \u00a0nbsp \u00ad soft hyphen",
    "<bos> <eos> <pad> <|endoftext|> look like specials",
    "    def f(x):\n        return x ** 2  # ✓\n",
    "Ġ and Ċ are the stand-ins, not the text",
]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)[:60]]


@pytest.fixture(scope="module")
def tok(corpus) -> BPETokenizer:
    return train_bpe(corpus, 512)


def test_exact_vocabulary_and_special_layout(tok):
    assert tok.vocab_size == 512 and tok.n_pieces == 509
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (509, 510, 511)
    lengths = tok.byte_lengths()
    assert lengths.shape == (512,) and list(lengths[509:]) == [0, 0, 0] and (lengths[:509] >= 1).all()
    assert lengths.max() > 3  # it merged something


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_is_lossless_and_byte_lengths_sum_to_the_utf8_length(tok, text):
    ids = tok.encode(text, bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert (
        tok.bos_id not in ids[1:-1] and tok.eos_id not in ids[1:-1] and tok.pad_id not in ids
    )  # text cannot inject control ids
    assert tok.decode_bytes(ids) == text.encode("utf-8") and tok.decode(ids) == text
    assert int(tok.byte_lengths()[ids].sum()) == tok.count_bytes(ids) == len(text.encode("utf-8"))


def test_pieces_decoded_one_at_a_time_concatenate_to_the_text(tok):
    text = TEXTS[2]
    assert b"".join(tok.decode_bytes([i]) for i in tok.encode(text)) == text.encode("utf-8")


def test_byte_symbols_are_the_libraries_byte_level_alphabet():
    from tokenizers import pre_tokenizers

    symbols = byte_symbols()
    assert set(symbols) == set(pre_tokenizers.ByteLevel.alphabet()) and sorted(symbols.values()) == list(range(256))
    split = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    for text in ["a b\nc", "é✓🐍", "".join(chr(i) for i in range(1, 128))]:
        ((written, _),) = split.pre_tokenize_str(text)
        assert bytes(symbols[c] for c in written) == text.encode("utf-8")


def test_training_is_deterministic(corpus, tok):
    assert train_bpe(corpus, 512).json == tok.json


def test_spec_file_and_checkpoint_record_rebuild_the_same_tokenizer(tok, tmp_path):
    path = tok.save(tmp_path / "tok.json")
    from_spec = load_tokenizer(f"bpe:{path}")
    record = json.loads(json.dumps(tok.to_dict()))  # as a checkpoint's config.json stores it
    path.unlink()  # the record alone is enough
    from_record = tokenizer_from_record(record)
    for other in (from_spec, from_record):
        assert isinstance(other, BPETokenizer) and other.sha256 == tok.sha256
        assert other.encode(TEXTS[2]) == tok.encode(TEXTS[2])
    record["sha256"] = "0" * 64
    with pytest.raises(UserError, match="corrupt"):
        tokenizer_from_record(record)


def test_bad_tokenizer_files_are_user_errors(tok, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    with pytest.raises(UserError, match="does not exist"):
        load_tokenizer(f"bpe:{tmp_path / 'missing.json'}")
    with pytest.raises(UserError, match="needs a tokenizer file"):
        load_tokenizer("bpe:")
    (tmp_path / "junk.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(UserError, match="not a Hugging Face tokenizer"):
        load_tokenizer(f"bpe:{tmp_path / 'junk.json'}")
    data = json.loads(tok.json)
    data["added_tokens"] = [
        {
            "id": 509,
            "content": "<|endoftext|>",
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
    ]
    with pytest.raises(UserError, match="added tokens"):
        BPETokenizer(json.dumps(data))
    wordlevel = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    with pytest.raises(UserError, match="WordLevel"):
        BPETokenizer(wordlevel.to_str())
    plain = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    plain.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(UserError, match="not a byte-level BPE"):
        BPETokenizer(plain.to_str())


def test_too_small_a_corpus_or_vocabulary_is_a_user_error():
    with pytest.raises(UserError, match="or more text"):
        train_bpe(["just a few words", "and a few more"], 1024)
    with pytest.raises(UserError, match="vocab_size >= 259"):
        train_bpe(["text"], 258)


def test_importing_the_package_does_not_import_tokenizers():
    import subprocess
    import sys

    code = "import sys, stlm.tokenizers, stlm.registry; print('tokenizers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_byte_tokenizer_byte_lengths():
    from stlm.tokenizers import ByteTokenizer

    lengths = ByteTokenizer().byte_lengths()
    assert lengths.shape == (264,) and lengths.sum() == 256 and np.all(lengths[:256] == 1)
