"""Batched greedy generation equals one-at-a-time greedy generation, row for row.

Prompts of mixed lengths (padding in the encoder, per-row positions in the
decoder), rows that stop early at EOS / a stop id and leave the batch, rows cut
by the context window, and the per-row positions of `DecoderLM.forward`.
"""

from __future__ import annotations

import random

import pytest
import torch

from stlm import registry
from stlm.generation.decoder import generate, generate_batch
from stlm.generation.seq2seq import generate_seq2seq, generate_seq2seq_batch
from stlm.models.decoder import DecoderConfig, DecoderLM
from stlm.models.t5 import T5Config, T5Model
from stlm.tokenizers.byte import BOS_ID

V = 40


@pytest.fixture(scope="module")
def t5() -> T5Model:
    torch.manual_seed(0)
    m = T5Model(T5Config(vocab_size=V, d_model=32, d_head=8, n_heads=4, d_ff=64, n_layers=2, eos_id=1))
    with torch.no_grad():  # sharper than T5's init: varied text, and some rows write EOS early
        for p in m.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.4)
    return m.eval()


@pytest.fixture(scope="module")
def decoder() -> DecoderLM:
    torch.manual_seed(0)
    return DecoderLM(DecoderConfig(d_model=64, n_layers=2, n_heads=4, max_seq_len=48)).eval()


def sources(seed: int, n: int, longest: int, vocab: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(2, vocab) for _ in range(rng.randint(0, longest))] + [1] for _ in range(n)]


def prompts(seed: int, n: int, longest: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[BOS_ID] + [rng.randrange(3, 264) for _ in range(rng.randint(0, longest))] for _ in range(n)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_seq2seq_batch_equals_one_at_a_time(t5, one_thread, seed):
    srcs = sources(seed, 12, 40, V)
    alone = [generate_seq2seq(t5, src, max_new_tokens=20) for src in srcs]
    assert generate_seq2seq_batch(t5, srcs, max_new_tokens=20) == alone
    assert any(out[-1] == 1 and len(out) < 20 for out in alone)  # some rows ended early at EOS...
    assert any(len(out) == 20 for out in alone)  # ...while others ran on


def test_seq2seq_batch_edges(t5, one_thread):
    assert generate_seq2seq_batch(t5, [], max_new_tokens=5) == []
    assert generate_seq2seq_batch(t5, [[3, 1], [4, 5, 1]], max_new_tokens=0) == [[], []]
    # A custom eos_id ends rows as it ends the unbatched loop.
    srcs = sources(3, 6, 30, V)
    eos = generate_seq2seq(t5, srcs[0], max_new_tokens=3)[1]
    alone = [generate_seq2seq(t5, src, max_new_tokens=12, eos_id=eos) for src in srcs]
    assert generate_seq2seq_batch(t5, srcs, max_new_tokens=12, eos_id=eos) == alone
    with pytest.raises(ValueError, match="empty"):
        generate_seq2seq_batch(t5, [[3, 1], []], max_new_tokens=4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_seq2seq_batch(t5, [[3, 1]], max_new_tokens=-1)


@pytest.mark.parametrize("seed", [0, 1])
def test_decoder_batch_equals_one_at_a_time(decoder, one_thread, seed):
    ps = prompts(seed, 10, 46)  # up to 47 of the 48 positions: several rows are cut by the context
    free = [list(generate(decoder, p, max_new_tokens=25, temperature=0, stop_ids=())) for p in ps]
    stops = {free[0][4], free[1][2]}  # tokens that do come up: rows stop at them early
    alone = [list(generate(decoder, p, max_new_tokens=25, temperature=0, stop_ids=stops)) for p in ps]
    assert generate_batch(decoder, ps, max_new_tokens=25, stop_ids=stops) == alone
    assert any(out[-1] in stops and len(out) < 25 for out in alone)
    assert any(len(out) < 25 and out[-1] not in stops for out in alone)  # the context cut some
    assert generate_batch(decoder, ps, max_new_tokens=25, stop_ids=()) == free


def test_decoder_batch_edges_and_mode(decoder, one_thread):
    assert generate_batch(decoder, [], max_new_tokens=5) == []
    assert generate_batch(decoder, [[BOS_ID, 5]], max_new_tokens=0) == [[]]
    full = [BOS_ID] * 48  # a full context still yields one token, as generate does
    assert generate_batch(decoder, [full, [BOS_ID, 7]], max_new_tokens=3, stop_ids=())[0] == list(
        generate(decoder, full, max_new_tokens=3, temperature=0, stop_ids=())
    )
    with pytest.raises(ValueError, match="longer than"):
        generate_batch(decoder, [[BOS_ID] * 49], max_new_tokens=2)
    decoder.train()
    try:
        generate_batch(decoder, [[BOS_ID, 5]], max_new_tokens=2)
        assert decoder.training  # the model's mode is restored
    finally:
        decoder.eval()


def test_decoder_per_row_positions_match_each_row_alone(decoder, one_thread):
    ps = prompts(5, 4, 30)
    width = max(map(len, ps))
    batch = torch.zeros(len(ps), width, dtype=torch.long)
    for i, p in enumerate(ps):
        batch[i, : len(p)] = torch.tensor(p)
    step = torch.tensor([[7, 8], [9, 10], [11, 12], [13, 14]])  # two new tokens per row
    with torch.no_grad():
        cache = decoder.new_cache(len(ps), width + 2)
        decoder(batch, cache)
        got = decoder(step, cache, positions=torch.tensor([len(p) for p in ps]))  # (B, 2, V)
        assert cache.length == width + 2  # the highest slot written, + 1
        for i, p in enumerate(ps):
            want = decoder(torch.tensor([p + step[i].tolist()]))[0, -2:]  # uncached, alone
            torch.testing.assert_close(got[i], want, rtol=1e-5, atol=1e-5)


def test_generate_greedy_dispatches_by_family(t5, decoder, one_thread):
    srcs = sources(7, 5, 20, V)
    assert registry.get_family("t5").generate_greedy(t5, srcs, eos_id=1, max_new_tokens=8) == [
        generate_seq2seq(t5, s, max_new_tokens=8, eos_id=1) for s in srcs
    ]
    ps = prompts(7, 5, 20)
    assert registry.get_family("decoder").generate_greedy(decoder, ps, eos_id=2, max_new_tokens=8) == [
        list(generate(decoder, p, max_new_tokens=8, temperature=0, stop_ids=(2,))) for p in ps
    ]
