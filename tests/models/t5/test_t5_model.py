"""T5Model: position buckets, masks, cached decoding, causality, precision, init, training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stlm.models.t5 import T5Config, T5Model, relative_position_bucket, shift_right

V = 50


def small(**overrides) -> T5Config:
    settings = dict(
        vocab_size=V,
        d_model=32,
        d_head=8,
        n_heads=4,
        d_ff=64,
        n_layers=2,
        n_decoder_layers=3,
        rel_buckets=8,
        rel_max_distance=20,
    )
    settings.update(overrides)
    return T5Config(**settings)


@pytest.fixture(scope="module", params=["relu-tied", "gated-untied"])
def model(request) -> T5Model:
    torch.manual_seed(0)
    kind = dict(ff_kind="gated-gelu", tie_embeddings=False) if request.param == "gated-untied" else {}
    return T5Model(small(**kind)).eval()


def batch(b: int = 2, s: int = 30, l: int = 25, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, V, (b, s), generator=g), torch.randint(2, V, (b, l), generator=g)


def bucket_by_hand(relative: int, bidirectional: bool, n_buckets: int, max_distance: int) -> int:
    """The bucket rule written out in Python floats, one distance at a time."""
    bucket = 0
    if bidirectional:
        n_buckets //= 2
        bucket = n_buckets if relative > 0 else 0
        distance = abs(relative)
    else:
        distance = max(-relative, 0)
    exact = n_buckets // 2
    if distance < exact:
        return bucket + distance
    far = exact + int(math.log(distance / exact) / math.log(max_distance / exact) * (n_buckets - exact))
    return bucket + min(far, n_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("n_buckets, max_distance", [(32, 128), (8, 20), (16, 9)])
def test_relative_position_buckets(bidirectional, n_buckets, max_distance):
    relative = torch.arange(-300, 301)
    got = relative_position_bucket(relative, bidirectional, n_buckets, max_distance).tolist()
    assert got == [bucket_by_hand(r, bidirectional, n_buckets, max_distance) for r in relative.tolist()]
    assert min(got) >= 0 and max(got) == n_buckets - 1  # distances beyond max_distance share the last


def test_shift_right():
    targets = torch.tensor([[5, 6, 7, 1], [8, 1, -100, -100]])
    assert shift_right(targets, 0).tolist() == [[0, 5, 6, 7], [0, 8, 1, 0]]
    assert shift_right(targets, 3, pad_id=2).tolist() == [[3, 5, 6, 7], [3, 8, 1, 2]]


def test_forward_is_encode_then_decode(model):
    ids, dec = batch()
    with torch.no_grad():
        enc = model.encode(ids)
        assert enc.shape == (2, 30, 32)
        logits = model(ids, dec)
        assert logits.shape == (2, 25, V)
        torch.testing.assert_close(logits, model.decode(dec, enc), atol=0, rtol=0)


def test_cached_decoding_equals_full_decoding(model):
    ids, dec = batch(l=26)  # 26 > rel_max_distance: the far buckets are exercised
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0
    with torch.no_grad():
        enc = model.encode(ids, mask)
        full = model.decode(dec, enc, mask)
        cache = model.new_cache(2, 26)
        parts = [model.decode(dec[:, :5], enc, mask, cache)]  # a prefill chunk ...
        parts += [model.decode(dec[:, i : i + 1], enc, mask, cache) for i in range(5, 20)]  # ... single steps ...
        parts += [model.decode(dec[:, 20:], enc, mask, cache)]  # ... and a chunk after a cache
    assert cache.length == 26
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])
def test_cached_decoding_with_and_without_gradients_agrees(model, bf16):
    # Without gradients a cached decode runs the lean path on plain tensors; with them, the modules.
    ids, dec = batch(l=12)
    mask = torch.ones_like(ids)
    mask[0, 25:] = 0
    outputs = []
    for grad in (True, False):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            with torch.no_grad():
                enc = model.encode(ids, mask)
            cache = model.new_cache(2, 12)
            with torch.set_grad_enabled(grad):
                parts = [model.decode(dec[:, :4], enc, mask, cache)]
                parts += [model.decode(dec[:, i : i + 1], enc, mask, cache) for i in range(4, 12)]
        assert parts[-1].requires_grad == grad
        outputs.append(torch.cat(parts, dim=1).detach())
    tol = dict(atol=1e-5, rtol=1e-5) if not bf16 else dict(atol=0.03, rtol=0.02)  # bf16: logits rounded to bf16
    torch.testing.assert_close(outputs[0], outputs[1], **tol)


def test_cache_reuses_cross_attention_keys_and_reorders_rows(model):
    ids, dec = batch()
    with torch.no_grad():
        enc = model.encode(ids)
        full = model.decode(dec[:, :4], enc)
        cache = model.new_cache(2, 4)
        model.decode(dec[:, :2], enc, cache=cache)
        cross_k = cache.cross_k
        cache.reorder(torch.tensor([1, 0]))  # swap the two rows, as beam search does
        # Later calls ignore encoder_out: the cross-attention keys come from the cache.
        step = model.decode(dec.flip(0)[:, 2:4], torch.zeros_like(enc), cache=cache)
        assert cache.cross_k is not cross_k
    torch.testing.assert_close(step, full.flip(0)[:, 2:4], atol=1e-5, rtol=1e-5)


def test_cache_limits(model):
    ids, dec = batch()
    with torch.no_grad():
        enc = model.encode(ids)
        cache = model.new_cache(2, 3)
        with pytest.raises(ValueError, match="cache full"):
            model.decode(dec[:, :4], enc, cache=cache)
        with pytest.raises(ValueError, match="batch size 2"):
            model.decode(dec[:1, :1], enc[:1], cache=model.new_cache(2, 3))
    with pytest.raises(ValueError, match="max_len"):
        model.new_cache(1, 0)


def test_padding_is_invisible(model):
    """A padded source gives the logits of the same source without the padding."""
    ids, dec = batch(b=1, s=12, l=6)
    padded = torch.cat([ids, torch.full((1, 7), 9)], dim=1)
    mask = torch.cat([torch.ones(1, 12), torch.zeros(1, 7)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(padded, dec, mask), model(ids, dec), atol=1e-5, rtol=1e-5)
        fully_padded = model(padded, dec, torch.zeros_like(mask))  # no real token: finite, as in the reference
    assert torch.isfinite(fully_padded).all()


def test_decoder_is_causal(model):
    ids, dec = batch()
    changed = dec.clone()
    changed[:, 10] = (changed[:, 10] + 1) % V
    with torch.no_grad():
        a, b = model(ids, dec), model(ids, changed)
    torch.testing.assert_close(a[:, :10], b[:, :10], atol=0, rtol=0)
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_mask_shape_is_checked(model):
    ids, dec = batch()
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model(ids, dec, torch.ones(2, 29))
    with pytest.raises(ValueError, match="input_ids must be"):
        model.encode(ids[0])


def test_bf16_autocast_and_bf16_weights(model):
    ids, dec = batch()
    with torch.no_grad():
        reference = model(ids, dec)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(ids, dec)
            cache = model.new_cache(2, 2)
            assert cache.k.dtype == torch.bfloat16
            model.decode(dec[:, :2], model.encode(ids), cache=cache)
    assert mixed.dtype == torch.bfloat16 and torch.isfinite(mixed).all()
    assert (mixed.float() - reference).abs().max() < 0.1 * reference.abs().max()
    ids_mask = torch.ones_like(ids)
    ids_mask[0, -3:] = 0
    model.train()
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(ids, dec, ids_mask).float().logsumexp(-1).mean()
        loss.backward()
    finally:
        model.eval()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.encoder_bias.weight.grad.dtype == torch.float32
    model.zero_grad(set_to_none=True)
    half = T5Model(model.config).to(torch.bfloat16).eval()
    with torch.no_grad():
        assert half(ids, dec).dtype == torch.bfloat16


def test_position_bias_lives_once_per_stack(model):
    keys = [k for k in model.state_dict() if "bias" in k]
    assert keys == ["encoder_bias.weight", "decoder_bias.weight"]
    assert model.encoder_bias.weight.shape == (8, 4)


def test_init_follows_t5():
    torch.manual_seed(0)
    cfg = small(d_model=128, d_head=32, n_heads=4, d_ff=512, vocab_size=4096)
    m = T5Model(cfg)
    attn = m.encoder[0].attn
    q, k, v = attn.qkv.weight.view(3, 128, 128)
    assert abs(m.embed.weight.std().item() - 1.0) < 0.02
    assert abs(q.std().item() - (128 * 32) ** -0.5) < 0.002  # 1/sqrt(d_head) moved into q
    assert abs(k.std().item() - 128**-0.5) < 0.005
    assert abs(m.encoder[0].ff.wo.weight.std().item() - 512**-0.5) < 0.005
    assert torch.equal(m.decoder[0].ff_norm.weight, torch.ones(128))


def test_meta_build_then_init():
    with torch.device("meta"):
        m = T5Model(small())
    m.to_empty(device="cpu")
    m.init_weights()
    ids, dec = batch()
    with torch.no_grad():
        assert torch.isfinite(m(ids, dec)).all()


def test_dropout_only_in_training():
    torch.manual_seed(0)
    m = T5Model(small(dropout=0.3))
    ids, dec = batch()
    with torch.no_grad():
        m.train()
        assert not torch.equal(m(ids, dec), m(ids, dec))
        m.eval()
        assert torch.equal(m(ids, dec), m(ids, dec))


def test_a_from_scratch_model_fits_one_batch():
    torch.manual_seed(0)
    m = T5Model(small(n_decoder_layers=2))
    ids, targets = batch(b=4, s=16, l=8, seed=3)
    dec = shift_right(targets, m.config.decoder_start_id)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(m(ids, dec).flatten(0, 1), targets.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 3.0 and losses[-1] < 0.3 * losses[0]
    assert m.encoder_bias.weight.grad is not None and m.decoder_bias.weight.grad.abs().sum() > 0
