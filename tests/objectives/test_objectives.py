"""The objectives the training step calls: batch format, counts and loss behind one small interface."""

import numpy as np
import pytest
import torch

from stlm import registry
from stlm.config import ObjectiveConfig
from stlm.errors import UserError
from stlm.objectives.base import build_objective
from stlm.objectives.next_token import NextTokenObjective, model_loss
from stlm.objectives.span_corruption import SpanCorruptionObjective
from stlm.tokenizers import ByT5Tokenizer, ByteTokenizer


def test_next_token_windows_are_the_batch_and_bytes_are_counted_exactly():
    objective = build_objective(ObjectiveConfig(), 8, ByteTokenizer())
    assert isinstance(objective, NextTokenObjective) and objective.window_len == 9
    windows = torch.tensor([[257, 104, 105, 258, 257, 97, 98, 99, 100]])  # BOS h i EOS BOS a b c d
    (batch,) = objective.batch(windows, (0, 0, 0))
    assert batch is windows
    assert objective.counts((batch,)) == (8, 6)  # 8 targets, of which EOS and BOS are no bytes
    torch.manual_seed(0)
    family, cfg = registry.get_config("decoder-tiny")
    model = registry.build_model(family, cfg)
    assert torch.equal(objective.loss(model, batch), model_loss(model, batch))


def test_span_corruption_batches_depend_on_the_key_alone():
    objective = build_objective(ObjectiveConfig(name="span-corruption"), 64, ByT5Tokenizer())
    assert isinstance(objective, SpanCorruptionObjective)
    windows = torch.from_numpy(np.random.default_rng(0).integers(3, 259, (4, objective.window_len)))
    a, b = objective.batch(windows, (0, 5, 1)), objective.batch(windows, (0, 5, 1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(objective.batch(windows, (0, 6, 1))[0], a[0])
    inputs, targets = a
    assert inputs.shape == (4, 64) and objective.counts(a) == (inputs.numel() + targets.numel(), 0)


def test_next_token_needs_a_tokenizer_with_byte_lengths():
    class NoBytes:
        name = "spiece"

    with pytest.raises(UserError, match="needs a byte or BPE tokenizer"):
        build_objective(ObjectiveConfig(), 8, NoBytes())
