"""FLOP counting from executed shapes: exact against a hand count for a plain decoder."""

from __future__ import annotations

import torch

from stlm.evaluation.flops import count_flops
from stlm.models.decoder import DecoderConfig, DecoderLM
from stlm.objectives.next_token import model_loss


def by_hand(cfg: DecoderConfig, b: int, t: int) -> tuple[int, int]:
    """(linear, attention) forward FLOPs of DecoderLM on (b, t) ids."""
    n, d, f, v = b * t, cfg.d_model, cfg.d_ff, cfg.vocab_size
    per_layer = 2 * n * d * 3 * d + 2 * n * d * d + 2 * n * d * 2 * f + 2 * n * f * d  # qkv, out, gate+up, down
    linear = cfg.n_layers * per_layer + 2 * n * d * v  # + the head
    attention = cfg.n_layers * 2 * (2 * b * cfg.n_heads * t * t * cfg.d_head)  # QK^T and PV, full T x T
    return linear, attention


def test_forward_and_training_flops_equal_the_hand_count():
    cfg = DecoderConfig(vocab_size=96, d_model=32, n_layers=2, n_heads=2, max_seq_len=64)
    torch.manual_seed(0)
    model = DecoderLM(cfg)
    window = torch.randint(0, 96, (3, 25))  # (B, T+1)
    linear, attention = by_hand(cfg, 3, 24)
    assert count_flops(lambda: model(window[:, :-1])) == linear + attention
    # Backward: two matmuls per linear (input and weight gradients); flash attention's backward
    # recomputes the scores, five matmuls for the forward's two (torch's formula).
    assert count_flops(lambda: model_loss(model, window).backward()) == 3 * linear + attention + 5 * attention // 2


def test_pooled_core_flops_follow_the_patches():
    """The same pooled stack costs less with longer patches: the core runs once per patch."""
    from stlm.models.byte_decoder import PooledByteConfig, PooledByteLM

    ids = torch.tensor([list(b"The cat sat on the mat and it was a fine day, was it not? " * 2)])  # (1, 118)
    costs = {}
    for boundary in ("fixed:1", "fixed:3", "fixed:6", "space"):
        torch.manual_seed(0)
        cfg = PooledByteConfig(
            d_local=32,
            local_heads=2,
            d_global=64,
            n_global_layers=2,
            global_heads=2,
            hash_buckets=16,
            boundary=boundary,
            max_seq_len=128,
        )
        costs[boundary] = count_flops(lambda: PooledByteLM(cfg)(ids))
    assert costs["fixed:1"] > costs["fixed:3"] > costs["fixed:6"] and costs["fixed:1"] > costs["space"]
