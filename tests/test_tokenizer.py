import random

from hypothesis import given
from hypothesis import strategies as st

from stlm.tokenizers.byte import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE, ByteTokenizer

tok = ByteTokenizer()


@given(st.text())
def test_text_round_trip_is_lossless(text):
    ids = tok.encode(text, bos=True, eos=True)
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID
    assert tok.decode(ids) == text
    assert tok.count_bytes(ids) == len(text.encode("utf-8"))


@given(st.binary())
def test_arbitrary_bytes_round_trip_and_decode_never_raises(data):
    ids = tok.encode_bytes(data)
    assert tok.decode_bytes(ids) == data
    assert isinstance(tok.decode(ids), str)  # invalid UTF-8 becomes U+FFFD, no exception


def test_specials_and_sentinels_are_outside_the_byte_range():
    assert {PAD_ID, BOS_ID, EOS_ID} == {256, 257, 258}
    sentinels = [tok.sentinel_id(k) for k in range(5)]
    assert sentinels == [263, 262, 261, 260, 259] and VOCAB_SIZE == 264
    assert tok.decode([BOS_ID, 104, 105, EOS_ID, PAD_ID, *sentinels]) == "hi"


def test_invalid_utf8_decodes_to_replacement_characters():
    assert tok.decode([0xE2, 0x82]) == "\ufffd"
    assert tok.decode(list("é".encode()) + [0xFF]) == "é\ufffd"
    rng = random.Random(0)
    for _ in range(200):
        tok.decode([rng.randrange(VOCAB_SIZE) for _ in range(rng.randrange(20))])
