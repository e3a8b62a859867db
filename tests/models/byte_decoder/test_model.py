"""PooledByteLM: causality for every boundary rule, document isolation, caching, precision, training."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from stlm.models.byte_decoder import PooledByteLM, count_params, mean_patch_length
from stlm.models.byte_decoder import model as model_module
from tests.models.byte_decoder.helpers import BOS, DOCS, EOS, RULES, V, packed, small_config, small_model

# Two rows: three packed documents, and a window that starts mid-document (no
# BOS at position 0, as random training windows do) and holds two documents
# without EOS between them. Both rows have the same length.
ROW0 = packed(*DOCS)
ROW1 = (packed(DOCS[2], DOCS[0], eos_last=False)[20:] + [ord("z")] * len(ROW0))[: len(ROW0)]
ROW1[40] = BOS  # a document that starts without an EOS before it


def batch() -> torch.Tensor:
    return torch.tensor([ROW0, ROW1])  # (2, T)


def replacements(token: int) -> list[int]:
    """What to write at position k: flip space <-> letter (moves patch boundaries), or a BOS (a new document)."""
    flip = ord("x") if token >= 256 or not chr(token).isalnum() else ord(" ")
    return [flip, BOS] if token != BOS else [flip, ord("q")]


@pytest.fixture(scope="module", params=RULES)
def model(request) -> PooledByteLM:
    return small_model(request.param)


def assert_causal(model: PooledByteLM, ids: torch.Tensor, ks) -> None:
    """For each row and k: logits before k unchanged, logits from k on changed.

    All the changed windows go through the model as one batch (rows are
    independent: padding patches and masks never mix them), which keeps the
    exhaustive test fast.
    """
    with torch.no_grad():
        base = model(ids)  # (B, T, V)
        variants = [(row, k, new) for row in range(ids.shape[0]) for k in ks for new in replacements(int(ids[row, k]))]
        changed = ids[[row for row, _, _ in variants]].clone()  # (N, T)
        for i, (_, k, new) in enumerate(variants):
            changed[i, k] = new
        out = torch.cat([model(chunk) for chunk in changed.split(128)])  # (N, T, V)
    for i, (row, k, new) in enumerate(variants):
        torch.testing.assert_close(out[i, :k], base[row, :k], atol=1e-12, rtol=0, msg=f"row {row}, byte {k} -> {new}")
        assert not torch.allclose(out[i, k:], base[row, k:]), f"changing byte {k} changed nothing after it"


def test_patches_really_span_several_bytes(model):
    """Guard for the causality test: with the space, fixed:3 and entropy rules the windows hold multi-byte patches."""
    length = mean_patch_length(model, batch())
    assert length == 1.0 if model.config.boundary == "fixed:1" else 2.0 < length < 7.0


def test_causality_changing_byte_k_leaves_every_earlier_logit_unchanged(model):
    """Every k: right after patch boundaries, at and after a BOS, at an EOS, at the last byte."""
    ids = batch()
    assert_causal(model, ids, range(ids.shape[1]))


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_causality_holds_for_the_other_pooling_kinds(pooling):
    """The rule tests above use mean_last pooling; "mean" and "last" read the patch differently.
    One row (three packed documents) keeps it cheap."""
    ids = batch()[:1]
    assert_causal(small_model("space", pooling=pooling), ids, range(ids.shape[1]))


def test_the_causality_test_catches_a_leaky_unpool(monkeypatch):
    """Reading the global output of the byte's own (not yet closed) patch leaks the future; the test must see it."""
    real = model_module.patch_layout

    def leaky(closes, ids, doc, bos_id):
        layout = real(closes, ids, doc, bos_id)
        return dataclasses.replace(layout, read=layout.patch_id + 1)

    monkeypatch.setattr(model_module, "patch_layout", leaky)
    net = small_model("space")
    with pytest.raises(AssertionError):
        assert_causal(net, batch(), range(batch().shape[1]))


def test_document_isolation_other_documents_change_nothing(model):
    """Rewriting document 1 leaves documents 2 and 3 untouched, at every level (local, patches, core)."""
    start2 = len(packed(DOCS[0]))  # BOS of document 2
    ids = torch.tensor([packed(*DOCS)])
    rewritten = ids.clone()
    torch.manual_seed(1)
    rewritten[0, 1 : start2 - 1] = torch.randint(0, 256, (start2 - 2,))  # every byte of document 1
    with torch.no_grad():
        a, b = model(ids), model(rewritten)
        torch.testing.assert_close(a[0, start2:], b[0, start2:], atol=1e-12, rtol=0)
        assert not torch.allclose(a[0, 1 : start2 - 1], b[0, 1 : start2 - 1])
        # And a document packed after others gets the logits it gets alone in its own window.
        alone = model(torch.tensor([packed(DOCS[1])]))
    n = alone.shape[1]
    torch.testing.assert_close(a[0, start2 : start2 + n], alone[0], atol=1e-9, rtol=0)


@pytest.mark.parametrize("splits", [[1], [7, 1, 1, 1, 1, 1], [30], [63], [12, 25]])
def test_cached_prefill_then_bytes_equal_the_full_forward(model, splits):
    ids = torch.tensor([ROW1[:70]])
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(1, 80)
        parts, start = [], 0
        for size in splits:
            parts.append(model(ids[:, start : start + size], cache))
            start += size
        parts.append(model(ids[:, start:], cache))  # the rest, byte by byte inside
    assert cache.length == 70
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-10, rtol=0)


def test_core_runs_once_per_closed_patch_when_decoding():
    net = small_model("space")
    ids = torch.tensor([packed(DOCS[0])])
    with torch.no_grad():
        cache = net.new_cache(1)
        net(ids[:, :1], cache)
        for i in range(1, ids.shape[1]):
            net(ids[:, i : i + 1], cache)
    closes = net.boundaries(ids, torch.cat([torch.tensor([[256]]), ids[:, :-1]], dim=1))
    assert cache.core.length == int(closes.sum()) == cache.n_patches  # the last byte (EOS) closes


def test_forward_shape_dtype_and_batch_independence():
    net = small_model("space", dtype=torch.float32)
    ids = batch()
    logits = net(ids)
    assert logits.shape == (2, ids.shape[1], V) and logits.dtype == torch.float32
    torch.testing.assert_close(net(ids[1:]), logits[1:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("boundary", ["space", "fixed:4"])
def test_runs_under_bf16_autocast_with_and_without_cache(boundary):
    net = small_model(boundary, dtype=torch.float32)
    ids = torch.tensor([ROW0[:40]])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        full = net(ids)
        cache = net.new_cache(1)
        assert cache.local.k[0].dtype == torch.bfloat16
        parts = [net(ids[:, :9], cache)] + [net(ids[:, i : i + 1], cache) for i in range(9, 40)]
    assert full.dtype == torch.bfloat16 and torch.isfinite(full).all()
    torch.testing.assert_close(torch.cat(parts, dim=1).float(), full.float(), atol=0.1, rtol=0.05)
    with torch.no_grad():
        fp32 = net(ids)
    torch.testing.assert_close(full.float(), fp32, atol=0.1, rtol=0.05)


def test_backward_under_autocast_reaches_every_parameter():
    torch.manual_seed(0)
    net = PooledByteLM(small_config(share_ffn=True))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = net(batch()).float().logsumexp(-1).mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.parametrize("boundary", ["space", "fixed:1"])
def test_overfits_one_batch(boundary):
    torch.manual_seed(0)
    net = PooledByteLM(small_config(boundary=boundary))
    window = torch.tensor([ROW0[:65], ROW1[:65]])
    inputs, targets = window[:, :-1], window[:, 1:]
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(net(inputs).flatten(0, 1), targets.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 5.0 and losses[-1] < 0.5, (losses[0], losses[-1])


def test_shared_ffn_is_one_module_and_repeats_reuse_blocks():
    cfg = small_config(share_ffn=True, n_global_layers=3, repeat_blocks=2)
    net = PooledByteLM(cfg)
    assert all(block.mlp is net.core[0].mlp for block in net.core)
    assert cfg.core_schedule == (0, 0, 1, 1, 2, 2) and net.new_cache().core.k.__len__() == 6
    assert net.num_params() == count_params(cfg)
    loop = PooledByteLM(dataclasses.replace(cfg, repeat_mode="loop"))
    assert loop.config.core_schedule == (0, 1, 2, 0, 1, 2) and loop.num_params() == net.num_params()
    ids = torch.tensor([ROW0[:50]])
    with torch.no_grad():
        full = net(ids)
        cache = net.new_cache(1)
        steps = torch.cat([net(ids[:, :20], cache)] + [net(ids[:, i : i + 1], cache) for i in range(20, 50)], dim=1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


def test_meta_build_then_materialise_keeps_ties_and_sharing():
    cfg = small_config(share_ffn=True)
    with torch.device("meta"):
        net = PooledByteLM(cfg)
    net.to_empty(device="cpu")
    net.init_weights()
    assert net.head.weight is net.input.embed.weight
    assert net.core[1].mlp is net.core[0].mlp
    assert net.num_params() == count_params(cfg)
    assert torch.isfinite(net(batch())).all()


def test_state_dict_round_trip_keeps_the_fitted_entropy_rule(tmp_path):
    from safetensors.torch import load_model, save_model

    net = small_model("entropy", dtype=torch.float32, share_ffn=True)
    keys = net.state_dict().keys()
    assert "boundaries.entropy" in keys and "boundaries.threshold" in keys
    assert not any("rotary" in key for key in keys)
    save_model(net, str(tmp_path / "m.safetensors"))
    fresh = PooledByteLM(net.config).eval()
    assert not fresh.boundaries.fitted
    load_model(fresh, str(tmp_path / "m.safetensors"))
    assert fresh.boundaries.fitted and fresh.head.weight is fresh.input.embed.weight
    ids = batch()
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids), net(ids))


def test_forward_rejects_bad_input():
    net = small_model("space", max_seq_len=32)
    with pytest.raises(ValueError, match="max_seq_len"):
        net(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="batch"):
        net(torch.zeros(2, 3, dtype=torch.long), net.new_cache(1))
    with pytest.raises(ValueError, match="one sequence"):
        net.new_cache(2)
    with pytest.raises(ValueError, match="cache full"):
        net(torch.zeros(1, 9, dtype=torch.long), net.new_cache(1, 8))
    with pytest.raises(ValueError, match="batch, bytes"):
        net(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="only the entropy rule"):
        net.fit_boundaries([BOS, 65, EOS])


@pytest.mark.parametrize("ngrams", [(3, 4, 5, 6), (3, 4, 5, 6, 7, 8)])
def test_causality_holds_with_longer_hashed_ngrams(ngrams):
    """Hashed 3- to 6-grams (pooled-10m-hash-long-3to6) and up to 8-grams (BLT's sizes) reach
    n-1 bytes back, never forward."""
    ids = batch()[:1]
    assert_causal(small_model("entropy", hash_ngrams=ngrams), ids, range(ids.shape[1]))
