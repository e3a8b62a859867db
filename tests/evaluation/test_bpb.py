import math

import numpy as np
import pytest
import torch

from stlm.data import unigram_bits_per_byte
from stlm.evaluation.bpb import (
    REFERENCE_LABELS,
    UNIFORM_BPB,
    bits_per_byte,
    reference_bpb,
    target_nats,
    window_plan,
)
from stlm.tokenizers import ByteTokenizer


class Uniform(torch.nn.Module):
    """Equal probability for all 264 ids: every scored byte costs log2(264) bits."""

    def forward(self, ids):
        return torch.zeros(*ids.shape, 264)


class Counting(torch.nn.Module):
    """Logits depend only on how many ids precede each position, to detect context use."""

    def forward(self, ids):
        pos = torch.arange(ids.shape[1], dtype=torch.float32)
        return pos[None, :, None].expand(*ids.shape, 264) * torch.linspace(0, 1, 264)


@pytest.mark.parametrize(
    "n, context, stride", [(2, 4, 4), (10, 4, 2), (10, 4, 4), (100, 16, 5), (17, 16, 1), (5, 64, 32)]
)
def test_every_target_is_scored_exactly_once(n, context, stride):
    scored = []
    for start, end, first in window_plan(n, context, stride):
        assert end - start <= context and first >= start + 1
        scored += list(range(first, end + 1))
    assert scored == list(range(1, n))


def test_byte_count_equals_utf8_length_and_specials_are_not_scored():
    text = "naïve café — ünïcödé ✓ text\nwith lines 🐍 " * 7
    tok = ByteTokenizer()
    stream = np.array(tok.encode(text, bos=True, eos=True))
    result = bits_per_byte(Uniform(), stream, context=32, stride=16)
    assert result.n_bytes == len(text.encode("utf-8"))
    assert result.bits_per_byte == pytest.approx(math.log2(264))


def test_packed_documents_count_only_their_bytes():
    docs = ["first document", "second, ünïcode", "3"]
    tok = ByteTokenizer()
    stream = np.array([i for d in docs for i in tok.encode(d, bos=True, eos=True)])
    result = bits_per_byte(Uniform(), stream, context=8, stride=8, batch_size=3)
    assert result.n_bytes == sum(len(d.encode("utf-8")) for d in docs)


def test_batching_does_not_change_the_result():
    stream = np.random.default_rng(0).integers(0, 256, 300)
    a = bits_per_byte(Counting(), stream, context=32, stride=8, batch_size=1)
    b = bits_per_byte(Counting(), stream, context=32, stride=8, batch_size=7)
    assert a.nats == pytest.approx(b.nats, rel=1e-6) and a.n_bytes == b.n_bytes == 299


def test_each_targets_nats_is_its_loss_with_the_history_its_window_gives():
    """Counting's logits at a position depend only on the position in the window: each target's nats
    must be the cross-entropy at the index its window scores it from, and they sum to bits_per_byte's."""
    stream = np.random.default_rng(1).integers(0, 256, 50)
    nats = target_nats(Counting(), stream, context=16, stride=4, batch_size=3)
    assert nats.shape == (50,) and nats[0] == 0
    log_probs = torch.log_softmax(Counting()(torch.zeros(1, 16, dtype=torch.long))[0].double(), dim=-1)  # (16, 264)
    for start, end, first in window_plan(50, 16, 4):
        for t in range(first, end + 1):
            assert nats[t].item() == pytest.approx(-log_probs[t - start - 1, stream[t]].item(), rel=1e-5)
    total = bits_per_byte(Counting(), stream, context=16, stride=4)
    assert total.nats == pytest.approx(float(nats.sum()), rel=1e-9)


class UniformOver(torch.nn.Module):
    """Equal probability for each of `v` ids."""

    def __init__(self, v: int) -> None:
        super().__init__()
        self.v = v

    def forward(self, ids):
        return torch.zeros(*ids.shape, self.v)


@pytest.fixture(scope="module")
def bpe():
    from pydoc_data.topics import topics

    from stlm.tokenizers import train_bpe

    return train_bpe([topics[k] for k in sorted(topics)[:40]], 400)


def test_token_model_bpb_divides_by_the_exact_utf8_bytes(bpe):
    """Summed token NLL over the exact UTF-8 byte count; BOS/EOS score nothing and add no bytes."""
    docs = ["naïve café — ünïcödé ✓ text\nwith lines 🐍 " * 5, "def f(x):\n    return x  # ✓", "3"]
    stream = np.array([i for d in docs for i in bpe.encode(d, bos=True, eos=True)])
    n_text_tokens = sum(len(bpe.encode(d)) for d in docs)
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    assert n_text_tokens < 0.9 * n_bytes  # real merges: tokens and bytes differ
    result = bits_per_byte(UniformOver(bpe.vocab_size), stream, context=16, stride=8, byte_lengths=bpe.byte_lengths())
    assert result.n_bytes == n_bytes
    assert result.nats == pytest.approx(n_text_tokens * math.log(bpe.vocab_size))
    assert result.bits_per_byte == pytest.approx(n_text_tokens * math.log2(bpe.vocab_size) / n_bytes)


def test_byte_model_bpb_is_the_same_with_the_byte_tokenizers_lengths():
    tok = ByteTokenizer()
    rng = np.random.default_rng(0)
    stream = rng.integers(0, 259, 400)  # bytes with BOS/EOS/PAD sprinkled in
    a = bits_per_byte(Counting(), stream, context=32, stride=8)
    b = bits_per_byte(Counting(), stream, context=32, stride=8, byte_lengths=tok.byte_lengths())
    assert a.nats == b.nats and a.n_bytes == b.n_bytes == int((stream[1:] < 256).sum())


def test_ids_beyond_the_byte_length_table_are_an_error(bpe):
    with pytest.raises(ValueError, match="outside"):
        bits_per_byte(UniformOver(600), np.array([1, 2, 500]), context=4, byte_lengths=bpe.byte_lengths())


def _entropy(counter) -> float:
    """Entropy in bits of a collections.Counter, written out independently of stlm."""
    total = sum(counter.values())
    return -sum(c / total * math.log2(c / total) for c in counter.values())


def test_references_are_the_entropies_of_the_same_bytes_and_tokens(bpe):
    """Uniform 8; byte order-0 entropy of the text itself; for tokens, token entropy x tokens per byte."""
    from collections import Counter

    docs = ["naïve café — ünïcödé ✓ text\nwith lines 🐍 " * 5, "def f(x):\n    return x  # ✓"]
    raw = "".join(docs).encode("utf-8")
    byte_refs = reference_bpb(
        np.array([i for d in docs for i in ByteTokenizer().encode(d, bos=True, eos=True)]), ByteTokenizer()
    )
    assert byte_refs == pytest.approx({"uniform": 8.0, "unigram": _entropy(Counter(raw))})  # no token row for bytes

    tokens = [t for d in docs for t in bpe.encode(d)]
    stream = np.array([i for d in docs for i in bpe.encode(d, bos=True, eos=True)])
    refs = reference_bpb(stream, bpe)
    assert refs["unigram"] == pytest.approx(_entropy(Counter(raw)))  # the same bytes, whatever the tokens
    assert refs["token_unigram"] == pytest.approx(_entropy(Counter(tokens)) * len(tokens) / len(raw))
    assert refs["token_unigram"] < refs["unigram"] < refs["uniform"] == UNIFORM_BPB
    # The same numbers the data layer reports for a split (`stlm prepare`, the demo before).
    assert refs["unigram"] == pytest.approx(unigram_bits_per_byte(np.frombuffer(raw, dtype=np.uint8)))
    assert refs["token_unigram"] == pytest.approx(unigram_bits_per_byte(stream, byte_lengths=bpe.byte_lengths()))
    assert set(REFERENCE_LABELS) >= set(refs)


def test_references_of_a_stream_without_bytes_are_the_uniform_guess_alone():
    assert reference_bpb(np.array([257, 258]), ByteTokenizer()) == {"uniform": 8.0}
