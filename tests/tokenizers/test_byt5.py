import pytest
from hypothesis import given
from hypothesis import strategies as st

from stlm.data.shards import encode_document
from stlm.tokenizers import ByT5Tokenizer

tok = ByT5Tokenizer()

SAMPLES = [
    "hello",
    "",
    "naïve café, señor",
    "東京 と 大阪",
    "emoji 🙂👍🏽 and math ∑∫",
    "tabs\tnew\nlines\r\n",
    "\x00 null and \x7f delete",
    "Ελληνικά русский עברית العربية",
]


def test_layout_matches_t5_specials_and_sentinels_from_the_top():
    assert (tok.pad_id, tok.eos_id, tok.unk_id, tok.bos_id) == (0, 1, 2, None)
    assert tok.vocab_size == 384 == 256 + 3 + 125
    assert tok.encode("\x00ÿ") == [0 + 3, 0xC3 + 3, 0xBF + 3]  # ÿ is C3 BF in UTF-8
    assert [tok.sentinel_id(k) for k in (0, 1, 124)] == [383, 382, 259]
    assert tok.sentinel_index(383) == 0 and tok.sentinel_index(258) is None
    with pytest.raises(ValueError):
        tok.sentinel_id(125)
    small = ByT5Tokenizer(n_sentinels=5)
    assert small.vocab_size == 264 and small.sentinel_id(0) == 263


def test_bos_is_ignored_and_eos_appended():
    # Shards pack every document with bos=True, eos=True: T5 documents become `doc EOS`.
    assert tok.encode("hi", bos=True, eos=True) == [ord("h") + 3, ord("i") + 3, 1]
    assert encode_document("hi", tok).tolist() == [ord("h") + 3, ord("i") + 3, 1]


def test_ids_match_hugging_face_byt5_tokenizer():
    transformers = pytest.importorskip("transformers")
    hf = transformers.ByT5Tokenizer()
    assert (hf.pad_token_id, hf.eos_token_id, hf.unk_token_id) == (0, 1, 2)
    assert len(hf) == tok.vocab_size
    for text in SAMPLES:
        assert tok.encode(text, eos=True) == hf(text).input_ids, text
        assert tok.decode(hf(text).input_ids) == text
    # Sentinel ids are not compared: transformers 5 numbers <extra_id_k> upwards
    # from 259 although its docstring says from the end; we follow T5 (from the top).


@given(st.text())
def test_text_round_trip_is_lossless(text):
    ids = tok.encode(text, eos=True)
    assert all(3 <= i < 259 for i in ids[:-1]) and ids[-1] == 1
    assert tok.decode(ids) == text
    assert tok.count_bytes(ids) == len(text.encode("utf-8"))


@given(st.lists(st.integers(min_value=-5, max_value=400)))
def test_decode_never_raises(ids):
    assert isinstance(tok.decode(ids), str)
    assert isinstance(tok.decode(ids, sentinels=True), str)


@given(st.binary())
def test_arbitrary_bytes_round_trip(data):
    assert tok.decode_bytes(tok.encode_bytes(data)) == data


def test_decode_drops_or_renders_specials_and_sentinels():
    ids = [0, *tok.encode("a b"), tok.sentinel_id(0), *tok.encode("c"), tok.sentinel_id(1), 1, 0]
    assert tok.decode(ids) == "a bc"
    assert tok.decode(ids, sentinels=True) == "a b<extra_id_0>c<extra_id_1>"
    assert tok.decode([0xFF + 3, ord("x") + 3]) == "\ufffdx"  # invalid UTF-8 replaced, no exception
