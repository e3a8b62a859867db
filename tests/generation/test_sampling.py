"""sample_next: greedy, top-k, nucleus, reproducibility and argument checks."""

from __future__ import annotations

import math

import pytest
import torch

from stlm.generation.sampling import sample_next


@pytest.fixture
def logits() -> torch.Tensor:
    return torch.randn(8, 264, generator=torch.Generator().manual_seed(0)) * 3


def draws(logits: torch.Tensor, n: int = 400, **kwargs) -> set[int]:
    gen = torch.Generator().manual_seed(1)
    rows = logits.expand(n, -1)  # (n, V): n independent draws from one distribution
    return set(sample_next(rows, generator=gen, **kwargs).tolist())


def test_temperature_zero_is_argmax(logits):
    ids = sample_next(logits, temperature=0)
    assert ids.dtype == torch.long and ids.shape == (8,)
    assert torch.equal(ids, logits.argmax(-1))


def test_top_k_one_and_tiny_top_p_are_greedy(logits):
    greedy = logits.argmax(-1)
    assert torch.equal(sample_next(logits, top_k=1, generator=torch.Generator().manual_seed(3)), greedy)
    assert torch.equal(sample_next(logits, top_p=1e-9, generator=torch.Generator().manual_seed(3)), greedy)
    assert torch.equal(sample_next(logits, temperature=5.0, top_p=1e-9), greedy)


def test_seeded_sampling_is_reproducible(logits):
    a = sample_next(logits, temperature=1.5, generator=torch.Generator().manual_seed(7))
    b = sample_next(logits, temperature=1.5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    many = [sample_next(logits, generator=torch.Generator().manual_seed(s)) for s in range(5)]
    assert any(not torch.equal(many[0], m) for m in many[1:])


def test_top_k_only_draws_from_the_k_best(logits):
    row = logits[:1]
    top3 = set(row[0].topk(3).indices.tolist())
    assert draws(row, top_k=3, temperature=5.0) == top3


def test_top_p_keeps_the_smallest_set_reaching_p():
    row = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert draws(row, top_p=0.7) == {0, 1}  # 0.5 < 0.7, 0.5 + 0.3 reaches it
    assert draws(row, top_p=0.5) == {0}  # the first token alone reaches 0.5
    assert draws(row, top_p=0.85) == {0, 1, 2}
    assert draws(row, top_p=1.0) == {0, 1, 2, 3}


def test_top_k_and_top_p_together():
    row = torch.tensor([[0.4, 0.3, 0.2, 0.1]]).log()
    # top_k=3 renormalises to 4/9, 3/9, 2/9; top_p=0.7 then keeps the first two.
    assert draws(row, top_k=3, top_p=0.7) == {0, 1}


def test_bf16_logits_are_accepted(logits):
    ids = sample_next(logits.bfloat16(), top_k=5, generator=torch.Generator().manual_seed(0))
    assert ids.shape == (8,) and ids.dtype == torch.long


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=-0.1), "temperature"),
        (dict(temperature=math.nan), "temperature"),
        (dict(temperature=math.inf), "temperature"),
        (dict(temperature="hot"), "temperature"),
        (dict(top_k=0), "top_k"),
        (dict(top_k=2.5), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
    ],
)
def test_bad_arguments_raise_value_error(logits, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample_next(logits, **kwargs)


def test_logits_must_be_two_dimensional(logits):
    with pytest.raises(ValueError, match="batch, vocab"):
        sample_next(logits[0])
