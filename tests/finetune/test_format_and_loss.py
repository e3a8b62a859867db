"""The fine-tuning losses against direct computations, and label scoring on a model built to prefer one label."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stlm import registry
from stlm.finetune.evaluate import classify_by_logprob
from stlm.finetune.examples import Example
from stlm.finetune.format import TextToText, cut_utf8, utf8_windows
from stlm.models.t5.model import shift_right
from stlm.tokenizers import ByT5Tokenizer, ByteTokenizer
from tests.conftest import seeded_model

EXAMPLES = [Example("the sky is clear", "blue"), Example("an apple, a cherry and a long long tail", "red")]


_model = seeded_model


@pytest.mark.parametrize("name", ["decoder-tiny", "pooled-tiny"])
def test_causal_loss_counts_target_tokens_only(name, one_thread):
    family, model = _model(name)
    tok = ByteTokenizer()
    fmt = TextToText(registry.get_family(family), tok, "\n=> ", 256, 64, model.config.max_seq_len)
    loss = fmt.loss(model, *fmt.batch(EXAMPLES))

    # Direct: each example alone, unpadded, cross-entropy of the target + EOS given BOS + input + separator.
    total, count = 0.0, 0
    for ex in EXAMPLES:
        prompt = tok.encode(ex.input + "\n=> ", bos=True)
        target = tok.encode(ex.target, eos=True)
        ids = torch.tensor([prompt + target])
        logits = model(ids[:, :-1])[0, len(prompt) - 1 :]  # positions that predict the target
        total += F.cross_entropy(logits.float(), ids[0, len(prompt) :], reduction="sum").item()
        count += len(target)
    assert fmt.n_target_tokens(fmt.batch(EXAMPLES)) == count == len("blue") + len("red") + 2
    assert loss.item() == pytest.approx(total / count, rel=1e-5)


def test_causal_prompt_does_not_change_which_positions_count(one_thread):
    family, model = _model("decoder-tiny")
    fmt = TextToText(registry.get_family(family), ByteTokenizer(), "\n=> ", 256, 64, model.config.max_seq_len)
    inputs, labels = fmt.batch(EXAMPLES[:1])
    prompt_len = len("the sky is clear\n=> ") + 1  # BOS
    assert (labels[0, : prompt_len - 1] == -100).all()
    assert labels[0, prompt_len - 1 :].tolist() == list(b"blue") + [ByteTokenizer.eos_id]


def test_encoder_decoder_loss_is_target_cross_entropy(one_thread):
    family, model = _model("t5-debug")
    tok = ByT5Tokenizer()
    fmt = TextToText(registry.get_family(family), tok, "\n=> ", 256, 64, None)
    inputs, mask, targets = fmt.batch(EXAMPLES)
    assert inputs[0].tolist()[: mask[0].sum()] == tok.encode("the sky is clear", eos=True)
    loss = fmt.loss(model, inputs, mask, targets)

    total, count = 0.0, 0
    for ex in EXAMPLES:
        src = torch.tensor([tok.encode(ex.input, eos=True)])
        tgt = torch.tensor([tok.encode(ex.target, eos=True)])
        logits = model(src, shift_right(tgt, model.config.decoder_start_id, model.config.pad_id))
        total += F.cross_entropy(logits[0].float(), tgt[0], reduction="sum").item()
        count += tgt.shape[1]
    assert loss.item() == pytest.approx(total / count, rel=1e-5)


def test_inputs_are_cut_on_character_boundaries():
    assert cut_utf8("héllo", 2) == "h"  # é is two bytes: never half of it
    assert cut_utf8("héllo", 3) == "hé"
    fmt = TextToText(registry.get_family("decoder"), ByteTokenizer(), "|", 1000, 10, 32)
    # BOS + input + "|" + room for 10 target bytes + EOS fits 33 ids (max_len 32 inputs + 1)
    assert len(fmt.context("x" * 100).encode()) == 32 + 1 - 2 - 1 - 10 + 1


@pytest.mark.parametrize("text", ["", "short", "héllo wörld " * 9, "日本語のテキスト" * 5, "a€" * 40])
@pytest.mark.parametrize("size", [4, 7, 16, 256])
def test_windows_join_back_to_the_text_on_character_boundaries(text, size):
    pieces = utf8_windows(text, size)
    assert "".join(pieces) == text
    assert all(len(p.encode("utf-8")) <= size for p in pieces)
    assert all(pieces) or pieces == [""]
    # Each window is as long as fits: the next window's first character would not.
    for piece, after in zip(pieces, pieces[1:]):
        assert len((piece + after[0]).encode("utf-8")) > size
    if len(text.encode("utf-8")) <= size:
        assert pieces == [text]


def test_a_character_wider_than_the_window_is_a_window_of_its_own():
    assert utf8_windows("a日b", 2) == ["a", "日", "b"]


class PrefersLabel(torch.nn.Module):
    """A causal 'model' whose every position favours the bytes of one label and EOS."""

    def __init__(self, label: str, vocab: int = 264):
        super().__init__()
        bias = torch.zeros(vocab)
        bias[list(label.encode())] = 10.0
        bias[ByteTokenizer.eos_id] = 10.0
        self.register_buffer("bias", bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(*ids.shape, -1)  # (B, T, V)


@pytest.mark.parametrize("preferred", ["blue", "red"])
def test_classification_by_logprob_picks_the_preferred_label(preferred):
    fmt = TextToText(registry.get_family("decoder"), ByteTokenizer(), "\n=> ", 256, 16, 128)
    chosen = classify_by_logprob(
        PrefersLabel(preferred),
        fmt,
        EXAMPLES * 3,
        ["red", "blue", "green"],
        batch_size=4,
        device="cpu",
        autocast=torch.autocast("cpu", enabled=False),
    )
    assert chosen == [preferred] * 6
