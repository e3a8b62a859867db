"""One scoring path: batched continuation log-likelihoods equal a direct loss computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stlm import registry
from stlm.evaluation.scoring import score_continuations
from stlm.tokenizers import ByT5Tokenizer, ByteTokenizer
from tests.conftest import seeded_model

REQUESTS = [
    ("The cat sat on the", " mat."),
    ("", "A whole sentence, scored after BOS."),
    ("Überall: naïve café ", "crème brûlée"),
    ("x", "yz"),
]


_model = seeded_model


@pytest.mark.parametrize("name", ["decoder-tiny", "pooled-tiny"])
def test_causal_scores_equal_direct_log_softmax(name, one_thread):
    family, model = _model(name)
    tok = ByteTokenizer()
    scores = score_continuations(model, tok, registry.get_family(family), REQUESTS, batch_size=3)
    for (ctx, cont), score in zip(REQUESTS, scores):
        prefix, cont_ids = tok.encode(ctx, bos=True), tok.encode(cont)
        ids = torch.tensor([prefix + cont_ids])
        with torch.no_grad():
            logp = model(ids[:, :-1]).float().log_softmax(-1)[0]  # (T-1, V)
        positions = range(len(prefix) - 1, ids.shape[1] - 1)
        direct = sum(float(logp[p, ids[0, p + 1]]) for p in positions)
        assert score.logprob == pytest.approx(direct, abs=1e-4)
        assert score.n_units == len(cont_ids)
        assert score.n_bytes == len(cont.encode("utf-8"))
        greedy = all(int(logp[p].argmax()) == int(ids[0, p + 1]) for p in positions)
        assert score.greedy == greedy


def test_batching_and_order_do_not_change_scores(one_thread):
    family, model = _model("pooled-tiny")
    tok = ByteTokenizer()
    alone = [score_continuations(model, tok, registry.get_family(family), [r], batch_size=1)[0] for r in REQUESTS]
    together = score_continuations(model, tok, registry.get_family(family), REQUESTS, batch_size=4)
    for a, b in zip(alone, together):
        assert b.logprob == pytest.approx(a.logprob, abs=1e-4)


def test_seq2seq_scores_equal_the_training_loss(one_thread):
    family, model = _model("t5-debug")
    tok = ByT5Tokenizer()
    scores = score_continuations(model, tok, registry.get_family(family), REQUESTS, batch_size=2)
    for (ctx, cont), score in zip(REQUESTS, scores):
        src = torch.tensor([tok.encode(ctx, eos=True)])
        tgt = torch.tensor([tok.encode(cont)])
        dec_in = torch.cat([torch.tensor([[model.config.decoder_start_id]]), tgt[:, :-1]], 1)
        with torch.no_grad():
            logits = model(src, dec_in)
        loss = F.cross_entropy(logits[0].float(), tgt[0], reduction="sum")
        assert score.logprob == pytest.approx(-float(loss), abs=1e-4)
        assert score.n_units == tgt.shape[1]


def test_left_truncation_keeps_the_continuation(one_thread):
    family, model = _model("decoder-tiny")
    tok = ByteTokenizer()
    long_ctx = "context " * 40
    cut = score_continuations(model, tok, registry.get_family(family), [(long_ctx, "end")], max_len=16)[0]
    # 16 ids are fed: the last 14 of [BOS] ctx, then "en"; "end" is scored.
    ids = torch.tensor([tok.encode(long_ctx, bos=True)[-14:] + tok.encode("end")])
    with torch.no_grad():
        logp = model(ids[:, :-1]).float().log_softmax(-1)[0]  # (16, V)
    direct = sum(float(logp[p, ids[0, p + 1]]) for p in range(13, 16))
    assert cut.logprob == pytest.approx(direct, abs=1e-4)
    assert cut.n_units == 3
    with pytest.raises(ValueError, match="does not fit"):
        score_continuations(model, tok, registry.get_family(family), [("a", "b" * 20)], max_len=16)
    with pytest.raises(ValueError, match="empty continuation"):
        score_continuations(model, tok, registry.get_family(family), [("a", "")])


def test_truncate_long_scores_the_last_max_len_units_of_a_long_continuation(one_thread):
    family, model = _model("decoder-tiny")
    tok = ByteTokenizer()
    cont = "abcdefghijklmnopqrstuvwxyz"  # 26 ids, max_len 16: the last 16 are scored after "j"
    cut = score_continuations(model, tok, registry.get_family(family), [("ctx", cont)], max_len=16, truncate_long=True)[
        0
    ]
    ids = torch.tensor([tok.encode(cont)[-17:]])
    with torch.no_grad():
        logp = model(ids[:, :-1]).float().log_softmax(-1)[0]  # (16, V)
    assert cut.logprob == pytest.approx(sum(float(logp[p, ids[0, p + 1]]) for p in range(16)), abs=1e-4)
    assert cut.n_units == 16 and cut.n_bytes == 26
