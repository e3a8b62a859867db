"""Self-speculative decoding with multi-token heads: the greedy ids of plain decoding, id for id."""

from __future__ import annotations

import pytest
import torch

from stlm.generation.decoder import generate
from stlm.generation.speculative import SpeculativeStats, generate_speculative
from stlm.models.byte_decoder import PooledByteConfig, PooledByteLM
from stlm.models.decoder import DecoderConfig, DecoderLM
from stlm.tokenizers.byte import BOS_ID, EOS_ID

PROMPTS = [[BOS_ID, *b"The cat sat on the mat."], [BOS_ID, *b"a"], [BOS_ID, *b"x", EOS_ID, BOS_ID, *b"def f(x):"]]


def decoder(heads: int, seed: int, max_seq_len: int = 96) -> DecoderLM:
    torch.manual_seed(seed)
    cfg = DecoderConfig(d_model=32, n_layers=2, n_heads=2, max_seq_len=max_seq_len, mtp_heads=heads, init_std=0.3)
    return DecoderLM(cfg)


def pooled(heads: int, seed: int) -> PooledByteLM:
    torch.manual_seed(seed)
    cfg = PooledByteConfig(
        d_local=32,
        n_enc_layers=1,
        n_dec_layers=1,
        local_heads=2,
        local_window=16,
        d_global=32,
        n_global_layers=1,
        global_heads=2,
        hash_buckets=32,
        max_patch_len=4,
        max_seq_len=96,
        mtp_heads=heads,
        init_std=0.3,
    )
    model = PooledByteLM(cfg)
    with torch.no_grad():
        model.no_patch.normal_()
    return model


def noisy_heads(model: torch.nn.Module) -> torch.nn.Module:
    """Extra heads far from head 1: most drafts are rejected (the cache rolls back)."""
    with torch.no_grad():
        for mlp in model.mtp.mlps:
            mlp.down.weight.normal_(std=1.0)
    return model


def copy_heads(model: torch.nn.Module) -> torch.nn.Module:
    """Extra heads that read the trunk unchanged: every draft repeats head 1's guess at that position,
    so on a random model's repetitive greedy output many drafts are accepted (and some rejected)."""
    with torch.no_grad():
        for mlp in model.mtp.mlps:
            mlp.down.weight.zero_()
    return model


@pytest.mark.parametrize("make", [decoder, pooled], ids=["decoder", "pooled"])
def test_speculative_equals_plain_greedy(make, one_thread):
    chunked = make is decoder
    total = SpeculativeStats()
    for seed in range(1):
        for heads, model in (
            (1, noisy_heads(make(1, seed))),
            (3, noisy_heads(make(3, seed))),
            (3, copy_heads(make(3, seed))),
        ):
            for prompt in PROMPTS:
                plain = list(generate(model, prompt, max_new_tokens=30, temperature=0.0, stop_ids=(EOS_ID,)))
                stats = SpeculativeStats()
                fast = list(generate_speculative(model, prompt, max_new_tokens=30, chunked=chunked, stats=stats))
                assert fast == plain, (seed, heads, prompt)
                assert stats.emitted == len(plain) and stats.accepted <= stats.drafted
                for name in ("rounds", "emitted", "drafted", "accepted"):
                    setattr(total, name, getattr(total, name) + getattr(stats, name))
    # Both paths ran: drafts accepted (several ids per round) and drafts rejected (rolled back).
    assert 0 < total.accepted < total.drafted and total.mean_accepted > 1.0


def test_speculative_stops_where_plain_stops(one_thread):
    """At the context's end and at max_new_tokens, as plain greedy does."""
    model = copy_heads(decoder(3, 0, max_seq_len=30))
    prompt = [BOS_ID, *b"hello world"]
    for n in (0, 1, 2, 5, 19, 20, 40):
        plain = list(generate(model, prompt, max_new_tokens=n, temperature=0.0, stop_ids=()))
        assert list(generate_speculative(model, prompt, max_new_tokens=n, stop_ids=())) == plain, n


def test_speculative_needs_heads():
    with pytest.raises(ValueError, match="no multi-token heads|has none"):
        generate_speculative(decoder(0, 0), [BOS_ID], max_new_tokens=4)
