import itertools
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stlm.data.loader import WindowLoader
from stlm.errors import UserError
from stlm.objectives.span_corruption import (
    SpanCorruptionBatcher,
    SpanLengths,
    corrupt,
    noise_mask,
    span_lengths,
    window_rng,
)
from stlm.tokenizers import ByT5Tokenizer, ByteTokenizer

EOS = 1
T5_SENTINELS = np.arange(32099, 31999, -1)  # <extra_id_0> = 32099, <extra_id_1> = 32098, ...
BYT5 = ByT5Tokenizer()
BYT5_SENTINELS = np.array([BYT5.sentinel_id(k) for k in range(BYT5.n_sentinels)])


# --- lengths -----------------------------------------------------------------


def test_standard_t5_lengths():
    expected = SpanLengths(raw_length=568, n_noise=85, n_spans=28, inputs_length=512, targets_length=114)
    assert span_lengths() == span_lengths(512, 0.15, 3.0) == expected
    assert expected.n_kept == 483


def test_byt5_lengths_match_the_published_1024_189():
    # google-research/byt5 trains with sequence_length {'inputs': 1024, 'targets': 189}
    # and mean_noise_span_length 20.
    assert span_lengths(1024, 0.15, 20.0) == SpanLengths(
        raw_length=1193, n_noise=179, n_spans=9, inputs_length=1024, targets_length=189
    )


def test_short_inputs_lengths():
    # 128-token inputs come from 141 raw tokens and give 29 targets.
    assert span_lengths(128) == SpanLengths(raw_length=141, n_noise=21, n_spans=7, inputs_length=128, targets_length=29)


@pytest.mark.parametrize(
    "inputs_length, density, mean_span",
    list(itertools.product([4, 17, 64, 100, 512, 1000, 2048], [0.05, 0.15, 0.3, 0.5], [1.0, 3.0, 8.0, 20.0])),
)
def test_lengths_are_consistent_and_maximal(inputs_length, density, mean_span):
    s = span_lengths(inputs_length, density, mean_span)
    assert 1 <= s.n_spans <= min(s.n_noise, s.n_kept)
    assert s.inputs_length == s.n_kept + s.n_spans + 1 <= inputs_length
    assert inputs_length - s.inputs_length <= 1  # one raw token adds at most a span and a token
    assert s.targets_length == s.n_noise + s.n_spans + 1
    assert s.n_noise == max(round(s.raw_length * density), 1)
    # One more raw token would no longer fit.
    longer = s.raw_length + 1
    noise = round(longer * density)
    assert longer - noise + max(round(noise / mean_span), 1) + 1 > inputs_length


@pytest.mark.parametrize("args", [(512, 0.0, 3.0), (512, 1.0, 3.0), (512, 0.15, 0.5), (3, 0.15, 3.0)])
def test_bad_settings_are_user_errors(args):
    with pytest.raises(UserError):
        span_lengths(*args)


# --- noise mask --------------------------------------------------------------


def runs(mask):
    """[(value, length), ...] of consecutive equal values."""
    return [(bool(v), len(list(g))) for v, g in itertools.groupby(mask)]


@settings(max_examples=200, deadline=None)
@given(
    n_spans=st.integers(1, 40),
    extra_noise=st.integers(0, 100),
    extra_kept=st.integers(0, 400),
    seed=st.integers(0, 2**32 - 1),
)
def test_noise_mask_alternates_spans_starting_with_kept(n_spans, extra_noise, extra_kept, seed):
    n_noise, n_kept = n_spans + extra_noise, n_spans + extra_kept
    mask = noise_mask(n_noise + n_kept, n_noise, n_spans, np.random.default_rng(seed))
    assert mask.dtype == bool and mask.shape == (n_noise + n_kept,) and mask.sum() == n_noise
    spans = runs(mask)
    assert [v for v, _ in spans] == [False, True] * n_spans  # kept first, noise last


def test_noise_mask_refuses_impossible_cuts():
    rng = np.random.default_rng(0)
    for length, n_noise, n_spans in [(10, 3, 4), (10, 8, 3), (10, 5, 0), (10, 0, 1)]:
        with pytest.raises(ValueError):
            noise_mask(length, n_noise, n_spans, rng)


def test_segmentation_is_uniform_not_geometric():
    # 5 noise tokens in 3 spans: all 6 compositions (1,1,3), (1,2,2), ... equally likely.
    rng = np.random.default_rng(0)
    counts = Counter(tuple(n for v, n in runs(noise_mask(8, 5, 3, rng)) if v) for _ in range(6000))
    assert len(counts) == 6
    assert all(850 < c < 1150 for c in counts.values()), counts
    # Mean noise span length is n_noise / n_spans exactly, 85 / 28 for T5.
    s = span_lengths()
    mask = noise_mask(s.raw_length, s.n_noise, s.n_spans, rng)
    noise_runs = [n for v, n in runs(mask) if v]
    assert len(noise_runs) == 28 and sum(noise_runs) == 85


# --- corrupt -----------------------------------------------------------------


def reconstruct(inputs, targets, sentinels, eos_id):
    """The raw window back from (inputs, targets): each sentinel in the inputs
    stands for the tokens that follow the same sentinel in the targets."""
    assert inputs[-1] == eos_id and targets[-1] == eos_id
    index = {int(s): k for k, s in enumerate(sentinels)}
    spans, current = {}, None
    for t in targets[:-1]:
        if int(t) in index:
            current = index[int(t)]
            spans[current] = []
        else:
            spans[current].append(int(t))
    out = []
    for t in inputs[:-1]:
        out.extend(spans[index[int(t)]] if int(t) in index else [int(t)])
    return np.array(out)


def test_docstring_example():
    window = np.array([10, 11, 12, 13, 14, 15, 16, 17, 18, 19])  # a .. j
    mask = np.array([0, 0, 1, 1, 0, 0, 0, 1, 1, 1], dtype=bool)  # noise: (c d), (h i j)
    inputs, targets = corrupt(window, mask, [99, 98], EOS)
    assert inputs.tolist() == [10, 11, 99, 14, 15, 16, 98, EOS]
    assert targets.tolist() == [99, 12, 13, 98, 17, 18, 19, EOS]
    assert inputs.dtype == targets.dtype == np.int64


def check_example(window, mask, inputs, targets, lengths, sentinels):
    n = lengths.n_spans
    assert inputs.shape == (lengths.inputs_length,) and targets.shape == (lengths.targets_length,)
    assert inputs[-1] == EOS and targets[-1] == EOS
    # Sentinels <extra_id_0>, <extra_id_1>, ... in order, once each, in both.
    in_inputs = inputs[np.isin(inputs, sentinels)]
    in_targets = targets[np.isin(targets, sentinels)]
    assert in_inputs.tolist() == in_targets.tolist() == sentinels[:n].tolist()
    assert targets[0] == sentinels[0]  # targets start with a sentinel
    assert inputs[-2] == sentinels[n - 1]  # the window ends in a noise span
    # Kept and noise tokens partition the window, each in order, each once.
    assert inputs[~np.isin(inputs, sentinels)][:-1].tolist() == window[~mask].tolist()
    assert targets[~np.isin(targets, sentinels)][:-1].tolist() == window[mask].tolist()
    assert reconstruct(inputs, targets, sentinels, EOS).tolist() == window.tolist()


@pytest.mark.parametrize(
    "lengths, sentinels, vocab",
    [(span_lengths(512, 0.15, 3.0), T5_SENTINELS, 32000), (span_lengths(1024, 0.15, 20.0), BYT5_SENTINELS, 259)],
    ids=["t5", "byt5"],
)
def test_invariants_over_many_seeds(lengths, sentinels, vocab):
    rng = np.random.default_rng(1234)
    for seed in range(150):
        # Packed text: ids below the sentinels, with EOS between documents
        # (an EOS inside a window is an ordinary token).
        window = rng.integers(3, vocab, size=lengths.raw_length)
        window[rng.random(lengths.raw_length) < 0.02] = EOS
        mask = noise_mask(lengths.raw_length, lengths.n_noise, lengths.n_spans, np.random.default_rng(seed))
        inputs, targets = corrupt(window, mask, sentinels, EOS)
        check_example(window, mask, inputs, targets, lengths, sentinels)


@settings(max_examples=200, deadline=None)
@given(mask=st.lists(st.booleans(), min_size=1, max_size=60), seed=st.integers(0, 1000))
def test_any_mask_round_trips(mask, seed):
    # Including masks that start with noise or end with kept tokens.
    mask = np.array(mask)
    window = np.random.default_rng(seed).integers(3, 1000, size=len(mask))
    inputs, targets = corrupt(window, mask, T5_SENTINELS, EOS)
    n_spans = sum(1 for v, _ in runs(mask) if v)
    assert len(inputs) == (~mask).sum() + n_spans + 1 and len(targets) == mask.sum() + n_spans + 1
    assert reconstruct(inputs, targets, T5_SENTINELS, EOS).tolist() == window.tolist()


def test_a_batch_corrupts_like_its_rows():
    s = span_lengths(128)
    rng = np.random.default_rng(0)
    windows = rng.integers(3, 32000, size=(6, s.raw_length))
    masks = np.stack([noise_mask(s.raw_length, s.n_noise, s.n_spans, rng) for _ in range(6)])
    inputs, targets = corrupt(windows, masks, T5_SENTINELS, EOS)
    assert inputs.shape == (6, 128) and targets.shape == (6, 29)
    for row in range(6):
        one_in, one_target = corrupt(windows[row], masks[row], T5_SENTINELS, EOS)
        assert inputs[row].tolist() == one_in.tolist() and targets[row].tolist() == one_target.tolist()


def test_too_few_sentinels_is_a_user_error():
    s = span_lengths()
    mask = noise_mask(s.raw_length, s.n_noise, s.n_spans, np.random.default_rng(0))
    with pytest.raises(UserError, match="needs 28 sentinels"):
        corrupt(np.arange(s.raw_length), mask, T5_SENTINELS[:5], EOS)


def test_masks_depend_only_on_seed_epoch_and_position():
    s = span_lengths()
    draw = lambda *key: noise_mask(s.raw_length, s.n_noise, s.n_spans, window_rng(*key))  # noqa: E731
    assert (draw(0, 1, 7) == draw(0, 1, 7)).all()
    assert not (draw(0, 1, 7) == draw(1, 1, 7)).all()
    assert not (draw(0, 1, 7) == draw(0, 2, 7)).all()
    assert not (draw(0, 1, 7) == draw(0, 1, 8)).all()


# --- batcher -----------------------------------------------------------------


def packed_corpus(n_tokens, vocab=32000, seed=0):
    """Shards-style `doc EOS doc EOS ...` with documents of random length."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, vocab, size=n_tokens).astype(np.uint16)
    ends = np.cumsum(rng.integers(20, 400, size=n_tokens // 20))
    tokens[ends[ends < n_tokens]] = EOS
    return tokens


def make_batcher(tokens, lengths=None, *, batch=4, seed=7, sentinels=T5_SENTINELS, rank=0, world=1):
    lengths = lengths or span_lengths()
    loader = WindowLoader(tokens, seq_len=lengths.raw_length - 1, batch_size=batch, seed=3, rank=rank, world_size=world)
    return SpanCorruptionBatcher(loader, lengths, sentinels, EOS, seed=seed)


def test_batcher_yields_exact_shapes_and_reconstructable_windows():
    tokens = packed_corpus(40_000)
    s = span_lengths()
    batcher = make_batcher(tokens)
    raw = WindowLoader(tokens, seq_len=s.raw_length - 1, batch_size=4, seed=3)  # the same windows, uncorrupted
    for _ in range(20):  # ~70 windows per epoch: 20 batches of 4 cross into the next
        inputs, targets = batcher.next_batch()
        windows = raw.next_batch().numpy()
        assert inputs.dtype == targets.dtype == torch.int64
        assert inputs.shape == (4, 512) and targets.shape == (4, 114)
        for row in range(4):
            got = reconstruct(inputs[row].numpy(), targets[row].numpy(), T5_SENTINELS, EOS)
            assert got.tolist() == windows[row].tolist()
    assert batcher.loader.epoch > 0


def test_batcher_is_deterministic_and_resumes_exactly():
    tokens = packed_corpus(40_000)
    straight = make_batcher(tokens)
    expected = [straight.next_batch() for _ in range(20)]  # crosses an epoch

    first = make_batcher(tokens)
    for _ in range(5):
        first.next_batch()
    state = first.state_dict()
    resumed = make_batcher(tokens)
    resumed.load_state_dict(state)
    for want in expected[5:]:
        got = resumed.next_batch()
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])

    other_seed = make_batcher(tokens, seed=8).next_batch()
    assert torch.equal(
        make_batcher(tokens, seed=8).loader.next_batch(), make_batcher(tokens).loader.next_batch()
    )  # same windows ...
    assert not torch.equal(other_seed[0], expected[0][0])  # ... corrupted differently


def test_ranks_corrupt_each_window_as_a_single_process_would():
    tokens = packed_corpus(60_000)
    single = make_batcher(tokens, batch=4)
    ranks = [make_batcher(tokens, batch=2, rank=r, world=2) for r in range(2)]
    for _ in range(3):
        inputs, targets = single.next_batch()
        parts = [b.next_batch() for b in ranks]
        # Rank r serves permutation positions r, r + 2: rows 0, 2 and 1, 3.
        assert torch.equal(parts[0][0], inputs[0::2]) and torch.equal(parts[1][0], inputs[1::2])
        assert torch.equal(parts[0][1], targets[0::2]) and torch.equal(parts[1][1], targets[1::2])


def test_byt5_batcher():
    tok = ByT5Tokenizer()
    text = "Span corruption on bytes: mean noise span 20. Ünïcödé too. " * 400
    doc = np.array(tok.encode(text, bos=True, eos=True), dtype=np.uint16)
    tokens = np.tile(doc, 3)
    s = span_lengths(1024, 0.15, 20.0)
    batcher = make_batcher(tokens, s, batch=2, sentinels=BYT5_SENTINELS)
    inputs, targets = batcher.next_batch()
    assert inputs.shape == (2, 1024) and targets.shape == (2, 189)
    readable = tok.decode(targets[0].tolist(), sentinels=True)
    assert readable.startswith("<extra_id_0>") and "<extra_id_8>" in readable


def test_batcher_checks_its_loader_and_tokenizer():
    tokens = packed_corpus(40_000)
    s = span_lengths()
    loader = WindowLoader(tokens, seq_len=512, batch_size=2, seed=0)
    with pytest.raises(UserError, match="seq_len=567"):
        SpanCorruptionBatcher(loader, s, T5_SENTINELS, EOS, seed=0)
    byte = ByteTokenizer()  # only 5 sentinels
    loader = WindowLoader(tokens, seq_len=567, batch_size=2, seed=0)
    with pytest.raises(UserError, match="needs 28 sentinels"):
        SpanCorruptionBatcher(loader, s, [byte.sentinel_id(k) for k in range(5)], byte.eos_id, seed=0)
