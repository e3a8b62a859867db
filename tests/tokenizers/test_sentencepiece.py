import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stlm.data.shards import encode_document
from stlm.errors import UserError
from stlm.tokenizers import SentencePieceTokenizer, train_sentencepiece

VOCAB = 500

SENTENCES = [
    "The for statement is used to iterate over the elements of a sequence.",
    "Names refer to objects. Names are introduced by name binding operations.",
    "If the syntax is wrong, a SyntaxError exception is raised (see below).",
    "x = [i * 2 for i in range(10) if i % 3]",
]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    """Python's help topics: ~470 KB of English prose and code."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, corpus):
    return train_sentencepiece(corpus, tmp_path_factory.mktemp("spiece") / "spiece", vocab_size=VOCAB)


@pytest.fixture(scope="module")
def tok(model_file) -> SentencePieceTokenizer:
    return SentencePieceTokenizer(model_file)


def test_training_writes_a_t5_layout_model(model_file, tok):
    assert model_file.name == "spiece.model" and model_file.is_file()
    assert (tok.pad_id, tok.eos_id, tok.unk_id, tok.bos_id) == (0, 1, 2, None)
    assert [tok.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
    assert tok.n_pieces == VOCAB and tok.vocab_size == VOCAB + 100


def test_sentinels_count_down_from_the_top(model_file, tok):
    # With T5's 32,000 pieces the same rule gives <extra_id_0> = 32099.
    assert tok.sentinel_id(0) == VOCAB + 100 - 1 == tok.vocab_size - 1
    assert tok.sentinel_id(99) == VOCAB
    assert [tok.sentinel_index(i) for i in (VOCAB + 99, VOCAB, VOCAB - 1)] == [0, 99, None]
    assert tok.id_to_piece(tok.sentinel_id(7)) == "<extra_id_7>"
    with pytest.raises(ValueError):
        tok.sentinel_id(100)
    assert SentencePieceTokenizer(model_file, n_sentinels=3).sentinel_id(0) == VOCAB + 2


def test_round_trip_and_eos(tok):
    for text in SENTENCES:
        ids = tok.encode(text)
        assert all(3 <= i < tok.n_pieces for i in ids), "no specials or sentinels from plain text"
        assert tok.decode(ids) == text
        assert tok.encode(text, bos=True, eos=True) == ids + [tok.eos_id]  # no BOS in T5
    # Shards pack T5 documents as `doc EOS`.
    assert encode_document(SENTENCES[0], tok).tolist() == tok.encode(SENTENCES[0]) + [1]


def test_round_trip_on_corpus_lines(tok, corpus):
    # The NFKC-based normalization collapses runs of spaces; otherwise every
    # ASCII line of the training text whose characters all made it into the
    # vocabulary (character_coverage leaves out the rarest, e.g. "@") comes
    # back as it was.
    lines = [line for doc in corpus[:60] for line in doc.splitlines() if line.strip() and line.isascii()]
    covered = [(line, ids) for line in lines if tok.unk_id not in (ids := tok.encode(line))]
    assert len(covered) > 0.95 * len(lines)
    for line, ids in covered:
        assert tok.decode(ids) == " ".join(line.split())


def test_decode_drops_or_renders_specials_and_sentinels(tok):
    a, b = tok.encode("the value"), tok.encode("of x")
    ids = [0, *a, tok.sentinel_id(0), *b, tok.sentinel_id(1), 1, 0]
    assert tok.decode(ids) == "the value of x"
    assert tok.decode(ids, sentinels=True) == "the value<extra_id_0> of x<extra_id_1>"


def test_decode_bytes_streams_piece_by_piece(tok):
    ids = tok.encode(SENTENCES[1])
    streamed = b"".join(tok.decode_bytes([i]) for i in ids).decode()
    assert streamed == " " + tok.decode(ids)  # keeps the space before the first word
    assert tok.decode_bytes([0, 1, tok.sentinel_id(0)]) == b""


@settings(max_examples=50, deadline=None)
@given(ids=st.lists(st.integers(min_value=-10, max_value=VOCAB + 150)))
def test_decode_never_raises(tok, ids):
    assert isinstance(tok.decode(ids), str)
    assert isinstance(tok.decode(ids, sentinels=True), str)
    assert isinstance(tok.decode_bytes(ids), bytes)


def test_to_dict_names_the_model_by_hash(model_file, tok):
    info = tok.to_dict()
    assert info["name"] == "spiece" and info["vocab_size"] == VOCAB + 100
    assert info["sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert info["spec"] == f"spiece:{model_file.resolve()}"


def test_ids_match_hugging_face_t5_tokenizer_loading_the_model_file(model_file, tok):
    transformers = pytest.importorskip("transformers")
    try:
        import google.protobuf  # noqa: F401
    except ImportError:
        pytest.skip("transformers reads spiece.model through protobuf, which is not installed")
    try:
        hf = transformers.T5Tokenizer.from_pretrained(model_file.parent)
    except Exception as exc:  # e.g. transformers 5 needs protobuf to read spiece.model
        pytest.skip(f"transformers cannot load spiece.model offline here: {type(exc).__name__}: {exc}"[:300])
    for text in SENTENCES:
        assert hf(text).input_ids == tok.encode(text, eos=True)
    assert hf.convert_tokens_to_ids("<extra_id_0>") == tok.sentinel_id(0)


def test_ids_match_hugging_face_t5_tokenizer_built_from_the_same_pieces(tok, corpus):
    # Needs no protobuf: the Unigram pieces and scores are handed over as the
    # T5 converter would, sentinels appended in reverse so <extra_id_0> is last.
    # Without the model's normalizer the comparison is limited to ASCII lines.
    transformers = pytest.importorskip("transformers")
    sp = tok._sp
    pieces = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(tok.n_pieces)]
    extra = [f"<extra_id_{k}>" for k in reversed(range(tok.n_sentinels))]
    hf = transformers.T5Tokenizer(vocab=pieces + [(e, 0.0) for e in extra], additional_special_tokens=extra)
    assert hf.convert_tokens_to_ids(["<pad>", "</s>", "<unk>", "<extra_id_0>", "<extra_id_99>"]) == [
        0,
        1,
        2,
        tok.sentinel_id(0),
        tok.sentinel_id(99),
    ]
    # Runs of one repeated character ("=====") have several equally scored
    # segmentations, which the two libraries break differently; skip them.
    lines = [
        line
        for doc in corpus[:60]
        for line in doc.splitlines()
        if line.strip() and line.isascii() and not any(c * 2 in line for c in "=-*~^")
    ]
    assert len(lines) > 1000
    for line in lines:
        assert hf(line).input_ids == tok.encode(line, eos=True), line


def test_a_corpus_too_small_for_the_vocabulary_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="too small for 500 SentencePiece pieces: use vocab_size <= "):
        train_sentencepiece(["just a few words", "and a few more"], tmp_path / "small", vocab_size=500)
    with pytest.raises(UserError, match="too small"):
        train_sentencepiece(["abcabc"], tmp_path / "chars", vocab_size=50, model_type="char")
    with pytest.raises(UserError, match="no non-empty line"):
        train_sentencepiece(["", "  \n\n"], tmp_path / "empty", vocab_size=50)
    with pytest.raises(UserError, match="model type"):
        train_sentencepiece(["text"], tmp_path / "x", vocab_size=50, model_type="wordpiece")


def test_models_without_the_t5_layout_are_refused(tmp_path, corpus):
    import sentencepiece as spm

    # SentencePiece's own default layout: unk 0, bos 1, eos 2.
    lines = iter([line for doc in corpus[:20] for line in doc.splitlines() if line.strip()])
    spm.SentencePieceTrainer.train(
        sentence_iterator=lines, model_prefix=str(tmp_path / "plain"), vocab_size=100, minloglevel=2
    )
    with pytest.raises(UserError, match=r"pad/eos/unk ids \(-1, 2, 0\)"):
        SentencePieceTokenizer(tmp_path / "plain.model")
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a SentencePiece model"):
        SentencePieceTokenizer(tmp_path / "junk.model")
    with pytest.raises(UserError, match="does not exist"):
        SentencePieceTokenizer(tmp_path / "missing.model")


def test_packs_into_uint16_shards(tmp_path, tok):
    from stlm.data.shards import prepare_data

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, text in enumerate(SENTENCES):
        (corpus / f"{i}.txt").write_text(text, encoding="utf-8")
    data = prepare_data(str(corpus), tok, cache_dir=tmp_path / "cache", val_fraction=0.25, progress=False)
    tokens = np.concatenate([data.train, data.val])
    assert (tokens == tok.eos_id).sum() == len(SENTENCES)  # `doc EOS doc EOS ...`
    assert tokens[-1] == tok.eos_id and tok.pad_id not in tokens
    assert data.meta["tokenizer"]["sha256"] == tok.sha256
